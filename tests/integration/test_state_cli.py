"""``python -m app state`` against a real Redis that a real gateway wrote, and the redis-cli
commands it prints (the README's) showing the same keys."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from app.config import parse_config
from tests.support import ROOT, BackendServer, GatewayThread

pytestmark = pytest.mark.redis

TOKEN = "state-cli-admin-token"


def _state(redis_url: str, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "app", "state", *args, "--redis-url", redis_url, "--prefix", prefix],
                          capture_output=True, text=True, timeout=30, cwd=ROOT, env={"PATH": "/usr/bin:/bin"})


@pytest.fixture
def busy_gateway(redis_url: str, key_prefix: str, redis_client: object, backend: BackendServer) -> Iterator[str]:
    config = parse_config({"redis": {"url": redis_url, "prefix": key_prefix}, "admin": {"token": TOKEN},
                           "rate_limiter": {"client_id_trusted_from": ["127.0.0.0/8"]},  # the test's clients
                           "router": {"routes": [{"id": "a", "path": "/a/*", "target": backend.url}]}}, {})
    with GatewayThread(config) as gateway:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.post(gateway.url + "/_gateway/routes", headers=auth,
                          json={"id": "b", "path": "/b", "target": backend.url,
                                "health_check": {"path": "/", "interval": 0.2}}).status_code == 201
        assert httpx.delete(gateway.url + "/_gateway/routes/a", headers=auth).status_code == 200
        assert httpx.post(gateway.url + "/_gateway/routes", headers=auth,
                          json={"id": "a", "path": "/a/*", "target": backend.url, "strip_prefix": True}).status_code == 201
        assert httpx.put(gateway.url + "/_gateway/clients/alice/limits", headers=auth,
                         json={"requests_per_minute": 10, "burst_size": 5}).status_code == 200
        assert httpx.post(gateway.url + "/_gateway/api-keys", headers=auth, json={"client_id": "bob"}).status_code == 201
        assert httpx.post(gateway.url + "/_gateway/circuits/b/open", headers=auth,
                          json={"seconds": 600}).status_code == 200
        for client in ("alice", "alice", "alice", "bob"):
            httpx.get(gateway.url + "/a/x", headers={"X-Client-ID": client})
        time.sleep(1.5)  # client activity reaches Redis about once a second
        yield gateway.url


def test_state_shows_config_cache_and_clients(busy_gateway: str, redis_url: str, key_prefix: str) -> None:
    run = _state(redis_url, key_prefix, "--json")
    assert run.returncode == 0, run.stderr
    state = json.loads(run.stdout)
    config = state["config"]["data"]
    assert config["version"] == 3
    assert config["route_overrides"]["b"] == {"version": 1, "route": {
        "id": "b", "path": "/b", "targets": [{"url": config["route_overrides"]["b"]["route"]["targets"][0]["url"]}],
        "health_check": {"interval": 0.2}}}
    assert config["route_overrides"]["a"]["version"] == 3  # deleted, then added again (changed)
    assert config["route_overrides"]["a"]["route"]["strip_prefix"] is True
    cache = state["cache"]["data"]
    assert (cache["hits"], cache["misses"], cache["entries"]) == (3, 1, 1)
    assert 0 < cache["bytes"] < 10_000  # one small answer's head and body
    assert cache["hit_rate"] == 0.75
    assert state["clients"]["data"][:2] == [{"client": "alice", "requests": 3}, {"client": "bob", "requests": 1}]
    limits = state["ratelimits"]["data"]
    assert limits["client_configs"] == {"alice": {"requests_per_minute": 10, "burst_size": 5}}
    assert [k["client_id"] for k in limits["api_keys"]] == ["bob"] and len(limits["api_keys"][0]["hash"]) == 64

    alice = json.loads(_state(redis_url, key_prefix, "client", "alice", "--json").stdout)["client"]["data"]
    assert alice["limits"]["requests_per_minute"] == 10
    counters = alice["counters"]
    assert (counters["requests_this_minute"], counters["requests_this_hour"]) == (3, 3)
    assert 2 <= counters["burst_tokens"] <= 3  # 5 - 3, refilled at one per 6 s meanwhile
    assert alice["keys"]["m"] == f"{key_prefix}:rl:{{alice}}:m"
    circuits = state["circuits"]["data"]
    assert circuits["b"]["state"] == "open" and 590 < circuits["b"]["open_seconds_left"] <= 600
    assert circuits["b"]["times_opened"] == 1
    assert circuits["a"]["state"] == "closed"

    assert state["health"]["data"] == {"b": {config["route_overrides"]["b"]["route"]["targets"][0]["url"]:
                                             {"healthy": True}}}

    missing = _state(redis_url, key_prefix, "client")
    assert missing.returncode == 1 and "which client" in missing.stderr

    text = _state(redis_url, key_prefix, "cache")
    assert text.returncode == 0 and '"hit_rate": 0.75' in text.stdout
    host, port = redis_url.split("//", 1)[1].split("/")[0].rsplit(":", 1)  # the hints reach the Redis read
    # The fullest of the cache's buckets (the one entry's): {c<bucket>}
    assert re.search(rf"redis-cli -h {host} -p {port} HGETALL '{key_prefix}:cache:{{c\d+}}:stats'", text.stdout)


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_the_printed_redis_cli_commands_show_the_same_keys(busy_gateway: str, redis_url: str, key_prefix: str) -> None:
    state = json.loads(_state(redis_url, key_prefix, "--json").stdout)
    state.update(json.loads(_state(redis_url, key_prefix, "client", "alice", "--json").stdout))
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    assert len(state) == 7
    for section in state.values():
        for command in section["redis_cli"]:
            shown = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=10)  # as printed
            # A circuit that never failed has no hash yet (closed); everything else was written.
            assert shown.returncode == 0 and (shown.stdout.strip() or ":cb:" in command), command
            assert "ERR" not in shown.stdout and "WRONGTYPE" not in shown.stdout, (command, shown.stdout)

    # The README's table of keys: every command without a placeholder shows something here too.
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Redis keys", 1)[1].split("\n## ", 1)[0]
    commands = [c for c in re.findall(r"`(redis-cli [^`]+)`", table) if "<" not in c]
    assert len(commands) >= 6
    for command in commands:
        command = command.replace("'apigw:", f"'{key_prefix}:").replace("redis-cli ", f"redis-cli -p {port} ", 1)
        shown = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=10)
        assert shown.returncode == 0 and "ERR" not in shown.stdout, command
        # The README's example route ("svc") is not in this test's Redis.
        assert shown.stdout.strip() or "{svc}" in command, command


def test_state_without_redis_says_so(tmp_path: object) -> None:
    run = subprocess.run([sys.executable, "-m", "app", "state"], capture_output=True, text=True, timeout=30, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 1 and "no Redis configured" in run.stderr
    down = subprocess.run([sys.executable, "-m", "app", "state", "--redis-url", "redis://127.0.0.1:1/0"],
                          capture_output=True, text=True, timeout=30, cwd=ROOT, env={"PATH": "/usr/bin:/bin"})
    assert down.returncode == 1 and "cannot read Redis" in down.stderr and "Traceback" not in down.stderr


@pytest.mark.parametrize(("url", "command"), [
    ("redis://127.0.0.1:6390/0", "redis-cli -h 127.0.0.1 -p 6390"),
    ("redis://cache.internal", "redis-cli -h cache.internal -p 6379"),
    ("rediss://u:secret@cache.internal:6380/2", "redis-cli -h cache.internal -p 6380 --tls -n 2 --user u --askpass"),
    ("unix:///run/redis.sock?db=1", "redis-cli -s /run/redis.sock -n 1"),
])
def test_the_redis_cli_hint_reaches_the_redis_that_was_read(url: str, command: str) -> None:
    from app.tools.state import redis_cli

    assert redis_cli(url) == command  # and never prints the password


def test_state_reads_the_master_a_sentinel_group_names(redis_sentinel: object, backend: BackendServer,
                                                        tmp_path: object) -> None:
    from pathlib import Path

    from tests.redis_topologies import SentinelProcesses

    assert isinstance(redis_sentinel, SentinelProcesses) and isinstance(tmp_path, Path)
    prefix = f"st{time.monotonic_ns() % 10**8}"
    redis = {"sentinel": {"nodes": redis_sentinel.sentinel_addresses, "master": redis_sentinel.master_name},
             "prefix": prefix}
    config = parse_config({"redis": redis, "admin": {"token": TOKEN},
                           "router": {"routes": [{"id": "a", "path": "/a/*", "target": backend.url}]}}, {})
    with GatewayThread(config) as gateway:
        assert httpx.post(gateway.url + "/_gateway/routes", headers={"Authorization": f"Bearer {TOKEN}"},
                          json={"id": "b", "path": "/b", "target": backend.url}).status_code == 201
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps({"redis": {"prefix": prefix}}))
    # The group named by the environment, as a deployment would (the config file names none).
    env = {"PATH": "/usr/bin:/bin", "API_GATEWAY_REDIS_SENTINEL_NODES": ",".join(redis_sentinel.sentinel_addresses),
           "API_GATEWAY_REDIS_SENTINEL_MASTER": redis_sentinel.master_name}
    run = subprocess.run([sys.executable, "-m", "app", "state", "config", "--config", str(path), "--json"],
                         capture_output=True, text=True, timeout=30, cwd=ROOT, env=env)
    assert run.returncode == 0, run.stderr
    section = json.loads(run.stdout)["config"]
    assert section["data"]["version"] == 1 and "b" in section["data"]["route_overrides"]
    master_port = redis_sentinel.master_address().rsplit(":", 1)[1]
    assert section["redis_cli"] and all(f"-p {master_port} " in c for c in section["redis_cli"])
    if shutil.which("redis-cli"):
        for command in section["redis_cli"]:
            shown = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=10)
            assert shown.returncode == 0 and shown.stdout.strip() and "ERR" not in shown.stdout, command

    # No sentinel answering: a clear error, no traceback.
    env["API_GATEWAY_REDIS_SENTINEL_NODES"] = "127.0.0.1:1"
    down = subprocess.run([sys.executable, "-m", "app", "state", "--config", str(path)],
                          capture_output=True, text=True, timeout=30, cwd=ROOT, env=env)
    assert down.returncode == 1 and "cannot read Redis" in down.stderr and "Traceback" not in down.stderr, down.stderr


def test_state_reads_the_cache_on_its_own_redis(redis_url: str, key_prefix: str, redis_client: object,
                                                 redis_cluster: object, backend: BackendServer,
                                                 tmp_path: object) -> None:
    """cache.redis on a Redis Cluster, the rest on the one Redis: the cache section is read on the
    cluster, with ``redis-cli -c`` commands that reach it; the others stay on redis."""
    from pathlib import Path

    from tests.redis_topologies import RedisClusterProcesses

    assert isinstance(redis_cluster, RedisClusterProcesses) and isinstance(tmp_path, Path)
    tree = {"redis": {"url": redis_url, "prefix": key_prefix},
            "cache": {"redis": {"cluster_nodes": redis_cluster.seeds[:1], "prefix": f"c{key_prefix}"}},
            "router": {"routes": [{"id": "a", "path": "/a/*", "target": backend.url}]}}
    with GatewayThread(parse_config(tree, {})) as gateway:
        for _ in range(3):
            httpx.get(gateway.url + "/a/x")
        gateway.run(gateway.gateway.orchestrator.cache_stage.filler.settled())
    path = tmp_path / "gateway.yaml"
    path.write_text(json.dumps(tree))
    run = subprocess.run([sys.executable, "-m", "app", "state", "--config", str(path), "--json"],
                         capture_output=True, text=True, timeout=30, cwd=ROOT, env={"PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    state = json.loads(run.stdout)
    cache = state["cache"]
    assert (cache["data"]["hits"], cache["data"]["misses"], cache["data"]["entries"]) == (2, 1, 1)
    cluster_port = redis_cluster.seeds[0].rsplit(":", 1)[1]
    assert cache["redis_cli"] and all(c.startswith(f"redis-cli -c -h 127.0.0.1 -p {cluster_port} ")
                                      for c in cache["redis_cli"])
    main_port = redis_url.rsplit(":", 1)[1].split("/")[0]
    assert all(f"-p {main_port} " in c and " -c " not in c for c in state["config"]["redis_cli"])
    if shutil.which("redis-cli"):
        for command in cache["redis_cli"]:
            shown = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=10)
            assert shown.returncode == 0 and shown.stdout.strip() and "ERR" not in shown.stdout, command
            assert "MOVED" not in shown.stdout, command
