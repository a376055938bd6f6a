"""The gateway's configuration: the seed's ``api_gateway_config.yaml`` plus additive extensions.

One pydantic model per section, so that a bad file is refused with the field's dotted path
(``router.routes.0.timeout.read``) and the reason. The environment overrides the file, by the
seed's ``API_GATEWAY_*`` names (see ``ENV_OVERRIDES``).
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.auth.cors.schema import CorsSpec
from app.auth.schema import AuthSection, AuthSpec, route_auth
from app.edge.tls_files import check_backend_files, check_server_files
from app.schema import header_name
from app.transform.route_config import RouteTransform


class ConfigError(Exception):
    """A configuration that cannot be used; the message names each bad field and why, and
    ``problems`` holds them as (dotted path, reason) pairs (empty when no field is to blame: a
    missing file, broken YAML)."""

    def __init__(self, message: str, problems: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class _Section(BaseModel):
    # A typo in a key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# -- rate limiting ---------------------------------------------------------------------------

class RateLimitSpec(_Section):
    """Limits for one client, tier or route. ``None`` means no limit of that kind."""

    requests_per_second: int | None = Field(default=None, gt=0)
    requests_per_minute: int | None = Field(default=60, gt=0)
    requests_per_hour: int | None = Field(default=1000, gt=0)
    requests_per_day: int | None = Field(default=None, gt=0)
    # A token bucket of this capacity refilled at requests_per_minute/60 per second;
    # None: no tighter bucket than the minute window (docs/design.md).
    burst_size: int | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _burst_needs_a_rate(self) -> RateLimitSpec:
        # The bucket refills at the minute limit's rate (else the shortest window's): it needs one.
        windows = (self.requests_per_second, self.requests_per_minute, self.requests_per_hour,
                   self.requests_per_day)
        if self.burst_size is not None and all(w is None for w in windows):
            raise ValueError("burst_size needs a window to take its refill rate from "
                             "(requests_per_minute, or another requests_per_*)")
        return self


class ClientSpec(RateLimitSpec):
    """A client's own limits, or a reference to a tier (``tier: gold``) with optional overrides."""

    tier: str | None = None


class ApiKeySpec(_Section):
    """An API key known from the config file; the store keeps only its hash."""

    key: str = Field(min_length=16)
    client_id: str = Field(min_length=1)
    tier: str | None = None
    # What the key's holder may do on routes with allow_roles / deny_roles.
    roles: list[str] = []


class RateLimiterSection(_Section):
    enabled: bool = True
    default: RateLimitSpec = RateLimitSpec()
    tiers: dict[str, RateLimitSpec] = {}
    clients: dict[str, ClientSpec] = {}
    api_keys: list[ApiKeySpec] = []
    # X-Forwarded-For is believed only when the peer is one of these (addresses or CIDRs).
    trusted_proxies: list[str] = []
    # X-Client-ID is believed on its own only from these peers (addresses or CIDRs, checked on the
    # address trusted_proxies resolves); from others it is a sub-account of the peer's address.
    client_id_trusted_from: list[str] = []
    # What a request meets while the store is unreachable.
    failure_policy: Literal["fail_open", "fail_closed"] = "fail_open"

    @model_validator(mode="after")
    def _tiers_exist(self) -> RateLimiterSection:
        for name, client in self.clients.items():
            if client.tier is not None and client.tier not in self.tiers:
                raise ValueError(f"clients.{name}.tier: unknown tier {client.tier!r}")
        for i, key in enumerate(self.api_keys):
            if key.tier is not None and key.tier not in self.tiers:
                raise ValueError(f"api_keys.{i}.tier: unknown tier {key.tier!r}")
        return self


# -- cache -----------------------------------------------------------------------------------

# What the cache keeps (docs/design.md, "Cache modes"). seed: an answer without freshness
# information is kept for ttl, as the seed did. rfc9111: only what RFC 9111 lets a shared cache
# keep, with heuristic freshness only as its section 4.2.2 allows.
CacheMode = Literal["seed", "rfc9111"]


class CacheSection(_Section):
    enabled: bool = True
    mode: CacheMode = "seed"
    # "default", or "package.module:Name": a CacheStrategy subclass, built with this section.
    strategy: str = Field(default="default", pattern=r"^(default|[A-Za-z_][\w.]*:[A-Za-z_]\w*)$")
    ttl: int = Field(default=300, gt=0)
    max_size: int = Field(default=1000, gt=0)
    # The most bytes the entries' heads and bodies may take in the store, for the whole fleet
    # (None: only max_size bounds it); the least recently read go first. Keep it well below the
    # Redis's maxmemory, so that the rate limits always have room.
    max_bytes: int | None = Field(default=None, gt=0)
    # The entries are spread over this many hash-tag buckets (one Redis Cluster slot each), chosen
    # by the URI's path and query; each has its own LRU and its share (rounded up) of max_size and
    # max_bytes. 1: one fleet-wide LRU, on one shard. A change starts an empty cache (a restart).
    buckets: int = Field(default=16, gt=0, le=1024)
    # A Redis of the cache's own (url, cluster_nodes or sentinel), apart from the rate limits and
    # circuits, so that a full cache can never refuse their writes; None: the cache shares redis.
    redis: RedisSection | None = None

    @field_validator("redis")
    @classmethod
    def _names_a_redis(cls, section: RedisSection | None) -> RedisSection | None:
        # Without a server the cache would sit in each process's memory, shared with no one.
        if section is not None and not section.configured:
            raise ValueError("names no Redis: set url, cluster_nodes or sentinel (or leave cache.redis out)")
        return section

    @property
    def budget(self) -> int:
        """The most bytes the cache's entries may take: max_bytes, or as many full-sized bodies as
        the buckets may hold (each its share of max_size, rounded up; of max_bytes likewise)."""
        most = self.buckets * -(-self.max_size // self.buckets) * self.max_body_size
        return most if self.max_bytes is None else min(most, self.buckets * -(-self.max_bytes // self.buckets))
    # Bodies above this many bytes are stored compressed; above max_body_size, not at all.
    compress_min_size: int = Field(default=4096, ge=0)
    max_body_size: int = Field(default=1024 * 1024, gt=0)
    # How long an expired entry is kept to serve as STALE when the backend fails.
    stale_grace: int = Field(default=60, ge=0)
    # After expiry, serve the entry (X-Cache: STALE) for this long while one replica refreshes it
    # in the background; a response's own stale-while-revalidate directive wins.
    stale_while_revalidate: int = Field(default=0, ge=0)
    # Coalescing: requests that miss a key another replica is filling wait at most this long
    # (seconds) for its answer, then go to the backend themselves.
    lock_wait: float = Field(default=5.0, gt=0)
    # Paths fetched at start and refreshed before they expire.
    warm: list[str] = []
    # The gateway's own targeted cache-control field (RFC 9213), e.g. Gateway-Cache-Control: read
    # before CDN-Cache-Control, which is read before Cache-Control; removed from answers.
    targeted_field: str | None = None

    @field_validator("targeted_field")
    @classmethod
    def _targeted_field(cls, name: str | None) -> str | None:
        if name is None:
            return None
        header_name(name)
        if name.lower() in ("cache-control", "expires", "pragma"):
            raise ValueError(f"{name} is not a targeted field: name one of the gateway's own, such as "
                             "Gateway-Cache-Control")
        return name


class RouteCacheSpec(_Section):
    enabled: bool = True
    ttl: int | None = Field(default=None, gt=0)
    # None: cache.mode.
    mode: CacheMode | None = None
    # Statuses worth keeping; None: the mode's (seed: 200 only; rfc9111: every status RFC 9111
    # lets a shared cache store).
    statuses: list[int] | None = None


# -- circuit breaker -------------------------------------------------------------------------

class CircuitBreakerSpec(_Section):
    failure_threshold: int = Field(default=5, gt=0)
    recovery_timeout: float = Field(default=60, gt=0)
    success_threshold: int = Field(default=3, gt=0)
    # Probes allowed into a HALF_OPEN backend at once, fleet-wide.
    half_open_max_calls: int = Field(default=1, gt=0)
    # Rate rule: open when this share of calls fails within the window, once min_calls were seen.
    failure_rate_threshold: float | None = Field(default=None, gt=0, le=1)
    window_seconds: int = Field(default=60, gt=0)
    min_calls: int = Field(default=20, gt=0)
    # A call slower than this counts as a failure.
    slow_call_seconds: float | None = Field(default=None, gt=0)


class CircuitBreakerSection(_Section):
    enabled: bool = True
    default: CircuitBreakerSpec = CircuitBreakerSpec()


# -- routes ----------------------------------------------------------------------------------

HttpMethod = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "*"]


_HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*")
# As the edge keeps a value (surrounding whitespace stripped), in ASCII so that it compares as bytes.
_FIELD_VALUE = re.compile(r"[!-~]([ !-~]*[!-~])?")

# A host name as a backend's URL may give it: letters, digits, "-", "_" and dots between them.
_HOST = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?\.?", re.IGNORECASE)


def _http_url(url: str | None) -> str | None:
    """A backend's URL, the one check of the config file and the admin API alike: http or https, a
    host, a port in 1-65535 when one is given, no credentials (they would show in logs and on the
    status page), no spaces or control characters (nothing a request line could not carry)."""
    if url is None:
        return None
    if not url.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ValueError("must not hold spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:  # an IPv6 host without its "]", a port that is no number or too big
        raise ValueError(f"is not a valid URL: {error}") from None
    if "@" in parts.netloc:
        raise ValueError("must not hold credentials (user:password@)")
    host = parts.hostname
    if not host:
        raise ValueError("needs a host")
    if parts.netloc.startswith("["):
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
    elif not _HOST.fullmatch(host):
        raise ValueError(f"{host!r} is not a host name")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError("the port must be in 1-65535")
    return url.rstrip("/")


def _readable_file(path: str | None) -> str | None:
    """A certificate or key file's path: it must be there to be read (when the config is loaded,
    so that check-config and a reload name the field, not the first handshake)."""
    if path is None:
        return None
    if not os.path.isfile(path):
        raise ValueError(f"no such file: {path!r}")
    if not os.access(path, os.R_OK):
        raise ValueError(f"cannot read {path!r}")
    return path


class TargetSpec(_Section):
    url: str
    weight: int = Field(default=100, ge=0)

    _check_url = field_validator("url")(_http_url)


class TimeoutSpec(_Section):
    connect: float = Field(default=5.0, gt=0)
    read: float = Field(default=30.0, gt=0)


class RetrySpec(_Section):
    # Retries after the first attempt; 0 (the default, docs/design.md) means none.
    attempts: int = Field(default=0, ge=0, le=10)
    # Exponential backoff with full jitter: a wait in [0, min(backoff_max, backoff_base * 2^(n-1))].
    backoff_base: float = Field(default=0.05, ge=0)
    backoff_max: float = Field(default=1.0, ge=0)
    # Retries may be at most this share of requests, so they cannot multiply a failing load...
    budget_ratio: float = Field(default=0.2, ge=0, le=1)
    # ...plus this many per budget window, so that a quiet route can still retry.
    budget_min_retries: int = Field(default=3, ge=0)
    budget_window: float = Field(default=10.0, gt=0)
    # Idempotent methods only: POST and PATCH are refused here.
    methods: list[HttpMethod] = ["GET", "HEAD", "OPTIONS", "PUT", "DELETE"]
    # Answers worth another try (connection errors and timeouts always are).
    statuses: list[int] = [502, 503, 504]

    @field_validator("methods")
    @classmethod
    def _idempotent_only(cls, methods: list[str]) -> list[str]:
        bad = [m for m in methods if m in ("POST", "PATCH", "*")]
        if bad:
            raise ValueError(f"only idempotent methods can be retried, not {', '.join(bad)}")
        return methods


class HealthCheckSpec(_Section):
    path: str = "/"
    interval: float = Field(default=5.0, gt=0)
    timeout: float = Field(default=2.0, gt=0)
    healthy_threshold: int = Field(default=2, gt=0)
    unhealthy_threshold: int = Field(default=2, gt=0)


class FallbackSpec(_Section):
    status: int = Field(default=503, ge=200, le=599)
    headers: dict[str, str] = {}
    body: Any = None


class RouteWebSocketSpec(_Section):
    """Whether an Upgrade: websocket request on the route is proxied as a WebSocket (off unless
    asked for, as in nginx, Envoy and APISIX: a long-lived connection escapes the per-request
    limits after its handshake, and not every backend expects one)."""

    enabled: bool = False
    # Seconds without a message either way (pings do not count) before both sides are closed, 1001.
    idle_timeout: float = Field(default=300.0, gt=0)


class RouteSpec(_Section):
    """One route. The seed's shape (path, method, target, weight) plus additive extensions."""

    id: str | None = None
    # "/a/b" exact, "/a/{id}" with parameters, "/a/*" for the prefix and everything below it.
    path: str
    method: HttpMethod | list[HttpMethod] = "*"
    target: str | None = None
    weight: int = Field(default=100, ge=0)
    targets: list[TargetSpec] = []
    enabled: bool = True
    strip_prefix: bool = False
    timeout: TimeoutSpec = TimeoutSpec()
    max_body_size: int | None = Field(default=None, gt=0)
    rate_limit: RateLimitSpec | None = None
    cache: RouteCacheSpec = RouteCacheSpec()
    circuit_breaker: CircuitBreakerSpec | None = None
    retry: RetrySpec = RetrySpec()
    health_check: HealthCheckSpec | None = None
    fallback: FallbackSpec | None = None
    # Request/response transformation (schema versions, fields, headers, query).
    transform: RouteTransform | None = None
    failure_policy: Literal["fail_open", "fail_closed"] | None = None
    # Who may call the route: the fields it sets override the top level's ``auth:``.
    auth: AuthSpec | None = None
    # Browser calls from other origins; the gateway answers their preflights itself.
    cors: CorsSpec | None = None
    # Upgrade: websocket requests (app/edge/websocket.py).
    websocket: RouteWebSocketSpec = RouteWebSocketSpec()
    # Conditions besides path and method: the request's host ("api.example.com", or
    # "*.example.com" for any name below it), and header fields that must have a value (a string)
    # or merely be there (true). The router's docstring gives the precedence.
    host: str | None = None
    headers: dict[str, str | Literal[True]] = {}
    # https:// targets: the CA file (PEM) that signs their certificates, instead of the system's
    # CAs; and a client certificate and key to present to them (both or neither).
    ca: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    _check_target = field_validator("target")(_http_url)
    _check_tls_files = field_validator("ca", "client_cert", "client_key")(_readable_file)

    @model_validator(mode="after")
    def _client_cert_with_key(self) -> RouteSpec:
        if (self.client_cert is None) != (self.client_key is None):
            raise ValueError("client_cert and client_key go together: give both or neither")
        if self.ca is not None or self.client_cert is not None:
            urls = [t.url for t in self.targets] + ([self.target] if self.target else [])
            if not any(url.startswith("https://") for url in urls):
                raise ValueError("ca, client_cert and client_key are for https:// targets; this route has none")
            check_backend_files(self.ca, self.client_cert, self.client_key)
        return self

    @field_validator("host")
    @classmethod
    def _host_name(cls, host: str | None) -> str | None:
        if host is None:
            return None
        name = host.lower()
        bare = name[2:] if name.startswith("*.") else name
        if not _HOST_NAME.fullmatch(bare):
            raise ValueError("a host name (api.example.com) or a wildcard (*.example.com), without a port")
        return name

    @field_validator("headers")
    @classmethod
    def _header_names(cls, headers: dict[str, str | Literal[True]]) -> dict[str, str | Literal[True]]:
        for name, value in headers.items():
            header_name(name)
            if value is not True and not _FIELD_VALUE.fullmatch(value):
                raise ValueError(f"{name}: a field value is visible ASCII and spaces, not at either end")
        return {name.lower(): value for name, value in headers.items()}

    @field_validator("path")
    @classmethod
    def _absolute_path(cls, path: str) -> str:
        if not path.startswith("/"):
            raise ValueError("must start with /")
        if path.startswith("/_gateway"):
            raise ValueError("/_gateway/ is reserved for the gateway itself")
        return path

    @model_validator(mode="after")
    def _one_kind_of_target(self) -> RouteSpec:
        own = [TargetSpec(url=self.target, weight=self.weight)] if self.target is not None else []
        # A dumped spec carries the targets that `target` was expanded to: that round-trips.
        if self.target is not None and self.targets and self.targets != own:
            raise ValueError("give either target or targets, not both")
        if self.target is None and not self.targets:
            raise ValueError("a route needs a target or targets")
        if self.target is not None:
            self.targets = own
        if not any(t.weight > 0 for t in self.targets):
            raise ValueError("targets: at least one target needs a weight above 0")
        return self

    @property
    def methods(self) -> tuple[str, ...]:
        listed = [self.method] if isinstance(self.method, str) else self.method
        return ("*",) if "*" in listed else tuple(dict.fromkeys(listed))

    @property
    def key(self) -> str:
        """A stable identity: the id when given, else method and path (and the host and header
        conditions, when there are any: they tell apart routes on one path)."""
        if self.id:
            return self.id
        key = f"{'|'.join(self.methods)} {self.path}"
        if self.host is not None:
            key = f"{key} host={self.host}"
        for name, value in sorted(self.headers.items()):
            key = f"{key} {name}" if value is True else f"{key} {name}={value}"
        return key


class RouterSection(_Section):
    routes: list[RouteSpec] = []


# -- process-level settings ------------------------------------------------------------------

def _node_list(value: Any) -> Any:
    """``"a:1,b:2"`` (from an environment variable) or a YAML list: a list of node entries."""
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    return value


def _check_nodes(nodes: list[str]) -> list[str]:
    """Each entry is ``host:port`` or a ``redis://`` / ``rediss://`` URL (whose scheme, user and
    password then apply to every node, those discovered later included)."""
    if not nodes:
        raise ValueError("needs at least one node")
    schemes = set()
    for entry in nodes:
        scheme, sep, rest = entry.partition("://")
        if sep:
            if scheme not in ("redis", "rediss"):
                raise ValueError(f"{entry!r}: a node URL starts with redis:// or rediss://")
            schemes.add(scheme)
            rest = rest.rpartition("@")[2].partition("/")[0].partition("?")[0]
        else:
            rest = entry
        host, colon, port = rest.rpartition(":")
        if not colon or not host or not port.isdigit():
            raise ValueError(f"{entry!r}: expected host:port")
    if len(schemes) > 1:
        raise ValueError("the nodes mix redis:// and rediss://; use one scheme for all")
    return nodes


class SentinelSection(_Section):
    """Redis Sentinel: the sentinels to ask and the name of the master they watch."""

    # The sentinels: host:port, or rediss://[user:password@]host:port when the sentinels have TLS or
    # a password of their own (the scheme applies to the data nodes too).
    nodes: list[str]
    master: str = "mymaster"
    # The data nodes' (master's and replicas') credentials, when they differ from none.
    username: str | None = None
    password: str | None = None
    db: int = Field(default=0, ge=0)

    _split = field_validator("nodes", mode="before")(_node_list)
    _check = field_validator("nodes")(_check_nodes)


class RedisSection(_Section):
    # None (and neither cluster_nodes nor sentinel): the embedded memory store (a single replica).
    # A URL naming a Redis Cluster node is detected at start and used as the cluster's seed.
    url: str | None = None
    # Redis Cluster: seeds from which the slot map is discovered; wins over url when both are set.
    cluster_nodes: list[str] | None = None
    sentinel: SentinelSection | None = None
    prefix: str = Field(default="apigw", pattern=r"^[A-Za-z0-9_.-]+$")
    max_connections: int = Field(default=64, gt=0)
    socket_timeout: float = Field(default=1.0, gt=0)
    connect_timeout: float = Field(default=0.5, gt=0)
    # After a failure the store is not tried again for this long (no request waits out a timeout).
    retry_after_failure: float = Field(default=0.5, gt=0)

    _split = field_validator("cluster_nodes", mode="before")(_node_list)

    @field_validator("cluster_nodes")
    @classmethod
    def _check_cluster_nodes(cls, nodes: list[str] | None) -> list[str] | None:
        return None if nodes is None else _check_nodes(nodes)

    @model_validator(mode="after")
    def _one_topology(self) -> RedisSection:
        if self.cluster_nodes and self.sentinel is not None:
            raise ValueError("set either cluster_nodes (Redis Cluster) or sentinel (a Sentinel group), not both")
        return self

    @property
    def configured(self) -> bool:
        """Whether any Redis is named (else the memory store)."""
        return bool(self.url or self.cluster_nodes or self.sentinel)


class PathsSection(_Section):
    """How request paths are normalised before routing (app/edge/paths.py)."""

    merge_slashes: bool = True
    # %2F and %5C in a path: refused with 400, or forwarded as they came and never decoded for matching.
    encoded_slash: Literal["reject", "pass"] = "reject"


class LimitsSection(_Section):
    """What one client may cost the gateway (app/edge/http_protocol.py enforces them while reading)."""

    # One header field line (name and value); over it: 431.
    max_field_size: int = Field(default=8192, gt=0)
    # The whole request head (request line and fields); over it: 431.
    max_head_size: int = Field(default=32768, gt=0)
    # Header fields in one request; over it: 431.
    max_fields: int = Field(default=100, gt=0)
    # The request target (path and query); over it: 414.
    max_target: int = Field(default=8192, gt=0)
    # Seconds for a whole request head, from the connection's start or the request's first
    # bytes; then 408 (when a request line had begun) and close.
    header_timeout: float = Field(default=10.0, gt=0)
    # Seconds the client may leave a request body stalled (between reads); then 408 and close.
    body_timeout: float = Field(default=60.0, gt=0)
    # Seconds an idle client connection is kept between requests: above the usual load
    # balancer idle timeout (60 s), so a balancer never reuses a connection the gateway closed.
    client_keepalive_timeout: float = Field(default=75.0, gt=0)
    # Client connections per process; the excess gets 503 and is closed at once, not queued.
    max_client_connections: int = Field(default=10_000, gt=0)


class ServerWebSocketSection(_Section):
    """What every proxied WebSocket shares (a route turns them on: its ``websocket.enabled``)."""

    # The largest message, either way, after reassembly and decompression; a bigger one closes the
    # connection with 1009 (message too big).
    max_message_size: int = Field(default=1024 * 1024, gt=0)


class TlsSection(_Section):
    """HTTPS on the data listener. The certificate and key are read again on every reload."""

    cert: str  # PEM: the certificate, then its chain
    key: str
    # PEM file of the CAs whose client certificates are accepted: mutual TLS, a client without one
    # is refused in the handshake.
    client_ca: str | None = None
    min_version: Literal["TLSv1.2", "TLSv1.3"] = "TLSv1.2"

    _check_files = field_validator("cert", "key", "client_ca")(_readable_file)

    @model_validator(mode="after")
    def _loadable(self) -> TlsSection:
        check_server_files(self.cert, self.key, self.client_ca)
        return self


class ServerSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_size: int = Field(default=10 * 1024 * 1024, gt=0)
    upstream_max_connections: int = Field(default=512, gt=0)
    # Seconds a pooled backend connection may stay idle and still be used. Below the keep-alive time
    # of common backends (5 s for Node.js, Apache httpd, uvicorn), so that the gateway drops an idle
    # connection before the backend closes it under a request.
    upstream_keepalive: float = Field(default=4.0, gt=0)
    # One JSON line per request on stdout (app/observability/access_log.py), written off the request path.
    access_log: bool = True
    # On SIGTERM readiness turns false at once; the listeners keep accepting for ``drain_delay``
    # seconds (a load balancer's readiness probe period, so it stops sending first), then stop
    # accepting and give the requests in flight up to ``drain_timeout`` seconds to finish.
    drain_delay: float = Field(default=0.0, ge=0)
    drain_timeout: float = Field(default=30.0, ge=0)
    paths: PathsSection = PathsSection()
    limits: LimitsSection = LimitsSection()
    websocket: ServerWebSocketSection = ServerWebSocketSection()
    tls: TlsSection | None = None


class AdminTokenSpec(_Section):
    """An admin token kept as its sha256 only (``printf %s "$TOKEN" | sha256sum``)."""

    name: str = Field(min_length=1, max_length=100)
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")
    # read: GET only (the status page, the lists); write: changes too.
    role: Literal["read", "write"] = "read"


class AdminListen(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=9901, ge=0, le=65535)  # 0: any free port


class AdminSection(_Section):
    # No token at all: the admin API is off, not open. This one is a write token named "admin".
    token: str | None = None
    tokens: list[AdminTokenSpec] = []
    # A listener of its own for the admin API and the status page (keep it off the internet's way):
    # the data port then answers only /_gateway/health and /_gateway/ready under /_gateway/.
    listen: AdminListen | None = None
    # With ``listen``: /_gateway/metrics on the data port too (for scrapers that only reach that).
    metrics_on_data_port: bool = False
    # The audit log of admin API changes keeps this many records (the newest), fleet-wide.
    audit_max_records: int = Field(default=1000, ge=1, le=1_000_000)

    @model_validator(mode="after")
    def _names_once(self) -> AdminSection:
        names = [t.name for t in self.tokens] + (["admin"] if self.token else [])
        if len(names) != len(set(names)):
            raise ValueError("tokens: each admin token needs a name of its own (admin.token is named 'admin')")
        return self


class GatewayConfig(_Section):
    enabled: bool = True
    server: ServerSection = ServerSection()
    redis: RedisSection = RedisSection()
    admin: AdminSection = AdminSection()
    router: RouterSection = RouterSection()
    rate_limiter: RateLimiterSection = RateLimiterSection()
    cache: CacheSection = CacheSection()
    circuit_breaker: CircuitBreakerSection = CircuitBreakerSection()
    auth: AuthSection = AuthSection()

    @model_validator(mode="after")
    def _routes_auth(self) -> GatewayConfig:
        for i, route in enumerate(self.router.routes):
            if route.auth is not None:
                try:
                    route_auth(self.auth, route.auth).check()
                except ValueError as error:
                    raise ValueError(f"router.routes.{i}.auth: {error}") from None
        return self


# The seed's variables and ours, each to the dotted path it overrides.
ENV_OVERRIDES: dict[str, str] = {
    "API_GATEWAY_RATE_LIMIT_PER_MINUTE": "rate_limiter.default.requests_per_minute",
    "API_GATEWAY_RATE_LIMIT_PER_HOUR": "rate_limiter.default.requests_per_hour",
    "API_GATEWAY_BURST_SIZE": "rate_limiter.default.burst_size",
    "API_GATEWAY_CACHE_TTL": "cache.ttl",
    "API_GATEWAY_CACHE_MAX_SIZE": "cache.max_size",
    "API_GATEWAY_CACHE_MAX_BYTES": "cache.max_bytes",
    "API_GATEWAY_CACHE_BUCKETS": "cache.buckets",
    "API_GATEWAY_CACHE_MODE": "cache.mode",
    "API_GATEWAY_CB_FAILURE_THRESHOLD": "circuit_breaker.default.failure_threshold",
    "API_GATEWAY_CB_RECOVERY_TIMEOUT": "circuit_breaker.default.recovery_timeout",
    "API_GATEWAY_CB_SUCCESS_THRESHOLD": "circuit_breaker.default.success_threshold",
    "API_GATEWAY_ENABLED": "enabled",
    "API_GATEWAY_ACCESS_LOG": "server.access_log",
    "API_GATEWAY_ADMIN_TOKEN": "admin.token",
    "API_GATEWAY_REDIS_PREFIX": "redis.prefix",
    "REDIS_URL": "redis.url",
    # Listed after REDIS_URL so that the gateway's own name wins when both are set.
    "API_GATEWAY_REDIS_URL": "redis.url",
    "API_GATEWAY_REDIS_CLUSTER_NODES": "redis.cluster_nodes",       # comma-separated host:port
    "API_GATEWAY_REDIS_SENTINEL_NODES": "redis.sentinel.nodes",     # comma-separated host:port
    "API_GATEWAY_REDIS_SENTINEL_MASTER": "redis.sentinel.master",
    "API_GATEWAY_REDIS_SENTINEL_PASSWORD": "redis.sentinel.password",
    # The cache's own Redis (cache.redis), named the same way.
    "API_GATEWAY_CACHE_REDIS_URL": "cache.redis.url",
    "API_GATEWAY_CACHE_REDIS_PREFIX": "cache.redis.prefix",
    "API_GATEWAY_CACHE_REDIS_CLUSTER_NODES": "cache.redis.cluster_nodes",       # comma-separated host:port
    "API_GATEWAY_CACHE_REDIS_SENTINEL_NODES": "cache.redis.sentinel.nodes",     # comma-separated host:port
    "API_GATEWAY_CACHE_REDIS_SENTINEL_MASTER": "cache.redis.sentinel.master",
    "API_GATEWAY_CACHE_REDIS_SENTINEL_PASSWORD": "cache.redis.sentinel.password",
}


def _set_path(tree: dict[str, Any], dotted: str, value: str) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        child = tree.get(part)
        if not isinstance(child, dict):
            child = tree[part] = {}
        tree = child
    tree[leaf] = value


def _models_in(annotation: Any) -> set[type[BaseModel]]:
    """The sections an annotation holds, through lists, dicts, unions and Optional."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {annotation}
    return {model for arg in get_args(annotation) for model in _models_in(arg)}


def _keys_beside(loc: tuple[int | str, ...]) -> set[str]:
    """The keys the schema allows where ``loc`` ends: walked field by field from the top; list
    indexes, dict keys and pydantic's union tags leave the sections in hand as they are."""
    models: set[type[BaseModel]] = {GatewayConfig}
    for part in loc[:-1]:
        found = {m for model in models if isinstance(part, str) and (field := model.model_fields.get(part))
                 for m in _models_in(field.annotation)}
        models = found or models
    return {name for model in models for key, field in model.model_fields.items()
            for name in (key, field.alias) if name}


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    close = difflib.get_close_matches(str(loc[-1]), sorted(_keys_beside(loc)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    """Each bad field's dotted path and what is wrong with it."""
    problems = []
    for item in error.errors():
        path = ".".join(str(p) for p in item["loc"]) or "(top level)"
        reason = item["msg"].removeprefix("Value error, ")
        if item["type"] not in ("missing",) and "input" in item and not isinstance(item["input"], dict):
            reason += f" (got {item['input']!r})"
        if item["type"] == "extra_forbidden":  # a typo, most likely
            reason += _did_you_mean(item["loc"])
        problems.append((path, reason))
    return problems


def _format_errors(problems: list[tuple[str, str]], source: str) -> str:
    lines = [f"{source}: {len(problems)} invalid field(s)"]
    lines.extend(f"  {path}: {reason}" for path, reason in problems)
    return "\n".join(lines)


def parse_config(raw: Mapping[str, Any] | None, env: Mapping[str, str] | None = None,
                 source: str = "config") -> GatewayConfig:
    """Validate a config tree, with the environment's overrides applied on top."""
    if not isinstance(raw, Mapping | None):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(raw).__name__}")
    tree: dict[str, Any] = dict(raw or {})
    for name, dotted in ENV_OVERRIDES.items():
        value = (env or {}).get(name)
        if value not in (None, ""):
            _set_path(tree, dotted, value)
    try:
        return GatewayConfig.model_validate(tree)
    except ValidationError as error:
        problems = _problems(error)
        raise ConfigError(_format_errors(problems, source), problems) from None


def load_config(path: str | os.PathLike[str] | None = None,
                env: Mapping[str, str] | None = None) -> GatewayConfig:
    """Load the YAML file at ``path`` (or ``$API_GATEWAY_CONFIG``); no file means the defaults."""
    env = os.environ if env is None else env
    path = path or env.get("API_GATEWAY_CONFIG")
    raw: Any = None
    source = "environment"
    if path:
        source = str(path)
        try:
            with open(path, encoding="utf-8") as stream:  # so that YAML's errors name the file
                raw = yaml.safe_load(stream)
        except FileNotFoundError:
            raise ConfigError(f"{source}: no such file") from None
        except yaml.YAMLError as error:
            raise ConfigError(f"{source}: not valid YAML: {error}") from None
    return parse_config(raw, env, source)
