"""What every config schema shares: strict models (a typo in a key is an error, never a silently
ignored setting) and the check of an HTTP field name (RFC 9110's token)."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


def header_name(name: str) -> str:
    """``name`` when it can be an HTTP field name; else a ValueError naming it."""
    if not _TOKEN.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid header name")
    return name
