import pytest

from app.router import ApiGatewayRouter
from app.routing.router import _walk


def test_seed_router_example() -> None:
    router = ApiGatewayRouter()
    router.add_route(path="/api/v1/agents", method="GET", target="http://agent-service:8001", weight=100)
    assert router.route_request("/api/v1/agents", "GET") == "http://agent-service:8001"
    status = router.get_health_status()
    # The seed's keys as the seed shows them; the targets' health comes with them.
    assert {k: status[k] for k in ("enabled", "routes_count", "targets_count")} == \
        {"enabled": True, "routes_count": 1, "targets_count": 1}
    assert status["targets"] == [{"route": "GET /api/v1/agents", "url": "http://agent-service:8001", "healthy": True}]


def test_unknown_path_and_method() -> None:
    router = ApiGatewayRouter()
    router.add_route(path="/a", method="GET", target="http://x")
    assert router.route_request("/b", "GET") is None
    assert router.route_request("/a", "POST") is None
    assert router.route_request("/a", "HEAD") == "http://x"  # a GET route answers HEAD


def test_weights_3_to_1_hold_in_every_window() -> None:
    router = ApiGatewayRouter()
    router.add_route(path="/w", method="GET", target="http://first", weight=3)
    router.add_route(path="/w", method="GET", target="http://second", weight=1)
    picks = [router.route_request("/w", "GET") for _ in range(100)]
    assert picks.count("http://first") == 75
    assert "http://second" in picks[:4]
    for start in range(0, 100, 4):  # smooth: every 4 consecutive picks hold 3 and 1
        assert picks[start:start + 4].count("http://second") == 1


def test_most_specific_route_wins() -> None:
    router = ApiGatewayRouter()
    router.add_route(path="/api/*", target="http://prefix")
    router.add_route(path="/api/v1/*", target="http://longer-prefix")
    router.add_route(path="/api/v1/agents/{id}", target="http://param")
    router.add_route(path="/api/v1/agents/me", target="http://literal")
    router.add_route(path="/api/v1/agents/{id}", method="DELETE", target="http://delete")
    assert router.route_request("/api/v1/agents/me", "GET") == "http://literal"
    assert router.route_request("/api/v1/agents/42", "GET") == "http://param"
    assert router.route_request("/api/v1/agents/42", "DELETE") == "http://delete"
    assert router.route_request("/api/v1/agents/42/x", "GET") == "http://longer-prefix"
    assert router.route_request("/api/v2", "GET") == "http://prefix"
    assert router.route_request("/api", "GET") == "http://prefix"
    assert router.route_request("/apix", "GET") is None


def test_the_static_path_lookup_agrees_with_the_trie_walk() -> None:
    """Paths without parameters are found by one dict lookup; the answer must be the walk's."""
    import itertools

    router = ApiGatewayRouter()
    router.add_route(path="/", target="http://root")
    router.add_route(path="/a/*", target="http://prefix")
    router.add_route(path="/a/b", method="GET", target="http://get-ab")
    router.add_route(path="/a/b", method="POST", target="http://post-ab")
    router.add_route(path="/a/{x}", method=["GET", "DELETE"], target="http://param")
    router.add_route(path="/a/b/c", target="http://abc")
    router.add_route(path="/off", target="http://off", enabled=False)
    manager = router.route_manager
    paths = ["/", "//", "/a", "/a/", "/a/b", "/a/b/", "//a//b", "/a/c", "/a/b/c", "/a/b/c/d", "/off", "/x"]
    for path, method in itertools.product(paths, ["GET", "HEAD", "POST", "DELETE", "PUT"]):
        segments = [s for s in path.split("/") if s]
        walked = _walk(manager._table.root, segments, 0, method, None)
        found = router.match(path, method)
        assert (found.route if found else None) is walked, (path, method)
    assert router.route_request("/a/b", "DELETE") == "http://param"  # no static answer: the walk finds it


def test_path_parameters_are_extracted() -> None:
    router = ApiGatewayRouter()
    router.add_route(path="/users/{user}/posts/{post}", target="http://x")
    found = router.match("/users/ann/posts/7", "GET")
    assert found is not None and found.params == {"user": "ann", "post": "7"}


def test_method_lists_and_any() -> None:
    router = ApiGatewayRouter()
    router.add_route(path="/m", method=["GET", "POST"], target="http://list")
    router.add_route(path="/any", target="http://any")
    assert router.route_request("/m", "POST") == "http://list"
    assert router.route_request("/m", "PUT") is None
    assert router.route_request("/any", "PATCH") == "http://any"


def test_disable_and_enable_a_route() -> None:
    router = ApiGatewayRouter()
    route = router.add_route(path="/a", method="GET", target="http://x")
    assert router.set_route_enabled(route.key, False)
    assert router.route_request("/a", "GET") is None
    assert router.get_health_status()["routes_count"] == 1
    router.set_route_enabled(route.key, True)
    assert router.route_request("/a", "GET") == "http://x"


def test_unhealthy_target_is_skipped() -> None:
    router = ApiGatewayRouter()
    router.add_route(path="/w", target="http://a", weight=1)
    route = router.add_route(path="/w", target="http://b", weight=1)
    route.balancer.set_healthy("http://a", False)
    assert {router.route_request("/w", "GET") for _ in range(4)} == {"http://b"}


def test_route_without_target_is_refused() -> None:
    with pytest.raises(ValueError, match="target"):
        ApiGatewayRouter().add_route(path="/a")


def test_host_and_header_conditions_are_checked_when_configured() -> None:
    from pydantic import ValidationError

    from app.config import RouteSpec

    assert RouteSpec(path="/", target="http://x", host="*.Example.COM").host == "*.example.com"
    assert RouteSpec(path="/", target="http://x", headers={"X-Canary": "1"}).headers == {"x-canary": "1"}
    for host in ("example.com:80", "*example.com", "a.*.com", "exa mple.com", ""):
        with pytest.raises(ValidationError):
            RouteSpec(path="/", target="http://x", host=host)
    with pytest.raises(ValidationError):
        RouteSpec(path="/", target="http://x", headers={"X Canary": "1"})
    with pytest.raises(ValidationError):
        RouteSpec(path="/", target="http://x", headers={"X-Canary": False})
    for value in ("", " 1", "caf\u00e9", "a\r\nb"):
        with pytest.raises(ValidationError):
            RouteSpec(path="/", target="http://x", headers={"X-Canary": value})


def test_a_request_without_headers_meets_no_condition() -> None:
    """The library's match(path, method) without a request: host and header routes never match."""
    router = ApiGatewayRouter()
    router.add_route(path="/a", target="http://plain")
    router.add_route(path="/a", target="http://canary", headers={"X-Canary": True})
    router.add_route(path="/a", target="http://host", host="a.example.com")
    assert router.route_request("/a", "GET") == "http://plain"
