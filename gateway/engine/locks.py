"""The lock keeper: every lock's slots kept equal to what is authorised; access logs followed.

Slots are written and cleared until they equal ``authz.desired_tokens(room, now)``: on
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
from collections.abc import Awaitable, Callable, Mapping, Sequence
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

ROOMS_AT_ONCE = 8  # rooms of one bus reconciled concurrently
Cause = Literal["change", "verify", "read"]


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
        self, device: DeviceRef, point: str, value: Value, *, index: int, priority: PollClass
    ) -> Awaitable[None]:
        """Write ``point[index]`` and read it back."""
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
    ) -> None:
        """``heads``: each lock's last access-log entry read before the restart."""
        self._state = state
        self._readers = readers
        self._writers = writers
        self._submit = submit
        self._slot_verify_s = slot_verify_s
        self._wall = wall
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
        # The tokens each lock was last brought to (or found to hold). A lock that differs
        # from what is authorised while that has not changed since is drift; one that
        # differs because the authorisation changed (even before its ReconcileLock comes,
        # while the change commits) is our own pending work.
        self._synced: dict[RoomId, frozenset[str]] = {}

    def want(self, room: RoomId, cause: Literal["change", "verify"], *, read_slots: bool) -> None:
        """Reconcile the room's lock: ``change`` (authorisation changed), ``verify`` (compare
        with what is known) or, with ``read_slots``, read every slot first."""
        bus = self._bus.get(room)
        if bus is None:
            return
        wanted = self._wanted.setdefault(bus, {})
        if cause == "change":
            wanted[room] = "change"
            self._unsynced.add(room)  # what we find different next is our own pending work
        elif wanted.get(room) != "change":
            wanted[room] = "read" if read_slots else cause
        self._wake.setdefault(bus, asyncio.Event()).set()

    def pending_slots(self) -> int:
        """Slot writes still to make: tokens to add or remove on locks with our changes."""
        return sum(
            len(self._desired(room) ^ self._synced.get(room, frozenset()))
            for room in self._unsynced
        )

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
        wake = self._wake.setdefault(bus, asyncio.Event())
        wanted = self._wanted.setdefault(bus, {})
        while True:
            if not wanted:
                wake.clear()
                await wake.wait()
                continue
            # Several rooms at once (changes first): their transactions queue together at
            # the bus owner, which runs them back to back between emergency polls.
            order = sorted(wanted, key=lambda r: wanted[r] != "change")[:ROOMS_AT_ONCE]
            batch = [(room, wanted.pop(room)) for room in order]
            await asyncio.gather(*(self._reconcile(room, bus, cause) for room, cause in batch))

    async def _reconcile(self, room: RoomId, bus: str, cause: Cause) -> None:
        device = DeviceRef(room, "lock")
        points = self._state.points
        if not points.online(device):
            # Done when it answers (it is read and reconciled then). A lock that went
            # offline holds what may no longer be authorised: what it differs by then is
            # drift, repaired and reported. One not yet heard since start is merely pending.
            if points.known_offline(device):
                self._unsynced.discard(room)
                self._synced[room] = self._desired(room)
            return
        # Slot verification is a slow read; only the read that an authorisation change
        # waits on goes at lock priority.
        priority = PollClass.LOCK if cause == "change" else PollClass.SLOW
        known = self._known_slots(device)
        fresh = cause == "read" or None in known
        slots = await self._read_slots(device, bus, priority) if fresh else known
        if slots is None:
            return
        desired = self._desired(room)
        plan = locksync.plan_slots(desired, slots)
        if plan.writes and not fresh and room not in self._unsynced:
            # Suspected drift, seen by polls that may straddle a change (32 slots are four
            # reads): confirm on one fresh read, so a repair is planned and reported once.
            slots = await self._read_slots(device, bus, priority)
            if slots is None:
                return
            desired = self._desired(room)
            plan = locksync.plan_slots(desired, slots)
        if not plan.writes:
            self._unsynced.discard(room)
            self._synced[room] = desired
            return
        # Queued together, the writes go on the line back to back when it has a gap.
        write = self._writers[bus]
        results = await asyncio.gather(
            *(
                write(device, "slot", value, index=index, priority=PollClass.LOCK)
                for index, value in plan.writes
            ),
            return_exceptions=True,
        )
        failed = [r for r in results if isinstance(r, BaseException)]
        unexpected = [f for f in failed if not isinstance(f, BusError)]
        if unexpected:
            raise unexpected[0]
        if failed:
            log.info("slot_write_failed", device=str(device), error=str(failed[0]))
            self.want(room, "change" if cause == "change" else "verify", read_slots=cause == "read")
            return
        drift = room not in self._unsynced and self._synced.get(room, desired) == desired
        self._unsynced.discard(room)
        self._synced[room] = desired
        if drift:
            self._submit(LockRepaired(room, device, plan.added, plan.removed, drift=True))
        log.info("lock_reconciled", device=str(device), added=plan.added, removed=plan.removed)

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
        return [_int_or_none(values.get(want)) for want in wants]

    def _known_slots(self, device: DeviceRef) -> list[int | None]:
        """What the floor state knows of a lock's slots (None: never read)."""
        known = self._state.points.last_known
        return [_int_or_none(known(device, "slot", i)) for i in range(SLOT_COUNT)]

    def _desired(self, room: RoomId) -> frozenset[str]:
        """The tokens the room's lock must hold now."""
        return self._state.authz.desired_tokens(room, self._wall())

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


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
