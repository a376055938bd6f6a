"""Which limits apply to whom, and who a request comes from (no store needed beyond memory)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from app.ratelimit.identity import ProxyTrust
from app.config import ConfigError, RateLimitSpec, parse_config
from app.rate_limiter import ApiGatewayRateLimiter, RateLimitConfig
from app.ratelimit.limits import limits_of
from app.ratelimit.protocol import client_tag
from app.router import ApiGatewayRouter

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seed_config.yaml"


def _limiter(rate_limiter: dict, env: dict | None = None) -> ApiGatewayRateLimiter:
    return ApiGatewayRateLimiter(config=parse_config({"rate_limiter": rate_limiter}, env or {}).rate_limiter)


def test_seed_config_clients_are_client_ids() -> None:
    config = parse_config(yaml.safe_load(SEED.read_text()), {})
    manager = ApiGatewayRateLimiter(config=config.rate_limiter).manager
    assert manager.client_config("enterprise_tier") == {
        "requests_per_second": None, "requests_per_minute": 200, "requests_per_hour": 10000,
        "requests_per_day": None, "burst_size": None}
    assert manager.client_config("anyone")["requests_per_minute"] == 60


def test_library_defaults_match_the_seed() -> None:
    config = RateLimitConfig()
    assert (config.requests_per_minute, config.requests_per_hour, config.burst_size) == (60, 1000, None)


def test_unset_fields_inherit_client_then_tier_then_default() -> None:
    manager = _limiter({
        "default": {"requests_per_minute": 10, "requests_per_hour": 100, "requests_per_day": 1000},
        "tiers": {"gold": {"requests_per_minute": 50, "burst_size": 5}},
        "clients": {"a": {"tier": "gold", "requests_per_hour": 700}, "b": {"requests_per_second": 2}},
    }).manager
    assert manager.client_config("a") == {"requests_per_second": None, "requests_per_minute": 50,
                                          "requests_per_hour": 700, "requests_per_day": 1000, "burst_size": 5}
    assert manager.client_config("b")["requests_per_minute"] == 10
    assert manager.client_config("b")["requests_per_second"] == 2
    assert manager.spec_for("keyholder", "gold").requests_per_minute == 50  # an API key's tier
    assert manager.spec_for("a", None).requests_per_minute == 50


async def test_runtime_config_wins_and_none_removes_it() -> None:
    limiter = _limiter({"clients": {"a": {"requests_per_minute": 5}}})
    await limiter.set_client_config("a", RateLimitConfig(requests_per_minute=9))
    assert limiter.manager.client_config("a")["requests_per_minute"] == 9
    await limiter.set_client_config("a", None)
    assert limiter.manager.client_config("a")["requests_per_minute"] == 5
    with pytest.raises(ValueError):
        await limiter.set_client_config("a", {"tier": "nope"})


def test_burst_needs_a_window_and_environment_sets_it() -> None:
    with pytest.raises(ConfigError, match="burst_size needs a window"):
        parse_config({"rate_limiter": {"default": {"requests_per_minute": None, "requests_per_hour": None,
                                                   "burst_size": 3}}}, {})
    limiter = _limiter({}, {"API_GATEWAY_BURST_SIZE": "10", "API_GATEWAY_RATE_LIMIT_PER_MINUTE": "120"})
    assert [(limit.name, limit.limit, limit.width_us) for limit in limits_of(limiter.manager.spec_for("x"))] == [
        ("b", 10, 500_000), ("m", 120, 1_000_000), ("h", 1000, 60_000_000)]


def test_route_spec_adds_only_the_limits_it_names() -> None:
    route = ApiGatewayRouter().add_route("/r", "GET", "http://127.0.0.1:9",
                                         rate_limit={"requests_per_second": 5, "burst_size": 2})
    spec = route.spec.rate_limit
    assert isinstance(spec, RateLimitSpec)
    assert [limit.name for limit in limits_of(spec, spec.model_fields_set)] == ["b", "s"]
    plan = ApiGatewayRateLimiter().plan("c", None, route)
    assert plan.names == ("m", "h", "route:b", "route:s")
    assert all("{c}" in key for key in plan.keys)  # one hash tag: one Redis Cluster slot
    unlimited = ApiGatewayRouter().add_route("/u", "GET", "http://127.0.0.1:9")
    assert ApiGatewayRateLimiter().plan("c", None, unlimited).names == ("m", "h")


def test_forwarded_for_is_believed_only_from_trusted_proxies() -> None:
    trust = ProxyTrust(["10.0.0.0/8", "192.168.1.1"])
    assert trust.client_addr("203.0.113.5", b"1.2.3.4") == "203.0.113.5"
    assert trust.client_addr("10.1.1.1", b"1.2.3.4") == "1.2.3.4"
    # The rightmost address a trusted hop did not add itself is the client; spoofed ones left of it are not.
    assert trust.client_addr("10.1.1.1", b"6.6.6.6, 1.2.3.4, 192.168.1.1") == "1.2.3.4"
    assert trust.client_addr("10.1.1.1", b"10.2.2.2") == "10.2.2.2"  # all trusted: the leftmost
    assert trust.client_addr("10.1.1.1", b"not-an-ip") == "10.1.1.1"
    assert trust.client_addr("10.1.1.1", b"2001:db8::1") == "2001:db8::1"


def test_client_tags_stay_short_and_keep_the_hash_tag() -> None:
    assert client_tag("acme") == "acme"
    assert client_tag("ip:10.0.0.1") == "ip:10.0.0.1"
    for hostile in ("a}b", "x" * 1000, "a b", "{x}"):
        tag = client_tag(hostile)
        assert tag.startswith("sha256:") and "{" not in tag and "}" not in tag and len(tag) < 50
