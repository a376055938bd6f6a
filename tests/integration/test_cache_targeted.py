"""Targeted cache-control fields (RFC 9213) through the gateway, in front of a real backend that
answers the fields each test asks for: CDN-Cache-Control over Cache-Control, the gateway's own
field (cache.targeted_field) over both, invalid fields ignored, the own field never forwarded; and
Surrogate-Control after them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from app.config import parse_config
from tests.support import BackendServer, GatewayThread

OWN = "Gateway-Cache-Control"


@pytest.fixture(params=["redis", "memory"])
def gateway(request: pytest.FixtureRequest, backend: BackendServer, key_prefix: str) -> Iterator[GatewayThread]:
    url = None
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        request.getfixturevalue("redis_client")  # removes the test's keys afterwards
    routes = [{"path": "/c/*", "target": backend.url, "strip_prefix": True}]
    raw: dict[str, Any] = {"router": {"routes": routes}, "cache": {"targeted_field": OWN},
                           "redis": {"url": url, "prefix": key_prefix}}
    with GatewayThread(parse_config(raw, {})) as server:
        yield server


def _twice(gateway: GatewayThread, **fields: str) -> tuple[httpx.Response, httpx.Response]:
    """The backend answers with ``fields`` (its /headers sets what the query names); asked twice."""
    answers = [httpx.get(gateway.url + "/c/headers", params=fields, timeout=10) for _ in range(2)]
    return answers[0], answers[1]


@pytest.mark.parametrize(("fields", "kept"), [
    ({"CDN-Cache-Control": "max-age=60", "Cache-Control": "no-store"}, True),
    ({"CDN-Cache-Control": "max-age=60", "Cache-Control": "private"}, True),
    ({"CDN-Cache-Control": "max-age=60", "Cache-Control": "max-age=0", "Expires": "0"}, True),
    ({"CDN-Cache-Control": "no-store", "Cache-Control": "max-age=60"}, False),
    ({"CDN-Cache-Control": "private", "Cache-Control": "public, max-age=60"}, False),
    ({"CDN-Cache-Control": "max-age=0", "Cache-Control": "max-age=600"}, False),
    ({"CDN-Cache-Control": "no-cache", "Cache-Control": "max-age=600"}, False),
    ({"CDN-Cache-Control": 'max-age="60"', "Cache-Control": "max-age=600"}, False),  # a lifetime unread
    ({"CDN-Cache-Control": "max-age=-1", "Cache-Control": "max-age=600"}, False),
    # The gateway's own field first; CDN-Cache-Control is not read then.
    ({OWN: "max-age=60", "CDN-Cache-Control": "no-store", "Cache-Control": "no-store"}, True),
    ({OWN: "no-store", "CDN-Cache-Control": "max-age=60", "Cache-Control": "max-age=60"}, False),
    # Invalid or empty fields are as if absent: the next on the list decides.
    ({OWN: "max-age==60", "CDN-Cache-Control": "max-age=60", "Cache-Control": "no-store"}, True),
    ({OWN: "", "CDN-Cache-Control": "no-store", "Cache-Control": "max-age=60"}, False),
    ({"CDN-Cache-Control": "max-age=60,", "Cache-Control": "no-store"}, False),
    ({"CDN-Cache-Control": "max-age=60;", "Cache-Control": "no-store"}, False),
    ({"CDN-Cache-Control": "max-age=60;x=1, must-revalidate", "Cache-Control": "no-store"}, True),
    ({"CDN-Cache-Control": "Max-Age=60", "Cache-Control": "no-store"}, False),
    ({"CDN-Cache-Control": "max-age=60 no-store", "Cache-Control": "no-store"}, False),
    # Surrogate-Control, after the targeted fields: its directives for no device in particular.
    ({"Surrogate-Control": "max-age=60", "Cache-Control": "no-store"}, True),
    ({"Surrogate-Control": "MAX-AGE=60+30", "Cache-Control": "no-store"}, True),
    ({"Surrogate-Control": "no-store", "Cache-Control": "max-age=60"}, False),
    ({"Surrogate-Control": "max-age=0", "Cache-Control": "max-age=60"}, False),
    ({"Surrogate-Control": "max-age =60", "Cache-Control": "max-age=600"}, False),  # a lifetime unread
    ({"Surrogate-Control": "no-store;other-device", "Cache-Control": "max-age=60"}, True),  # not ours
    ({"Surrogate-Control": 'content="ESI/1.0"', "Cache-Control": "max-age=60"}, True),  # nothing for us
    ({"CDN-Cache-Control": "max-age=60", "Surrogate-Control": "no-store", "Cache-Control": "no-store"}, True),
    ({"CDN-Cache-Control": "no-store", "Surrogate-Control": "max-age=60", "Cache-Control": "max-age=60"}, False),
])
def test_which_field_decides(gateway: GatewayThread, backend: BackendServer, fields: dict[str, str],
                             kept: bool) -> None:
    first, second = _twice(gateway, **fields)
    assert first.status_code == second.status_code == 200
    assert first.headers["x-cache"] == "MISS"
    assert second.headers["x-cache"] == ("HIT" if kept else "MISS"), fields
    assert backend.hits["/headers"] == (1 if kept else 2)


def test_the_own_field_never_reaches_the_client_cdn_cache_control_does(gateway: GatewayThread) -> None:
    first, second = _twice(gateway, **{OWN: "max-age=60", "CDN-Cache-Control": "max-age=30",
                                       "Cache-Control": "no-cache"})
    assert second.headers["x-cache"] == "HIT"
    for answer in (first, second):
        assert OWN.lower() not in answer.headers
        assert answer.headers["cdn-cache-control"] == "max-age=30"
        assert answer.headers["cache-control"] == "no-cache"
    # Also on an answer the cache does not keep.
    answer = httpx.get(gateway.url + "/c/headers", params={OWN: "no-store"}, timeout=10)
    assert OWN.lower() not in answer.headers
