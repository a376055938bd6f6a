"""What the benchmark measures: the gateway configurations, and whether their components exist yet.

A configuration whose component is not on main yet is reported as "n/a (component missing)". That
is decided by behaviour, not by file names: an in-process gateway on the memory store is asked twice
and must answer what the component would (a 429 under a limit of one; a cache HIT the second time).
So the harness runs today and fills in by itself as the components land.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.config import parse_config
from app.pipeline.exchange import Exchange
from app.orchestrator import ApiGatewayOrchestrator

BENCH_PATH = "/bench"
# Limits no benchmark run reaches: every request is counted, none refused.
_UNREACHABLE_LIMITS = {"requests_per_minute": 10**9, "requests_per_hour": 10**10}
BENCH_KEY = "bench-api-key-0123456789abcdef"


@dataclass(frozen=True)
class BenchJwt:
    jwks_file: Path
    token: str


@functools.cache
def bench_jwt() -> BenchJwt:
    """An RS256 key of the benchmark's own, its JWKS in a file, and one token valid for a day."""
    import jwt
    from cryptography.hazmat.primitives.asymmetric import rsa
    from jwt.algorithms import RSAAlgorithm

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = {**json.loads(RSAAlgorithm.to_jwk(key.public_key())), "kid": "bench", "alg": "RS256"}
    path = Path(tempfile.mkdtemp(prefix="apigw-bench-")) / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    token = jwt.encode({"sub": "bench", "exp": int(time.time()) + 86400}, key, algorithm="RS256",
                       headers={"kid": "bench"})
    return BenchJwt(path, token)


@dataclass(frozen=True)
class GatewayCase:
    name: str
    title: str
    needs: tuple[str, ...]  # components ("rate_limiter", "cache") that must behave for it to run
    rate_limit: bool
    cache: bool
    breaker: bool
    unique_paths: bool = False  # every request its own URL: a cache miss whose answer is stored
    warm_cache: bool = False  # fill the cache before measuring: every request a hit
    replicas: int = 1
    # Components the configuration turns on that it can run without: while one is not on main yet
    # the figures are measured and labelled incomplete, and its targets are not judged.
    optional: tuple[str, ...] = ()
    # "api_key" or "jwt": the route requires that credential, and every request carries a valid one.
    auth: str | None = None

    def config(self, backend_url: str) -> dict[str, Any]:
        config = gateway_config(backend_url, rate_limit=self.rate_limit, cache=self.cache, breaker=self.breaker)
        if self.auth == "api_key":
            config["rate_limiter"]["api_keys"] = [{"key": BENCH_KEY, "client_id": "bench"}]
            config["auth"] = {"methods": ["api_key"]}
        elif self.auth == "jwt":
            config["auth"] = {"methods": ["jwt"], "jwt": {"jwks_file": str(bench_jwt().jwks_file)}}
        return config

    @property
    def headers(self) -> dict[str, str]:
        """What every request of the configuration carries (its credential)."""
        if self.auth == "api_key":
            return {"X-API-Key": BENCH_KEY}
        if self.auth == "jwt":
            return {"Authorization": f"Bearer {bench_jwt().token}"}
        return {}


CASES = [
    GatewayCase("gw_proxy", "gateway (a) proxy-only route", (), rate_limit=False, cache=False, breaker=False),
    GatewayCase("gw_ratelimit", "gateway (b) rate-limited, cache off", ("rate_limiter",),
                rate_limit=True, cache=False, breaker=True, optional=("circuit_breaker",)),
    GatewayCase("gw_miss", "gateway (c) full pipeline, miss + store", ("cache",),
                rate_limit=True, cache=True, breaker=True, unique_paths=True,
                optional=("rate_limiter", "circuit_breaker")),
    GatewayCase("gw_hit", "gateway (d) full pipeline, cache hit", ("cache",),
                rate_limit=True, cache=True, breaker=True, warm_cache=True,
                optional=("rate_limiter", "circuit_breaker")),
    # Each as (b) plus a credential to check: their figures read as ratios to (b)'s in the same run.
    GatewayCase("gw_apikey", "gateway (e) API-key route, rate-limited", ("rate_limiter", "auth"),
                rate_limit=True, cache=False, breaker=True, optional=("circuit_breaker",), auth="api_key"),
    GatewayCase("gw_jwt", "gateway (f) RS256 JWT route, rate-limited", ("rate_limiter", "auth"),
                rate_limit=True, cache=False, breaker=True, optional=("circuit_breaker",), auth="jwt"),
    GatewayCase("gw2_proxy", "2 replicas behind nginx, proxy-only", (), rate_limit=False, cache=False,
                breaker=False, replicas=2),
    GatewayCase("gw2_ratelimit", "2 replicas behind nginx, rate-limited", ("rate_limiter",),
                rate_limit=True, cache=False, breaker=True, replicas=2, optional=("circuit_breaker",)),
]


def gateway_config(backend_url: str, *, rate_limit: bool, cache: bool, breaker: bool,
                   limits: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "rate_limiter": {"enabled": rate_limit, "default": limits or _UNREACHABLE_LIMITS},
        "cache": {"enabled": cache, "ttl": 600},
        "circuit_breaker": {"enabled": breaker},
        "router": {"routes": [{"path": BENCH_PATH, "method": "GET", "target": backend_url}]},
    }


async def _ask_twice(config: dict[str, Any]) -> list[tuple[int, list[tuple[bytes, bytes]]]]:
    orchestrator = ApiGatewayOrchestrator(parse_config(config, {}, "probe"))
    await orchestrator.start()
    answers = []
    try:
        for _ in range(2):
            ex = Exchange(method="GET", path=BENCH_PATH, raw_path=BENCH_PATH.encode(), query_string=b"",
                          headers=[(b"host", b"bench")], client_addr="127.0.0.1")
            reply = await orchestrator.process(ex)
            if reply.stream is not None:
                await reply.stream.read()
                reply.stream.release()
            answers.append((reply.status, [(n.lower(), v) for n, v in [*reply.headers, *ex.response_headers]]))
    finally:
        await orchestrator.close()
    return answers


async def probe_components(backend_url: str) -> dict[str, str | None]:
    """Each component's name -> None when it works, else why it counts as missing."""
    found: dict[str, str | None] = {}
    try:
        limited = gateway_config(backend_url, rate_limit=True, cache=False, breaker=False,
                                 limits={"requests_per_minute": 1, "requests_per_hour": None})
        statuses = [status for status, _ in await _ask_twice(limited)]
        found["rate_limiter"] = None if statuses == [200, 429] else f"limit of 1/min answered {statuses}"
    except Exception as error:  # a schema without the settings, or a stage that breaks
        found["rate_limiter"] = f"{type(error).__name__}: {error}"
    try:
        cached = gateway_config(backend_url, rate_limit=False, cache=True, breaker=False)
        second = (await _ask_twice(cached))[1]
        hit = (b"x-cache", b"HIT") in second[1]
        found["cache"] = None if hit else "the second identical GET was not a cache HIT"
    except Exception as error:
        found["cache"] = f"{type(error).__name__}: {error}"
    try:
        keyed = {**gateway_config(backend_url, rate_limit=False, cache=False, breaker=False),
                 "auth": {"methods": ["api_key"]}}
        statuses = [status for status, _ in await _ask_twice(keyed)]
        found["auth"] = None if statuses == [401, 401] else f"a route requiring a key answered {statuses} without one"
    except Exception as error:
        found["auth"] = f"{type(error).__name__}: {error}"
    # Informational: every case with breaker=True runs whether or not it exists.
    found["circuit_breaker"] = None if importlib.util.find_spec("app.circuit_breaker") else "no app.circuit_breaker"
    return found
