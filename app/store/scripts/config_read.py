"""Twin of lua/config_read.lua: the config version and the route overrides, read together."""

from __future__ import annotations

from typing import Any

from app.store.memory import MemoryDB


def run(db: MemoryDB, keys: list[str], args: list[Any]) -> list[Any]:
    overrides_key, version_key = keys
    reply: list[Any] = [int(db.get(version_key) or b"0")]
    overrides = db.get(overrides_key)
    if isinstance(overrides, dict):
        for field, value in overrides.items():
            reply.extend((field, value))
    return reply
