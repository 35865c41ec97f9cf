"""The locks: keep every lock's slots equal to what is authorised, follow its access log.

Slots are written and cleared until they equal ``authz.desired_tokens(room, now)``: on every
authorisation change, when a lock answers again (all 32 slots read first), at start-up and
every ``policy.slot_verify_s``. A difference that is not our own pending work is repaired
and reported once as ``lock.drift_repaired`` (and audited). The access log is followed from
``log_head``: new ring entries become ``access.*`` events with the token's hash, never the
token.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from gateway.config.profile import PollClass
from gateway.core import locksync
from gateway.core.authz import LocksChanged
from gateway.core.effects import Audit, Emit
from gateway.errors import BusError

if TYPE_CHECKING:
    from gateway.floor import Floor

log = structlog.get_logger("gateway.locks")

LOCK_SLOTS = 32
ROOMS_AT_ONCE = 8  # rooms of one bus reconciled concurrently


@dataclass(frozen=True, slots=True)
class SaveLogHead:
    """Persist the last access-log entry read from a lock (with the events it produced)."""

    device: str
    head: int | None


class LockKeeper:
    """Reconciler and access-log follower of every lock of the floor (two owned tasks)."""

    def __init__(self, floor: Floor) -> None:
        self.floor = floor
        self._followers: dict[str, locksync.LogFollower] = {}
        self._log_reads: asyncio.Queue[str] = asyncio.Queue()
        # per bus: room -> "change" | "verify" | "read", and the event that wakes its worker
        self._wanted: dict[str, dict[str, str]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._unsynced: set[str] = set()  # rooms whose lock has authorisation changes to apply

    def load(self, heads: dict[str, int]) -> None:
        """Resume each lock's access log after the last entry read before the restart."""
        for device in self.floor.device_bus:
            if device.endswith("/lock"):
                self._followers[device] = locksync.LogFollower(heads.get(device))

    def log_head_seen(self, device: str) -> None:
        """A lock's log head changed: read its new entries (in the log-reader task)."""
        self._log_reads.put_nowait(device)

    def want(self, room: str, cause: str, *, read_slots: bool = False) -> None:
        """Ask for the room's lock to be reconciled: ``change`` (authorisation changed),
        ``verify`` (compare with what is known) or, with ``read_slots``, ``read`` first."""
        device = f"{room}/lock"
        bus = self.floor.device_bus.get(device)
        if bus is None:
            return
        wanted = self._wanted.setdefault(bus, {})
        if cause == "change":
            wanted[room] = "change"
            self._unsynced.add(room)  # what we find different next is our own pending work
        elif wanted.get(room) != "change":
            wanted[room] = "read" if read_slots else cause
        self._wake.setdefault(bus, asyncio.Event()).set()

    def changing(self, effects: Iterable[object]) -> None:
        """Authorisation changed (the rooms of ``LocksChanged`` in ``effects``), and is not
        yet committed and applied (``want(room, "change")``): a verification planning with
        the new authorisation meanwhile is applying our own pending work, not drift."""
        for effect in effects:
            if isinstance(effect, LocksChanged):
                self._unsynced.update(effect.rooms)

    async def reconciler(self) -> None:
        """Keep every lock's slots equal to what is authorised for its room right now.

        One worker per bus, so a busy RS-485 line never delays the locks of another; on
        each bus, authorisation changes go before verification and start-up reads.
        """
        buses = sorted({self.floor.device_bus[d] for d in self._followers})
        async with asyncio.TaskGroup() as tg:
            for bus in buses:
                tg.create_task(self._bus_worker(bus), name=f"reconciler[{bus}]")

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
            await asyncio.gather(*(self._reconcile(room, cause) for room, cause in batch))

    async def _reconcile(self, room: str, cause: str) -> None:
        device = f"{room}/lock"
        bus = self.floor.device_bus[device]
        if not self.floor.rooms.online(device):
            # Done when it answers (DeviceOnline → _device_back). A lock that was offline
            # then holds what is no longer authorised: drift, repaired and reported (issue
            # 6: "lock offline during checkout → cleared on return and
            # lock.drift_repaired"). One not yet heard since start is merely pending.
            if self.floor.rooms.known_offline(device):
                self._unsynced.discard(room)
            return
        # Slot verification is a slow read (drivers issue, class 4); only the read that an
        # authorisation change waits on goes at lock priority.
        priority = PollClass.LOCK if cause == "change" else PollClass.SLOW
        fresh = cause == "read" or any(
            self.floor.rooms.last_known(device, "slot", i) is None for i in range(LOCK_SLOTS)
        )
        if fresh and not await self._read_slots(device, bus, priority):
            return
        plan = self._plan(room, device)
        if plan.writes and not fresh and room not in self._unsynced:
            # Suspected drift, seen by polls that may straddle a change (32 slots are four
            # reads): confirm on one fresh read, so a repair is planned and reported once.
            if not await self._read_slots(device, bus, priority):
                return
            plan = self._plan(room, device)
        if not plan.writes:
            self._unsynced.discard(room)
            return
        # Queued together, the writes go on the line back to back when it has a gap.
        write = self.floor.writers[bus]
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
            log.info("slot_write_failed", device=device, error=str(failed[0]))
            self.want(room, cause)
            return
        drift = room not in self._unsynced
        self._unsynced.discard(room)
        if drift:
            data = {"added": plan.added, "removed": plan.removed, "device": device}
            self.floor.submit(
                [
                    Emit("lock.drift_repaired", room, data),
                    Audit("gateway", "lock.drift_repaired", room, data),
                ]
            )
        log.info("lock_reconciled", device=device, added=plan.added, removed=plan.removed)

    async def _read_slots(self, device: str, bus: str, priority: PollClass) -> bool:
        """Read all of a lock's slots (the values arrive as observations); False on failure."""
        try:
            await self.floor.readers[bus](
                device, [("slot", i) for i in range(LOCK_SLOTS)], priority=priority
            )
        except BusError as exc:
            log.info("slot_read_failed", device=device, error=str(exc))
            return False
        return True

    def _plan(self, room: str, device: str) -> locksync.SlotPlan:
        """The writes that make the lock's known slots what is authorised now."""
        desired = self.floor.authz.desired_tokens(room, self.floor.wall())
        known = self.floor.rooms.last_known
        return locksync.plan_slots(
            desired, [_int_or_none(known(device, "slot", i)) for i in range(LOCK_SLOTS)]
        )

    async def slot_verifier(self) -> None:
        """Read every lock's slots every ``policy.slot_verify_s`` and repair any drift."""
        while True:
            await asyncio.sleep(self.floor.config.policy.slot_verify_s)
            for room in self.floor.rooms.rooms():
                self.want(room, "verify", read_slots=True)

    async def log_reader(self) -> None:
        """Follow each lock's access log: read new ring entries, emit access events."""
        while True:
            device = await self._log_reads.get()
            await self._read_log(device)

    async def _read_log(self, device: str) -> None:
        head = self.floor.rooms.last_known(device, "log_head")
        follower = self._followers.get(device)
        if follower is None or not isinstance(head, int):
            return
        read = follower.on_head(head)
        if read is None:
            return
        room = device.rsplit("/", 1)[0]
        wants = [(p, k) for k in read.indices for p in ("log_seq", "log_result", "log_token")]
        try:
            values = await self.floor.readers[self.floor.device_bus[device]](
                device, wants, priority=PollClass.LOCK
            )
        except BusError as exc:
            log.info("access_log_read_failed", device=device, error=str(exc))
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
        effects: list[Any] = []
        if read.gap:
            effects.append(
                Audit("gateway", "access_log.gap", room, {"device": device, "lost": read.gap})
            )
        for entry in follower.on_entries(entries):
            stay_id = (
                self.floor.authz.stay_of_token(room, locksync.int_to_token(entry.token))
                if entry.token
                else None
            )
            effects.append(locksync.access_event(entry, room, stay_id))
        effects.append(SaveLogHead(device, follower.last_seen))
        self.floor.submit(effects)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
