"""OpenTelemetry tracing of the proxy path: off by default, on with the standard OTEL_* variables.

On when ``OTEL_TRACES_EXPORTER`` names an exporter (``otlp``, ``console``; ``none`` keeps it off) or
an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``),
unless ``OTEL_SDK_DISABLED=true``. The SDK is an optional dependency (``pip install 'apigw[otel]'``);
when tracing is off nothing of it is imported and the proxy is not wrapped at all, so the hot path
pays nothing.

When on, each proxied request is one SERVER span, child of the client's ``traceparent`` when it
sent one, and the backend receives the ``traceparent``/``tracestate`` of that span instead of the
client's: the backend's spans join the same trace under the gateway's.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from app.routing.router import ApiGatewayRouter

log = logging.getLogger("apigw.tracing")

_PROPAGATED = (b"traceparent", b"tracestate")


def tracing_wanted(env: Mapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def _exporter(env: Mapping[str, str]) -> SpanExporter:
    name = env.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower().split(",")[0] or "otlp"
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        raise ValueError(f"OTEL_TRACES_EXPORTER={name!r} is not supported (otlp, console, none)")
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
                or "http/protobuf").strip()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # type: ignore[assignment]
    return OTLPSpanExporter()  # reads its endpoint, headers and timeout from OTEL_EXPORTER_OTLP_*


class Tracing:
    """The tracer provider of this process, and the ASGI wrapper that makes the spans."""

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 exporter: SpanExporter | None = None) -> Tracing | None:
        """A Tracing when the environment asks for it (or an exporter is given), else None."""
        env = os.environ if env is None else env
        if exporter is None and not tracing_wanted(env):
            return None
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            exporter = exporter or _exporter(env)
        except (ImportError, ValueError) as error:
            log.error("tracing asked for by OTEL_* but not available (pip install 'apigw[otel]'): %s", error)
            return None
        attributes = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "apigw"}
        provider = TracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        log.info("tracing on: spans go to %s", type(exporter).__name__)
        return cls(provider)

    def wrap(self, app: Any, router: ApiGatewayRouter | None = None) -> Any:
        return _TracedProxy(app, self.provider, router)

    def close(self) -> None:
        self.provider.shutdown()  # flushes the spans still batched


class _TracedProxy:
    def __init__(self, app: Any, provider: TracerProvider, router: ApiGatewayRouter | None) -> None:
        from opentelemetry.propagate import get_global_textmap
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.app = app
        self.router = router
        self.tracer = provider.get_tracer("apigw")
        self.propagator = get_global_textmap()
        self._server = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        from opentelemetry import trace

        incoming = {name.decode("latin-1"): value.decode("latin-1")
                    for name, value in scope["headers"] if name in _PROPAGATED}
        parent = self.propagator.extract(incoming)
        method, path = scope["method"], scope["path"]
        route = None
        if self.router is not None:
            found = self.router.match(path, method)
            route = found.route.key if found is not None else None
        attributes = {"http.request.method": method, "url.path": path, "url.scheme": scope.get("scheme", "http")}
        if route is not None:
            attributes["http.route"] = route
        name = f"{method} {route}" if route is not None else method
        with self.tracer.start_as_current_span(name, context=parent, kind=self._server,
                                               attributes=attributes) as span:
            outgoing: dict[str, str] = {}
            self.propagator.inject(outgoing, context=trace.set_span_in_context(span))
            headers = [(n, v) for n, v in scope["headers"] if n not in _PROPAGATED]
            headers.extend((n.encode("latin-1"), v.encode("latin-1")) for n, v in outgoing.items())
            status = 0

            async def send_and_note(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                await send(message)

            await self.app({**scope, "headers": headers}, receive, send_and_note)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(self._error)
