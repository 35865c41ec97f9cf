"""The floor engine: routes observations to the pure core and carries out its effects.

Data flows one way (STYLE.md): a bus task observes a device → the core decides (rooms,
authorisation, alarms) → effects. Every decision is made synchronously on the event loop,
so the in-memory core state is always the result of every input in order; its effects
are then handed to one committer task that writes the persisting ones (events, audit,
alarms, stays, counters) in one SQLite transaction per decision and only then acts:
device writes, call-panel lamps, retained MQTT state, waking the outbox. A failed commit
is fatal (StoreError ends the supervisor; systemd restarts from what is on disk).

Device writes go through one actuator task per bus. A write that cannot be made because
the device is offline is kept as pending and made again as soon as the device answers
(mqtt.md: "a device that is offline is brought in line as soon as it answers again").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from gateway.adapters import alarms_store, schema, stays
from gateway.adapters.store import Store
from gateway.config.floor import FloorConfig
from gateway.config.profile import PollClass
from gateway.core.alarms import Alarm, Alarms, FloorLayout, Retain, SaveAlarm
from gateway.core.alarms import Refusal as AlarmRefusal
from gateway.core.authz import Authz, LocksChanged, RoomOccupied, RoomVacant, SaveStay, Stay
from gateway.core.callpanel import CallCancelled, CallPlaced, LineFault, PanelOffline, PanelOnline
from gateway.core.clock import ClockWatch
from gateway.core.effects import Audit, Emit, SetPanelLamp, WritePoint
from gateway.core.observations import (
    DeviceFault,
    DeviceOffline,
    DeviceOnline,
    DriverObservation,
    PointObserved,
)
from gateway.core.roles import DeviceRole
from gateway.core.rooms import Rooms, layouts, point_key
from gateway.errors import BusError, DeviceUnavailableError
from gateway.locks import LockKeeper, SaveLogHead

log = structlog.get_logger("gateway.floor")

# Point values are cached on disk for the next start; counters are written with the
# decision they caused, everything else at most this often (writes throttled).
CACHE_FLUSH_S = 2.0
COUNTERS = ("bath_count", "bed_count", "staff_count")
CLOCK_CHECK_S = 1.0  # how often the wall clock is compared with the monotonic one


@dataclass(frozen=True, slots=True)
class SaveCounter:
    """Persist the last value seen of a call counter, with the decision it caused."""

    device: str
    point: str
    value: int


@dataclass(frozen=True, slots=True)
class MarkWelcomed:
    """The welcome scene ran for this stay (first door opening): never again for it."""

    room: str
    stay_id: str


Effect = Any  # the union of every core module's effect values; dispatched by type below


@dataclass(slots=True)
class _Batch:
    effects: list[Effect]
    done: asyncio.Future[None] | None = None


@dataclass(slots=True)
class _Actuator:
    queue: asyncio.Queue[WritePoint] = field(default_factory=asyncio.Queue)


class Floor:
    """One floor: core state, the committer, actuators and timers; the daemon owns its tasks."""

    def __init__(
        self,
        config: FloorConfig,
        store: Store,
        stored: _Stored,
        alarms: Alarms,
        authz: Authz,
        *,
        wall: Callable[[], datetime],
        mono: Callable[[], float],
    ) -> None:
        """Use ``Floor.open``: the floor as restored from ``stored``."""
        self.config = config
        self.store = store
        self.wall = wall
        self.mono = mono
        self.device_bus = {d.name: d.bus for d in config.devices()}
        self._roles = {d.name: d.profile.roles() for d in config.devices()}
        self._points = {d.name: d.profile.by_role() for d in config.devices()}
        self.writers: dict[str, Callable[..., Any]] = {}  # bus -> scheduler.write
        self.readers: dict[str, Callable[..., Any]] = {}  # bus -> scheduler.read
        self.lamp_senders: dict[str, Callable[[str, Any], None]] = {}  # panel bus -> send_lamp
        self.on_events: Callable[[], None] = lambda: None  # uplink.events_appended
        self.set_retained: Callable[[str, dict[str, object] | None], None] = lambda s, p: None
        self.link_up: Callable[[], bool] = lambda: False
        self.rooms = Rooms(
            layouts((r.id, [d.role for d in r.devices], r.callpanel) for r in config.rooms),
            door_held_open_s=config.policy.door_held_open_s,
            stored=stored.values,
        )
        self.authz = authz
        self.alarms = alarms
        self._commits: asyncio.Queue[_Batch] = asyncio.Queue()
        self._actuators: dict[str, _Actuator] = {}
        self._pending: dict[tuple[str, str, int], WritePoint] = {}
        self._welcomed = stored.welcomed
        self._timers_changed = asyncio.Event()
        self._cache_dirty: dict[tuple[str, str], object] = {}
        self._clock = ClockWatch()
        self.locks = LockKeeper(self)
        self._link_was_up = False

    # -- start-up -----------------------------------------------------------------------

    @classmethod
    async def open(
        cls,
        config: FloorConfig,
        store: Store,
        *,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
        mono: Callable[[], float] = time.monotonic,
    ) -> Floor:
        """The floor restored from disk: point values, stays, log heads, open alarms.

        Escalation levels and stay boundaries that fell due while the daemon was down are
        queued at once; every lock's slots are read and reconciled.
        """
        stored = await store.read(_load_all)
        now = wall()
        alarms, alarm_effects = Alarms.restore(
            FloorLayout.from_floor(config), stored.alarms, now, link_up=False, new_id=_new_id
        )
        authz, boundary_effects = Authz.from_stays(stored.stays).tick(now)
        floor = cls(config, store, stored, alarms, authz, wall=wall, mono=mono)
        floor.locks.load(stored.heads)
        floor.submit(alarm_effects)
        floor.submit(boundary_effects)
        for room in floor.rooms.rooms():
            floor.locks.want(room, "verify", read_slots=True)  # "at start-up"
        return floor

    # -- inputs -------------------------------------------------------------------------

    def observe(self, obs: DriverObservation) -> None:
        """A bus scheduler's observation (sync; called on the loop)."""
        self._sync_link()
        now = self.wall()
        effects: list[Effect] = []
        if isinstance(obs, PointObserved):
            effects += self._point(obs, now)
        elif isinstance(obs, (DeviceOnline, DeviceOffline, DeviceFault)):
            effects += self._health(obs, now)
        self.submit(effects)
        if obs.room is not None:
            self.room_changed(obs.room)

    def panel_event(self, event: object) -> None:
        """A call panel driver's event (CallPlaced, CallCancelled, LineFault, panel on/offline)."""
        self._sync_link()
        now = self.wall()
        effects: list[Effect] = []
        alarms = self.alarms
        if isinstance(event, CallPlaced):
            alarms, effects = alarms.panel_call(event.bus, event.room, event.point, now)
        elif isinstance(event, CallCancelled):
            alarms, effects = alarms.panel_cancel(event.bus, event.room, event.point, now)
        elif isinstance(event, LineFault):
            alarms, effects = alarms.panel_fault(
                event.bus, event.room, event.point, event.code, now
            )
        elif isinstance(event, PanelOffline):
            alarms, effects = alarms.panel_offline(event.bus, now)
            effects = [Emit("callpanel.offline", None, {"bus": event.bus}), *effects]
        elif isinstance(event, PanelOnline):
            alarms, effects = alarms.panel_online(event.bus, now)
            effects = [Emit("callpanel.online", None, {"bus": event.bus}), *effects]
        self.alarms = alarms
        self._after_alarms(effects)
        self.submit(effects)

    def _sync_link(self) -> None:
        """Learn the MQTT link's state before deciding (a call raised while it is down
        sounds the floor at once)."""
        link = self.link_up()
        if link != self._link_was_up:
            self.link_changed(link)

    def link_changed(self, up: bool) -> None:
        """The MQTT link went up or down (the floor sounder rule depends on it)."""
        if up == self._link_was_up or self.alarms is None:
            return
        self._link_was_up = up
        self.alarms, effects = self.alarms.link_changed(up, self.wall())
        self.submit(effects)

    # -- decisions ----------------------------------------------------------------------

    def _point(self, obs: PointObserved, now: datetime) -> list[Effect]:
        out: list[Effect] = []
        room = obs.room
        if room is not None and obs.role is DeviceRole.RIO and obs.point in COUNTERS:
            old = self.rooms.last_known(obs.device, obs.point)
            if isinstance(obs.value, int):
                old_int = old if isinstance(old, int) else None
                self.alarms, alarm_effects = self.alarms.counter(
                    room, obs.point, old_int, obs.value, now
                )
                self._after_alarms(alarm_effects)
                out += alarm_effects
                out.append(SaveCounter(obs.device, obs.point, obs.value))
        out += self.rooms.observe(obs, now)
        if obs.room is None:
            self._cache(obs)
            return out
        if obs.role is DeviceRole.LOCK:
            out += self._lock_point(obs, now)
        if obs.point not in COUNTERS:
            self._cache(obs)
        return out

    def _lock_point(self, obs: PointObserved, now: datetime) -> list[Effect]:
        assert obs.room is not None
        room = obs.room
        out: list[Effect] = []
        if obs.point == "log_head" and isinstance(obs.value, int):
            self.locks.log_head_seen(obs.device)
        elif obs.point == "slot":
            self.locks.want(room, "verify")
        elif obs.point == "tamper" and isinstance(obs.value, bool):
            self.alarms, effects = self.alarms.tamper(room, obs.value, now)
            out += effects
        elif obs.point == "door_open" and obs.value is True:
            occupancy, stay_id = self.authz.occupancy(room, now)
            if occupancy == "occupied" and stay_id and self._welcomed.get(room) != stay_id:
                self._welcomed[room] = stay_id
                out.append(MarkWelcomed(room, stay_id))
                out += self._welcome_scene(room)
        return out

    def _health(
        self, obs: DeviceOnline | DeviceOffline | DeviceFault, now: datetime
    ) -> list[Effect]:
        out: list[Effect] = list(self.rooms.health(obs))
        if obs.room is not None and obs.role is DeviceRole.RIO:
            if isinstance(obs, DeviceOffline):
                self.alarms, effects = self.alarms.device_offline(obs.room, str(obs.role), now)
                out += effects
            elif isinstance(obs, DeviceOnline):
                self.alarms, effects = self.alarms.device_online(obs.room, str(obs.role), now)
                out += effects
        if isinstance(obs, DeviceOnline):
            self._device_back(obs.device)
        return out

    def _device_back(self, device: str) -> None:
        """Bring a device that answers again in line: lamps, pending writes, lock slots."""
        for effect in self.alarms.outputs():
            # a room I/O's lamps are re-sent by alarms.device_online already
            if (
                isinstance(effect, WritePoint)
                and effect.device == device
                and not device.endswith("/rio")
            ):
                self._enqueue_write(effect)
        for key, write in list(self._pending.items()):
            if key[0] == device:
                self._enqueue_write(write)
        if device.endswith("/lock"):
            room = device.rsplit("/", 1)[0]
            self.locks.want(room, "verify", read_slots=True)

    def _after_alarms(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            if isinstance(effect, SaveAlarm) and effect.alarm.room is not None:
                self.room_changed(effect.alarm.room)
        self._timers_changed.set()

    def _welcome_scene(self, room: str) -> list[Effect]:
        if f"{room}/rio" not in self.device_bus:
            return []
        return [
            WritePoint(f"{room}/rio", "light_entry", True, priority=PollClass.ROOM),
            WritePoint(f"{room}/rio", "light_main", True, priority=PollClass.ROOM),
        ]

    def room_mode(self, effect: RoomOccupied | RoomVacant) -> list[WritePoint]:
        """The device writes of a room becoming occupied or vacant (issue 6 "Room modes")."""
        room = effect.room
        tstat, rio = f"{room}/tstat", f"{room}/rio"
        out: list[WritePoint] = []
        if isinstance(effect, RoomOccupied):
            if tstat in self.device_bus:
                setpoint = effect.setpoint_c
                if setpoint is None:
                    setpoint = self.config.policy.occupied_setpoint_c
                out += [
                    WritePoint(tstat, "setpoint", float(setpoint), priority=PollClass.ROOM),
                    WritePoint(tstat, "keypad_lock", 0, priority=PollClass.ROOM),
                    WritePoint(tstat, "power", 1, priority=PollClass.ROOM),
                ]
            return [w for w in out if self.has_point(w.device, w.point)]
        if tstat in self.device_bus:
            out += [
                WritePoint(
                    tstat, "setpoint", self.config.policy.vacant_setpoint_c, priority=PollClass.ROOM
                ),
                WritePoint(tstat, "keypad_lock", 1, priority=PollClass.ROOM),
            ]
        if rio in self.device_bus:
            out += [
                WritePoint(rio, f"light_{c}", False, priority=PollClass.ROOM)
                for c in ("entry", "main", "bedside", "bath")
            ]
        return [w for w in out if self.has_point(w.device, w.point)]

    def has_point(self, device: str, point: str) -> bool:
        """True when the device's profile has a point playing this role."""
        return point in self._roles.get(device, set())

    def point_range(self, device: str, point: str) -> tuple[float, float]:
        """The profile's accepted range of a numeric point (devices.md: else exception 03)."""
        spec = self._points.get(device, {}).get(point)
        low = spec.min if spec is not None and spec.min is not None else float("-inf")
        high = spec.max if spec is not None and spec.max is not None else float("inf")
        return low, high

    # -- effects pipeline ---------------------------------------------------------------

    def submit(
        self, effects: Sequence[Effect], *, done: asyncio.Future[None] | None = None
    ) -> None:
        """Queue a decision's effects: persisted in one transaction, then carried out.

        ``done`` (optional) resolves once they are committed and acted on.
        """
        if effects or done is not None:
            self.locks.changing(effects)  # a stay boundary: see LockKeeper.changing
            self._commits.put_nowait(_Batch(list(effects), done))

    def persist(self, conn: sqlite3.Connection, effects: Iterable[Effect]) -> None:
        """Write the persisting effects of one decision (inside the caller's transaction)."""
        now = self.wall()
        for e in effects:
            if isinstance(e, Emit):
                schema.append_event(
                    conn, e.type, room=e.room, data=e.data, ts=now, low_value=e.low_value
                )
            elif isinstance(e, Audit):
                schema.audit(
                    conn, actor=e.actor, action=e.action, room=e.room, detail=e.detail, ts=now
                )
            elif isinstance(e, SaveAlarm):
                alarms_store.save_alarm(conn, e.alarm)
            elif isinstance(e, SaveStay):
                stays.save_stay(conn, e.stay)
            elif isinstance(e, SaveCounter):
                schema.set_point_value(conn, e.device, e.point, e.value, time.time())
            elif isinstance(e, SaveLogHead) and e.head is not None:
                stays.save_log_head(conn, e.device, e.head)
            elif isinstance(e, MarkWelcomed):
                schema.set_point_value(conn, f"{e.room}/stay", "welcomed", e.stay_id, time.time())

    def act(self, effects: Iterable[Effect]) -> None:
        """Carry out the non-persisting effects of a committed decision, in order."""
        emitted = False
        for e in effects:
            if isinstance(e, Emit):
                emitted = True
            elif isinstance(e, Retain):
                self.set_retained(e.subtopic, e.payload)
            elif isinstance(e, WritePoint):
                self._enqueue_write(e)
            elif isinstance(e, SetPanelLamp):
                sender = self.lamp_senders.get(e.bus)
                if sender is not None:
                    sender(e.room, e.state)
            elif isinstance(e, (RoomOccupied, RoomVacant)):
                for write in self.room_mode(e):
                    self._enqueue_write(write)
                self.room_changed(e.room)
            elif isinstance(e, LocksChanged):
                for room in e.rooms:
                    self.locks.want(room, "change")
            elif isinstance(e, SaveStay):
                self.room_changed(e.stay.room)
        if emitted:
            self.on_events()

    async def committer(self) -> None:
        """The one task that commits decisions in order, then acts on them."""
        while True:
            batches = [await self._commits.get()]
            while not self._commits.empty():
                batches.append(self._commits.get_nowait())
            writes = [self.store.write(_persist_fn(self, b.effects)) for b in batches]
            await asyncio.gather(*writes)
            for batch in batches:
                self.act(batch.effects)
                if batch.done is not None and not batch.done.done():
                    batch.done.set_result(None)

    # -- actuators ----------------------------------------------------------------------

    def _enqueue_write(self, write: WritePoint) -> None:
        bus = self.device_bus.get(write.device)
        if bus is None:
            return
        key = (write.device, write.point, write.index)
        self._pending[key] = write
        self._actuators.setdefault(bus, _Actuator()).queue.put_nowait(write)

    async def actuator(self, bus: str) -> None:
        """Make the queued writes of one bus, verified; keep the failed ones pending."""
        act = self._actuators.setdefault(bus, _Actuator())
        while True:
            write = await act.queue.get()
            key = (write.device, write.point, write.index)
            if self._pending.get(key) is not write:
                continue  # superseded by a newer write of the same point
            try:
                await self.writers[bus](
                    write.device,
                    write.point,
                    write.value,
                    index=write.index,
                    priority=write.priority,
                    verify=write.verify,
                )
            except DeviceUnavailableError:
                log.debug("write_pending", device=write.device, point=write.point)
                continue
            except (BusError, ValueError) as exc:
                log.warning("write_failed", device=write.device, point=write.point, error=str(exc))
                continue
            if self._pending.get(key) is write:
                del self._pending[key]
            if write.device.endswith("/rio") or write.device.endswith("/tstat"):
                self.room_changed(write.device.rsplit("/", 1)[0])

    def pending_devices(self, devices: Iterable[str]) -> list[str]:
        """Which of these devices are offline (a command's ``result.pending``)."""
        return sorted({d for d in devices if d in self.device_bus and not self.rooms.online(d)})

    # -- timers -------------------------------------------------------------------------

    async def timers(self) -> None:
        """Wake at the next stay boundary, escalation or door deadline; watch the clock."""
        while True:
            now = self.wall()
            jump = self._clock.observe(self.mono(), now)
            if jump is not None:
                log.warning("clock_jump", seconds=jump.seconds)
                for room in self.rooms.rooms():
                    self.locks.want(room, "change")
            self.tick(now)
            deadline = self._next_deadline(now)
            wait = CLOCK_CHECK_S
            if deadline is not None:
                wait = min(wait, max(0.0, (deadline - now).total_seconds()))
            self._timers_changed.clear()
            # Not asyncio.wait_for: on Python 3.11 it swallows a cancel that lands while the
            # event is being set (CPython gh-86296), and observations set it many times a
            # second, so a stop could leave this loop running past the shutdown bound.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._timers_changed.wait()

    def tick(self, now: datetime) -> None:
        """Apply every boundary, escalation and door deadline that is due at ``now``."""
        authz, effects = self.authz.tick(now)
        self.authz = authz
        self.alarms, alarm_effects = self.alarms.tick(now)
        if alarm_effects:
            self._after_alarms(alarm_effects)
        self.submit([*effects, *alarm_effects, *self.rooms.tick(now)])
        self._sync_link()

    def _next_deadline(self, now: datetime) -> datetime | None:
        candidates = [
            self.authz.next_boundary(now),
            self.alarms.next_deadline(),
            self.rooms.next_deadline(),
        ]
        return min((c for c in candidates if c is not None), default=None)

    def timers_changed(self) -> None:
        """Something moved a deadline (a check-in, an acknowledgement): recompute now."""
        self._timers_changed.set()

    # -- cache and room state -----------------------------------------------------------

    def _cache(self, obs: PointObserved) -> None:
        self._cache_dirty[(obs.device, point_key(obs.point, obs.index))] = obs.value

    async def cache_flusher(self) -> None:
        """Write changed point values to disk, at most every CACHE_FLUSH_S (throttled)."""
        while True:
            await asyncio.sleep(CACHE_FLUSH_S)
            if self._cache_dirty:
                dirty, self._cache_dirty = self._cache_dirty, {}
                await self.store.write(functools.partial(_write_cache, dirty, time.time()))

    def room_changed(self, room: str) -> None:
        """Republish a room's retained state (the uplink coalesces changes)."""
        if room in self.rooms.rooms():
            self.set_retained(f"rooms/{room}/state", self.room_snapshot(room))

    def room_snapshot(self, room: str) -> dict[str, object]:
        """mqtt.md room state of one room, now."""
        now = self.wall()
        occupancy, stay_id = self.authz.occupancy(room, now)
        return self.rooms.snapshot(
            room,
            occupancy=occupancy,
            stay_id=stay_id,
            call=self.alarms.call_state(room),
            ts=schema.format_ts(now),
        )

    def current_state(self) -> list[tuple[str, dict[str, object] | None]]:
        """Every open alarm, then every room state: what goes out first on (re)connect."""
        out: list[tuple[str, dict[str, object] | None]] = [
            (f"alarms/{a.alarm_id}", a.snapshot()) for a in self.alarms.open_alarms()
        ]
        out += [(f"rooms/{room}/state", self.room_snapshot(room)) for room in self.rooms.rooms()]
        return out

    # -- commands on alarms (used by MQTT handlers and the control socket) --------------

    def ack_alarm(self, alarm_id: str, by: str) -> list[Effect] | AlarmRefusal:
        """Acknowledge an alarm now; the effects to persist, or why not."""
        result = self.alarms.ack(alarm_id, by, self.wall())
        if isinstance(result, AlarmRefusal):
            return result
        self.alarms, effects = result
        self._after_alarms(effects)
        return effects

    def resolve_alarm(self, alarm_id: str, by: str) -> list[Effect] | AlarmRefusal:
        """Resolve an alarm now; the effects to persist, or why not."""
        result = self.alarms.resolve(alarm_id, by, self.wall())
        if isinstance(result, AlarmRefusal):
            return result
        self.alarms, effects = result
        self._after_alarms(effects)
        return effects


def _persist_fn(floor: Floor, effects: list[Effect]) -> Callable[[sqlite3.Connection], None]:
    def run(conn: sqlite3.Connection) -> None:
        floor.persist(conn, effects)

    return run


@dataclass(frozen=True, slots=True)
class _Stored:
    """What the floor keeps on disk across restarts."""

    values: dict[tuple[str, str], object]
    stays: list[Stay]
    heads: dict[str, int]
    alarms: list[Alarm]
    welcomed: dict[str, str]  # room -> stay whose welcome scene ran


def _load_all(conn: sqlite3.Connection) -> _Stored:
    values = schema.load_point_values(conn)
    welcomed = {
        device.split("/", 1)[0]: str(value)
        for (device, point), value in values.items()
        if device.endswith("/stay") and point == "welcomed"
    }
    return _Stored(
        values,
        stays.load_stays(conn),
        stays.load_log_heads(conn),
        alarms_store.load_open_alarms(conn),
        welcomed,
    )


def _new_id() -> str:
    return uuid.uuid4().hex


def _write_cache(
    dirty: dict[tuple[str, str], object], stamp: float, conn: sqlite3.Connection
) -> None:
    for (device, point), value in dirty.items():
        schema.set_point_value(conn, device, point, value, stamp)
