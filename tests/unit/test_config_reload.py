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
                           "cache": {"ttl": 7}, "router": {"routes": [{"path": "/b", "target": "http://b"}]}})
    config, changed = keep_restart_only(running, loaded)
    assert changed == ["server.port", "server.limits", "redis", "admin.listen"]
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
