"""The data plane: a plain ASGI callable, no framework routing or middleware stack.

It turns the ASGI scope into an ``Exchange``, runs the pipeline and writes the ``Reply``,
streaming the backend's body when the reply carries one.
"""

from __future__ import annotations

import asyncio
import logging
from time import perf_counter
from typing import Any

import aiohttp

from app.observability.access_log import AccessLog
from app.pipeline.exchange import Exchange, Reply, error_reply, new_request_id
from app.observability.metrics import EDGE_REFUSED, NO_ROUTE, RouteMetrics
from app.edge.bodies import ClientGone
from app.edge.head import REFUSED_BODY, EdgeRefusal
from app.edge.paths import RECEIVED_PATH
from app.pipeline.orchestrator import ApiGatewayOrchestrator

log = logging.getLogger("apigw.proxy")

Scope = dict[str, Any]
_CHUNK = 64 * 1024
# What nginx logs for a client that went away before its answer.
_CLIENT_GONE = 499


def exchange_from_scope(scope: Scope, receive: Any) -> Exchange:
    client = scope.get("client")
    ex = Exchange(
        method=scope["method"],
        path=scope["path"],
        raw_path=scope.get("raw_path") or scope["path"].encode(),
        query_string=scope.get("query_string", b""),
        headers=scope["headers"],
        client_addr=client[0] if client else "unknown",
        scheme=scope.get("scheme", "http"),
        receive=receive,
        received_path=scope.get(RECEIVED_PATH),
    )
    claimed = ex.header(b"x-request-id")
    if claimed:
        # Kept from the client only when it is a sane token; a hostile value is replaced.
        candidate = claimed.decode("latin-1")
        if len(candidate) <= 128 and candidate.isprintable():
            ex.request_id = candidate
    return ex


class ProxyApp:
    def __init__(self, orchestrator: ApiGatewayOrchestrator, access_log: AccessLog | None = None) -> None:
        self.orchestrator = orchestrator
        self.access_log = access_log
        # Requests still being answered, body included: a replaced config's parts are closed once
        # this is 0 (app/gateway.py).
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        started = perf_counter()
        self.in_flight += 1
        try:
            ex = exchange_from_scope(scope, receive)
            try:
                reply = await self.orchestrator.process(ex)
            except ClientGone:
                refused = scope.get(REFUSED_BODY)  # the edge answered (408 for a stalled body)
                if refused is not None:
                    ex.log_fields = {"reason": refused[1]}
                self.observe(ex, refused[0] if refused is not None else _CLIENT_GONE, perf_counter() - started)
                return
            except Exception:  # the last net: a bug answers JSON and is logged, never a stack trace
                log.exception("pipeline failed for %s %s (request %s)", ex.method, ex.path, ex.request_id)
                reply = error_reply(500, "internal gateway error", request_id=ex.request_id)
            # Measured when the answer is ready: streaming its body is the client's and backend's time.
            seconds = perf_counter() - started
            try:
                await send_reply(send, reply, ex)
            finally:
                # After the answer went out, so the client never waits for the bookkeeping.
                self.observe(ex, reply.status, seconds)
        finally:
            self.in_flight -= 1

    def refused(self, refusal: EdgeRefusal) -> None:
        """A request the client-side protocol answered itself: logged and counted as the others
        are, under the route "(edge)", with the reason."""
        target = refusal.target.decode("latin-1")
        ex = Exchange(method=refusal.method, path=target, raw_path=refusal.target, query_string=b"", headers=[],
                      client_addr=refusal.client_addr, request_id=new_request_id(),
                      log_fields={"reason": refusal.reason})
        EDGE_REFUSED.observe(refusal.status, 0.0, 0.0)
        if self.access_log is not None:
            self.access_log.record(ex, refusal.status, 0.0)

    def observe(self, ex: Exchange, status: int, seconds: float) -> None:
        """The request in its route's metrics and the access log (the WebSocket proxy's handshakes too)."""
        route = ex.route
        if route is None:
            metrics = NO_ROUTE
        else:
            metrics = route.compiled.metrics
            if metrics is None:
                metrics = route.compiled.metrics = RouteMetrics(route.key)
        metrics.observe(status, seconds, ex.backend_seconds)
        if self.access_log is not None:
            self.access_log.record(ex, status, seconds)


async def send_reply(send: Any, reply: Reply, ex: Exchange) -> None:
    headers = reply.headers
    headers.extend(ex.response_headers)
    headers.append((b"x-request-id", ex.request_id.encode("latin-1")))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    stream = reply.stream
    if stream is None:
        await send({"type": "http.response.body", "body": reply.body})
        return
    try:
        async for chunk in stream.content.iter_chunked(_CHUNK):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    except (aiohttp.ClientError, asyncio.TimeoutError) as error:
        # The status is already sent: all that is left is to cut the connection, so that the
        # client sees an incomplete body rather than a complete-looking wrong one.
        log.warning("backend broke off the body of %s %s: %r", ex.method, ex.path, error)
    except OSError:
        pass  # the client went away while we were sending
    finally:
        stream.release()
