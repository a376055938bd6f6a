"""The active health checks' scripts (``lua/health_claim.lua``, ``lua/health_report.lua``), spelt out
here once: their keys, arguments and replies, the verdict hash and the fleet's verdict messages.

Keys (``HealthKeys``), per route, under the route's hash tag (``breaker_tag`` of its key):
  verdicts  ``apigw:health:{<route>}``        HASH ``<url>`` = "1" healthy / "0" not (absent:
                                              healthy), ``<url>|ok`` and ``<url>|fail`` = consecutive
                                              results (``verdicts_of`` reads it)
  lease     ``apigw:health:{<route>}:lease``  the replica that runs the route's checks: its id
  channel   ``apigw:events:health``           a changed verdict (``encode_verdict``, ``decode_verdict``)

health_claim (``claim_call``; reply 1 when the caller holds the lease now, else 0)
  KEYS  lease
  ARGV  owner (the replica's id), ttl ms (another replica takes over when it is not renewed)
health_report (``report_call``; reply ``Verdict``)
  KEYS  verdicts
  ARGV  url, ok (1/0), healthy threshold, unhealthy threshold
  reply [healthy (1/0), changed (1/0)]
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import orjson

from app.breaker.protocol import breaker_tag
from app.store import ScriptCall, Store


class HealthKeys(NamedTuple):
    verdicts: str
    lease: str


def health_keys(store: Store, route_key: str) -> HealthKeys:
    tag = breaker_tag(route_key)
    return HealthKeys(store.key("health", tag), store.key("health", tag, "lease"))


def claim_call(keys: HealthKeys, owner: str, ttl_ms: int) -> ScriptCall:
    return ScriptCall("health_claim", (keys.lease,), (owner, ttl_ms))


def report_call(keys: HealthKeys, url: str, ok: bool, healthy_threshold: int, unhealthy_threshold: int) -> ScriptCall:
    return ScriptCall("health_report", (keys.verdicts,), (url, int(ok), healthy_threshold, unhealthy_threshold))


class Verdict(NamedTuple):
    healthy: bool
    changed: bool


def report_reply(raw: list[Any]) -> Verdict:
    healthy, changed = raw
    return Verdict(bool(int(healthy)), bool(int(changed)))


def verdicts_of(fields: Mapping[bytes, bytes], urls: Iterable[str]) -> dict[str, bool]:
    """The fleet's verdict on each of ``urls`` that has one."""
    found = {}
    for url in urls:
        verdict = fields.get(url.encode())
        if verdict is not None:
            found[url] = verdict != b"0"
    return found


class VerdictEvent(NamedTuple):
    route_key: str
    url: str
    healthy: bool


def encode_verdict(route_key: str, url: str, healthy: bool) -> bytes:
    return orjson.dumps({"route": route_key, "url": url, "healthy": healthy})


def decode_verdict(message: bytes) -> VerdictEvent:
    """Raises ValueError, KeyError or TypeError on a message that is not a verdict."""
    event = orjson.loads(message)
    return VerdictEvent(str(event["route"]), str(event["url"]), bool(event["healthy"]))
