"""Twin of lua/config_change.lua: change the route overrides, bump the version, publish it."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB
from app.store.scripts._redis import text


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> int:
    overrides_key, version_key = keys
    version = int(db.get(version_key) or b"0") + 1
    db.set(version_key, str(version).encode())
    if text(args[1]) == "reset":
        db.delete(overrides_key)
    else:
        overrides = db.get(overrides_key)
        if not isinstance(overrides, dict):
            overrides = {}
        for i in range(2, len(args), 2):
            field, spec = text(args[i]).encode(), text(args[i + 1])
            if spec == "":
                overrides.pop(field, None)
            else:
                overrides[field] = f'{{"version":{version},"spec":{spec}}}'.encode()
        if overrides:
            db.set(overrides_key, overrides)
        else:
            db.delete(overrides_key)  # Redis removes an empty hash
    db.publish(text(args[0]), version)
    return version
