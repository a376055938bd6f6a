"""The route-override scripts (``lua/config_change.lua``, ``lua/config_read.lua``), spelt out here
once: their keys, arguments, replies and the stored override's document.

Keys (``ConfigKeys``), under one hash tag, ``{config}``, so that one script changes both:
  routes   ``apigw:config:{config}:routes``   HASH route key -> override document (``StoredOverride``):
                                              {"version": N, "spec": <RouteSpec JSON>, or null: the
                                              file's route of that key is deleted}
  version  ``apigw:config:{config}:version``  the config version: a counter, one more per change
  channel  ``apigw:events:config``            the new version, after each change

config_change (``change_call``)
  KEYS  routes, version
  ARGV  channel, SET or RESET (drop every override: the config file alone again), then with SET
        pairs of route key and RouteSpec JSON, DELETED or REVERT (no override: the file's route)
  reply the new version
config_read (``read_call``; reply ``read_reply``: ``Overrides``)
  KEYS  routes, version
  reply [version, route key, document, route key, document, ...]; version 0 when nothing was ever
        changed
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import orjson

from app.store import ScriptCall, Store

SET, RESET = "set", "reset"
# What a pair's value may be besides a RouteSpec's JSON.
DELETED = "null"  # a tombstone: the file's route of that key is deleted
REVERT = ""       # no override for that key any more: the file's route (if any) again


class ConfigKeys(NamedTuple):
    routes: str
    version: str


def config_keys(store: Store) -> ConfigKeys:
    return ConfigKeys(store.key("config", "config", "routes"), store.key("config", "config", "version"))


def change_call(keys: ConfigKeys, channel: str, mode: str, pairs: Iterable[tuple[str, str]] = ()) -> ScriptCall:
    args: list[str] = [channel, mode]
    for route_key, value in pairs:
        args += (route_key, value)
    return ScriptCall("config_change", keys, tuple(args))


def read_call(keys: ConfigKeys) -> ScriptCall:
    return ScriptCall("config_read", keys)


class Overrides(NamedTuple):
    """config_read's reply: the version and each route's stored document, undecoded."""

    version: int
    documents: dict[str, bytes]


def read_reply(raw: list[Any]) -> Overrides:
    return Overrides(int(raw[0]), {key.decode(): document for key, document in zip(raw[1::2], raw[2::2], strict=True)})


class StoredOverride(NamedTuple):
    """One route's override document: the version that wrote it and the route's spec as JSON data
    (None: deleted)."""

    version: int
    spec: dict[str, Any] | None


def decode_override(document: bytes) -> StoredOverride:
    """Raises ValueError, KeyError or TypeError on a document that is not an override's."""
    data = orjson.loads(document)
    return StoredOverride(int(data["version"]), data["spec"])
