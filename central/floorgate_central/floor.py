"""One floor as the central system sees it: status, rooms, open alarms, events, commands.

A ``Floor`` is made and fed by ``Central`` from the messages under the floor's root; its
state is always the latest the broker delivered. ``command()`` signs, sends, waits for
the reply and retries as mqtt-api.md "Commands: timeout and retry" recommends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from floorgate_central.errors import CentralError, CommandRefused, CommandTimeout, NoKey
from floorgate_central.model import (
    Alarm,
    AlarmCleared,
    Change,
    Event,
    FloorStatus,
    Reply,
    RoomState,
    SeqRange,
)
from floorgate_central.sequence import EventFilter
from floorgate_central.signing import Operator, envelope, parse_ts

__all__ = [
    "ATTEMPTS",
    "INTERNAL_RETRY_S",
    "REPLY_TIMEOUT_S",
    "RESIGN_AFTER_S",
    "Floor",
    "Requester",
    "Stream",
]

REPLY_TIMEOUT_S = 10.0
"""Wait this long for a reply before sending the command again (a gateway answers in ms)."""
ATTEMPTS = 3
"""Sends of one command (the same id) before ``CommandTimeout``: 30 s in all by default."""
INTERNAL_RETRY_S = 1.0
"""Pause before resending a command refused as ``internal`` (nothing was changed)."""
RESIGN_AFTER_S = 240.0
"""A resend re-signs with a fresh ``issued_at`` (same id) once the first is this old: the
gateway refuses one more than 300 s old as ``stale``."""
HISTORY = 10_000
"""Events kept per floor in ``Floor.history``."""

log = logging.getLogger("floorgate_central")
T = TypeVar("T")


class Requester(Protocol):
    """What a floor needs of the connection: publish a command and await its reply."""

    async def request(
        self, root: str, payload: bytes, command_id: str, timeout_s: float
    ) -> Mapping[str, Any]:
        """Publish ``payload`` to ``{root}/cmd``; the reply with ``command_id``, or TimeoutError."""
        ...


class Stream(Generic[T]):
    """An async iterator of what a floor receives from now on; close it (or use ``with``)."""

    def __init__(self, streams: set[Stream[T]], backlog: list[T]) -> None:
        self._streams = streams
        self._queue: asyncio.Queue[T | None] = asyncio.Queue()
        for item in backlog:
            self._queue.put_nowait(item)
        streams.add(self)

    def put(self, item: T | None) -> None:
        """Deliver an item (None: the client closed, iteration ends)."""
        self._queue.put_nowait(item)

    def close(self) -> None:
        """Stop receiving."""
        self._streams.discard(self)

    def __enter__(self) -> Stream[T]:
        return self

    def __exit__(
        self, exc: type[BaseException] | None, val: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __aiter__(self) -> Stream[T]:
        return self

    async def __anext__(self) -> T:
        item = await self._queue.get()
        if item is None:
            self.close()
            raise StopAsyncIteration
        return item


class Floor:
    """One floor under ``root``; ``gateway`` is known once its status has been received."""

    def __init__(
        self, root: str, requester: Requester, keys: Mapping[str, bytes], history: int = HISTORY
    ) -> None:
        self.root = root
        self.status: FloorStatus | None = None
        self._requester = requester
        self._keys = keys
        self._rooms: dict[str, RoomState] = {}
        self._alarms: dict[str, Alarm] = {}
        self._filter = EventFilter()
        self._history: deque[Event] = deque(maxlen=history)
        self._event_streams: set[Stream[Event]] = set()
        self._change_streams: set[Stream[Change]] = set()

    @property
    def gateway(self) -> str | None:
        """The gateway id (from its status), None until the status arrived."""
        return None if self.status is None else self.status.gateway

    @property
    def online(self) -> bool:
        """The gateway's retained status says it is online."""
        return self.status is not None and self.status.online

    @property
    def rooms(self) -> Mapping[str, RoomState]:
        """Each room's latest retained state, by room id."""
        return dict(self._rooms)

    @property
    def alarms(self) -> Mapping[str, Alarm]:
        """The open alarms (active or acknowledged), by alarm id."""
        return dict(self._alarms)

    @property
    def history(self) -> list[Event]:
        """The last events received (duplicates dropped), in arrival order."""
        return list(self._history)

    @property
    def missing(self) -> list[SeqRange]:
        """Event seqs found missing and not received since (v1: fetch them with floorctl)."""
        return self._filter.missing

    def events(self, *, past: bool = False) -> Stream[Event]:
        """Events from now on (``past``: first those in ``history``), duplicates dropped."""
        return Stream(self._event_streams, list(self._history) if past else [])

    def changes(self) -> Stream[Change]:
        """Changes of the status, the room states and the open alarms, from now on."""
        return Stream(self._change_streams, [])

    async def wait_event(
        self, match: Callable[[Event], bool], *, past: bool = True, timeout_s: float | None = None
    ) -> Event:
        """The first event (in ``history`` too, unless ``past`` is false) that ``match`` accepts."""
        async with asyncio.timeout(timeout_s):
            with self.events(past=past) as stream:
                async for event in stream:
                    if match(event):
                        return event
        raise CentralError("the client was closed while waiting for an event")

    async def command(
        self,
        type_: str,
        body: Mapping[str, Any],
        *,
        command_id: str | None = None,
        timeout_s: float = REPLY_TIMEOUT_S,
        attempts: int = ATTEMPTS,
        operator: Operator | None = None,
    ) -> Reply:
        """Sign (the floor's HMAC key, or ``operator``'s Ed25519 key), send, await the reply;
        ``CommandRefused`` if the gateway says no.

        Without a reply within ``timeout_s`` the same command (same id) is sent again, up
        to ``attempts`` sends, then ``CommandTimeout``; ``internal`` is retried likewise.
        """
        reply = await self.send(
            type_,
            body,
            command_id=command_id,
            timeout_s=timeout_s,
            attempts=attempts,
            operator=operator,
        )
        if not reply.ok:
            assert reply.code is not None
            why = reply.message or ""
            raise CommandRefused(reply.id, reply.code, why, duplicate=reply.duplicate)
        return reply

    async def send(
        self,
        type_: str,
        body: Mapping[str, Any],
        *,
        command_id: str | None = None,
        timeout_s: float = REPLY_TIMEOUT_S,
        attempts: int = ATTEMPTS,
        operator: Operator | None = None,
    ) -> Reply:
        """As ``command``, but a refusal is returned as a reply with ``ok`` false."""
        key: bytes | Operator = operator if operator is not None else self._key()
        env = envelope(type_, body, key, command_id=command_id)
        command_id = str(env["id"])
        for attempt in range(1, attempts + 1):
            age = (datetime.now(UTC) - parse_ts(env["issued_at"])).total_seconds()
            if age > RESIGN_AFTER_S:
                env = envelope(type_, body, key, command_id=command_id)
            payload = json.dumps(env).encode()
            try:
                doc = await self._requester.request(self.root, payload, command_id, timeout_s)
            except TimeoutError:
                log.info("command_no_reply", extra={"id": command_id, "attempt": attempt})
                continue
            reply = Reply.parse(doc)
            if reply.code == "internal" and attempt < attempts:
                log.warning("command_internal_retry", extra={"id": command_id})
                await asyncio.sleep(INTERNAL_RETRY_S)
                continue
            return reply
        raise CommandTimeout(command_id, attempts, timeout_s)

    def receive(self, sub: str, payload: bytes) -> None:
        """A message on ``{root}/{sub}`` (not a reply); a bad payload is logged and dropped."""
        try:
            self._receive(sub, payload)
        except ValueError as exc:  # JSON errors are ValueErrors too
            log.warning("payload_dropped", extra={"topic": f"{self.root}/{sub}", "why": str(exc)})

    def close(self) -> None:
        """End every stream of this floor."""
        for events in list(self._event_streams):
            events.put(None)
        for changes in list(self._change_streams):
            changes.put(None)

    def _receive(self, sub: str, payload: bytes) -> None:
        parts = sub.split("/")
        if sub == "events":
            self._event(_object(payload))
        elif sub == "status":
            status = FloorStatus.parse(_object(payload))
            self.status = status
            self._changed(status)
        elif len(parts) == 3 and parts[0] == "rooms" and parts[2] == "state":
            room = RoomState.parse(_object(payload))
            self._rooms[room.room] = room
            self._changed(room)
        elif len(parts) == 2 and parts[0] == "alarms":
            if not payload:
                if self._alarms.pop(parts[1], None) is not None:
                    self._changed(AlarmCleared(parts[1]))
                return
            alarm = Alarm.parse(_object(payload))
            self._alarms[alarm.alarm_id] = alarm
            self._changed(alarm)

    def _event(self, doc: Mapping[str, Any]) -> None:
        event = Event.parse(doc)
        accepted = self._filter.accept(event.seq, event.id, event.type)
        if accepted is None:
            return
        if accepted.gap is not None:
            log.warning(
                "events_missing",
                extra={"root": self.root, "first": accepted.gap.first, "last": accepted.gap.last},
            )
            event = dataclasses.replace(event, gap=accepted.gap)
        # The retained clear may come before or after the event: either ends the alarm.
        resolved = str(event.data.get("alarm_id"))
        if event.type == "alarm.resolved" and self._alarms.pop(resolved, None) is not None:
            self._changed(AlarmCleared(resolved))
        self._history.append(event)
        for stream in self._event_streams:
            stream.put(event)

    def _changed(self, change: Change) -> None:
        for stream in self._change_streams:
            stream.put(change)

    def _key(self) -> bytes:
        gateway = self.gateway
        if gateway is None:
            raise NoKey(f"the floor at {self.root} has not published its status yet")
        try:
            return self._keys[gateway]
        except KeyError:
            raise NoKey(f"no command key for gateway {gateway!r}") from None


def _object(payload: bytes) -> Mapping[str, Any]:
    doc = json.loads(payload)
    if isinstance(doc, dict):
        return doc
    raise ValueError("the payload is not a JSON object")
