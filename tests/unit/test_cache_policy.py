"""The default strategy's rules (docs/design.md, "Cache"), on plain values."""

from __future__ import annotations

import pytest

from app.cache.policy import CONSUMER, CacheRequest, DefaultCacheStrategy, Lookup, StoreDecision
from app.cache_manager import ApiCacheManager, CacheStrategy
from app.config import CacheSection, RouteCacheSpec, parse_config

STRATEGY = DefaultCacheStrategy(CacheSection(ttl=300, stale_grace=60))


def _request(**kwargs: object) -> CacheRequest:
    fields = {"method": "GET", "route": "r", "path": "/a", "settings": RouteCacheSpec()}
    fields.update(kwargs)
    return CacheRequest(**fields)  # type: ignore[arg-type]


def _decide(response: dict[str, str], status: int = 200, metadata: dict | None = None, **request: object):
    raw = [(k.lower().encode(), v.encode()) for k, v in response.items()]
    return STRATEGY.storable(_request(**request), status, raw, metadata)


def test_ttl_is_the_smallest_of_config_metadata_and_max_age() -> None:
    assert _decide({}).ttl_ms == 300_000
    assert _decide({}, metadata={"cache_time": 30}).ttl_ms == 30_000
    assert _decide({"Cache-Control": "max-age=10"}, metadata={"cache_time": 30}).ttl_ms == 10_000
    assert _decide({"Cache-Control": "max-age=10, s-maxage=20"}).ttl_ms == 20_000  # a shared cache
    assert _decide({"Cache-Control": "max-age=1000"}).ttl_ms == 300_000
    assert _decide({"Cache-Control": "max-age=10"}, settings=RouteCacheSpec(ttl=5)).ttl_ms == 5_000


def test_age_already_spent_counts() -> None:
    decision = _decide({"Cache-Control": "max-age=100", "Age": "40"})
    assert decision.ttl_ms == 60_000 and decision.age == 40
    assert _decide({"Cache-Control": "max-age=100", "Age": "100"}) is None


def test_refusals() -> None:
    assert _decide({"Cache-Control": "no-store"}) is None
    assert _decide({"Cache-Control": "private"}) is None
    assert _decide({"Cache-Control": "no-cache"}) is None
    assert _decide({"Vary": "*"}) is None
    assert _decide({"Set-Cookie": "a=b"}) is None
    assert _decide({}, status=500) is None
    assert _decide({}, method="HEAD") is None
    assert _decide({}, headers=[(b"authorization", b"Bearer x")]) is None
    assert _decide({"Cache-Control": "s-maxage=60"}, headers=[(b"authorization", b"Bearer x")]) is None
    assert _decide({"Cache-Control": "public"}, headers=[(b"authorization", b"Bearer x")]) is not None


def test_a_route_may_keep_other_statuses() -> None:
    assert _decide({}, status=404) is None
    assert _decide({}, status=404, settings=RouteCacheSpec(statuses=[200, 404])) is not None
    assert _decide({}, status=500, settings=RouteCacheSpec(statuses=[500])) is not None


def test_stale_windows() -> None:
    assert _decide({}).grace_ms == 60_000
    assert _decide({"Cache-Control": "max-age=5, must-revalidate"}).grace_ms == 0
    swr = _decide({"Cache-Control": "max-age=5, stale-while-revalidate=30, stale-if-error=120"})
    assert (swr.swr_ms, swr.grace_ms) == (30_000, 120_000)


def test_stored_headers_leave_out_what_describes_one_exchange() -> None:
    decision = _decide({"Content-Type": "text/plain", "Age": "3", "X-Request-ID": "abc",
                        "Cache-Control": 'max-age=60, no-cache="X-Secret"', "X-Secret": "s", "ETag": '"1"'})
    assert [name for name, _ in decision.headers] == [b"content-type", b"cache-control", b"etag"]


def test_vary_names_are_normalised() -> None:
    assert _decide({"Vary": "Accept-Language, accept-encoding"}).vary == ("accept-encoding", "accept-language")


def test_request_directives() -> None:
    assert STRATEGY.lookup(_request()) is Lookup.LOOKUP
    assert STRATEGY.lookup(_request(method="POST")) is Lookup.BYPASS
    assert STRATEGY.lookup(_request(headers=[(b"cache-control", b"no-store")])) is Lookup.BYPASS
    assert STRATEGY.lookup(_request(headers=[(b"cache-control", b"no-cache")])) is Lookup.REFRESH
    assert STRATEGY.lookup(_request(headers=[(b"cache-control", b"max-age=0")])) is Lookup.REFRESH
    assert STRATEGY.lookup(_request(headers=[(b"pragma", b"no-cache")])) is Lookup.REFRESH


def test_key_composition() -> None:
    key = STRATEGY.cache_key
    base = key(_request(query=b"a=1&b=2"))
    assert key(_request(query=b"b=2&a=1")) == base                      # sorted query
    assert key(_request(method="HEAD", query=b"a=1&b=2")) == base       # HEAD reads GET's entry
    assert key(_request(query=b"a=1&b=3")) != base
    assert key(_request(query=b"a=1&b=2", route="other")) != base
    assert key(_request(query=b"a=1&b=2", path="/b")) != base
    assert key(_request(query=b"a=1&b=2", schema_version="v2")) != base
    assert key(_request(query=b"a=1&b=2", headers=[(b"authorization", b"x")])) != base
    fr = _request(headers=[(b"accept-language", b"fr")])
    en = _request(headers=[(b"accept-language", b"en")])
    assert key(fr) == key(en)                                          # not Vary'd: same entry
    assert key(fr, ("accept-language",)) != key(en, ("accept-language",))


@pytest.mark.parametrize(("name", "one", "other"), [
    (b"foo", b"1,2", b" 1, 2 "),              # the whitespace around a list's commas
    (b"foo", b"1,2", b"1, ,2,"),              # empty list members
    (b"foo", b"1, 2", b"1,\t2"),
    (b"accept-language", b"en, de", b"EN ,   De"),  # case, where the values are case-insensitive
    (b"accept-encoding", b"gzip, br", b"GZIP,BR"),
    (b"accept", b"text/html", b"Text/HTML"),
])
def test_vary_values_that_select_the_same_answer_share_a_key(name: bytes, one: bytes, other: bytes) -> None:
    vary = (name.decode(),)
    assert STRATEGY.cache_key(_request(headers=[(name, one)]), vary) == \
        STRATEGY.cache_key(_request(headers=[(name, other)]), vary)


@pytest.mark.parametrize(("name", "one", "other"), [
    (b"foo", b"1,2", b"2,1"),                 # order is the client's: kept
    (b"foo", b"a", b"A"),                     # case, in a field not known to ignore it
    (b"foo", b"1 2", b"12"),                  # whitespace inside a member
    (b"accept-language", b"en", b"de"),
    (b"foo", b"x", b"x,y"),
])
def test_vary_values_that_may_select_another_answer_do_not(name: bytes, one: bytes, other: bytes) -> None:
    vary = (name.decode(),)
    assert STRATEGY.cache_key(_request(headers=[(name, one)]), vary) != \
        STRATEGY.cache_key(_request(headers=[(name, other)]), vary)


class _NoQueryStrategy(DefaultCacheStrategy):
    """A custom strategy: tracking parameters do not make another entry."""

    def cache_key(self, request: CacheRequest, vary: tuple[str, ...] = ()) -> str:
        kept = b"&".join(p for p in request.query.split(b"&") if not p.startswith(b"utm_"))
        return super().cache_key(CacheRequest(request.method, request.route, request.path, kept,
                                              request.headers, request.schema_version, request.settings), vary)


async def test_a_custom_strategy_decides_the_key() -> None:
    cache = ApiCacheManager(strategy=_NoQueryStrategy())
    await cache.set("/p", {"utm_source": "mail", "id": 1}, "v")
    assert await cache.get("/p", {"id": 1}) == "v"


def test_a_custom_strategy_from_the_config() -> None:
    config = parse_config({"cache": {"strategy": "tests.unit.test_cache_policy:_NoQueryStrategy"}}, {})
    assert isinstance(ApiCacheManager(settings=config.cache).strategy, _NoQueryStrategy)
    with pytest.raises(Exception):
        parse_config({"cache": {"strategy": "not a path"}}, {})


def test_cache_strategy_is_abstract() -> None:
    with pytest.raises(TypeError):
        CacheStrategy()  # type: ignore[abstract]
    assert isinstance(StoreDecision(1, 0, 0, (), []), StoreDecision)


def test_a_private_answer_of_a_route_with_auth_is_kept_per_consumer() -> None:
    assert _decide({}, consumer="alice").vary == (CONSUMER,)
    assert _decide({"Vary": "Accept", "Cache-Control": "max-age=60"}, consumer="alice").vary == (CONSUMER, "accept")
    assert _decide({"Cache-Control": "public, max-age=60"}, consumer="alice").vary == ()
    assert _decide({}).vary == ()  # no consumer: a route without auth, as before
    alice, bob = _request(consumer="alice"), _request(consumer="bob")
    assert STRATEGY.cache_key(alice) == STRATEGY.cache_key(bob)  # the same resource...
    assert STRATEGY.cache_key(alice, (CONSUMER,)) != STRATEGY.cache_key(bob, (CONSUMER,))  # ...kept apart
