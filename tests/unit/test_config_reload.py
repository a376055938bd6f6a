"""Reloading in one process: what is kept for a restart, and what a replaced config leaves behind
(nothing: its components are closed and their subscriptions gone once its requests are answered)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import yaml

from app.config import parse_config
from app.gateway import Gateway
from app.reload import RESTART_ONLY, ConfigFile, keep_restart_only


def test_restart_only_settings_keep_their_running_values() -> None:
    running = parse_config({"server": {"port": 8080}, "router": {"routes": [{"path": "/a", "target": "http://a"}]}})
    loaded = parse_config({"server": {"port": 9090, "max_body_size": 10, "limits": {"max_fields": 5}},
                           "redis": {"url": "redis://elsewhere:6379"}, "admin": {"listen": {"port": 9999}},
                           "cache": {"ttl": 7, "redis": {"url": "redis://cache:6379"}, "buckets": 4},
                           "router": {"routes": [{"path": "/b", "target": "http://b"}]}})
    config, changed = keep_restart_only(running, loaded)
    assert changed == ["server.port", "server.limits", "redis", "cache.redis", "cache.buckets", "admin.listen"]
    assert config.cache.redis is None and config.cache.buckets == 16  # another layout: only at start
    assert config.server.port == 8080 and config.server.limits == running.server.limits
    assert config.redis == running.redis and config.admin.listen is None
    # Everything else is the file's.
    assert config.server.max_body_size == 10 and config.cache.ttl == 7
    assert [r.path for r in config.router.routes] == ["/b"]
    assert keep_restart_only(running, running) == (running, [])
    for dotted in RESTART_ONLY:  # each names a real setting
        node = running
        for part in dotted.split("."):
            node = getattr(node, part)


def test_tls_is_reread_but_its_listener_settings_wait_for_a_restart(tmp_path: Path) -> None:
    import trustme

    ca = trustme.CA()
    files = {}
    for name in ("a", "b"):
        leaf = ca.issue_cert("localhost")
        files[name] = (tmp_path / f"{name}.crt", tmp_path / f"{name}.key")
        leaf.cert_chain_pems[0].write_to_path(str(files[name][0]))
        leaf.private_key_pem.write_to_path(str(files[name][1]))
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    def tls(name: str, **more: str) -> dict[str, str]:
        return {"cert": str(files[name][0]), "key": str(files[name][1]), **more}

    running = parse_config({"server": {"tls": tls("a")}})
    # New files: applied (read again by the reload), nothing to report.
    config, changed = keep_restart_only(running, parse_config({"server": {"tls": tls("b")}}))
    assert changed == [] and config.server.tls is not None and config.server.tls.cert == str(files["b"][0])
    # Mutual TLS and the minimum version: the listener's context keeps its own.
    loaded = parse_config({"server": {"tls": tls("b", client_ca=str(ca_file), min_version="TLSv1.3")}})
    config, changed = keep_restart_only(running, loaded)
    assert changed == ["server.tls.client_ca", "server.tls.min_version"]
    assert config.server.tls is not None and config.server.tls.client_ca is None
    assert config.server.tls.min_version == "TLSv1.2" and config.server.tls.cert == str(files["b"][0])
    # HTTPS off, or on: the listener as it is.
    config, changed = keep_restart_only(running, parse_config({}))
    assert changed == ["server.tls"] and config.server.tls == running.server.tls
    config, changed = keep_restart_only(parse_config({}), running)
    assert changed == ["server.tls"] and config.server.tls is None


async def test_a_replaced_config_leaves_no_component_running(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    raw = {"server": {"access_log": False},
           "router": {"routes": [{"path": "/a", "target": "http://127.0.0.1:9", "health_check": {"interval": 60}}]}}
    path.write_text(yaml.safe_dump(raw))
    gateway = Gateway(parse_config(raw, {}), ConfigFile(str(path), env={}))
    await gateway.start()
    try:
        store = gateway.store
        subscribed = {channel: len(handlers) for channel, handlers in store._handlers.items()}
        reconnecting = len(store._reconnect_handlers)
        first = gateway.generation
        first.proxy_app.in_flight = 1  # a request of the first config still running

        path.write_text(yaml.safe_dump({**raw, "cache": {"ttl": 9}}))
        report = await gateway.reloader.reload("test")
        assert report.applied and report.version == 2
        assert gateway.orchestrator is not first.orchestrator
        assert gateway.orchestrator.cache_manager.settings.ttl == 9
        assert gateway.proxy is gateway.generation.proxy_app and gateway.control is gateway.generation.control
        await asyncio.sleep(0.2)
        assert first in gateway._retiring  # waits for its request
        assert first.orchestrator.health_checker._task is not None

        first.proxy_app.in_flight = 0
        for _ in range(100):
            if first not in gateway._retiring:
                break
            await asyncio.sleep(0.02)
        assert first not in gateway._retiring
        assert first.orchestrator.health_checker._task is None
        assert first.orchestrator.circuit_breaker_manager._task is None
        # The second config's components subscribed as the first's did; the first's are gone.
        assert {c: len(h) for c, h in store._handlers.items()} == subscribed
        assert len(store._reconnect_handlers) == reconnecting
    finally:
        await gateway.close()
