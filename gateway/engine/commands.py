"""The command pipeline: the checks of the contract in order, then the engine decides.

``CommandProcessor.handle(payload)`` runs one command at a time through the checks
(gateway.core.commands: size and JSON, envelope, signature; then the 24 h replay cache;
then freshness and the body) and returns the reply payload, or None when no id can be
read. What is written, per outcome, is the engine's (one commit path):

- unreadable payload: nothing; no reply.
- refused before execution (``invalid`` envelope, ``unauthenticated``, ``forbidden``,
  ``stale``): a ``command.rejected`` event only; the id is not recorded, so it may be sent
  again.
- duplicate (id executed in the last 24 h): nothing; the original reply with
  ``"duplicate": true``, even if the command is now stale.
- executed (passed signature and freshness): the handler's effects and the replay record
  with its reply, in one transaction; a refusal (``invalid``, ``unknown_room``,
  ``conflict``) writes ``command.rejected`` and the record.
- the gateway fails (a handler raises, the store cannot write): nothing is recorded and the
  reply is ``ok:false`` with code ``internal``, so the same id may be sent again.

The reply comes back as a ``CommandReply`` that says whether the signature was verified:
only then may the uplink send it to the Response Topic the command names.

``replay`` (mqtt.md v2): the pipeline reads the stored range (read-only; at most
``REPLAY_MAX`` seqs), has the uplink publish those events again in seq order to
``{root}/replay`` and waits for the broker to accept each, then submits the command with
the result (count, first and last seq, the ranges no longer stored) for the engine to
record and reply. If the link ends or the broker refuses one of them, nothing is recorded
and the reply is ``internal``: the same id may be sent again.
"""

from __future__ import annotations

import asyncio
import functools
import json
import sqlite3
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime

import structlog
from pydantic import BaseModel

from gateway.adapters import schema
from gateway.adapters.schema import StoredEvent
from gateway.adapters.signals import CommandReply, ReplayRequests
from gateway.adapters.store import Store
from gateway.core import commands as checks
from gateway.core.decide import Outcome
from gateway.core.handlers import HANDLERS
from gateway.core.inputs import CommandRefused, Input, RunCommand
from gateway.core.remote_config import Proposal
from gateway.model.errors import LinkError, StoreError
from gateway.model.messages import (
    COMMAND_BODIES,
    REPLAY_MAX,
    ErrorCode,
    ReplayBody,
    ReplayResult,
    Reply,
    ReplyError,
    SeqRange,
    dumps,
)

__all__ = ["CommandProcessor", "Preparer"]

log = structlog.get_logger(__name__)

Preparer = Callable[[BaseModel], Awaitable[BaseModel | Proposal]]


class CommandProcessor:
    """Runs signed commands one at a time through the checks and into the engine."""

    def __init__(
        self,
        store: Store,
        key: checks.Credentials | bytes,
        submit: Callable[[Input], Awaitable[Outcome]],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rooms: Collection[str] | None = None,
        bodies: Mapping[str, type[BaseModel]] | None = None,
        replays: ReplayRequests | None = None,
        prepare: Mapping[str, Preparer] | None = None,
    ) -> None:
        """``key``: who may sign (the HMAC key alone, or with operators); ``submit``: the
        engine's inbox; ``rooms``: for ``unknown_room`` before the handler; ``bodies``: the
        command types served (default: every type with a handler); ``replays``: where
        ``replay`` sends stored events (without it, not served); ``prepare``: per type, what
        turns a valid body into what its handler decides on (``apply_config``: the file
        checked as --check does, which needs I/O)."""
        self._store = store
        self._key = key if isinstance(key, checks.Credentials) else checks.Credentials(key)
        self._submit = submit
        self._clock = clock
        self._rooms = frozenset(rooms) if rooms is not None else None
        self._bodies = dict(bodies) if bodies is not None else _served()
        self._replays = replays
        self._prepare = dict(prepare or {})
        self._counts: dict[tuple[str, str], int] = {}
        if replays is None:
            self._bodies.pop("replay", None)
        self._lock = asyncio.Lock()

    @property
    def types(self) -> Mapping[str, type[BaseModel]]:
        """The served command types and their body models."""
        return dict(self._bodies)

    def counts(self) -> dict[tuple[str, str], int]:
        """Commands handled since the start by (type, result): ``ok`` or the refusal code.

        A type the gateway does not serve counts as ``other`` (bounded label values).
        """
        return dict(self._counts)

    async def handle(self, payload: bytes) -> CommandReply | None:
        """Check and run one command; its reply, or None if no id is readable."""
        async with self._lock:
            verdict = checks.authenticate(payload, self._key)
            if isinstance(verdict, checks.Unreadable):
                log.warning("command_unreadable", reason=verdict.reason, size=len(payload))
                return None
            if isinstance(verdict, checks.Refused):
                refused = await self._refuse(verdict)
                self._count(None, refused)
                return CommandReply(refused, authenticated=False)
            reply = await self._authenticated(verdict)
            self._count(verdict.type, reply)
            return CommandReply(reply, authenticated=True)

    async def _authenticated(self, verdict: checks.Authenticated) -> bytes:
        """The rest of the checks and the execution of a command whose signature is right."""
        now = self._clock()
        since = now - checks.REPLAY_WINDOW
        try:
            original = await self._store.read(lambda c: schema.find_command(c, verdict.id, since))
        except StoreError:
            log.exception("command_store_failed", id=verdict.id)
            return _error_reply(verdict.id, "internal", "the gateway could not check it")
        if original is not None:
            log.info("command_duplicate", id=verdict.id, type=verdict.type)
            return _as_duplicate(original)
        admitted = checks.admit(verdict, now, self._bodies, self._rooms)
        if isinstance(admitted, checks.Refused):
            return await self._refuse(admitted)
        if isinstance(admitted.body, ReplayBody):
            reply = await self._replay(admitted.id, admitted.body, admitted.operator)
        else:
            body: BaseModel | Proposal = admitted.body
            if (prepare := self._prepare.get(admitted.type)) is not None:
                body = await prepare(admitted.body)
            reply = await self._run(
                RunCommand(admitted.id, admitted.type, body, admitted.operator), admitted.id
            )
        log.info("command_executed", id=admitted.id, type=admitted.type, by=admitted.operator)
        return reply

    async def _replay(self, command_id: str, body: ReplayBody, operator: str | None) -> bytes:
        """Publish the stored range again, then have the engine record the result."""
        assert self._replays is not None  # not served without it
        try:
            events, last = await self._store.read(functools.partial(_replay_range, body=body))
        except StoreError:
            log.exception("command_store_failed", id=command_id)
            return _error_reply(command_id, "internal", "the gateway could not read the events")
        try:
            accepted = await self._replays.publish(events)
        except LinkError as exc:
            log.warning("replay_interrupted", id=command_id, error=str(exc))
            return _error_reply(command_id, "internal", "the link ended during the replay")
        if accepted < len(events):
            refused = len(events) - accepted
            message = f"the broker refused {refused} of the {len(events)} events"
            return _error_reply(command_id, "internal", message)
        result = ReplayResult(
            count=len(events),
            first_seq=events[0].seq if events else None,
            last_seq=events[-1].seq if events else None,
            missing=_missing([e.seq for e in events], body.from_seq, last),
        )
        log.info("replay_published", id=command_id, count=len(events), last=last)
        return await self._run(RunCommand(command_id, "replay", result, operator), command_id)

    def _count(self, type_: object, reply: bytes) -> None:
        label = type_ if isinstance(type_, str) and type_ in self._bodies else "other"
        try:
            doc = json.loads(reply)
            result = "ok" if doc.get("ok") else str(doc["error"]["code"])
        except (ValueError, KeyError, TypeError):
            result = "internal"
        key = (label, result)
        self._counts[key] = self._counts.get(key, 0) + 1

    async def _refuse(self, refusal: checks.Refused) -> bytes:
        log.info(
            "command_refused",
            id=refusal.id,
            code=refusal.code,
            detail=refusal.message,
            by=refusal.by,
        )
        item = CommandRefused(
            refusal.id, refusal.code, refusal.message, refusal.recorded, by=refusal.by
        )
        return await self._run(item, refusal.id)

    async def _run(self, item: Input, command_id: str) -> bytes:
        try:
            outcome = await self._submit(item)
        except StoreError:
            log.exception("command_store_failed", id=command_id)
            return _error_reply(command_id, "internal", "the gateway could not record it")
        if not isinstance(outcome, bytes):
            log.error("command_without_reply", id=command_id, outcome=type(outcome).__name__)
            return _error_reply(command_id, "internal", "the gateway failed to execute it")
        return outcome


def _replay_range(conn: sqlite3.Connection, body: ReplayBody) -> tuple[list[StoredEvent], int]:
    """The stored events of the request, and the last seq it covers: ``to_seq`` (or
    ``REPLAY_MAX`` seqs on), but no further than the last event produced."""
    wanted = body.to_seq if body.to_seq is not None else body.from_seq + REPLAY_MAX - 1
    last = min(wanted, schema.current_seq(conn))
    return schema.events_between(conn, body.from_seq, last), last


def _missing(stored: Sequence[int], first: int, last: int) -> list[SeqRange]:
    """The ranges of first..last that are not among the ``stored`` seqs (ascending)."""
    gaps: list[SeqRange] = []
    expected = first
    for seq in [*stored, last + 1]:
        if seq > expected:
            gaps.append(SeqRange(from_seq=expected, to_seq=seq - 1))
        expected = seq + 1
    return gaps


def _served() -> dict[str, type[BaseModel]]:
    return {t: body for t, body in COMMAND_BODIES.items() if t in HANDLERS}


def _error_reply(command_id: str, code: ErrorCode, message: str) -> bytes:
    error = ReplyError(code=code, message=message)
    return Reply(id=command_id, ok=False, error=error).to_json()


def _as_duplicate(original: str) -> bytes:
    reply: dict[str, object] = json.loads(original)
    reply["duplicate"] = True
    return dumps(reply)
