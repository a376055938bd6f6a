"""Config sync: the config file is the baseline; route changes made through the admin API are kept
in the store on top of it and reach every replica.

The store holds a hash of overrides (route key -> that route's spec, or null for a route of the file
that was deleted) and a version counter. Both change only through ``lua/config_change.lua``, which
also publishes the new version. A replica applies a change when the message arrives, and polls the
version every ``poll_interval`` seconds, so one that missed a message (a broken connection) catches
up within that interval. The overrides are loaded at start, so they survive any restart; a replica
that cannot reach the store at start serves the file's routes and catches up when it can.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import ValidationError

from app.background import stop_tasks
from app.config import GatewayConfig, RouteSpec
from app.control.config_protocol import (DELETED, RESET, REVERT, SET, change_call, config_keys, decode_override,
                                         read_call, read_reply)
from app.observability.metrics import STORE_ERRORS
from app.routing.router import ApiGatewayRouter
from app.store import Store, StoreError

log = logging.getLogger("apigw.config")

Source = Literal["config", "api"]


def route_document(spec: RouteSpec) -> dict[str, Any]:
    """A route as the config file would have it, without defaults. ``target``/``weight`` are folded
    into ``targets`` by the model, so only ``targets`` is kept (giving both is an error)."""
    document = spec.model_dump(mode="json", exclude_defaults=True)
    document.pop("target", None)
    document.pop("weight", None)
    return document


@dataclass(frozen=True, slots=True)
class Override:
    version: int
    spec: RouteSpec | None  # None: the file's route of this key is deleted


class ConfigSync:
    def __init__(self, baseline: GatewayConfig, router: ApiGatewayRouter, store: Store,
                 poll_interval: float = 0.5) -> None:
        self.baseline_config = baseline
        self.baseline = {spec.key: spec for spec in baseline.router.routes}
        self.router = router
        self.store = store
        self.poll_interval = poll_interval
        self.version = 0
        self.overrides: dict[str, Override] = {}
        self.keys = config_keys(store)
        self.channel = store.channel("config")
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None
        self._logged_failure_at = 0.0

    # -- life cycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        self.store.subscribe(self.channel, self._on_message)
        self.store.on_reconnect(self._on_reconnect)
        try:
            await self.refresh()
        except StoreError as error:
            self._failed(error)
        if self.store.shared:  # the memory store has no other replica to miss a message from
            self._watcher = asyncio.create_task(self._watch(), name="apigw-config-sync")

    async def close(self) -> None:
        await stop_tasks([self._watcher])
        self._watcher = None

    def _on_message(self, message: bytes) -> None:
        try:
            version = int(message)
        except ValueError:
            return
        if version != self.version:
            self._wake.set()

    async def _on_reconnect(self) -> None:
        self._wake.set()

    async def _watch(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            except TimeoutError:
                pass
            woken = self._wake.is_set()
            self._wake.clear()
            try:
                if woken or await self._stored_version() != self.version:
                    await self.refresh()
            except StoreError as error:
                self._failed(error)
            except Exception:  # a bug here must not end the sync for the life of the process
                log.exception("config sync failed")

    def _failed(self, error: StoreError) -> None:
        STORE_ERRORS.labels("config").inc()
        now = time.monotonic()
        if now - self._logged_failure_at > 10:
            self._logged_failure_at = now
            log.warning("config sync: store unavailable (%s); serving config version %d", error, self.version)

    async def _stored_version(self) -> int:
        raw = await self.store.get(self.keys.version)
        return int(raw) if raw else 0

    # -- reading --------------------------------------------------------------------------------

    async def refresh(self) -> bool:
        """Read the overrides and apply them when their version differs; True when it did."""
        async with self._lock:
            read = read_reply((await self.store.run(read_call(self.keys)))[0])
            if read.version == self.version and self.version != 0:
                return False
            overrides = {}
            for key, document in read.documents.items():
                override = self._parse(key, document)
                if override is not None:
                    overrides[key] = override
            self._apply(read.version, overrides)
            return True

    @staticmethod
    def _parse(key: str, raw: bytes) -> Override | None:
        try:
            stored = decode_override(raw)
            spec = None if stored.spec is None else RouteSpec.model_validate(stored.spec)
            return Override(stored.version, spec)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, ValidationError) as error:
            # Written by another version of the gateway, or by hand: keep the file's route.
            log.error("config sync: ignoring the stored override of route %r: %s", key, error)
            return None

    def _apply(self, version: int, overrides: dict[str, Override]) -> None:
        self.overrides = overrides
        self.version = version
        self.router.sync_routes(self.effective_routes())
        log.info("config version %d applied: %d route(s), %d changed through the API",
                 version, len(self.router.routes), len(overrides))

    def rebase(self, baseline: GatewayConfig, router: ApiGatewayRouter) -> None:
        """A reloaded config file is the new baseline and ``router`` (built from it) the one to keep
        in step: the API's changes kept in the store apply on top of it at once."""
        self.baseline_config = baseline
        self.baseline = {spec.key: spec for spec in baseline.router.routes}
        self.router = router
        router.sync_routes(self.effective_routes())

    def effective_routes_over(self, config: GatewayConfig) -> list[RouteSpec]:
        """The routes ``config`` would give with the API's changes kept now in place."""
        return self.effective_routes({spec.key: spec for spec in config.router.routes})

    def effective_routes(self, baseline: dict[str, RouteSpec] | None = None) -> list[RouteSpec]:
        """The file's routes in their order with the API's changes in place, then the routes the API
        added, oldest first (the first route of a method and path wins a tie)."""
        baseline = self.baseline if baseline is None else baseline
        routes = []
        for key, spec in baseline.items():
            override = self.overrides.get(key)
            if override is None:
                routes.append(spec)
            elif override.spec is not None:
                routes.append(override.spec)
        added = [(o.version, key, o.spec) for key, o in self.overrides.items()
                 if key not in baseline and o.spec is not None]
        routes.extend(spec for _, _, spec in sorted(added, key=lambda item: item[:2]))
        return routes

    def source(self, key: str) -> Source:
        return "api" if key in self.overrides else "config"

    # -- changing -------------------------------------------------------------------------------

    async def put(self, spec: RouteSpec, replaces: str | None = None) -> int:
        """Add or change a route; ``replaces`` is its former key when the change renamed it."""
        pairs = []
        if replaces is not None and replaces != spec.key:
            pairs.append((replaces, self._removal(replaces)))
        in_file = self.baseline.get(spec.key)
        same_as_file = in_file is not None and route_document(in_file) == route_document(spec)
        pairs.append((spec.key, REVERT if same_as_file else orjson.dumps(route_document(spec)).decode()))
        return await self._change(SET, pairs)

    async def delete(self, key: str) -> int:
        return await self._change(SET, [(key, self._removal(key))])

    async def reset(self) -> int:
        """Forget every change made through the API: the config file's routes alone again."""
        return await self._change(RESET, [])

    def _removal(self, key: str) -> str:
        # A route of the file needs a tombstone; one the API added just goes.
        return DELETED if key in self.baseline else REVERT

    async def _change(self, mode: str, pairs: list[tuple[str, str]]) -> int:
        version = int((await self.store.run(change_call(self.keys, self.channel, mode, pairs)))[0])
        await self.refresh()  # this replica shows its own change at once
        return version
