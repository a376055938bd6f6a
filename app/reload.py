"""Reloading the config file without a restart (SIGHUP, ``POST /_gateway/config/reload``).

The file is read and validated first: an invalid one changes nothing and the report names each bad
field. A valid one is handed to ``apply`` (the composition root builds every part anew from it and
swaps them in at once). Settings that only a new process can take (the listeners, the store, the
upstream pool) keep their running values; the report lists those the file changed, as not applied.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from app.config import ConfigError, GatewayConfig, load_config

log = logging.getLogger("apigw.reload")

# Dotted paths of the settings read once, when the process starts: its sockets and their protocol
# (server.host, server.port, server.limits, server.paths, admin.listen and what it serves), the store
# and the connection pools, the access log's writer, the cache's bucket layout.
RESTART_ONLY: tuple[str, ...] = (
    "server.host", "server.port", "server.limits", "server.paths", "server.upstream_max_connections",
    "server.upstream_keepalive", "server.access_log", "server.websocket", "redis", "cache.redis", "cache.buckets",
    "admin.listen", "admin.metrics_on_data_port",
)


@dataclass(frozen=True, slots=True)
class ReloadReport:
    applied: bool
    source: str  # the file read, or "environment" without one
    version: int  # the running config's number: 1 at start, one more for each reload applied
    not_applied: list[str] = field(default_factory=list)  # restart-only settings the file changed
    problems: list[tuple[str, str]] = field(default_factory=list)  # (field, reason) of a refused file
    error: str | None = None

    def document(self) -> dict[str, Any]:
        answer: dict[str, Any] = {"applied": self.applied, "source": self.source, "version": self.version,
                                  "not_applied": self.not_applied}
        if not self.applied:
            answer["error"] = self.error
            answer["fields"] = [{"field": path, "reason": reason} for path, reason in self.problems]
        return answer


def _at(config: BaseModel, dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def _with(config: BaseModel, dotted: str, value: Any) -> Any:
    head, _, rest = dotted.partition(".")
    return config.model_copy(update={head: _with(getattr(config, head), rest, value) if rest else value})


def keep_restart_only(running: GatewayConfig, loaded: GatewayConfig) -> tuple[GatewayConfig, list[str]]:
    """``loaded`` with the running values of the restart-only settings, and the paths of those it
    would have changed."""
    changed = []
    for dotted in RESTART_ONLY:
        if _at(loaded, dotted) != _at(running, dotted):
            changed.append(dotted)
            loaded = _with(loaded, dotted, _at(running, dotted))
    # TLS: the certificate and key are read again; HTTPS on or off, the client CA and the minimum
    # version are the listener's own (its context is made once).
    now, new = running.server.tls, loaded.server.tls
    if (now is None) != (new is None):
        changed.append("server.tls")
        loaded = _with(loaded, "server.tls", now)
    elif now is not None and new is not None:
        for name in ("client_ca", "min_version"):
            if getattr(new, name) != getattr(now, name):
                changed.append(f"server.tls.{name}")
                loaded = _with(loaded, f"server.tls.{name}", getattr(now, name))
    return loaded, changed


ApplyConfig = Callable[[GatewayConfig], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """Where the running config came from, to be read again: ``path``, or ``$API_GATEWAY_CONFIG``
    when None (as ``load_config`` reads it at start); the environment's overrides apply again."""

    path: str | None
    env: Mapping[str, str] | None = None  # None: os.environ


class Reloader:
    """Reads the config file again on each ``reload``; one reload at a time."""

    def __init__(self, file: ConfigFile, running: GatewayConfig, apply: ApplyConfig) -> None:
        self.path = file.path
        self.env = file.env
        self.running = running
        self.apply = apply
        self.version = 1
        self._lock = asyncio.Lock()

    @property
    def source(self) -> str:
        env = os.environ if self.env is None else self.env
        return str(self.path or env.get("API_GATEWAY_CONFIG") or "environment")

    async def reload(self, trigger: str) -> ReloadReport:
        async with self._lock:
            source = self.source
            try:
                loaded = load_config(self.path, self.env)
            except ConfigError as error:
                log.error("config reload (%s) refused, the running config stays: %s", trigger, error)
                return ReloadReport(False, source, self.version, problems=error.problems, error=str(error))
            config, not_applied = keep_restart_only(self.running, loaded)
            try:
                await self.apply(config)
            except ConfigError as error:  # a certificate that no longer loads
                log.error("config reload (%s) refused, the running config stays: %s", trigger, error)
                return ReloadReport(False, source, self.version, problems=error.problems, error=str(error))
            except Exception as error:  # e.g. a cache strategy that cannot be imported
                log.exception("config reload (%s) failed while building the new config; the running config stays",
                              trigger)
                return ReloadReport(False, source, self.version, error=f"{source}: {error}")
            self.running = config
            self.version += 1
            if not_applied:
                log.warning("config reload (%s): changed settings that need a restart were not applied: %s",
                            trigger, ", ".join(not_applied))
            log.info("config reload (%s): %s applied as version %d, %d route(s) in the file",
                     trigger, source, self.version, len(config.router.routes))
            return ReloadReport(True, source, self.version, not_applied)
