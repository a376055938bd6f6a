"""ConfigSync on the memory store: the file as baseline, the API's changes on top, in order."""

from __future__ import annotations

import pytest

from app.config import RouteSpec, parse_config
from app.control.config_sync import ConfigSync, route_document
from app.router import ApiGatewayRouter
from app.store import MemoryStore


def _sync(routes: list[dict]) -> ConfigSync:
    config = parse_config({"router": {"routes": routes}}, {})
    store = MemoryStore(prefix="t")
    return ConfigSync(config, ApiGatewayRouter(config.router.routes), store)


FILE_ROUTES = [
    {"id": "one", "path": "/one", "target": "http://127.0.0.1:1"},
    {"id": "two", "path": "/two", "target": "http://127.0.0.1:2"},
]


def _ids(sync: ConfigSync) -> list[str]:
    return [route.key for route in sync.router.routes]


async def test_starts_with_the_file_at_version_zero() -> None:
    sync = _sync(FILE_ROUTES)
    await sync.start()
    assert sync.version == 0 and _ids(sync) == ["one", "two"]
    assert sync.source("one") == "config"


async def test_added_routes_come_after_the_file_oldest_first_and_changes_stay_in_place() -> None:
    sync = _sync(FILE_ROUTES)
    await sync.start()
    await sync.put(RouteSpec(id="new-b", path="/b", target="http://127.0.0.1:3"))
    await sync.put(RouteSpec(id="new-a", path="/a", target="http://127.0.0.1:4"))
    await sync.put(RouteSpec(id="one", path="/one", target="http://127.0.0.1:9"))
    assert sync.version == 3
    assert _ids(sync) == ["one", "two", "new-b", "new-a"]
    assert sync.router.route_request("/one", "GET") == "http://127.0.0.1:9"
    assert sync.source("one") == "api" and sync.source("two") == "config"


async def test_delete_of_a_file_route_is_kept_and_of_an_added_route_forgotten() -> None:
    sync = _sync(FILE_ROUTES)
    await sync.start()
    await sync.put(RouteSpec(id="added", path="/added", target="http://127.0.0.1:3"))
    await sync.delete("added")
    await sync.delete("one")
    assert _ids(sync) == ["two"]
    assert set(sync.overrides) == {"one"}  # a tombstone for the file's route only
    assert sync.router.route_request("/one", "GET") is None


async def test_putting_back_the_files_spec_drops_the_override() -> None:
    sync = _sync(FILE_ROUTES)
    await sync.start()
    original = sync.baseline["two"]
    await sync.put(original.model_copy(update={"enabled": False}))
    assert sync.router.route_request("/two", "GET") is None
    await sync.put(original.model_copy(update={"enabled": True}))
    assert sync.overrides == {}
    assert sync.router.route_request("/two", "GET") == "http://127.0.0.1:2"


async def test_a_rename_replaces_the_old_key() -> None:
    sync = _sync(FILE_ROUTES)
    await sync.start()
    await sync.put(RouteSpec(id="uno", path="/one", target="http://127.0.0.1:1"), replaces="one")
    assert _ids(sync) == ["two", "uno"]


async def test_reset_returns_to_the_file() -> None:
    sync = _sync(FILE_ROUTES)
    await sync.start()
    await sync.delete("one")
    await sync.put(RouteSpec(id="x", path="/x", target="http://127.0.0.1:3"))
    version = await sync.reset()
    assert version == 3 and sync.version == 3
    assert _ids(sync) == ["one", "two"] and sync.overrides == {}


async def test_unchanged_routes_keep_their_compiled_route() -> None:
    sync = _sync(FILE_ROUTES)
    await sync.start()
    before = sync.router.route_manager.get("two")
    await sync.put(RouteSpec(id="x", path="/x", target="http://127.0.0.1:3"))
    assert sync.router.route_manager.get("two") is before


async def test_a_second_sync_on_the_same_store_loads_the_changes() -> None:
    """What a replica's restart does: a new ConfigSync reads what the first one wrote."""
    first = _sync(FILE_ROUTES)
    await first.start()
    await first.put(RouteSpec(id="x", path="/x", target="http://127.0.0.1:3"))
    await first.delete("one")
    second = ConfigSync(first.baseline_config, ApiGatewayRouter(first.baseline_config.router.routes), first.store)
    await second.start()
    assert second.version == 2 and _ids(second) == ["two", "x"]


async def test_an_unreadable_override_keeps_the_files_route() -> None:
    sync = _sync(FILE_ROUTES)
    await sync.start()
    await sync.store.call("config_change", sync.keys, [sync.channel, "set", "one", '{"path": "no-slash"}'])
    await sync.refresh()
    assert _ids(sync) == ["one", "two"] and sync.version == 1


@pytest.mark.parametrize("route", [
    {"path": "/a", "target": "http://h:1"},
    {"path": "/a/{id}", "method": ["GET", "PUT"], "targets": [{"url": "http://h:1", "weight": 3}, {"url": "http://h:2"}],
     "timeout": {"read": 2.5}, "cache": {"ttl": 9}, "strip_prefix": True},
])
def test_route_document_round_trips(route: dict) -> None:
    spec = RouteSpec.model_validate(route)
    again = RouteSpec.model_validate(route_document(spec))
    assert route_document(again) == route_document(spec)
    assert again.targets == spec.targets and again.key == spec.key
