"""The lock keeper: every lock's slots kept equal to what is authorised; access logs followed.

Slots are written and cleared until they equal ``authz.desired(room, now)`` (guest tokens
in the guest slots, staff keys in the reserved staff slots; the core decides both): on
every authorisation change, when a lock answers again (every slot read first), at start-up
and every ``policy.slot_verify_s``. A difference that is not our own pending work is drift:
it is repaired, and reported once (``LockRepaired`` into the inbox: the committer emits
``lock.drift_repaired`` and audits it). The access log is followed from ``log_head``: new
ring entries go to the inbox (``AccessLogRead``), where they become ``access.*`` events
with the token's hash, never the token.

The keeper reads the floor state (the committer's) between its awaits and never changes
it: what it learns goes in through the inbox like any other input.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

import structlog

from drivers.codec import Value
from drivers.errors import BusError
from drivers.ids import DeviceRef, RoomId
from drivers.profile import PollClass
from gateway.core import locksync
from gateway.core.inputs import AccessLogRead, Input, LockRepaired
from gateway.core.locksync import SLOT_COUNT
from gateway.core.state import FloorState

__all__ = ["LockKeeper", "Reader", "Writer"]

log = structlog.get_logger("gateway.locks")

ROOMS_AT_ONCE = 8  # authorisation changes of one bus reconciled concurrently
ROUTINE_AT_ONCE = 2  # staff schedule changes of one bus at once: they yield to changes
VERIFIES_AT_ONCE = 2  # verification reads of one bus at once (slow priority, background)
FRESH_S = 10.0  # what the keeper read itself counts over the state's values this long
Cause = Literal["change", "routine", "verify", "read"]
_RANK: dict[Cause, int] = {"change": 3, "routine": 2, "read": 1, "verify": 0}


class Reader(Protocol):
    """A bus owner's on-demand read (drivers.scheduler.BusScheduler.read)."""

    def __call__(
        self, device: DeviceRef, wants: Sequence[tuple[str, int]], *, priority: PollClass
    ) -> Awaitable[dict[tuple[str, int], Value]]:
        """Read ``(role, index)`` elements now."""
        ...


class Writer(Protocol):
    """A bus owner's verified write (drivers.scheduler.BusScheduler.write)."""

    def __call__(
        self,
        device: DeviceRef,
        point: str,
        value: Value,
        *,
        index: int,
        priority: PollClass,
        verify: bool = True,
    ) -> Awaitable[None]:
        """Write ``point[index]`` (and read it back, with ``verify``)."""
        ...


class LockKeeper:
    """Reconciler, slot verifier and access-log follower of every lock of the floor."""

    def __init__(
        self,
        state: FloorState,
        readers: Mapping[str, Reader],
        writers: Mapping[str, Writer],
        submit: Callable[[Input], None],
        *,
        heads: Mapping[str, int],
        slot_verify_s: float,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        """``heads``: each lock's last access-log entry read before the restart."""
        self._state = state
        self._readers = readers
        self._writers = writers
        self._submit = submit
        self._slot_verify_s = slot_verify_s
        self._wall = wall
        self._mono = mono
        self._bus: dict[RoomId, str] = {}
        self._followers: dict[DeviceRef, locksync.LogFollower] = {}
        for ref, info in state.layout.devices.items():
            if ref.role == "lock" and ref.room is not None:
                self._bus[ref.room] = info.bus
                self._followers[ref] = locksync.LogFollower(heads.get(str(ref)))
        self._log_reads: asyncio.Queue[DeviceRef] = asyncio.Queue()
        # per bus: room -> what is wanted of its lock, and the event that wakes its worker
        self._wanted: dict[str, dict[RoomId, Cause]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._unsynced: set[RoomId] = set()  # rooms whose lock has our changes to apply
        self._marks: dict[RoomId, int] = {}  # changes announced per room, so a job that
        # ends marks the room in sync only if no change came after the one it planned for
        self._owed: set[RoomId] = set()  # rooms whose fresh read waits for their change
        # rooms whose slots a job cut short was writing: read them before planning
        self._unread: dict[RoomId, list[int]] = {}
        self._seen: dict[DeviceRef, dict[int, tuple[int | None, float]]] = {}  # own reads

    def want(
        self, room: RoomId, cause: Literal["change", "routine", "verify"], *, read_slots: bool
    ) -> None:
        """Reconcile the room's lock: ``change`` (authorisation changed), ``routine`` (the
        same from a staff schedule: it yields to changes), ``verify`` (compare with what is
        known) or, with ``read_slots``, read every slot first."""
        bus = self._bus.get(room)
        if bus is None:
            return
        wanted = self._wanted.setdefault(bus, {})
        if cause in ("change", "routine"):
            self._mark(room)  # what we find different next is our own pending work
        new: Cause = "read" if cause == "verify" and read_slots else cause
        # One reconciliation covers the whole lock: the most urgent wanted is what runs (a
        # change reads what it must; a read it supersedes is taken up after it if it
        # preempted one under way).
        before = wanted.get(room)
        if "read" in (before, new) and {before, new} & {"change", "routine"}:
            self._owed.add(room)  # a fresh read is still due after the change
        if before is None or _RANK[new] > _RANK[before]:
            wanted[room] = new
        self._wake.setdefault(bus, asyncio.Event()).set()

    def expect_change(self, room: RoomId) -> None:
        """An authorisation change of the room is being committed (the state holds it
        already): what its lock differs by until it is reconciled is ours, not drift."""
        if room in self._bus:
            self._mark(room)

    def _mark(self, room: RoomId) -> None:
        self._unsynced.add(room)
        self._marks[room] = self._marks.get(room, 0) + 1

    def _synced(self, room: RoomId, mark: int) -> None:
        """The lock holds what was authorised when ``mark`` was taken: in sync, unless a
        change came since (that one is still our own pending work)."""
        if self._marks.get(room, 0) == mark:
            self._unsynced.discard(room)

    def pending_slots(self) -> int:
        """Slot writes still to make on the locks that have our changes to apply."""
        total = 0
        for room in self._unsynced:
            device = self._state.layout.device(room, "lock")
            if device is not None:
                total += len(self._plan(room, self._known_slots(device)).writes)
        return total

    def read_log(self, device: DeviceRef) -> None:
        """A lock's log head changed: read its new entries (in the log-reader task)."""
        self._log_reads.put_nowait(device)

    async def reconciler(self) -> None:
        """One worker per bus, so a busy RS-485 line never delays the locks of another.

        On each bus, authorisation changes go before verification and start-up reads.
        """
        async with asyncio.TaskGroup() as tg:
            for bus in sorted(set(self._bus.values())):
                tg.create_task(self._bus_worker(bus), name=f"reconciler[{bus}]")

    async def slot_verifier(self) -> None:
        """Read every lock's slots every ``slot_verify_s`` and repair any drift."""
        while True:
            await asyncio.sleep(self._slot_verify_s)
            for room in self._state.room_ids():
                self.want(room, "verify", read_slots=True)

    async def log_reader(self) -> None:
        """Follow each lock's access log: read new ring entries."""
        while True:
            device = await self._log_reads.get()
            await self._read_log(device)

    # -- reconciling ------------------------------------------------------------------------

    async def _bus_worker(self, bus: str) -> None:
        """Start each room's reconciliation as it is wanted, one job per room at a time.

        An authorisation change never waits behind another room's work: changes start at
        once (up to ``ROOMS_AT_ONCE``); routine changes (staff schedules) run at most
        ``ROUTINE_AT_ONCE`` at a time, so their writes never queue far ahead of a
        change's on the line; verification reads, which go at slow priority and take
        seconds on a busy line, at most ``VERIFIES_AT_ONCE``. A more urgent reconciliation
        of a room preempts the one still reading there, and a change preempts a routine
        one even while it writes (the change then reads the slots first, since a write
        cut short may have landed; a fresh read owed is taken up after the change).
        """
        wake = self._wake.setdefault(bus, asyncio.Event())
        wanted = self._wanted.setdefault(bus, {})
        jobs: dict[RoomId, _Job] = {}

        def finished(room: RoomId, job: _Job, _: object) -> None:
            if jobs.get(room) is job:
                del jobs[room]
            if job.cause in ("change", "routine") and room in self._owed:
                self._owed.discard(room)
                wanted.setdefault(room, "read")
            wake.set()

        async with asyncio.TaskGroup() as tg:
            while True:
                wake.clear()
                for room in sorted(wanted, key=lambda r: -_RANK[wanted[r]]):
                    cause = wanted[room]
                    running = jobs.get(room)
                    if running is not None:
                        if not _preempts(cause, running):
                            continue
                        running.task.cancel()
                        if running.cause in ("read", "verify"):
                            self._owed.add(room)  # what it had read is not to be trusted
                        if running.writing:
                            # A write of it may have landed unseen: read those slots first.
                            self._unread[room] = running.touching
                        del jobs[room]
                    lane = _lane(cause)
                    if sum(1 for j in jobs.values() if _lane(j.cause) == lane) >= _LIMITS[lane]:
                        continue
                    del wanted[room]
                    job = _Job(cause)
                    job.task = tg.create_task(
                        self._reconcile(room, bus, cause, job), name=f"reconcile[{room}]"
                    )
                    job.task.add_done_callback(functools.partial(finished, room, job))
                    jobs[room] = job
                await wake.wait()

    async def _reconcile(self, room: RoomId, bus: str, cause: Cause, job: _Job) -> None:
        device = DeviceRef(room, "lock")
        points = self._state.points
        mark = self._marks.get(room, 0)
        if not points.online(device):
            # Done when it answers (it is read and reconciled then). A lock that went
            # offline holds what may no longer be authorised: what it differs by then is
            # drift, repaired and reported. One not yet heard since start is merely pending.
            if points.known_offline(device):
                self._synced(room, mark)
            return
        # Slot verification is a slow read; only the read that an authorisation change
        # waits on goes at lock priority.
        priority = _PRIORITY[cause]
        touched = self._unread.get(room)
        if touched and cause != "read" and not await self._read_some(device, bus, touched):
            self.want(room, "change" if cause == "change" else "verify", read_slots=False)
            return
        self._unread.pop(room, None)
        known = self._known_slots(device)
        fresh = cause == "read" or None in known
        slots = await self._read_slots(device, bus, priority) if fresh else known
        if slots is None:
            return
        mark = self._marks.get(room, 0)  # the plan is for what is authorised from here
        ours = room in self._unsynced  # a difference found now is our own pending work
        plan = self._plan(room, slots)
        if plan.writes and not fresh and not ours:
            # Suspected drift, seen by polls that may straddle a change (32 slots are four
            # reads): confirm on one fresh read, so a repair is planned and reported once.
            slots = await self._read_slots(device, bus, priority)
            if slots is None:
                return
            mark = self._marks.get(room, 0)
            ours = room in self._unsynced
            plan = self._plan(room, slots)
        if not plan.writes:
            self._synced(room, mark)
            return
        # Queued together, the writes go on the line back to back when it has a gap; they
        # are read back together after (one read for neighbouring slots, not one each).
        job.writing = True
        job.touching = [i for i, _ in plan.writes]
        # Whatever found them, slot writes go at lock priority: a lock that must change
        # (a revocation, a repair, our own pending change) is never background work.
        failure = await self._write_slots(device, bus, plan.writes, PollClass.LOCK)
        if failure is not None:
            log.info("slot_write_failed", device=str(device), error=failure)
            again: Literal["change", "routine", "verify"] = "verify" if cause == "read" else cause
            self.want(room, again, read_slots=cause == "read")
            return
        # Moving a kept token into its own region is housekeeping, not drift.
        drift = not ours and (plan.added > 0 or plan.removed > 0)
        self._synced(room, mark)
        if drift:
            self._submit(LockRepaired(room, device, plan.added, plan.removed, drift=True))
        log.info("lock_reconciled", device=str(device), added=plan.added, removed=plan.removed)

    async def _write_slots(
        self,
        device: DeviceRef,
        bus: str,
        writes: Sequence[tuple[int, int]],
        priority: PollClass,
    ) -> str | None:
        """Write the slots and read them back in one read: None, or what went wrong.

        The read is queued with the writes, behind them (the bus owner takes requests of
        one priority in order), so it costs no second wait for a gap on a busy line. Where
        a bus runs several requests at once (Modbus TCP) the read may finish before a
        write: then it is made again.
        """
        write = self._writers[bus]
        wants = [("slot", index) for index, _ in writes]
        done: list[str] = []

        def track(tag: str, fut: asyncio.Future[object]) -> asyncio.Future[object]:
            fut.add_done_callback(lambda _: done.append(tag))
            return fut

        pending = [
            track(
                "w",
                asyncio.ensure_future(
                    write(device, "slot", v, index=i, priority=priority, verify=False)
                ),
            )
            for i, v in writes
        ]
        reading = track(
            "r", asyncio.ensure_future(self._readers[bus](device, wants, priority=priority))
        )
        results = await asyncio.gather(*pending, reading, return_exceptions=True)
        failed = [r for r in results[:-1] if isinstance(r, BaseException)]
        unexpected = [f for f in failed if not isinstance(f, BusError)]
        if unexpected:
            raise unexpected[0]
        if failed:
            return str(failed[0])
        values = results[-1]
        if isinstance(values, BaseException) or done.index("r") < len(writes):
            try:  # failed, or it overtook a write
                values = await self._readers[bus](device, wants, priority=priority)
            except BusError as exc:
                return f"read back: {exc}"
        assert isinstance(values, dict)
        got = {i: _int_or_none(values.get(("slot", i))) for i, _ in writes}
        self._saw(device, got)
        wrong = [i for i, v in writes if got[i] != v]
        return f"slots {wrong} read back otherwise" if wrong else None

    async def _read_slots(
        self, device: DeviceRef, bus: str, priority: PollClass
    ) -> list[int | None] | None:
        """Every slot of a lock, read now (None on failure).

        The values also reach the floor state as observations, but through the inbox: what
        was just read is what the plan must use, not what the state has taken in so far.
        """
        wants = [("slot", i) for i in range(SLOT_COUNT)]
        try:
            values = await self._readers[bus](device, wants, priority=priority)
        except BusError as exc:
            log.info("slot_read_failed", device=str(device), error=str(exc))
            return None
        slots = [_int_or_none(values.get(want)) for want in wants]
        self._saw(device, dict(enumerate(slots)))
        return slots

    async def _read_some(self, device: DeviceRef, bus: str, indices: Sequence[int]) -> bool:
        """Read these slots now, at lock priority, into what is known (False on failure)."""
        wants = [("slot", i) for i in indices]
        try:
            values = await self._readers[bus](device, wants, priority=PollClass.LOCK)
        except BusError as exc:
            log.info("slot_read_failed", device=str(device), error=str(exc))
            return False
        self._saw(device, {i: _int_or_none(values.get(("slot", i))) for i in indices})
        return True

    def _known_slots(self, device: DeviceRef) -> list[int | None]:
        """What is known of a lock's slots (None: never read): the floor state's values,
        and over them what this keeper itself read in the last ``FRESH_S`` (the state
        learns it through the inbox, a moment later: a plan must not miss our own writes)."""
        known = self._state.points.last_known
        slots = [_int_or_none(known(device, "slot", i)) for i in range(SLOT_COUNT)]
        now = self._mono()
        for i, (value, at) in self._seen.get(device, {}).items():
            if now - at < FRESH_S:
                slots[i] = value
        return slots

    def _saw(self, device: DeviceRef, values: Mapping[int, int | None]) -> None:
        """Slot values this keeper just read (a fresh read, or a read-back)."""
        seen = self._seen.setdefault(device, {})
        now = self._mono()
        for i, value in values.items():
            seen[i] = (value, now)

    def _plan(self, room: RoomId, slots: list[int | None]) -> locksync.SlotPlan:
        """The writes that make these slots what is authorised now."""
        return locksync.plan_lock(self._state.authz.desired(room, self._wall()), slots)

    # -- the access log -------------------------------------------------------------------

    async def _read_log(self, device: DeviceRef) -> None:
        head = self._state.points.last_known(device, "log_head")
        follower = self._followers.get(device)
        if follower is None or device.room is None or not isinstance(head, int):
            return
        read = follower.on_head(head)
        if read is None:
            return
        wants = [(p, k) for k in read.indices for p in ("log_seq", "log_result", "log_token")]
        try:
            values = await self._readers[self._bus[device.room]](
                device, wants, priority=PollClass.LOCK
            )
        except BusError as exc:
            log.info("access_log_read_failed", device=str(device), error=str(exc))
            return
        entries = []
        for k in read.indices:
            seq, result, token = (
                values.get(("log_seq", k)),
                values.get(("log_result", k)),
                values.get(("log_token", k)),
            )
            if isinstance(seq, int) and isinstance(result, str) and isinstance(token, int):
                entries.append((seq, result, token))
        new = follower.on_entries(entries)
        self._submit(AccessLogRead(device, tuple(new), read.gap, follower.last_seen))


_LIMITS = {"change": ROOMS_AT_ONCE, "routine": ROUTINE_AT_ONCE, "check": VERIFIES_AT_ONCE}
# The reads a reconciliation starts with: at lock priority for a change or a schedule's
# routine work (routine work yields by being few at a time and preempted), slowest of all
# for verification. Slot writes always go at lock priority.
_PRIORITY: dict[Cause, PollClass] = {
    "change": PollClass.LOCK,
    "routine": PollClass.LOCK,
    "read": PollClass.SLOW,
    "verify": PollClass.SLOW,
}


def _preempts(cause: Cause, running: _Job) -> bool:
    """A more urgent reconciliation replaces one under way: a change even a routine one
    that is writing (its writes queued behind are dropped), others only while reading."""
    if _RANK[cause] <= _RANK[running.cause]:
        return False
    return not running.writing or (cause == "change" and running.cause == "routine")


def _lane(cause: Cause) -> str:
    """Which limit a reconciliation counts against."""
    return cause if cause in ("change", "routine") else "check"


@dataclass(slots=True)
class _Job:
    """One room's reconciliation in progress: why, and whether it has begun writing."""

    cause: Cause
    writing: bool = False  # past its reads: only a change preempts it now
    touching: list[int] = field(default_factory=list)  # the slots it writes
    task: asyncio.Task[None] = field(init=False)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
