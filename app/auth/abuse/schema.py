"""Progressive refusal of addresses that keep failing to authenticate (``auth.abuse``)."""

from __future__ import annotations

from pydantic import Field, model_validator

from app.schema import StrictModel


class AbuseSpec(StrictModel):
    enabled: bool = True
    # This many failed authentications from one address within ``window`` seconds is an offence:
    # the address then gets 429 for a cooling period...
    threshold: int = Field(default=10, gt=0)
    window: float = Field(default=60.0, gt=0)
    # ...of ``cooldown`` seconds, doubled for each earlier offence, up to ``max_cooldown``...
    cooldown: float = Field(default=60.0, gt=0)
    max_cooldown: float = Field(default=3600.0, gt=0)
    # ...where earlier offences count until the address has gone this long without one.
    memory: float = Field(default=86400.0, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> AbuseSpec:
        if self.max_cooldown < self.cooldown:
            raise ValueError("max_cooldown must be at least cooldown")
        return self
