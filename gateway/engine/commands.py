"""The command pipeline: the checks of the contract in order, then the engine decides.

``CommandProcessor.handle(payload)`` runs one command at a time through the checks
(gateway.core.commands: size and JSON, envelope, signature; then the 24 h replay cache;
then freshness and the body) and returns the reply payload, or None when no id can be
read. What is written, per outcome, is the engine's (one commit path):

- unreadable payload: nothing; no reply.
- refused before execution (``invalid`` envelope, ``unauthenticated``, ``stale``): a
  ``command.rejected`` event only; the id is not recorded, so it may be sent again.
- duplicate (id executed in the last 24 h): nothing; the original reply with
  ``"duplicate": true``, even if the command is now stale.
- executed (passed signature and freshness): the handler's effects and the replay record
  with its reply, in one transaction; a refusal (``invalid``, ``unknown_room``,
  ``conflict``) writes ``command.rejected`` and the record.
- the gateway fails (a handler raises, the store cannot write): nothing is recorded and the
  reply is ``ok:false`` with code ``internal``, so the same id may be sent again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Collection, Mapping
from datetime import UTC, datetime

import structlog
from pydantic import BaseModel

from gateway.adapters import schema
from gateway.adapters.store import Store
from gateway.core import commands as checks
from gateway.core.decide import Outcome
from gateway.core.handlers import HANDLERS
from gateway.core.inputs import CommandRefused, Input, RunCommand
from gateway.core.remote_config import Proposal
from gateway.model.errors import StoreError
from gateway.model.messages import COMMAND_BODIES, ErrorCode, Reply, ReplyError, dumps

__all__ = ["CommandProcessor", "Preparer"]

log = structlog.get_logger(__name__)

Preparer = Callable[[BaseModel], Awaitable[BaseModel | Proposal]]


class CommandProcessor:
    """Runs signed commands one at a time through the checks and into the engine."""

    def __init__(
        self,
        store: Store,
        key: bytes,
        submit: Callable[[Input], Awaitable[Outcome]],
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rooms: Collection[str] | None = None,
        bodies: Mapping[str, type[BaseModel]] | None = None,
        prepare: Mapping[str, Preparer] | None = None,
    ) -> None:
        """``submit``: the engine's inbox; ``rooms``: for ``unknown_room`` before the handler;
        ``bodies``: the command types served (default: every type with a handler);
        ``prepare``: per type, what turns a valid body into what its handler decides on
        (``apply_config``: the file checked as --check does, which needs I/O)."""
        self._store = store
        self._key = key
        self._submit = submit
        self._clock = clock
        self._rooms = frozenset(rooms) if rooms is not None else None
        self._bodies = dict(bodies) if bodies is not None else _served()
        self._prepare = dict(prepare or {})
        self._lock = asyncio.Lock()
        self._counts: dict[tuple[str, str], int] = {}

    @property
    def types(self) -> Mapping[str, type[BaseModel]]:
        """The served command types and their body models."""
        return dict(self._bodies)

    def counts(self) -> dict[tuple[str, str], int]:
        """Commands handled since the start by (type, result): ``ok`` or the refusal code.

        A type the gateway does not serve counts as ``other`` (bounded label values).
        """
        return dict(self._counts)

    async def handle(self, payload: bytes) -> bytes | None:
        """Check and run one command; return the reply payload, or None if no id is readable."""
        async with self._lock:
            now = self._clock()
            verdict = checks.authenticate(payload, self._key)
            if isinstance(verdict, checks.Unreadable):
                log.warning("command_unreadable", reason=verdict.reason, size=len(payload))
                return None
            if isinstance(verdict, checks.Refused):
                return await self._refuse(verdict, None)
            since = now - checks.REPLAY_WINDOW
            try:
                original = await self._store.read(
                    lambda c: schema.find_command(c, verdict.id, since)
                )
            except StoreError:
                log.exception("command_store_failed", id=verdict.id)
                return _error_reply(verdict.id, "internal", "the gateway could not check it")
            if original is not None:
                log.info("command_duplicate", id=verdict.id, type=verdict.type)
                return _as_duplicate(original)
            admitted = checks.admit(verdict, now, self._bodies, self._rooms)
            if isinstance(admitted, checks.Refused):
                return await self._refuse(admitted, verdict.type)
            body: BaseModel | Proposal = admitted.body
            if (prepare := self._prepare.get(admitted.type)) is not None:
                body = await prepare(admitted.body)
            reply = await self._run(RunCommand(admitted.id, admitted.type, body), admitted.id)
            self._count(admitted.type, reply)
            log.info("command_executed", id=admitted.id, type=admitted.type)
            return reply

    async def _refuse(self, refusal: checks.Refused, type_: object) -> bytes:
        log.info("command_refused", id=refusal.id, code=refusal.code, detail=refusal.message)
        item = CommandRefused(refusal.id, refusal.code, refusal.message, refusal.recorded)
        reply = await self._run(item, refusal.id)
        self._count(type_, reply)
        return reply

    def _count(self, type_: object, reply: bytes) -> None:
        label = type_ if isinstance(type_, str) and type_ in self._bodies else "other"
        try:
            doc = json.loads(reply)
            result = "ok" if doc.get("ok") else str(doc["error"]["code"])
        except (ValueError, KeyError, TypeError):
            result = "internal"
        key = (label, result)
        self._counts[key] = self._counts.get(key, 0) + 1

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


def _served() -> dict[str, type[BaseModel]]:
    return {t: body for t, body in COMMAND_BODIES.items() if t in HANDLERS}


def _error_reply(command_id: str, code: ErrorCode, message: str) -> bytes:
    error = ReplyError(code=code, message=message)
    return Reply(id=command_id, ok=False, error=error).to_json()


def _as_duplicate(original: str) -> bytes:
    reply: dict[str, object] = json.loads(original)
    reply["duplicate"] = True
    return dumps(reply)
