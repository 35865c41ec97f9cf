"""The command pipeline: checks, 24 h replay cache, handlers, replies, ``command.rejected``.

``CommandProcessor.handle(payload)`` runs one command at a time through mqtt.md's checks
(gateway.core.commands), a registered handler and the store, and returns the reply payload
for ``{root}/reply`` (or None when no id can be read). What is written, per outcome:

- unreadable payload: nothing; no reply.
- refused before execution (``invalid`` envelope, ``unauthenticated``, ``stale``): a
  ``command.rejected`` event only; the id is not recorded, so it may be sent again.
- duplicate (id executed in the last 24 h): nothing; the original reply with
  ``"duplicate": true``, even if the command is now stale.
- executed (passed signature and freshness): the replay row with its reply, in ONE
  transaction with the handler's ``persist`` (ok) or the ``command.rejected`` event
  (``invalid``, ``unknown_room``, ``conflict``). ``apply`` runs after the commit.
- the handler or its ``persist`` raises, or the store fails: nothing is written (the
  transaction rolls back: no replay row, no event) and the reply is ``ok:false`` with
  code ``internal``. Not recording it lets the central system retry the same id safely;
  no spec refusal code fits a failure of the gateway itself.

Rows older than 24 h are purged at most hourly, inside a command's transaction.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import cast

import structlog
from pydantic import BaseModel

from gateway.adapters import schema
from gateway.adapters.store import Store
from gateway.core import commands as checks
from gateway.model.errors import StoreError
from gateway.model.messages import ErrorCode, Reply, ReplyError, dumps

__all__ = ["CommandProcessor", "Decision", "Handler"]

REFUSAL_CODES = frozenset({"invalid", "unknown_room", "conflict"})
PURGE_EVERY = timedelta(hours=1)

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Decision:
    """What a handler returns: ok with a result, or a refusal with a code."""

    ok: bool
    result: dict[str, object] = field(default_factory=dict)
    code: str | None = None  # refusal: "invalid" | "unknown_room" | "conflict"
    message: str = ""
    # State rows and events; runs in the SAME transaction as the command's replay row.
    persist: Callable[[sqlite3.Connection], None] | None = None
    # After the commit: update in-memory state, start device work.
    apply: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if self.ok and self.code is not None:
            raise ValueError("an ok decision has no code")
        if not self.ok and self.code not in REFUSAL_CODES:
            raise ValueError(f"a refusal's code is one of {sorted(REFUSAL_CODES)}")
        if not self.ok and (self.persist is not None or self.apply is not None):
            raise ValueError("a refused command changes nothing: no persist, no apply")


Handler = Callable[[BaseModel, datetime], Decision | Awaitable[Decision]]


class CommandProcessor:
    """Runs signed commands one at a time; the only writer of the replay cache."""

    def __init__(
        self,
        store: Store,
        key: bytes,
        gateway_id: str,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        on_event_appended: Callable[[], None] = lambda: None,
        rooms: Collection[str] | None = None,
    ) -> None:
        """``rooms``: the floor's room ids, for ``unknown_room`` (None: handlers check)."""
        self._store = store
        self._key = key
        self._gateway_id = gateway_id
        self._clock = clock
        self._on_event_appended = on_event_appended
        self._rooms = frozenset(rooms) if rooms is not None else None
        self._bodies: dict[str, type[BaseModel]] = {}
        self._handlers: dict[str, Handler] = {}
        self._lock = asyncio.Lock()
        self._purged_at: datetime | None = None

    def register(self, type: str, body: type[BaseModel], handler: Handler) -> None:
        """Handle commands of ``type`` whose body validates as ``body``; others are invalid."""
        if type in self._handlers:
            raise ValueError(f"a handler for {type!r} is already registered")
        self._bodies[type] = body
        self._handlers[type] = handler

    @property
    def types(self) -> Mapping[str, type[BaseModel]]:
        """The registered command types and their body models."""
        return dict(self._bodies)

    async def handle(self, payload: bytes) -> bytes | None:
        """Check and run one command; return the reply payload, or None if no id is readable."""
        async with self._lock:
            now = self._clock()
            verdict = checks.authenticate(payload, self._key)
            if isinstance(verdict, checks.Unreadable):
                log.warning("command_unreadable", reason=verdict.reason, size=len(payload))
                return None
            if isinstance(verdict, checks.Refused):
                return await self._refuse(verdict, now)
            since = now - checks.REPLAY_WINDOW
            original = await self._store.read(lambda c: schema.find_command(c, verdict.id, since))
            if original is not None:
                log.info("command_duplicate", id=verdict.id, type=verdict.type)
                return _as_duplicate(original)
            admitted = checks.admit(verdict, now, self._bodies, self._rooms)
            if isinstance(admitted, checks.Refused):
                return await self._refuse(admitted, now)
            return await self._execute(admitted, now)

    async def purge(self, now: datetime) -> int:
        """Delete replay records older than the 24 h window; return how many."""
        count = await self._store.write(
            lambda c: schema.purge_commands(c, now - checks.REPLAY_WINDOW)
        )
        self._purged_at = now
        return count

    # -- helpers -------------------------------------------------------------------------

    async def _refuse(self, refusal: checks.Refused, now: datetime) -> bytes:
        """Reply ``ok:false``; write the event, and the replay row if the refusal counts."""
        reply = _error_reply(refusal.id, refusal.code, refusal.message)
        log.info("command_refused", id=refusal.id, code=refusal.code, detail=refusal.message)

        def write(conn: sqlite3.Connection) -> None:
            _rejected_event(conn, refusal.id, refusal.code, now)
            if refusal.recorded:
                self._record(conn, refusal.id, reply, now)

        try:
            await self._store.write(write)
        except StoreError:
            log.exception("command_store_failed", id=refusal.id)
            return _error_reply(refusal.id, "internal", "the gateway could not record it")
        self._on_event_appended()
        return reply

    async def _execute(self, command: checks.Admitted, now: datetime) -> bytes:
        handler = self._handlers[command.type]
        try:
            outcome = handler(command.body, now)
            decision = await outcome if inspect.isawaitable(outcome) else outcome
        except Exception:  # a handler bug must not take the uplink down
            log.exception("command_handler_failed", id=command.id, type=command.type)
            return _error_reply(command.id, "internal", "the gateway failed to execute it")
        if not isinstance(decision, Decision):
            log.error("command_handler_failed", id=command.id, returned=type(decision).__name__)
            return _error_reply(command.id, "internal", "the gateway failed to execute it")
        if not decision.ok:
            code = cast(ErrorCode, decision.code)
            refusal = checks.Refused(command.id, code, decision.message, recorded=True)
            return await self._refuse(refusal, now)
        reply = Reply(id=command.id, ok=True, result=dict(decision.result)).to_json()

        def write(conn: sqlite3.Connection) -> None:
            if decision.persist is not None:
                decision.persist(conn)
            self._record(conn, command.id, reply, now)

        try:
            await self._store.write(write)
        except Exception:  # persist is the handler's code; rolled back whole
            log.exception("command_persist_failed", id=command.id, type=command.type)
            return _error_reply(command.id, "internal", "the gateway failed to execute it")
        log.info("command_executed", id=command.id, type=command.type)
        self._on_event_appended()
        if decision.apply is not None:
            try:
                decision.apply()
            except Exception:  # committed: the reply stands; the bug is logged
                log.exception("command_apply_failed", id=command.id, type=command.type)
        return reply

    def _record(
        self, conn: sqlite3.Connection, command_id: str, reply: bytes, now: datetime
    ) -> None:
        schema.record_command(conn, command_id, now, reply.decode())
        if self._purged_at is None or now - self._purged_at >= PURGE_EVERY:
            purged = schema.purge_commands(conn, now - checks.REPLAY_WINDOW)
            self._purged_at = now
            if purged:
                log.info("command_cache_purged", records=purged)


def _rejected_event(conn: sqlite3.Connection, command_id: str, code: str, now: datetime) -> None:
    data = {"id": command_id, "code": code}
    schema.append_event(conn, "command.rejected", room=None, data=data, ts=now)


def _error_reply(command_id: str, code: ErrorCode, message: str) -> bytes:
    error = ReplyError(code=code, message=message)
    return Reply(id=command_id, ok=False, error=error).to_json()


def _as_duplicate(original: str) -> bytes:
    reply: dict[str, object] = json.loads(original)
    reply["duplicate"] = True
    return dumps(reply)
