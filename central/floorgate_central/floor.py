"""One floor as the central system sees it: status, rooms, open alarms, events, commands.

A ``Floor`` is made and fed by ``Central`` from the messages under the floor's root; its
state is always the latest the broker delivered. ``command()`` signs, sends, waits for
the reply and retries as mqtt-api.md "Commands: timeout and retry" recommends.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from floorgate_central.errors import (
    CentralError,
    CommandError,
    CommandRefused,
    CommandTimeout,
    NoKey,
)
from floorgate_central.model import (
    Alarm,
    AlarmCleared,
    Change,
    Event,
    FloorStatus,
    Inventory,
    Reply,
    RoomState,
    SeqRange,
)
from floorgate_central.sequence import Sequencer
from floorgate_central.signing import Operator, envelope, parse_ts

__all__ = [
    "ATTEMPTS",
    "INTERNAL_RETRY_S",
    "REPLY_TIMEOUT_S",
    "RESIGN_AFTER_S",
    "Floor",
    "GapFilling",
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
REPLAY_MAX = 10_000
"""Events a gateway replays per request (mqtt-api.md "Replay")."""


@dataclasses.dataclass(frozen=True, slots=True)
class GapFilling:
    """How a floor fills a gap in its events with the gateway's ``replay`` command."""

    enabled: bool = True
    """Ask for missing events and hold later ones back so that events come in ``seq``
    order (needs the floor's key or an operator allowed ``replay``)."""
    grace_s: float = 0.5
    """Wait this long for late arrivals before asking."""
    hold_s: float = 10.0
    """Hold events behind a gap at most this long, then deliver them (gap marked)."""
    wait_s: float = 5.0
    """After a replay's reply, wait this long for the replayed events."""
    rounds: int = 3
    """Replays of one gap before giving up on it (it stays in ``missing``)."""


log = logging.getLogger("floorgate_central")
T = TypeVar("T")


NO_FILLING = GapFilling(enabled=False)


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
        self,
        root: str,
        requester: Requester,
        keys: Mapping[str, bytes],
        history: int = HISTORY,
        *,
        gaps: GapFilling = NO_FILLING,
        operator: Operator | None = None,
        last_seq: int | None = None,
    ) -> None:
        """``operator`` signs the replays (else the floor's key); ``last_seq``: the last
        event seq already processed (by an earlier consumer), gaps counted from it."""
        self.root = root
        self.status: FloorStatus | None = None
        self.inventory: Inventory | None = None
        self._requester = requester
        self._keys = keys
        self._gaps = gaps
        self._operator = operator
        self._rooms: dict[str, RoomState] = {}
        self._alarms: dict[str, Alarm] = {}
        self._seq = Sequencer(hold=gaps.enabled, last_seq=last_seq)
        self._lost: list[SeqRange] = []
        self.replays = 0
        """Replay requests sent to fill gaps (a figure for monitoring)."""
        self._abandoned: list[SeqRange] = []
        self._filling: asyncio.Task[None] | None = None
        self._catching_up: asyncio.Task[None] | None = None
        self._hold_timer: asyncio.TimerHandle | None = None
        self._arrived = asyncio.Event()  # replaced at every event accepted
        self._history: deque[Event] = deque(maxlen=history)
        self._event_streams: set[Stream[Event]] = set()
        self._change_streams: set[Stream[Change]] = set()

    @property
    def gateway(self) -> str | None:
        """The gateway id (from its status or inventory), None until one arrived."""
        if self.status is not None:
            return self.status.gateway
        return None if self.inventory is None else self.inventory.gateway

    @property
    def last_seq(self) -> int | None:
        """The highest event seq received (hand it to the next owner when resizing)."""
        return self._seq.filter.last_seq

    @property
    def lost(self) -> list[SeqRange]:
        """Event seqs the gateway said it no longer stores (replay's ``missing``)."""
        return list(self._lost)

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
        """Event seqs found missing, not received since and not known to be lost."""
        return self._seq.filter.missing

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

    async def resync(self, *, operator: Operator | None = None) -> Reply:
        """Ask the gateway to republish its status, open alarms and room states."""
        return await self.command("resync", {}, operator=operator or self._operator)

    async def replay(
        self, from_seq: int, to_seq: int, *, operator: Operator | None = None
    ) -> Reply:
        """Ask the gateway to publish its stored events ``from_seq``..``to_seq`` again
        (at most 10 000); they arrive as events (duplicates dropped), the reply says what
        it no longer has (``result["missing"]``)."""
        body = {"from_seq": from_seq, "to_seq": to_seq}
        return await self.command("replay", body, operator=operator or self._operator)

    def receive(self, sub: str, payload: bytes) -> None:
        """A message on ``{root}/{sub}`` (not a reply); a bad payload is logged and dropped."""
        try:
            self._receive(sub, payload)
        except ValueError as exc:  # JSON errors are ValueErrors too
            log.warning("payload_dropped", extra={"topic": f"{self.root}/{sub}", "why": str(exc)})

    def close(self) -> None:
        """End every stream of this floor (and its gap filling)."""
        for task in (self._filling, self._catching_up):
            if task is not None:
                task.cancel()
        if self._hold_timer is not None:
            self._hold_timer.cancel()
        for events in list(self._event_streams):
            events.put(None)
        for changes in list(self._change_streams):
            changes.put(None)

    def _receive(self, sub: str, payload: bytes) -> None:
        parts = sub.split("/")
        if sub in ("events", "replay"):
            self._event(_object(payload))
        elif sub == "inventory":
            self.inventory = Inventory.parse(_object(payload))
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
        self._deliver(self._seq.accept(Event.parse(doc)))
        self._arrived.set()
        self._arrived = asyncio.Event()
        if self._seq.filter.missing:
            self._gap_found()
        elif not self._seq.held and self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    def _deliver(self, events: list[Event]) -> None:
        for event in events:
            if event.gap is not None:
                log.warning(
                    "events_missing",
                    extra={"root": self.root, "first": event.gap.first, "last": event.gap.last},
                )
            # The retained clear may come before or after the event: either ends the alarm.
            resolved = str(event.data.get("alarm_id"))
            if event.type == "alarm.resolved" and self._alarms.pop(resolved, None) is not None:
                self._changed(AlarmCleared(resolved))
            self._history.append(event)
            for stream in self._event_streams:
                stream.put(event)

    def _gap_found(self) -> None:
        if not self._gaps.enabled:
            return
        if self._seq.held and self._hold_timer is None:
            self._hold_timer = asyncio.get_running_loop().call_later(
                self._gaps.hold_s, self._stop_holding
            )
        if (self._filling is None or self._filling.done()) and self._open_gaps():
            self._filling = asyncio.create_task(self._fill(), name=f"replay[{self.root}]")

    def catch_up(self) -> None:
        """Ask for every stored event after the last one received (in the background):
        after a session the broker lost, or on taking a floor over from ``last_seq``."""
        if not self._gaps.enabled or self._seq.filter.last_seq is None:
            return
        if self._catching_up is None or self._catching_up.done():
            self._catching_up = asyncio.create_task(self._catch_up(), name=f"catch-up[{self.root}]")

    async def _catch_up(self) -> None:
        # Spread over grace_s: after a broker restart every floor asks at once.
        await asyncio.sleep(random.uniform(0, self._gaps.grace_s))
        first = (self._seq.filter.last_seq or 0) + 1
        failures = 0
        while True:
            try:
                self.replays += 1
                reply = await self.command("replay", {"from_seq": first}, operator=self._operator)
            except (CommandError, NoKey) as exc:
                failures += 1
                log.warning("catch_up_failed", extra={"root": self.root, "why": str(exc)})
                if isinstance(exc, CommandRefused | NoKey) or failures >= self._gaps.rounds:
                    return
                await asyncio.sleep(random.uniform(0, self._gaps.wait_s))
                continue
            self._gone(reply.result.get("missing"))
            last, count = reply.result.get("last_seq"), reply.result.get("count")
            if not isinstance(last, int) or not isinstance(count, int) or count < REPLAY_MAX:
                return
            first = last + 1

    def _stop_holding(self) -> None:
        """Deliver what is held (gaps marked); later fills come out of order."""
        self._hold_timer = None
        if self._seq.held:
            log.warning("events_released", extra={"root": self.root, "held": self._seq.held})
        self._deliver(self._seq.release())

    def _open_gaps(self) -> list[SeqRange]:
        return [
            r for r in self._seq.filter.missing
            if not any(a.first <= r.first and r.last <= a.last for a in self._abandoned)
        ]  # fmt: skip

    async def _fill(self) -> None:
        """Replay the open gaps until filled or known lost, ``rounds`` times at most."""
        await asyncio.sleep(self._gaps.grace_s)
        asked: list[SeqRange] = []
        for _ in range(self._gaps.rounds):
            asked = self._open_gaps()
            if not asked:
                break
            try:
                for gap in asked:
                    for first in range(gap.first, gap.last + 1, REPLAY_MAX):
                        last = min(gap.last, first + REPLAY_MAX - 1)
                        self.replays += 1
                        reply = await self.replay(first, last)
                        self._gone(reply.result.get("missing"))
            except (CommandError, NoKey) as exc:
                log.warning("replay_failed", extra={"root": self.root, "why": str(exc)})
                self._seq.hold = False  # nothing will fill it: do not hold events back
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._gaps.wait_s):
                    while _overlap(asked, self._seq.filter.missing):
                        await self._arrived.wait()
        else:
            asked = self._open_gaps()
        self._abandoned.extend(r for r in asked if _overlap([r], self._seq.filter.missing))
        if self._seq.held and not self._open_gaps():
            self._stop_holding()  # only abandoned gaps hold events back now
        if not self._seq.held and self._hold_timer is not None:
            self._hold_timer.cancel()
            self._hold_timer = None

    def _gone(self, missing: object) -> None:
        """The replay reply's ``missing``: ranges nobody can deliver any more."""
        if not isinstance(missing, list):
            return
        for item in missing:
            if not isinstance(item, dict):
                continue
            first, last = item.get("from_seq"), item.get("to_seq")
            if isinstance(first, int) and isinstance(last, int) and first <= last:
                lost = SeqRange(first, last)
                self._lost.append(lost)
                log.warning("events_lost", extra={"root": self.root, "first": first, "last": last})
                self._deliver(self._seq.lose(lost))

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


def _overlap(ranges: list[SeqRange], others: list[SeqRange]) -> bool:
    return any(a.first <= b.last and b.first <= a.last for a in ranges for b in others)


def _object(payload: bytes) -> Mapping[str, Any]:
    doc = json.loads(payload)
    if isinstance(doc, dict):
        return doc
    raise ValueError("the payload is not a JSON object")
