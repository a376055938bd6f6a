"""The admin API's audit log: every change made through it, with who, when, what, before and after.

A change handler describes what it does in a ``Change`` (its action, target, and the state before
and after, as JSON documents); ``AuditRecorder`` wraps the control app and, when the answer to a
change starts, writes the record before the caller sees the answer (so a caller that reads
``/_gateway/audit`` next finds it). A call no handler described (a change endpoint added later)
is still recorded, as its method and path. Who is the admin token's name and role, never the token.

What is recorded: a change that took effect (outcome ``ok``) and one that failed inside the gateway
after it was accepted (outcome ``error``, a 5xx: it may or may not have taken effect). A refused call
(400, 403, 404, 409: nothing changed) is one log line with outcome ``refused`` and not kept in the
stream, so refused calls, a read token's included, cannot push real changes out of the capped stream.

Each record is one JSON log line (logger ``apigw.audit``) and one entry of a capped Redis stream
(``<prefix>:audit:{admin}``, the newest ``admin.audit_max_records`` kept exactly), shared by every
replica and kept across restarts. The entry's id is the store's clock (ms) and gives the record's time.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import orjson
from fastapi import Depends, Request
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.control.admin.auth import Admin
from app.store import Store, StoreError

log = logging.getLogger("apigw.audit")

_READING = frozenset({"GET", "HEAD", "OPTIONS"})
Outcome = Literal["ok", "error", "refused"]


@dataclass(slots=True)
class Change:
    """What a change handler says it did; unset fields fall back to the call's method and path."""

    action: str | None = None  # e.g. "route.create"
    target: str | None = None  # what it changed: a route key, a circuit, a client id, ...
    before: Any = None  # JSON-able documents of the target; None: it did not exist / does not now
    after: Any = None

    def describe(self, action: str, target: str) -> Change:
        """Say what the call does before looking anything up, so a refusal (404) names it too."""
        self.action, self.target = action, target
        return self


def change_of(request: Request) -> Change:
    """The FastAPI dependency a change handler takes to describe its change."""
    change = Change()
    request.state.change = change
    return change


Audited = Annotated[Change, Depends(change_of)]  # a change handler's parameter


class Who(BaseModel):
    name: str  # the admin token's name ("admin" for admin.token)
    role: str


class AuditRecord(BaseModel):
    id: str  # the stream entry's id ("" for a refused call, which is not kept)
    time: str  # ISO 8601, UTC
    who: Who
    address: str | None  # the caller's address as the control plane saw it
    action: str
    method: str
    path: str
    target: str | None
    before: Any
    after: Any
    outcome: Outcome
    status: int
    replica: str


class AuditList(BaseModel):
    records: list[AuditRecord]  # newest first


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


class AdminAudit:
    def __init__(self, store: Store, max_records: int, replica: str) -> None:
        self.store = store
        self.max_records = max_records
        self.replica = replica
        self.key = store.key("audit", "admin")

    async def record(self, record: AuditRecord) -> AuditRecord:
        """Log the record and, unless refused, append it to the stream (its id and time set there)."""
        if record.outcome != "refused":
            try:
                entry_id = await self.store.xadd(self.key, self._fields(record), self.max_records)
                record = record.model_copy(update={"id": entry_id.decode(),
                                                   "time": _iso(int(entry_id.split(b"-")[0]))})
            except StoreError as error:  # the change is made; the log line below still holds it
                log.error("audit: the record could not be stored (%s); it is only in this log", error)
        log.info("%s", _json(record.model_dump(mode="json")))
        return record

    async def latest(self, limit: int) -> list[AuditRecord]:
        return [self._parse(entry_id, fields) for entry_id, fields in await self.store.xrevrange(self.key, limit)]

    @staticmethod
    def _fields(record: AuditRecord) -> dict[str, str]:
        return {"who": record.who.name, "role": record.who.role, "address": record.address or "",
                "action": record.action, "method": record.method, "path": record.path,
                "target": record.target if record.target is not None else "",
                "before": _json(record.before), "after": _json(record.after),
                "outcome": record.outcome, "status": str(record.status), "replica": record.replica}

    @staticmethod
    def _parse(entry_id: bytes, raw: dict[bytes, bytes]) -> AuditRecord:
        def text(name: str) -> str:
            return raw.get(name.encode(), b"").decode("utf-8", "replace")

        def document(name: str) -> Any:
            try:
                return orjson.loads(raw.get(name.encode(), b"null"))
            except orjson.JSONDecodeError:  # written by hand: shown as it is
                return text(name)

        outcome = text("outcome")
        return AuditRecord(
            id=entry_id.decode(), time=_iso(int(entry_id.split(b"-")[0])),
            who=Who(name=text("who"), role=text("role")), address=text("address") or None,
            action=text("action"), method=text("method"), path=text("path"), target=text("target") or None,
            before=document("before"), after=document("after"),
            outcome=outcome if outcome in ("ok", "error", "refused") else "error",  # type: ignore[arg-type]
            status=int(text("status") or 0), replica=text("replica"))


class AuditRecorder:
    """ASGI middleware of the control app: records each change an admin token made, before its
    answer reaches the caller. Calls the guard refused (no token, a wrong one) are not the admin's
    changes: the guard left no holder, and nothing is recorded."""

    def __init__(self, app: ASGIApp, audit: AdminAudit) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _READING:
            await self.app(scope, receive, send)
            return
        recorded = False

        async def sending(message: Message) -> None:
            nonlocal recorded
            if message["type"] == "http.response.start" and not recorded:
                recorded = True
                await self._record(scope, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            if not recorded:  # a bug: the 500 is answered outside this app
                recorded = True
                await self._record(scope, 500)
            raise

    async def _record(self, scope: Scope, status: int) -> None:
        state = scope.get("state") or {}
        holder = state.get("admin")
        if not isinstance(holder, Admin):
            return
        change = state.get("change") or Change()
        method, path = scope["method"], scope["path"]
        outcome: Outcome = "error" if status >= 500 else "refused" if status >= 400 else "ok"
        client = scope.get("client")
        now_ms = int(time.time() * 1000)
        record = AuditRecord(
            id="", time=_iso(now_ms), who=Who(name=holder.name, role=holder.role),
            address=client[0] if client else None, action=change.action or f"{method} {path}", method=method,
            path=path, target=change.target if change.action else path, before=change.before,
            after=change.after if outcome != "refused" else None, outcome=outcome, status=status,
            replica=self.audit.replica)
        try:
            await self.audit.record(record)
        except Exception:  # recording must not turn a made change into a failed answer
            log.exception("audit: recording %s %s failed", method, path)
