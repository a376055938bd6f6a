"""Who a request comes from once a credential proved it: the consumer, as the stages and the
backend see it."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


@dataclass(frozen=True, slots=True)
class Consumer:
    # The client id the rate limit counts, the cache keys private answers by, the backend is told.
    id: str
    tier: str | None = None
    roles: frozenset[str] = frozenset()
    # "api_key" or "jwt": which credential proved it (for the log).
    method: str = ""
    # The roles as the backend gets them (comma-separated, sorted), made once per consumer.
    roles_value: bytes = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "roles_value", ",".join(sorted(self.roles)).encode("latin-1", "replace"))


class Verdict(Enum):
    """What checking a credential can answer besides a ``Consumer``."""

    ABSENT = "absent"        # the request carries no credential of this kind
    INVALID = "invalid"      # it carries one that proves nothing (unknown, revoked, malformed, expired)
    UNKNOWN_KEY = "unknown"  # a JWT signed by a key not known yet: fetch the keys, then check again
