"""The ``auth:`` and ``cors:`` config: inheritance from the top level, and refusals that name the field."""

from __future__ import annotations

import pytest

from app.auth.schema import AuthSpec, route_auth
from app.config import ConfigError, parse_config

JWT = {"jwks_url": "https://idp.example/jwks.json", "issuer": "https://idp.example/", "audience": "my-api"}


def _config(auth: dict | None = None, route_auth_: dict | None = None, **route: object) -> object:
    spec = {"path": "/a/*", "target": "http://svc:8080", **route}
    if route_auth_ is not None:
        spec["auth"] = route_auth_
    return parse_config({"auth": auth or {}, "router": {"routes": [spec]}})


def test_a_route_inherits_what_it_leaves_unset_field_by_field() -> None:
    config = _config({"methods": ["api_key", "jwt"], "jwt": JWT, "ip_deny": ["10.0.0.0/8"]},
                     {"methods": ["jwt"], "allow_roles": ["admin"], "jwt": {"audience": "admin-api"}})
    own = route_auth(config.auth, config.router.routes[0].auth)
    assert own.methods == ["jwt"] and own.allow_roles == ["admin"]
    assert own.jwt is not None and own.jwt.audience == "admin-api"
    assert own.jwt.jwks_url == JWT["jwks_url"] and own.jwt.issuer == JWT["issuer"]  # the rest inherited
    assert own.ip_deny == ["10.0.0.0/8"]
    default = route_auth(config.auth, None)
    assert default.methods == ["api_key", "jwt"] and default.jwt is not None and default.jwt.audience == "my-api"


def test_no_auth_section_means_no_authentication() -> None:
    config = parse_config({"router": {"routes": [{"path": "/a", "target": "http://svc"}]}})
    assert not route_auth(config.auth, None).authenticates
    assert config.router.routes[0].auth is None


def test_the_seed_key_entry_takes_roles() -> None:
    config = parse_config({"rate_limiter": {"api_keys": [
        {"key": "k" * 16, "client_id": "acme", "roles": ["admin", "ops"]}]}})
    assert config.rate_limiter.api_keys[0].roles == ["admin", "ops"]


@pytest.mark.parametrize(("auth", "own", "error"), [
    ({}, {"methods": ["jwt"]}, "router.routes.0.auth: methods lists jwt, but no jwt section"),
    ({"jwt": {"issuer": "x"}}, None, "auth: jwt: give exactly one of jwks_url and jwks_file"),
    ({"jwt": {**JWT, "jwks_file": "/k.json"}}, None, "give exactly one of jwks_url and jwks_file"),
    ({}, {"methods": ["api_key"], "api_key": {"header": None}}, "give a header or a query parameter"),
    ({}, {"allow_roles": ["admin"]}, "allow_roles and deny_roles need methods"),
    ({"ip_allow": ["10.0.0.0/33"]}, None, "auth.ip_allow: '10.0.0.0/33' is not an address or a CIDR network"),
    ({"methods": ["basic"]}, None, "auth.methods.0: Input should be 'api_key' or 'jwt'"),
    ({"jwt": {**JWT, "algorithms": ["none"]}}, None, "auth.jwt.algorithms.0"),
    ({"api_key": {"header": "X API Key"}}, None, "'X API Key' is not a valid header name"),
    ({"abuse": {"cooldown": 60, "max_cooldown": 10}}, None, "max_cooldown must be at least cooldown"),
    ({"methods": ["api_key"], "forward_credential": True}, None, "auth.forward_credential: Extra inputs"),
])
def test_bad_auth_config_names_the_field(auth: dict, own: dict | None, error: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _config(auth, own)
    assert error in str(refused.value)


@pytest.mark.parametrize(("cors", "error"), [
    ({"origins": []}, "routes.0.cors.origins: List should have at least 1 item"),
    ({"origins": ["app.example.com"]}, "an origin is scheme://host[:port]"),
    ({"origins": ["https://*.example.com/path"]}, "an origin is scheme://host[:port]"),
    ({"origins": ["*"], "credentials": True}, "'*' can't be used with credentials"),
    ({"origins": ["https://a.example"], "methods": ["GET", "PO ST"]}, "'PO ST' is not a method name"),
])
def test_bad_cors_config_names_the_field(cors: dict, error: str) -> None:
    with pytest.raises(ConfigError) as refused:
        _config(cors=cors)
    assert error in str(refused.value)


def test_cors_origins_are_kept_in_their_canonical_form() -> None:
    config = _config(cors={"origins": ["HTTPS://App.Example.com/", "https://*.example.com"], "methods": ["get"]})
    cors = config.router.routes[0].cors
    assert cors is not None and cors.origins == ["https://app.example.com", "https://*.example.com"]
    assert cors.methods == ["GET"]


def test_a_route_spec_alone_validates_without_the_top_level() -> None:
    # The admin API checks a route on its own: a partial jwt section is fine until merged.
    assert AuthSpec.model_validate({"methods": ["jwt"], "jwt": {"audience": "x"}}).jwt is not None
