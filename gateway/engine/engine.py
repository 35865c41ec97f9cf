"""The floor engine: one door into the state, one committer, then the work on the floor.

Every input — a bus observation, a call-panel message, the passing of time, the MQTT link,
a command, a floorctl action, what the lock keeper found — is put in the ``Inbox``. One
task, ``Engine.run``, takes what is queued, runs ``decide`` on each input in arrival order,
writes each decision's persisting effects (events, audit rows, saved records, the command
replay record) through the store's group commit — one transaction for the batch, in
decision order — and only then carries out the rest: device writes, call-panel lamps,
retained MQTT state, lock reconciliation. So ``seq`` order is decision order, and nothing
is announced or done that is not on disk. Whoever submitted an input and waits for it is
answered after its commit.

The lamps and sounders of the annunciation are the exception: they are carried out before
the commit and whatever becomes of it, so a call lights its room and sounds the floor
within the usual time even when the disk is slow or failing.

A store that cannot write (disk full, I/O error, locked beyond the busy timeout: a
``StoreError``) never stops the floor. The decisions whose commit failed, and every later
one, are held in memory in order (gateway.engine.held) and carried out meanwhile; the
``storage`` technical alarm is raised (its own record held too), which lights the trouble
lamp; commands are answered ``internal`` without being executed; polling goes on. The
held decisions are written, in order, as soon as a retry (with backoff) succeeds — their
events get their ``seq`` then — and ``storage`` resolves. A decision whose effects cannot
be written for another reason (a bug) is logged and its record skipped, never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import assert_never

import structlog

from drivers.backoff import Backoff
from drivers.panelproto import LampState
from gateway.adapters import (
    access_store,
    alarms_store,
    config_store,
    journal,
    rooms_store,
    schema,
    stays,
)
from gateway.adapters.signals import Broadcast, RetainedChanges
from gateway.adapters.store import Store
from gateway.core.clock import ClockWatch
from gateway.core.decide import (
    Decision,
    Outcome,
    current_state,
    decide,
    next_deadline,
    room_snapshot,
)
from gateway.core.effects import (
    Action,
    Audit,
    DeviceBack,
    Effect,
    Emit,
    MarkWelcomed,
    Persisted,
    ReadAccessLog,
    ReconcileLock,
    RecordCommand,
    Republish,
    Restart,
    Retain,
    SaveAlarm,
    SaveConfig,
    SaveCounter,
    SaveLedger,
    SaveLockdown,
    SaveLogHead,
    SaveRoomStatus,
    SaveStaffKey,
    SaveStay,
    SetPanelLamp,
    WritePoint,
    is_safety,
    split,
)
from gateway.core.figures import FloorFigures, floor_figures
from gateway.core.inputs import ClockJumped, Input, RunCommand, StorageChanged, Tick
from gateway.core.state import FloorState
from gateway.engine.actuators import Actuators
from gateway.engine.held import HELD_LIMIT, HeldDecisions
from gateway.engine.locks import LockKeeper
from gateway.model.errors import StoreError
from gateway.model.messages import Reply, ReplyError

__all__ = ["CACHE_FLUSH_S", "CLOCK_CHECK_S", "Engine", "Inbox"]

log = structlog.get_logger("gateway.engine")

CACHE_FLUSH_S = 2.0  # point values are written to the cache at most this often
CLOCK_CHECK_S = 1.0  # how often the wall clock is compared with the monotonic one
REPLAY_WINDOW = timedelta(hours=24)  # a command id executed in this window is a duplicate
PURGE_COMMANDS_EVERY = timedelta(hours=1)
WRITE_CHUNK = 500  # held decisions written in one op (one transaction) when the store is back
RETRY_FIRST_S = 0.5  # the first retry of a failing store; doubling, jittered, up to the cap
RETRY_CAP_S = 5.0

LampSender = Callable[[str, LampState], None]


@dataclass(slots=True)
class _Item:
    input: Input
    future: asyncio.Future[Outcome] | None


_Decided = tuple[_Item | None, Decision, datetime]
_Write = tuple[Sequence[Persisted], datetime]


class Inbox:
    """The engine's input queue: every input of the floor, in arrival order."""

    def __init__(self) -> None:
        """Empty."""
        self._queue: asyncio.Queue[_Item] = asyncio.Queue()

    def put(self, item: Input) -> None:
        """Queue an input nobody waits for (an observation, a tick)."""
        self._queue.put_nowait(_Item(item, None))

    def submit(self, item: Input) -> Awaitable[Outcome]:
        """Queue an input; the result resolves with its outcome once it is committed."""
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Item(item, future))
        return future

    async def take(self) -> list[_Item]:
        """Wait for an input, then take everything queued."""
        items = [await self._queue.get()]
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items


class Engine:
    """The committer, and the one who carries out what was decided."""

    def __init__(
        self,
        state: FloorState,
        initial: Sequence[Effect],
        inbox: Inbox,
        store: Store,
        *,
        actuators: Actuators,
        lamps: Mapping[str, LampSender],
        locks: LockKeeper,
        retained: RetainedChanges,
        outbox: Broadcast,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        mono: Callable[[], float] = time.monotonic,
        beat: Callable[[], None] = lambda: None,
        restart: Callable[[str], None] = lambda reason: None,
        held_limit: int = HELD_LIMIT,
        retry: Backoff | None = None,
    ) -> None:
        """The floor restored (``state``), with what restoring it decided (``initial``);
        ``beat`` after every batch (the timers queue a tick at least every second, so a
        committer that stops beating is stuck, and a failing store is retried at least
        that often); ``restart(reason)``: stop cleanly and start again (onto another
        configuration), asked once the decision is committed; ``held_limit`` decisions
        held at most while the store fails."""
        self.state = state
        self._initial = list(initial)
        self._inbox = inbox
        self._store = store
        self._actuators = actuators
        self._lamps = lamps
        self._locks = locks
        self._retained = retained
        self._outbox = outbox
        self._wall = wall
        self._mono = mono
        self._beat = beat
        self._restart = restart
        self._clock_jump: tuple[float, float] | None = None
        self._deadlines_moved = asyncio.Event()
        self._deadline: datetime | None = None
        self._next_flush = 0.0
        self._purged_at: datetime | None = None
        self._held = HeldDecisions(held_limit)
        self._failing = False  # the store cannot write: decisions are held
        self._retry = retry or Backoff(initial_s=RETRY_FIRST_S, cap_s=RETRY_CAP_S)
        self._retry_at = 0.0

    # -- the committer ---------------------------------------------------------------------

    async def run(self) -> None:
        """Decide, commit and act on every input, in order, until cancelled."""
        await self._commit([(None, Decision(self._initial), self._wall())])
        self._initial = []
        if not self._failing:  # a storage alarm left open by a crash: the store writes
            self._inbox.put(StorageChanged(failing=False))
        while True:
            items = await self._inbox.take()
            decided = [(item, self._decide(item.input), self._wall()) for item in items]
            await self._commit(decided)
            self._beat()

    @property
    def storage_failing(self) -> bool:
        """Whether the store cannot write and decisions are being held."""
        return self._failing

    @property
    def held(self) -> int:
        """Decisions held in memory, not written yet."""
        return len(self._held)

    def now(self) -> datetime:
        """The floor's wall clock (the one every decision is taken at)."""
        return self._wall()

    def current_state(self) -> list[tuple[str, dict[str, object] | None]]:
        """Every open alarm, then every room state (what goes out first on a connect)."""
        return current_state(self.state, self._wall())

    def figures(self) -> FloorFigures:
        """The floor state in figures, now (metrics and health read them)."""
        return floor_figures(self.state, self._wall())

    @property
    def clock_jump(self) -> tuple[float, float] | None:
        """The last wall-clock step seen: (seconds, seconds ago), or None."""
        if self._clock_jump is None:
            return None
        seconds, at = self._clock_jump
        return seconds, self._mono() - at

    def room_snapshot(self, room: str) -> dict[str, object]:
        """The room state document of one room, now (KeyError for a room not on the floor)."""
        layout = self.state.layout.room(room)
        if layout is None:
            raise KeyError(room)
        return room_snapshot(self.state, layout.room, self._wall())

    def _decide(self, item: Input) -> Decision:
        if self._failing and isinstance(item, RunCommand):
            # Refused cleanly: nothing of it is decided, so nothing waits to be written.
            return Decision([], _internal_reply(item.id, "the gateway cannot write its database"))
        try:
            return decide(self.state, item, self._wall())
        except Exception:  # a bug in a decision must not stop the floor: logged, skipped
            log.exception("decision_failed", input=type(item).__name__)
            if isinstance(item, RunCommand):
                return Decision([], _internal_reply(item.id))
            return Decision([])

    async def _commit(self, decided: Sequence[_Decided]) -> None:
        """Lamps at once; persist the decisions (one op, one transaction); then act, in order."""
        plans = [split(decision.effects) for _, decision, _ in decided]
        # The state already holds these decisions: a lock the keeper reads meanwhile may
        # differ from it by what is about to be committed, which is not drift.
        for _, actions in plans:
            for action in actions:
                if isinstance(action, ReconcileLock) and action.cause != "verify":
                    self._locks.expect_change(action.room)
        for _, actions in plans:
            self._act([a for a in actions if is_safety(a)])
        if self._failing and self._mono() >= self._retry_at:
            await self._write_held()
        writes = [(p, now) for (_, _, now), (p, _) in zip(decided, plans, strict=True) if p]
        stored = await self._write_now(writes)
        if not self._failing and self._mono() >= self._next_flush:
            await self._flush_cache()
        emitted = False
        for (item, decision, _), (persisted, actions) in zip(decided, plans, strict=True):
            emitted = emitted or any(isinstance(e, Emit) for e in persisted)
            self._act([a for a in actions if not is_safety(a)])
            if item is not None:
                _answer(item, decision.outcome, stored=stored or not persisted)
        self._publish_rooms()
        if emitted and stored:
            self._outbox.notify()
        deadline = next_deadline(self.state, self._wall())
        if deadline != self._deadline:
            self._deadline = deadline
            self._deadlines_moved.set()

    async def _write_now(self, writes: Sequence[_Write]) -> bool:
        """Write this batch's decisions, or hold them (behind those held already)."""
        if not writes:
            return True
        if not self._failing:
            written = await self._write(writes)
            if written == len(writes):
                return True
            writes = writes[written:]
        for effects, now in writes:
            self._hold(effects, now)
        return False

    async def _write_held(self) -> None:
        """Retry the held decisions, oldest first, a chunk per transaction; recover if all go."""
        while len(self._held):
            chunk = self._held.head(WRITE_CHUNK)
            written = await self._write([(h.effects, h.now) for h in chunk])
            self._held.written(written)
            if written:
                self._outbox.notify()
            if written < len(chunk):
                return
        log.warning("storage_recovered")
        self._failing = False
        self._retry.reset()
        self._inbox.put(StorageChanged(failing=False))

    async def _write(self, writes: Sequence[_Write]) -> int:
        """Write ``writes`` in order, in one transaction; how many are on disk (or skipped as
        unwritable): fewer than all only when the store fails, which starts the holding."""
        try:
            await self._store.write(functools.partial(self._persist_all, writes))
        except StoreError as exc:
            self._store_failed(exc)
            return 0
        except Exception:  # one decision cannot be written: find it, keep the rest
            log.exception("commit_failed", decisions=len(writes))
            return await self._write_each(writes)
        return len(writes)

    async def _write_each(self, writes: Sequence[_Write]) -> int:
        """Write one decision per transaction, skipping (logged) any that cannot be written."""
        for done, (effects, now) in enumerate(writes):
            try:
                await self._store.write(functools.partial(self._persist, effects, now))
            except StoreError as exc:
                self._store_failed(exc)
                return done
            except Exception:  # a bug: its record is lost, the floor goes on
                log.exception("decision_not_written", effects=[type(e).__name__ for e in effects])
        return len(writes)

    def _store_failed(self, exc: StoreError) -> None:
        """The store cannot write: hold from now on and retry later (raise ``storage`` once)."""
        self._retry_at = self._mono() + self._retry.next_delay()
        if self._failing:
            log.debug("storage_still_failing", error=str(exc), held=len(self._held))
            return
        log.error("storage_failing", error=str(exc))
        self._failing = True
        self._inbox.put(StorageChanged(failing=True, error=str(exc)))

    def _hold(self, effects: Sequence[Persisted], now: datetime) -> None:
        dropped = self._held.add(effects, now)
        if dropped is not None:
            log.warning(
                "held_decision_dropped",
                value=dropped.value.name.lower(),
                dropped=self._held.dropped,
                held=len(self._held),
            )

    async def _flush_cache(self) -> None:
        """The point values, at most every ``CACHE_FLUSH_S``: best effort, never held."""
        self._next_flush = self._mono() + CACHE_FLUSH_S
        dirty = self.state.points.take_dirty()
        if not dirty:
            return
        try:
            await self._store.write(functools.partial(_write_cache, dirty, time.time()))
        except StoreError as exc:
            log.warning("point_cache_not_written", error=str(exc), values=len(dirty))

    def _persist_all(self, writes: Sequence[_Write], conn: sqlite3.Connection) -> None:
        """Write several decisions' effects, in order (inside the store's transaction)."""
        for effects, now in writes:
            self._persist(effects, now, conn)

    def _persist(
        self, effects: Sequence[Persisted], now: datetime, conn: sqlite3.Connection
    ) -> None:
        """Write one decision's persisting effects (inside the store's transaction)."""
        for effect in effects:
            match effect:
                case Emit(type=type_, room=room, data=data, low_value=low):
                    journal.append_event(conn, type_, room=room, data=data, ts=now, low_value=low)
                case Audit(actor=actor, action=action, room=room, detail=detail):
                    journal.append_audit(
                        conn, actor=actor, action=action, room=room, detail=detail, ts=now
                    )
                case SaveAlarm(alarm=alarm):
                    alarms_store.save_alarm(conn, alarm)
                case SaveStay(stay=stay):
                    stays.save_stay(conn, stay)
                case SaveStaffKey(key_id=key_id, key=key, revoked=revoked):
                    access_store.save_staff_key(conn, key_id, key, revoked, now)
                case SaveLockdown(lockdown=lockdown):
                    access_store.save_lockdown(conn, lockdown)
                case SaveCounter(device=device, point=point, value=value):
                    schema.set_point_value(conn, str(device), point, value, time.time())
                case SaveLogHead(device=device, head=head):
                    if head is not None:
                        stays.save_log_head(conn, str(device), head)
                case MarkWelcomed(room=room, stay_id=stay_id):
                    stays.save_welcomed(conn, room, stay_id)
                case SaveRoomStatus(room=room, housekeeping=status, hold_stay=hold):
                    rooms_store.save_room_status(conn, room, status, hold)
                case SaveLedger(rows=rows, keep_days=keep):
                    rooms_store.save_ledger(conn, rows, keep)
                case RecordCommand(id=command_id, at=at, reply=reply):
                    schema.record_command(conn, command_id, at, reply.decode())
                    self._purge_commands(conn, at)
                case SaveConfig(record=record, text=text, entry=entry):
                    config_store.save(conn, record, text, entry, now)
                case _:
                    assert_never(effect)

    def _act(self, actions: Sequence[Action]) -> None:
        """Carry out a committed decision's device and link effects, in order."""
        for action in actions:
            match action:
                case WritePoint():
                    self._actuators.enqueue(action)
                case SetPanelLamp(bus=bus, room=room, state=lamp):
                    sender = self._lamps.get(bus)
                    if sender is not None:
                        sender(room, lamp)
                case Retain(subtopic=subtopic, payload=payload):
                    self._retained.set(subtopic, payload)
                case ReconcileLock(room=room, cause=cause, read_slots=read_slots):
                    self._locks.want(room, cause, read_slots=read_slots)
                case ReadAccessLog(device=device):
                    self._locks.read_log(device)
                case DeviceBack(device=device):
                    self._actuators.resend(device)
                case Republish():
                    self._retained.resync()
                case Restart(reason=reason):
                    self._restart(reason)
                case _:
                    assert_never(action)

    def _publish_rooms(self) -> None:
        if not self.state.dirty_rooms:
            return
        now = self._wall()
        rooms, self.state.dirty_rooms = self.state.dirty_rooms, set()
        for room in self.state.room_ids():
            if room in rooms:
                self._retained.set(f"rooms/{room}/state", room_snapshot(self.state, room, now))

    def _purge_commands(self, conn: sqlite3.Connection, now: datetime) -> None:
        """Replay records older than the 24 h window go, at most hourly."""
        if self._purged_at is not None and now - self._purged_at < PURGE_COMMANDS_EVERY:
            return
        self._purged_at = now
        purged = schema.purge_commands(conn, now - REPLAY_WINDOW)
        if purged:
            log.info("command_cache_purged", records=purged)

    # -- time -----------------------------------------------------------------------------

    async def timers(self) -> None:
        """Tick at the next stay boundary, escalation or door deadline; watch the clock."""
        clock = ClockWatch()
        while True:
            now = self._wall()
            jump = clock.observe(self._mono(), now)
            if jump is not None:
                log.warning("clock_jump", seconds=jump.seconds)
                self._clock_jump = (jump.seconds, self._mono())
                self._inbox.put(ClockJumped(jump.seconds))
            self._inbox.put(Tick())
            deadline = next_deadline(self.state, now)
            wait = CLOCK_CHECK_S
            if deadline is not None and deadline > now:
                wait = min(wait, (deadline - now).total_seconds())
            # A deadline already due is the tick just queued: the committer moves it once it
            # has decided, and says so (rather than this loop queueing ticks until then).
            self._deadlines_moved.clear()
            # asyncio.timeout, not wait_for: wait_for (3.11) can swallow the cancel of a stop
            # that arrives as the wait ends, and the loop would outlive the shutdown bound.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._deadlines_moved.wait()


def _write_cache(
    dirty: dict[tuple[str, str], object], stamp: float, conn: sqlite3.Connection
) -> None:
    for (device, point), value in dirty.items():
        schema.set_point_value(conn, device, point, value, stamp)


def _answer(item: _Item, outcome: Outcome, *, stored: bool) -> None:
    """Answer whoever waits: a command whose record is only held gets ``internal``."""
    if item.future is None or item.future.done():
        return
    if not stored and isinstance(item.input, RunCommand):
        outcome = _internal_reply(
            item.input.id,
            "the gateway cannot write its database: the command took effect and is recorded "
            "when it can (a retry of this id is answered from that record)",
        )
    item.future.set_result(outcome)


def _internal_reply(command_id: str, message: str = "the gateway failed to execute it") -> bytes:
    error = ReplyError(code="internal", message=message)
    return Reply(id=command_id, ok=False, error=error).to_json()
