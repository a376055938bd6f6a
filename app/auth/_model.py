"""What the schemas of ``app/auth/`` share: strict models (a typo is an error) and header names."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")  # RFC 9110 field-name


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def header_name(name: str) -> str:
    if not _TOKEN.match(name):
        raise ValueError(f"{name!r} is not a valid header name")
    return name
