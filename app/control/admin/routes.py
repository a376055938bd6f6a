"""Routes through the admin API: list, add, change, enable/disable, delete.

A route has the shape it has in the config file (``app.config.RouteSpec``) and is addressed by its
key: its ``id`` when it has one, else ``"<METHODS> <path>"`` (e.g. ``GET /api/v1/agents``,
URL-encoded in the path). Every change goes through ``ConfigSync``: kept in the store on top of the
config file, applied by every replica within a second.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo

from app.control.admin.validation import check_numbers
from app.auth.schema import AuthSection, route_auth
from app.config import RouteSpec
from app.control.audit import Audited, Change
from app.control.config_sync import ConfigSync, route_document
from app.routing.router import ApiGatewayRouter


class RouteView(BaseModel):
    key: str
    source: Literal["config", "api"]  # from the config file, or changed/added through the API
    enabled: bool
    route: dict[str, Any]  # as in the config file


class RouteList(BaseModel):
    version: int
    routes: list[RouteView]


class RouteChanged(BaseModel):
    version: int  # the config version that holds the change
    key: str
    route: RouteView | None = None  # None after a delete


def _optional(field: FieldInfo) -> Any:
    """The field's type and constraints (gt=0, ...), with None allowed."""
    optional = field.annotation | None
    return Annotated[optional, *field.metadata] if field.metadata else optional


# Every field of a route, each optional: what PATCH takes (the fields given replace the route's).
RoutePatch = create_model(  # type: ignore[call-overload]
    "RoutePatch", __config__=ConfigDict(extra="forbid"),
    **{name: (_optional(field), None) for name, field in RouteSpec.model_fields.items()})


_EXAMPLE = {"id": "agents", "path": "/api/v1/agents/{id}", "method": ["GET", "PUT"],
            "targets": [{"url": "http://127.0.0.1:8001", "weight": 3}, {"url": "http://127.0.0.1:8002"}],
            "timeout": {"read": 5}}
NewRoute = Annotated[RouteSpec, Body(examples=[_EXAMPLE])]


def invalid(errors: ValidationError, prefix: tuple[str, ...] = ("body",)) -> RequestValidationError:
    """A pydantic error as the 400 every bad input gets, naming each field."""
    return RequestValidationError([{**e, "loc": (*prefix, *e["loc"])} for e in errors.errors()])


def build_router(routes: ApiGatewayRouter[Any], sync: ConfigSync, auth: AuthSection) -> APIRouter:
    """``routes``: the routes this replica serves; ``sync`` makes the changes, for the whole fleet;
    ``auth``: the top level's auth section, which a route's own merges with."""
    router = APIRouter(prefix="/_gateway/routes", tags=["routes"])

    def view(spec: RouteSpec) -> RouteView:
        return RouteView(key=spec.key, source=sync.source(spec.key), enabled=spec.enabled,
                         route=route_document(spec))

    def current(key: str) -> RouteSpec:
        route = routes.route_manager.get(key)
        if route is None:
            raise HTTPException(404, f"no route with key {key!r}")
        return route.spec

    async def changed(spec: RouteSpec, change: Change, replaces: str | None = None) -> RouteChanged:
        check_numbers(route_document(spec))
        if spec.auth is not None:
            try:  # what only the route merged with the top level's auth: can tell
                route_auth(auth, spec.auth).check()
            except ValueError as error:
                raise RequestValidationError([{"loc": ("body", "auth"), "msg": str(error), "type": "value_error"}]) \
                    from None
        version = await sync.put(spec, replaces)
        change.after = route_document(current(spec.key))
        return RouteChanged(version=version, key=spec.key, route=view(current(spec.key)))

    @router.get("", response_model=RouteList)
    async def list_routes() -> RouteList:
        """Every route this replica serves (enabled or not), in matching order, and the config version."""
        return RouteList(version=sync.version, routes=[view(r.spec) for r in routes.routes])

    @router.post("", status_code=201, response_model=RouteChanged,
                 responses={409: {"description": "a route with this key exists"}})
    async def add_route(spec: NewRoute, change: Audited) -> RouteChanged:
        """Add a route (same shape as in the config file). 409 when its key is taken."""
        change.describe("route.create", spec.key)
        if routes.route_manager.get(spec.key) is not None:
            raise HTTPException(409, f"a route with key {spec.key!r} exists; change it with PUT or PATCH")
        return await changed(spec, change)

    @router.get("/{key:path}", response_model=RouteView, responses={404: {"description": "no such route"}})
    async def get_route(key: str) -> RouteView:
        return view(current(key))

    @router.put("/{key:path}", response_model=RouteChanged, responses={404: {"description": "no such route"}})
    async def replace_route(key: str, spec: NewRoute, change: Audited) -> RouteChanged:
        """Replace a route with a whole new spec (its key may change with it)."""
        change.describe("route.replace", key)
        change.before = route_document(current(key))
        if spec.key != key and routes.route_manager.get(spec.key) is not None:
            raise HTTPException(409, f"a route with key {spec.key!r} exists")
        return await changed(spec, change, replaces=key)

    @router.patch("/{key:path}", response_model=RouteChanged, responses={404: {"description": "no such route"}})
    async def change_route(key: str, patch: RoutePatch, change: Audited) -> RouteChanged:  # type: ignore[valid-type]
        """Change some fields of a route; the others keep their values. Nested sections are replaced
        whole (``{"timeout": {"read": 5}}`` resets ``timeout.connect`` to its default)."""
        change.describe("route.update", key)
        old = current(key)
        change.before = route_document(old)
        fields = patch.model_dump(mode="json", exclude_unset=True)  # type: ignore[attr-defined]
        document = route_document(old)
        if "target" in fields:  # the one-target form replaces the list, as in the file
            document.pop("targets", None)
        document.update(fields)
        try:
            spec = RouteSpec.model_validate(document)
        except ValidationError as error:
            raise invalid(error) from None
        if spec.key != key and routes.route_manager.get(spec.key) is not None:
            raise HTTPException(409, f"a route with key {spec.key!r} exists")
        return await changed(spec, change, replaces=key)

    async def set_enabled(key: str, enabled: bool, change: Change) -> RouteChanged:
        change.describe("route.enable" if enabled else "route.disable", key)
        spec = current(key)
        change.before = route_document(spec)
        if spec.enabled == enabled:
            change.after = change.before
            return RouteChanged(version=sync.version, key=key, route=view(spec))
        return await changed(spec.model_copy(update={"enabled": enabled}), change)

    @router.post("/{key:path}/enable", response_model=RouteChanged, responses={404: {"description": "no such route"}})
    async def enable_route(key: str, change: Audited) -> RouteChanged:
        return await set_enabled(key, True, change)

    @router.post("/{key:path}/disable", response_model=RouteChanged,
                 responses={404: {"description": "no such route"}})
    async def disable_route(key: str, change: Audited) -> RouteChanged:
        """A disabled route matches nothing; it stays listed and can be enabled again."""
        return await set_enabled(key, False, change)

    @router.delete("/{key:path}", response_model=RouteChanged, responses={404: {"description": "no such route"}})
    async def delete_route(key: str, change: Audited) -> RouteChanged:
        change.describe("route.delete", key)
        change.before = route_document(current(key))
        return RouteChanged(version=await sync.delete(key), key=key)

    return router
