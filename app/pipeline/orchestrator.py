"""The request pipeline: what ``process`` does with each request, in this order.

1. match the route (the rate limit needs the route's own limits; nothing is answered yet);
2. admission, one store round trip for every stage that asks: identify the client and charge the
   rate limit, look the cache up (taking the fill lock on a miss), count the client's activity,
   check the circuit; the first stage that answers (429, HIT, 503) ends the request here;
3. 404 when no route matched (after the rate limit: unrouted requests are counted too);
4. transform the request, forward it to a target (with the route's retries), transform the reply;
5. completion, one more round trip for every stage that writes: the cache store and the circuit's
   outcome together; sent after the client is answered when every write allows it (a stored miss
   whose backend call succeeded), else before;
6. a stale cached answer instead of a 5xx when the route's cache allows it; then the client.

This is the seed's order (identify, rate limit, route, cache lookup, circuit check, transform,
backend, transform, cache store), except that the route is matched first. ``handle_request`` is
the seed's library call: the same pipeline for a JSON body, answering ``(body, status)``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from time import perf_counter
from typing import Any

import aiohttp
import orjson
from yarl import URL

from app.auth.cors.handler import preflight_method
from app.auth.cors.stage import CorsStage
from app.auth.ip_restriction.stage import IpRestrictionStage
from app.auth.stage import AuthStage
from app.control.activity import ClientActivity
from app.edge.bodies import SMALL_BODY, BodyTooLarge, ClientGone, request_body
from app.edge.paths import strip_segments
from app.edge.tls import backend_context
from app.breaker.manager import CircuitBreakerManager
from app.breaker.stage import CircuitBreakerStage
from app.cache_manager import ApiCacheManager, CacheStage
from app.config import GatewayConfig
from app.pipeline.after_answer import AfterAnswer
from app.pipeline.compiled import CompiledRoute
from app.pipeline.exchange import JSON_CONTENT, BackendCall, Exchange, Reply, error_reply, new_request_id
from app.breaker.health import HealthChecker
from app.observability.metrics import STORE_ERRORS, STORE_ROUND_TRIPS
from app.pipeline.stage import AFTER_ANSWER, BEFORE_ANSWER, CallGroup, Stage, StagePlan
from app.ratelimit.stage import RateLimitStage
from app.ratelimit.limiter import ApiGatewayRateLimiter
from app.pipeline.retry import RetryPolicy, send_with_retries
from app.routing.router import ApiGatewayRouter, Route, RouteMatch
from app.store import MemoryStore, ScriptCall, Store, StoreError
from app.store.memory_limits import log_memory_warnings
from app.transform.apply import transform_reply, transform_request
from app.transformation_engine import CompiledTransform, TransformationEngine
from app.edge.upstream import (
    NOT_FORWARDED,
    UpstreamClient,
    UpstreamError,
    UpstreamTimeout,
    UpstreamTlsError,
    backend_url,
    client_timeout,
    forwardable_request_headers,
    forwardable_response_headers,
    relayable,
)

log = logging.getLogger("apigw.pipeline")

# Answers that mean the backend could not serve: a stale cached answer is better (stale-if-error).
_FAILURE_STATUSES = frozenset({500, 502, 503, 504})
# Not forwarded from the client: hop-by-hop headers, and those this hop sets from what it knows.
_NOT_FORWARDED = NOT_FORWARDED | {b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"x-request-id"}


# The request pipeline's batched round trips that failed (components count their own calls).
STORE_ERRORS_PIPELINE = STORE_ERRORS.labels("pipeline")


class ApiGatewayOrchestrator:
    """Holds the gateway's components and runs each request through them."""

    def __init__(self, config: GatewayConfig | None = None, store: Store | None = None,
                 upstream: UpstreamClient | None = None, cache_store: Store | None = None) -> None:
        self.config = config or GatewayConfig()
        self.store = store or MemoryStore(prefix=self.config.redis.prefix)
        STORE_ROUND_TRIPS.stores.add(self.store)
        # The cache's scripts go to a Redis of their own when cache.redis names one (the same store
        # otherwise); the request's batch is then split by store and sent to both at once.
        self.cache_store = cache_store or self.store
        STORE_ROUND_TRIPS.stores.add(self.cache_store)
        self.upstream = upstream or UpstreamClient(self.config.server.upstream_max_connections,
                                                   self.config.server.upstream_keepalive)
        # The seed's library transformer, for handle_request's data (routes compile their own).
        self.transformer = TransformationEngine()
        self.rate_limiter = ApiGatewayRateLimiter(self.store, self.config.rate_limiter,
                                                  self.config.auth.api_key.header)
        # In the seed's order; each component issue adds its stage here.
        self.stages: list[Stage] = []
        # Before the rate limit, as their prepare answers what no backend needs to see: a CORS
        # preflight, then a refused address.
        self.stages.append(CorsStage())
        trust = self.rate_limiter.identifier.trust
        self.stages.append(IpRestrictionStage(self.config.auth, trust))
        if self.config.rate_limiter.enabled:
            self.stages.append(RateLimitStage(self.rate_limiter))
        # Its prepare names the client the rate limit counts; its admit (401, 403) comes after the
        # rate limit's, so a client past its limit gets 429 whatever its credentials.
        self.auth_stage = AuthStage(self.config.auth, self.store, self.rate_limiter.manager, trust)
        self.stages.append(self.auth_stage)
        self.cache_manager = ApiCacheManager(store=self.cache_store, settings=self.config.cache)
        # The gateway's own targeted cache-control field (RFC 9213) is addressed to it alone: read by
        # the cache, never forwarded to the client.
        own = self.config.cache.targeted_field
        self._own_cache_field = own.lower().encode("latin-1") if own else None
        self.cache_stage = CacheStage(self.cache_manager, forward=self._forward, match=self._match_route)
        self.stages.append(self.cache_stage)
        # Writes sent after the answer, one batch per turn of the loop; tracked by the cache's
        # filler, whose close cancels what has not landed (boundedly).
        self._after_answer = AfterAnswer(self.cache_stage.filler.spawn, self._run_calls)
        # After the rate limit stage: it counts the client that stage identified, and answers nothing.
        self.client_activity = ClientActivity(self.store)
        self.stages.append(self.client_activity)
        self.circuit_breaker_manager = CircuitBreakerManager(self.store, self.config.circuit_breaker.default)
        self.circuit_breaker_stage = CircuitBreakerStage(self.circuit_breaker_manager, self.config.circuit_breaker)
        self.stages.append(self.circuit_breaker_stage)
        # The stages that run for requests that matched no route (each route compiles its own plan).
        self.unrouted_plan = self._plan_for(None)
        # Built after the stages: compiling a route picks the stages that apply to it.
        self.router: ApiGatewayRouter[CompiledRoute] = ApiGatewayRouter(
            self.config.router.routes, enabled=self.config.enabled, compile=self._compile_route)
        self.router.status_reporters["circuits"] = self.circuit_breaker_manager.get_all_stats
        # Active health checks of the targets of routes with health_check (a background task).
        self.health_checker = HealthChecker(self.router, self.store, lambda: self.upstream.session,
                                            lambda route: route.compiled.tls)

    def _compile_route(self, route: Route[CompiledRoute]) -> CompiledRoute:
        spec = route.spec
        return CompiledRoute(
            stages=self._plan_for(route),
            upgrade_stages=self._upgrade_plan_for(route),
            timeout=client_timeout(spec.timeout.connect, spec.timeout.read),
            max_body=spec.max_body_size or self.config.server.max_body_size,
            retry=RetryPolicy.for_route(spec.retry, route.key),
            transform=CompiledTransform(spec.transform) if spec.transform is not None else None,
            tls=backend_context(spec.ca, spec.client_cert, spec.client_key))

    def insert_stage(self, index: int, stage: Stage) -> None:
        """Add a stage after construction (a test's stand-in, a plugin): every route's plan is
        made again."""
        self.stages.insert(index, stage)
        self.unrouted_plan = self._plan_for(None)
        for route in self.router.routes:
            route.compiled.stages = self._plan_for(route)
            route.compiled.upgrade_stages = self._upgrade_plan_for(route)

    def _plan_for(self, route: Route[CompiledRoute] | None) -> StagePlan:
        return StagePlan.of(stage for stage in self.stages if stage.applies_to(route))

    def _upgrade_plan_for(self, route: Route[CompiledRoute]) -> StagePlan:
        # A WebSocket handshake is no cacheable GET: every stage but the cache's.
        return StagePlan.of(stage for stage in self.stages
                            if stage is not self.cache_stage and stage.applies_to(route))

    def _match_route(self, path: str, method: str) -> Route[CompiledRoute] | None:
        found = self.router.match(path, method)
        return found.route if found is not None else None

    async def start(self) -> None:
        await self.store.start()
        # Once per process, not per reload: whether the cache can fill the Redis the limits need
        # (or, on a Redis of its own, the one it has).
        budget = self.config.cache.budget if self.config.cache.enabled else None
        if self.cache_store is not self.store:
            await self.cache_store.start()
            log_memory_warnings(await self.store.memory_limits(), None)
            log_memory_warnings(await self.cache_store.memory_limits(), budget, cache_only=True)
        else:
            log_memory_warnings(await self.store.memory_limits(), budget)
        await self.upstream.start()
        await self.start_components()

    async def close(self) -> None:
        await self.close_components()
        await self.upstream.close()
        if self.cache_store is not self.store:
            await self.cache_store.close()
        await self.store.close()

    async def start_components(self) -> None:
        """What this config's components start; the store and the upstream client may outlive them
        (a reloaded config's components share them)."""
        await self.rate_limiter.start()
        await self.auth_stage.start(self.router.routes)  # reads the JWKS key sets
        await self.cache_stage.start()  # subscribes to fills; warms cache.warm paths
        await self.client_activity.start()
        await self.circuit_breaker_manager.start()
        await self.health_checker.start()

    async def close_components(self) -> None:
        await self.health_checker.close()
        await self.circuit_breaker_manager.close()
        await self.client_activity.close()
        await self.cache_stage.close()
        await self.auth_stage.close()
        await self.rate_limiter.close()

    # -- the pipeline ---------------------------------------------------------------------------

    async def process(self, ex: Exchange) -> Reply:
        if not ex.request_id:
            ex.request_id = new_request_id()
        found = self.router.match(ex.path, ex.method, ex)
        if found is None and ex.method == "OPTIONS":
            found = self._preflight_match(ex)
        route = ex.route = found.route if found is not None else None
        early = await self._admit(ex, route, route.compiled.stages if route is not None else self.unrouted_plan)
        if early is not None:
            return early
        if route is None:
            return error_reply(404, "no route", method=ex.method, path=ex.path)
        transform = route.compiled.transform
        if transform is not None:
            refused = await transform_request(ex, route, transform)
            if refused is not None:
                self._ended_early(ex, route, refused)
                return refused
        reply = await self._forward(ex, route)
        if transform is not None and reply.from_backend:
            reply = await transform_reply(ex, route, transform, reply)
        completing = route.compiled.stages.completing
        if completing:
            await self._complete(ex, route, reply, completing)
        if self._own_cache_field is not None:
            own = self._own_cache_field
            reply.headers = [pair for pair in reply.headers if pair[0] != own]
        if reply.status in _FAILURE_STATUSES:
            stale = self._stale_instead(ex, route)
            if stale is not None:
                if reply.stream is not None:
                    reply.stream.release()
                return stale
        return reply

    def _preflight_match(self, ex: Exchange) -> RouteMatch[CompiledRoute] | None:
        """A CORS preflight (OPTIONS) belongs to the route of the method it asks about, when that
        route has CORS: its stage answers it."""
        wanted = preflight_method(ex)
        found = self.router.match(ex.path, wanted, ex) if wanted else None
        return found if found is not None and found.route.spec.cors is not None else None

    def _stages_for(self, route: Route[CompiledRoute] | None) -> StagePlan:
        return route.compiled.stages if route is not None else self.unrouted_plan

    async def _admit(self, ex: Exchange, route: Route[CompiledRoute] | None, plan: StagePlan) -> Reply | None:
        """Rate limit, cache lookup, circuit check: every store read in one round trip."""
        for stage in plan.preparing:
            early = await stage.prepare(ex, route)
            if early is not None:
                return early
        calls = [stage.admission_call(ex, route) for stage in plan.asking]
        replies = await self._run_calls(calls) if any(calls) else None
        for stage, index in plan.deciding:
            early = await stage.admit(ex, route, plan.reply_of(replies, index))
            if early is not None:
                if early.status >= 500 and route is not None:
                    early = self._stale_instead(ex, route) or early
                self._ended_early(ex, route, early, stage, replies, plan)
                return early
        return None

    async def _complete(self, ex: Exchange, route: Route[CompiledRoute], reply: Reply,
                        stages: tuple[Stage, ...]) -> None:
        """Cache store and breaker outcome: every store write in one round trip (or none), sent
        after the answer when every write may wait and one had better (``Stage.completion_order``)."""
        calls = [stage.completion_call(ex, route, reply) for stage in stages]
        if not any(calls):
            return
        after = False
        for stage, call in zip(stages, calls):
            if call is not None:
                order = stage.completion_order(ex, call)
                if order == BEFORE_ANSWER:
                    after = False
                    break
                after = after or order == AFTER_ANSWER
        if after:
            self._after_answer.add((ex, route, reply, stages, calls))
            return
        await self._land(ex, route, reply, stages, calls)

    async def _land(self, ex: Exchange, route: Route[CompiledRoute], reply: Reply, stages: tuple[Stage, ...],
                    calls: list[ScriptCall | None]) -> None:
        replies = await self._run_calls(calls)
        for stage, call, store_reply in zip(stages, calls, replies, strict=True):
            if call is not None:
                await stage.completed(ex, route, reply, store_reply)

    async def _run_calls(self, calls: Sequence[ScriptCall | CallGroup | None]) -> list[Any]:
        """The non-None calls in one round trip; each stage gets its reply, None when it asked
        nothing, or the StoreError (usually StoreUnavailable) when the store could not answer."""
        wanted = [call for call in calls if call is not None]
        if not wanted:
            return [None] * len(calls)
        if CallGroup in map(type, wanted):
            return await self._run_grouped(calls)
        # Each call's reply, or its StoreError (unreachable, or a script error): the stage degrades,
        # never a 500. On a Redis Cluster a lost shard fails only the calls of its slots.
        if self.cache_store is self.store:
            answers = await self.store.run_each(*wanted)  # type: ignore[arg-type]  # no CallGroup left
        else:
            answers = await self._run_apart(wanted)  # type: ignore[arg-type]
        for answer in answers:
            if isinstance(answer, StoreError):
                STORE_ERRORS_PIPELINE.inc()
                break
        if len(answers) == len(calls):
            return answers
        replies = iter(answers)
        return [next(replies) if call is not None else None for call in calls]

    async def _run_apart(self, wanted: list[ScriptCall]) -> list[Any]:
        """The cache's calls to its own store and the others to the shared one, at once: one round
        trip of latency, a batch on each."""
        cached = [call.script.startswith("cache_") for call in wanted]
        if all(cached):
            return await self.cache_store.run_each(*wanted)
        if not any(cached):
            return await self.store.run_each(*wanted)
        shared, own = await asyncio.gather(
            self.store.run_each(*(call for call, c in zip(wanted, cached, strict=True) if not c)),
            self.cache_store.run_each(*(call for call, c in zip(wanted, cached, strict=True) if c)))
        shared_replies, own_replies = iter(shared), iter(own)
        return [next(own_replies) if c else next(shared_replies) for c in cached]

    async def _run_grouped(self, calls: Sequence[ScriptCall | CallGroup | None]) -> list[Any]:
        """``_run_calls`` when a stage sent a CallGroup: its calls go in the same round trip, and
        it gets the list of their replies."""
        flat: list[ScriptCall] = []
        for call in calls:
            if isinstance(call, CallGroup):
                flat.extend(call)
            elif call is not None:
                flat.append(call)
        answers = iter(await self._run_calls(flat))
        replies: list[Any] = []
        for call in calls:
            if isinstance(call, CallGroup):
                replies.append([next(answers) for _ in call])
            else:
                replies.append(next(answers) if call is not None else None)
        return replies

    def _ended_early(self, ex: Exchange, route: Route[CompiledRoute] | None, reply: Reply,
                     answered_by: Stage | None = None, replies: list[Any] | None = None,
                     plan: StagePlan | None = None) -> None:
        # The plan whose calls made ``replies``: a stage may have settled the route's since.
        plan = plan or self._stages_for(route)
        for stage, index in plan.ending:
            if stage is not answered_by:
                stage.ended_early(ex, route, reply, plan.reply_of(replies, index))

    def _stale_instead(self, ex: Exchange, route: Route[CompiledRoute]) -> Reply | None:
        for stage in route.compiled.stages.stale:
            stale = stage.stale_reply(ex, route)
            if stale is not None:
                return stale
        return None

    async def _forward(self, ex: Exchange, route: Route[CompiledRoute]) -> Reply:
        """Send the request to a target (the one the circuit check chose, if it did), retried as
        the route's policy allows; ``ex.backend`` tells the later stages how it went."""
        target = ex.target or route.balancer.next_target()
        if target is None:
            return error_reply(503, "no healthy target", route=route.key)
        limit = route.compiled.max_body
        try:
            body = await request_body(ex, limit)
        except BodyTooLarge:
            return error_reply(413, "request body too large", limit=limit)
        url = backend_url(target.url, self._upstream_path(ex, route), ex.query_string.decode("latin-1"))
        headers = self._request_headers(ex) if ex.not_forwarded is None else \
            self._request_headers(ex, _NOT_FORWARDED | ex.not_forwarded)
        policy = None if ex.no_retry else route.compiled.retry
        if policy is None:
            reply, backend = await self._attempt(ex, route, url, headers, body, limit)
        else:
            async def attempt() -> tuple[Reply, BackendCall | None]:
                return await self._attempt(ex, route, url, headers, body, limit)

            reply, backend = await send_with_retries(policy, ex.method, body, attempt, ex.retry_guard)
        ex.backend = backend
        return reply

    async def _attempt(self, ex: Exchange, route: Route[CompiledRoute], url: URL,
                       headers: list[tuple[str, str]], body: bytes | AsyncIterator[bytes] | None,
                       limit: int) -> tuple[Reply, BackendCall | None]:
        """One try; the BackendCall is None when the request never reached the backend."""
        sent = perf_counter()
        try:
            response = await self.upstream.send(ex.method, url, headers, body, route.compiled.timeout,
                                                route.compiled.tls)
        except UpstreamError as error:
            ex.backend_seconds += perf_counter() - sent
            if ex.body_too_large:
                return error_reply(413, "request body too large", limit=limit), None
            if ex.client_gone:  # the client's fault, not the backend's: no answer, no failure
                raise ClientGone from error
            log.info("upstream %s for %s: %s", error.reason, route.key, error)
            # A TLS failure says which (an untrusted certificate, a wrong name): the operator's clue.
            details = {"tls": str(error)} if isinstance(error, UpstreamTlsError) else {}
            return error_reply(error.status, error.reason, route=route.key, **details), \
                BackendCall(None, perf_counter() - sent)
        # A stage may want larger bodies whole (the cache, to keep what it may store).
        reply = await self._reply_from(response, route, max(SMALL_BODY, ex.read_body_up_to))
        ex.backend_seconds += perf_counter() - sent  # headers, and the body when it was read whole
        # A body that broke off is no answer, whatever the status line said.
        status = None if reply.status != response.status else response.status
        return reply, BackendCall(status, perf_counter() - sent)

    async def _reply_from(self, response: aiohttp.ClientResponse, route: Route[CompiledRoute],
                          read_up_to: int = SMALL_BODY) -> Reply:
        if not relayable(response.status, response.raw_headers):
            response.close()  # the connection may carry anything after such an answer
            return error_reply(502, "backend answer cannot be relayed", route=route.key,
                               backend_status=response.status)
        headers = forwardable_response_headers(response.raw_headers)
        length = response.content_length
        if length is not None and length <= read_up_to:
            try:
                body = await response.read()
            except (aiohttp.ClientError, asyncio.TimeoutError) as error:
                timed_out = isinstance(error, asyncio.TimeoutError | aiohttp.ServerTimeoutError)
                failure = UpstreamTimeout if timed_out else UpstreamError
                return error_reply(failure.status, failure.reason, route=route.key)
            finally:
                response.release()
            return Reply(response.status, headers, body, from_backend=True)
        return Reply(response.status, headers, stream=response, from_backend=True)

    # -- WebSocket handshakes (app/edge/websocket.py proxies the connection) -----------------------

    async def admit_upgrade(self, ex: Exchange) -> Reply | None:
        """The pipeline's first half for a WebSocket handshake: the route, then the same admission
        as any request's (rate limit, authentication, circuit; not the cache). None: go ahead, to
        ``ex.target`` when the circuit check chose one, and call ``upgrade_finished`` after."""
        if not ex.request_id:
            ex.request_id = new_request_id()
        found = self.router.match(ex.path, ex.method, ex)
        route = ex.route = found.route if found is not None else None
        plan = route.compiled.upgrade_stages if route is not None else self.unrouted_plan
        early = await self._admit(ex, route, plan)
        if early is not None:
            return early
        refused = None
        if route is None:
            refused = error_reply(404, "no route", method=ex.method, path=ex.path)
        elif not route.spec.websocket.enabled:
            # Envoy's answer to an upgrade its route does not allow.
            refused = error_reply(403, "websocket not enabled on this route", route=route.key)
        if refused is not None:
            self._ended_early(ex, route, refused, replies=None, plan=plan)
        return refused

    def upgrade_path(self, ex: Exchange) -> str:
        assert ex.route is not None
        return self._upstream_path(ex, ex.route)

    def upgrade_headers(self, ex: Exchange, dropped: frozenset[bytes]) -> list[tuple[str, str]]:
        """The handshake's headers for the backend: the client's minus ``dropped`` and the hop's own."""
        return self._request_headers(ex, _NOT_FORWARDED | dropped)

    async def upgrade_finished(self, ex: Exchange, reply: Reply, backend: BackendCall) -> None:
        """The second half: how the backend took the handshake (101, its refusal, or no answer)
        goes to the stages that record outcomes (the circuit), in one round trip."""
        route = ex.route
        assert route is not None
        ex.backend = backend
        ex.backend_seconds += backend.seconds
        completing = route.compiled.upgrade_stages.completing
        if completing:
            await self._complete(ex, route, reply, completing)

    # -- request pieces -------------------------------------------------------------------------

    @staticmethod
    def _upstream_path(ex: Exchange, route: Route[CompiledRoute]) -> str:
        path = ex.raw_path.decode("latin-1")
        if route.spec.strip_prefix and route.is_prefix and route.segments:
            # Whole segments, as many as the route's prefix has (a parameter is one).
            path = strip_segments(path, len(route.segments))
        return path

    @staticmethod
    def _request_headers(ex: Exchange, dropped: frozenset[bytes] = _NOT_FORWARDED) -> list[tuple[str, str]]:
        # Replace what the client claimed about hops with what this hop knows (one filtering pass).
        headers = forwardable_request_headers(ex.headers, dropped, ex.header(b"connection") is not None)
        prior = ex.header(b"x-forwarded-for")
        forwarded_for = f"{prior.decode('latin-1')}, {ex.client_addr}" if prior else ex.client_addr
        host = ex.header(b"host")
        headers.append(("X-Forwarded-For", forwarded_for))
        headers.append(("X-Forwarded-Proto", ex.scheme))
        if host:
            headers.append(("X-Forwarded-Host", host.decode("latin-1")))
        headers.append(("X-Request-ID", ex.request_id))
        if ex.validators:
            headers.extend((name.decode("latin-1"), value.decode("latin-1")) for name, value in ex.validators)
        return headers

    # -- the seed's library entry ---------------------------------------------------------------

    async def handle_request(self, client_id: str, path: str, method: str, data: dict[str, Any] | None,
                             schema_version: str = "v1") -> tuple[Any, int]:
        """The seed's call: ``data`` goes as a JSON body (as a query for GET and HEAD); the answer
        comes back parsed when it is JSON."""
        method = method.upper()
        data = self.transformer.transform_request(data, schema_version, "internal") if data else data
        headers: list[tuple[bytes, bytes]] = [(b"x-client-id", client_id.encode()),
                                              (b"x-api-version", schema_version.encode())]
        body: bytes | None = None
        query = b""
        if data and method in ("GET", "HEAD"):
            from urllib.parse import urlencode
            query = urlencode(sorted((k, str(v)) for k, v in data.items())).encode()
        elif data is not None and method not in ("GET", "HEAD"):
            body = orjson.dumps(data)
            headers.append(JSON_CONTENT)
        ex = Exchange(method=method, path=path, raw_path=path.encode(), query_string=query,
                      headers=headers, client_addr="127.0.0.1", body=body, client_id=client_id)
        reply = await self.process(ex)
        if reply.stream is not None:
            try:
                raw = await reply.stream.read()
            finally:
                reply.stream.release()
        else:
            raw = reply.body
        try:
            answer = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return raw.decode("utf-8", "replace"), reply.status
        if reply.from_backend and isinstance(answer, dict | list):
            answer = self.transformer.transform_response(answer, "internal", schema_version)
        return answer, reply.status
