"""The Lua scripts as the Redis store sends them: read once, called by SHA, encoded once per call."""

from __future__ import annotations

import hashlib
from pathlib import Path

from app.store.base import ScriptCall, StoreError
from app.store.pipe import bulk, encode, pack_tuple
from app.store.script_sources import script_sources


class ScriptSet:
    def __init__(self, scripts_dir: Path | None = None) -> None:
        """The gateway's scripts, or those of ``scripts_dir`` (a test's own)."""
        self.sources = script_sources() if scripts_dir is None else {
            p.stem: p.read_text() for p in sorted(scripts_dir.glob("*.lua"))}
        self.shas = {name: hashlib.sha1(src.encode()).hexdigest() for name, src in self.sources.items()}
        # "EVALSHA <sha>" of each script, encoded once: the mark of the script set a call's wire was made for.
        self._heads = {name: bulk("EVALSHA") + bulk(sha) for name, sha in self.shas.items()}
        # What a node is sent to learn every script (after a start, a restart or a failover).
        self.load_commands = [encode(("SCRIPT", "LOAD", source)) for source in self.sources.values()]
        self.exists_command = encode(("SCRIPT", "EXISTS", *self.shas.values()))

    def evalsha(self, call: ScriptCall) -> bytes:
        head = self._heads.get(call.script)
        if head is None:
            raise StoreError(f"no script named {call.script!r}")
        wire = call.wire
        if wire is None or wire[0] is not head:  # not encoded yet, or by another store's scripts
            # Packed whole in one C call (cheaper than joining the made-once head to the rest).
            wire = (head, pack_tuple(("EVALSHA", self.shas[call.script], len(call.keys), *call.keys, *call.args)))
            call.wire = wire
        return wire[1]
