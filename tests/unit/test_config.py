import subprocess
import sys
from pathlib import Path

import pytest

from app.config import ConfigError, load_config, parse_config
from tests.support import ROOT

SEED = ROOT / "tests" / "fixtures" / "seed_config.yaml"


def test_seed_config_loads_unchanged() -> None:
    config = load_config(SEED, env={})
    assert [r.path for r in config.router.routes] == ["/api/v1/agents", "/api/v1/threads"]
    assert config.router.routes[0].targets[0].url == "http://agent-service:8001"
    assert config.rate_limiter.default.requests_per_minute == 60
    assert config.rate_limiter.clients["enterprise_tier"].requests_per_hour == 10000
    assert config.cache.ttl == 300 and config.cache.max_size == 1000
    assert config.circuit_breaker.default.success_threshold == 3
    assert config.redis.url is None  # no Redis configured: the memory store


def test_environment_overrides_the_file() -> None:
    env = {"API_GATEWAY_RATE_LIMIT_PER_MINUTE": "7", "API_GATEWAY_CACHE_TTL": "9",
           "API_GATEWAY_CB_FAILURE_THRESHOLD": "2", "API_GATEWAY_ENABLED": "false",
           "REDIS_URL": "redis://other:6379/0", "API_GATEWAY_REDIS_URL": "redis://mine:6379/0"}
    config = load_config(SEED, env=env)
    assert config.rate_limiter.default.requests_per_minute == 7
    assert config.cache.ttl == 9
    assert config.circuit_breaker.default.failure_threshold == 2
    assert config.enabled is False
    assert config.redis.url == "redis://mine:6379/0"


def test_config_path_from_environment() -> None:
    assert len(load_config(env={"API_GATEWAY_CONFIG": str(SEED)}).router.routes) == 2


@pytest.mark.parametrize(("raw", "field"), [
    ({"router": {"routes": [{"path": "/a", "target": "http://x", "timeout": {"read": "soon"}}]}},
     "router.routes.0.timeout.read"),
    ({"router": {"routes": [{"path": "a", "target": "http://x"}]}}, "router.routes.0.path"),
    ({"router": {"routes": [{"path": "/a", "target": "ftp://x"}]}}, "router.routes.0.target"),
    # The admin API's own check (tests/integration/test_admin_api.py): one validator for both.
    ({"router": {"routes": [{"path": "/a", "target": "http://[::1"}]}}, "router.routes.0.target"),
    ({"router": {"routes": [{"path": "/a", "target": "http://a b/"}]}}, "router.routes.0.target"),
    ({"router": {"routes": [{"path": "/a", "target": "http://127.0.0.1:99999/"}]}}, "router.routes.0.target"),
    ({"router": {"routes": [{"path": "/a", "target": "http://u:p@h/"}]}}, "router.routes.0.target"),
    ({"router": {"routes": [{"path": "/a", "targets": [{"url": "https://h:65536"}]}]}},
     "router.routes.0.targets.0.url"),
    ({"cache": {"ttl": -1}}, "cache.ttl"),
    ({"cache": {"tll": 5}}, "cache.tll"),
    ({"rate_limiter": {"default": {"requests_per_minute": 0}}}, "rate_limiter.default.requests_per_minute"),
])
def test_bad_field_is_named(raw: dict, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    assert field in str(caught.value)


@pytest.mark.parametrize(("raw", "line"), [
    ({"servr": {}}, "servr: Extra inputs are not permitted; did you mean 'server'?"),
    ({"cache": {"tll": 5}}, "cache.tll: Extra inputs are not permitted (got 5); did you mean 'ttl'?"),
    ({"router": {"routes": [{"path": "/a", "target": "http://x", "tmeout": {"read": 1}}]}},
     "router.routes.0.tmeout: Extra inputs are not permitted; did you mean 'timeout'?"),
    ({"router": {"routes": [{"path": "/a", "targets": [{"url": "http://x", "wieght": 2}]}]}},
     "router.routes.0.targets.0.wieght: Extra inputs are not permitted (got 2); did you mean 'weight'?"),
    ({"rate_limiter": {"clients": {"acme": {"requests_per_minut": 5}}}},
     "rate_limiter.clients.acme.requests_per_minut: Extra inputs are not permitted (got 5); "
     "did you mean 'requests_per_minute'?"),
    ({"cache": {"zzz": 1}}, "cache.zzz: Extra inputs are not permitted (got 1)\n"),
])
def test_a_misspelt_key_gets_the_key_it_was_likely_meant_to_be(raw: dict, line: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw, {})
    assert f"  {line}" in str(caught.value) + "\n"


@pytest.mark.parametrize("url", ["http://h", "https://h:1/", "http://backend-a:9001", "http://[::1]:8080/base",
                                 "http://10.0.0.7:65535", "https://api.example.com./v1"])
def test_good_target_urls_are_kept(url: str) -> None:
    route = parse_config({"router": {"routes": [{"path": "/a", "target": url}]}}, {}).router.routes[0]
    assert route.target == url.rstrip("/")


def test_bad_environment_value_is_named() -> None:
    with pytest.raises(ConfigError, match="rate_limiter.default.requests_per_minute"):
        parse_config({}, {"API_GATEWAY_RATE_LIMIT_PER_MINUTE": "lots"})


def test_cache_buckets_from_the_environment_and_bounded() -> None:
    assert parse_config({}, {}).cache.buckets == 16
    assert parse_config({}, {"API_GATEWAY_CACHE_BUCKETS": "64"}).cache.buckets == 64
    for bad in ("0", "1025", "many"):
        with pytest.raises(ConfigError, match="cache.buckets"):
            parse_config({}, {"API_GATEWAY_CACHE_BUCKETS": bad})


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_check_config_accepts_the_seed_file() -> None:
    result = _cli("check-config", str(SEED))
    assert result.returncode == 0, result.stderr
    assert "2 route(s)" in result.stdout


def test_bad_file_exits_2_naming_the_field_without_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("router:\n  routes:\n    - path: /a\n      target: http://x\n      weight: heavy\n")
    for args in (("check-config", str(bad)), ("serve", "--config", str(bad))):
        result = _cli(*args)
        assert result.returncode == 2
        assert "router.routes.0.weight" in result.stderr
        assert "Traceback" not in result.stderr


def test_unreadable_yaml_and_missing_file_exit_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("router: [unclosed\n")
    result = _cli("check-config", str(broken))
    assert result.returncode == 2
    assert f'in "{broken}", line 2' in result.stderr and "<unicode string>" not in result.stderr
    assert _cli("check-config", str(tmp_path / "none.yaml")).returncode == 2


def test_a_route_spec_round_trips_through_its_dump() -> None:
    from app.config import RouteSpec

    spec = RouteSpec(path="/a", target="http://x", weight=5)
    assert RouteSpec.model_validate(spec.model_dump()) == spec
    with pytest.raises(ValueError, match="either target or targets"):
        RouteSpec(path="/a", target="http://x", targets=[{"url": "http://y"}])


def test_redis_cluster_and_sentinel_from_the_environment() -> None:
    config = load_config(env={"API_GATEWAY_REDIS_CLUSTER_NODES": "10.0.0.1:7000, rediss://:pw@10.0.0.2:7000"})
    assert config.redis.cluster_nodes == ["10.0.0.1:7000", "rediss://:pw@10.0.0.2:7000"]
    assert config.redis.configured
    config = load_config(env={"API_GATEWAY_REDIS_SENTINEL_NODES": "s1:26379,s2:26379",
                              "API_GATEWAY_REDIS_SENTINEL_MASTER": "orders",
                              "API_GATEWAY_REDIS_SENTINEL_PASSWORD": "secret"})
    assert config.redis.sentinel is not None
    assert config.redis.sentinel.nodes == ["s1:26379", "s2:26379"]
    assert (config.redis.sentinel.master, config.redis.sentinel.password) == ("orders", "secret")
    assert not load_config(env={}).redis.configured


def test_the_caches_own_redis_from_the_environment() -> None:
    """cache.redis is named as redis is, by API_GATEWAY_CACHE_REDIS_*; each is in the README's table."""
    from pathlib import Path

    config = load_config(env={"API_GATEWAY_CACHE_REDIS_CLUSTER_NODES": "10.0.0.1:7000,10.0.0.2:7000",
                              "API_GATEWAY_CACHE_REDIS_PREFIX": "cache", "API_GATEWAY_REDIS_URL": "redis://main:6379"})
    assert config.cache.redis is not None and config.cache.redis.cluster_nodes == ["10.0.0.1:7000", "10.0.0.2:7000"]
    assert config.cache.redis.prefix == "cache" and config.redis.url == "redis://main:6379"
    config = load_config(env={"API_GATEWAY_CACHE_REDIS_URL": "redis://cache:6379/1"})
    assert config.cache.redis is not None and config.cache.redis.url == "redis://cache:6379/1"
    assert not config.redis.configured
    config = load_config(env={"API_GATEWAY_CACHE_REDIS_SENTINEL_NODES": "s1:26379,s2:26379",
                              "API_GATEWAY_CACHE_REDIS_SENTINEL_MASTER": "cache",
                              "API_GATEWAY_CACHE_REDIS_SENTINEL_PASSWORD": "secret"})
    sentinel = config.cache.redis.sentinel if config.cache.redis is not None else None
    assert sentinel is not None and (sentinel.nodes, sentinel.master, sentinel.password) == (
        ["s1:26379", "s2:26379"], "cache", "secret")
    assert load_config(env={}).cache.redis is None
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    environment = readme[readme.index("### Environment"):]
    for name in ("URL", "PREFIX", "CLUSTER_NODES", "SENTINEL_NODES", "SENTINEL_MASTER", "SENTINEL_PASSWORD"):
        assert f"| `API_GATEWAY_CACHE_REDIS_{name}` |" in environment, name


def test_a_cache_redis_that_names_no_server_is_refused() -> None:
    # Else the cache would sit in each process's memory, shared with no replica.
    with pytest.raises(ConfigError, match="cache.redis: names no Redis"):
        load_config(env={"API_GATEWAY_CACHE_REDIS_PREFIX": "cache"})
    with pytest.raises(ConfigError, match="cache.redis: names no Redis"):
        parse_config({"cache": {"redis": {"prefix": "x"}}}, {})


@pytest.mark.parametrize(("redis", "field", "why"), [
    ({"cluster_nodes": ["nohost"]}, "redis.cluster_nodes", "expected host:port"),
    ({"cluster_nodes": []}, "redis.cluster_nodes", "at least one node"),
    ({"cluster_nodes": ["redis://a:1", "rediss://b:2"]}, "redis.cluster_nodes", "one scheme"),
    ({"cluster_nodes": ["http://a:1"]}, "redis.cluster_nodes", "redis:// or rediss://"),
    ({"sentinel": {"master": "m"}}, "redis.sentinel.nodes", "Field required"),
    ({"cluster_nodes": ["a:1"], "sentinel": {"nodes": ["b:2"]}}, "redis", "not both"),
])
def test_bad_redis_topologies_are_named(redis: dict, field: str, why: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"redis": redis}, {}, "gateway.yaml")
    line = next(line for line in str(error.value).splitlines() if line.strip().startswith(f"{field}:"))
    assert why in line


def test_the_readmes_configuration_reference_loads_as_written() -> None:
    from pathlib import Path

    import yaml

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    reference = readme[readme.index("## Configuration reference"):]
    start = reference.index("```yaml\n") + len("```yaml\n")
    config = parse_config(yaml.safe_load(reference[start:reference.index("```", start)]), {})
    assert config.admin.tokens == [] and config.router.routes[-1].cors is not None


@pytest.mark.parametrize(("section", "field"), [
    ({"router": {"routes": [{"path": "/a", "target": "http://b", "websocket": {"idle_timeout": 0}}]}},
     "router.routes.0.websocket.idle_timeout"),
    ({"router": {"routes": [{"path": "/a", "target": "http://b", "websocket": {"enable": True}}]}},
     "router.routes.0.websocket.enable"),
    ({"server": {"websocket": {"max_message_size": 0}}}, "server.websocket.max_message_size"),
])
def test_bad_websocket_settings_are_named(section: dict, field: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config(section, {}, "gateway.yaml")
    assert field in str(error.value)


def test_websockets_are_off_unless_a_route_turns_them_on() -> None:
    config = parse_config({"router": {"routes": [{"path": "/a", "target": "http://b"}]}}, {})
    assert config.router.routes[0].websocket.enabled is False
    assert config.server.websocket.max_message_size == 1024 * 1024


def test_the_cache_mode_from_the_environment_and_a_bad_one_named() -> None:
    assert parse_config({}, {}).cache.mode == "seed"
    assert parse_config({}, {"API_GATEWAY_CACHE_MODE": "rfc9111"}).cache.mode == "rfc9111"
    with pytest.raises(ConfigError, match="cache.mode"):
        parse_config({}, {"API_GATEWAY_CACHE_MODE": "strict"})
    with pytest.raises(ConfigError, match=r"router.routes.0.cache.mode"):
        parse_config({"router": {"routes": [{"path": "/a", "target": "http://b", "cache": {"mode": "x"}}]}}, {})
