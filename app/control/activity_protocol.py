"""The busiest-clients scripts (``lua/activity_add.lua``, ``lua/activity_top.lua``), spelt out here
once: their keys, arguments and replies.

Keys (``ActivityKeys``), under one hash tag, ``{clients}``: two windows of ``window`` seconds, the
current one and the one before, each a ZSET client id -> requests, and a HASH whose ``epoch``
field is the current window's number (time // window).
  current   ``apigw:activity:{clients}:current``
  previous  ``apigw:activity:{clients}:previous``
  meta      ``apigw:activity:{clients}:meta``

activity_add (``add_call``)
  KEYS  current, previous, meta
  ARGV  window seconds, most clients kept per window, then pairs of client id and requests
  reply how many clients the current window holds
activity_top (``top_call``; reply ``top_reply``: ``ClientRequests``, the most first)
  KEYS  current, previous, meta
  ARGV  window seconds, how many clients
  reply [client id, requests, client id, requests, ...]: the requests of both windows, the most
        first, ties by client id
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from app.store import ScriptCall, Store


class ActivityKeys(NamedTuple):
    current: str
    previous: str
    meta: str


def activity_keys(store: Store) -> ActivityKeys:
    return ActivityKeys(store.key("activity", "clients", "current"), store.key("activity", "clients", "previous"),
                        store.key("activity", "clients", "meta"))


def add_call(keys: ActivityKeys, window: int, keep: int, counts: Mapping[str, int]) -> ScriptCall:
    args: list[Any] = [window, keep]
    for client, count in counts.items():
        args += (client, count)
    return ScriptCall("activity_add", keys, tuple(args))


def top_call(keys: ActivityKeys, window: int, many: int) -> ScriptCall:
    return ScriptCall("activity_top", keys, (window, many))


class ClientRequests(NamedTuple):
    client: str
    requests: int


def top_reply(raw: list[Any]) -> list[ClientRequests]:
    return [ClientRequests(client.decode("utf-8", "replace"), int(count))
            for client, count in zip(raw[0::2], raw[1::2], strict=True)]
