"""What a rate-limit spec becomes for ``lua/ratelimit.lua`` (app/ratelimit/protocol.py): its
limits, and the script's decision as a ``RateLimitState`` with the headers it makes.

Limits are computed once per (client, route) and reused by every request (see
``ApiGatewayRateLimiter.plan``); the request path only picks a prebuilt ``ScriptCall``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from app.config import RateLimitSpec
from app.ratelimit.protocol import BUCKET, WINDOW, Decision, Limit

# Rolling windows: (spec field, key suffix, length in microseconds, buckets). A window is kept as
# buckets + 1 counters and counts its oldest bucket whole, so it never admits more than its limit in
# any window of its length, and frees a request at most one bucket width late (1/60 of the window,
# 1/20 for the second). The counts bound a client's memory whatever its limits (README, "Memory").
WINDOWS: tuple[tuple[str, str, int, int], ...] = (
    ("requests_per_second", "s", 1_000_000, 20),
    ("requests_per_minute", "m", 60_000_000, 60),
    ("requests_per_hour", "h", 3_600_000_000, 60),
    ("requests_per_day", "d", 86_400_000_000, 60),
)
LIMIT_FIELDS = ("requests_per_second", "requests_per_minute", "requests_per_hour",
                "requests_per_day", "burst_size")


def burst_interval_us(spec: RateLimitSpec) -> int | None:
    """Microseconds per burst token: requests_per_minute/60 per second (docs/design.md); without a minute
    limit, the rate of the shortest window configured. Rounded up: refilling never runs fast."""
    if spec.requests_per_minute is not None:
        return -(-60_000_000 // spec.requests_per_minute)
    for field, _, length_us, _ in WINDOWS:
        limit = getattr(spec, field)
        if limit is not None:
            return -(-length_us // limit)
    return None


def limits_of(spec: RateLimitSpec, fields: Iterable[str] = LIMIT_FIELDS) -> tuple[Limit, ...]:
    """The limits ``spec`` sets among ``fields`` (a route's spec names only those it adds)."""
    wanted = set(fields)
    limits: list[Limit] = []
    if "burst_size" in wanted and spec.burst_size is not None:
        interval = burst_interval_us(spec)
        if interval is not None:
            limits.append(Limit("b", BUCKET, spec.burst_size, interval, 0))
    for field, name, length_us, buckets in WINDOWS:
        limit = getattr(spec, field)
        if field in wanted and limit is not None:
            limits.append(Limit(name, WINDOW, limit, length_us // buckets, buckets))
    return tuple(limits)


@dataclass(frozen=True, slots=True)
class RateLimitState:
    """One decision, with what the 429 and the RateLimit-* headers need.

    ``limit``/``remaining``/``reset_ms`` describe the limit with the least left (the refusing one
    when refused); ``reset_ms`` is the time until that limit is back to its full quota.
    ``retry_after_ms`` is the time until the same request would be admitted (0 when admitted).
    """

    allowed: bool
    limit: int = 0
    remaining: int = 0
    reset_ms: int = 0
    retry_after_ms: int = 0
    # Which limit refused ("m", "b", "route:m", ...), None when admitted.
    refused_by: str | None = None
    # True when the store could not be asked and the failure policy decided.
    degraded: bool = False

    @property
    def retry_after(self) -> int:
        """Whole seconds, rounded up (a client that waits this long is admitted)."""
        return -(-self.retry_after_ms // 1000)

    @property
    def reset(self) -> int:
        return -(-self.reset_ms // 1000)

    @classmethod
    def of(cls, decision: Decision, names: Sequence[str]) -> RateLimitState:
        """The script's decision; ``names``: its limits' names, in the call's order."""
        refused = int(decision.refused_by)
        return cls(allowed=int(decision.allowed) == 1, limit=int(decision.limit), remaining=int(decision.remaining),
                   reset_ms=int(decision.reset_ms), retry_after_ms=int(decision.retry_after_ms),
                   refused_by=names[refused - 1] if refused else None)

    def headers(self) -> list[tuple[bytes, bytes]]:
        return rate_limit_headers(self.limit, self.remaining, self.reset_ms)


def rate_limit_headers(limit: int, remaining: int, reset_ms: int) -> list[tuple[bytes, bytes]]:
    """RateLimit-* (IETF draft names) and the older X-RateLimit-* names, same values; the reset in
    whole seconds, rounded up. Called with the script's reply as it is for every admitted request."""
    limit_b, remaining_b, reset_b = b"%d" % limit, b"%d" % remaining, b"%d" % -(-reset_ms // 1000)
    return [(b"ratelimit-limit", limit_b), (b"ratelimit-remaining", remaining_b), (b"ratelimit-reset", reset_b),
            (b"x-ratelimit-limit", limit_b), (b"x-ratelimit-remaining", remaining_b),
            (b"x-ratelimit-reset", reset_b)]
