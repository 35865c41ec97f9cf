"""The control socket's FloorView, implemented on the live floor, schedulers and uplink."""

from __future__ import annotations

import asyncio
import copy
import functools
import sqlite3
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta

from drivers.callpanel import CallPanelDriver
from drivers.ids import RoomId
from drivers.profile import PollClass
from drivers.scheduler import BusScheduler
from gateway import __version__
from gateway.adapters import config_store, rooms_store, schema
from gateway.adapters.mqtt import Uplink
from gateway.adapters.signals import Broadcast
from gateway.adapters.store import Store
from gateway.config.floor import FloorConfig
from gateway.core.alarms import Alarm, Refusal
from gateway.core.annunciation import ROOM_LAMPS
from gateway.core.audit import check_chain
from gateway.core.effects import WritePoint
from gateway.core.inputs import AlarmAction, AuditAction
from gateway.core.kinds import lock as lock_kind
from gateway.core.ledger import local_date
from gateway.core.locksync import SLOT_COUNT, plan_lock
from gateway.engine.actuators import Actuators
from gateway.engine.configs import ConfigKeeper
from gateway.engine.engine import Engine, Inbox
from gateway.engine.health import HealthMonitor
from gateway.model.errors import ViewRefused
from gateway.model.time import format_ts, parse_ts
from gateway.model.views import (
    AlarmRow,
    AuditCheck,
    AuditLog,
    AuditRow,
    BusHealth,
    ConfigHistory,
    ConfigHistoryRow,
    ConfigView,
    DeviceRow,
    EnergyDay,
    EnergyLedger,
    EventRow,
    HealthReasonRow,
    HealthView,
    LampCheck,
    LampTest,
    LockRow,
    LockTable,
    MqttLink,
    OutboxInfo,
    RoomDetail,
    RoomRow,
    ScanHit,
    ScanProgress,
    Status,
)

RECENT_EVENTS = 20  # events shown by `floorctl room`
LAMP_TEST_S = 5.0  # operations.md: `lamps test` lights the lamps for 5 s


class LiveFloorView:
    """FloorView over the running gateway (read-only queries are synchronous snapshots)."""

    def __init__(
        self,
        config: FloorConfig,
        store: Store,
        engine: Engine,
        inbox: Inbox,
        *,
        schedulers: Mapping[str, BusScheduler],
        panels: Mapping[str, CallPanelDriver],
        uplink: Uplink,
        outbox: Broadcast,
        started_at: datetime,
        actuators: Actuators | None = None,
        lamp_test_s: float = LAMP_TEST_S,
        health: HealthMonitor | None = None,
        configs: ConfigKeeper | None = None,
    ) -> None:
        """The view of the running floor; changes go in through the engine's inbox (a lamp
        test writes through ``actuators``, the write queues)."""
        self.actuators = actuators
        self.lamp_test_s = lamp_test_s
        self.config = config
        self.engine = engine
        self.inbox = inbox
        self.schedulers = schedulers
        self.panels = panels
        self.uplink = uplink
        self.committed = outbox
        self.started_at = started_at
        self.store = store
        self.monitor = health
        self.configs = configs

    async def lamp_test(self, room: str) -> LampTest:
        """Light the room's lamps for ``lamp_test_s``, then put them as the calls want them;
        each write read back or not (which also raises or resolves ``lamp_fault``)."""
        rio = self.engine.state.layout.device(room, "rio")
        if rio is None or self.actuators is None:
            raise KeyError(room)
        actuators = self.actuators

        def lamp(point: str, on: bool) -> WritePoint:
            return WritePoint(rio, point, on, priority=PollClass.EMERGENCY)

        lit = await asyncio.gather(*(actuators.write_now(lamp(p, True)) for p in ROOM_LAMPS))
        await asyncio.sleep(self.lamp_test_s)
        wanted = {
            w.point: w
            for w in self.engine.state.alarms.outputs_for(rio)
            if isinstance(w, WritePoint)
        }
        back = await asyncio.gather(
            *(actuators.write_now(wanted.get(p, lamp(p, False))) for p in ROOM_LAMPS)
        )
        checks = (LampCheck(p, a, b) for p, a, b in zip(ROOM_LAMPS, lit, back, strict=True))
        return LampTest(room, self.lamp_test_s, tuple(checks))

    async def audit(self, actor: str, action: str, detail: dict[str, object]) -> None:
        """Persist a changing control request in the audit log."""
        room = detail.get("room")
        where = room if isinstance(room, str) else None
        await self.inbox.submit(AuditAction(actor, f"floorctl.{action}", where, detail))

    def status(self) -> Status:
        """The gateway at a glance."""
        now = datetime.now(UTC)
        up = self.uplink.stats()
        buses = [self._bus_health(name, s) for name, s in self.schedulers.items()]
        for name, panel in self.panels.items():
            online = panel.state.name == "ONLINE"
            buses.append(
                BusHealth(name, "callpanel", 0.0, 0.0, () if online else (f"panel {name}",))
            )
        return Status(
            gateway=self.config.gateway.id,
            version=__version__,
            started_at=format_ts(self.started_at),
            uptime_s=round((now - self.started_at).total_seconds(), 1),
            mqtt=MqttLink(
                connected=up.connected,
                since=format_ts(up.since),
                reconnects=up.reconnects,
                outbox_depth=up.outbox_depth,
                oldest_undelivered_ts=up.oldest_undelivered,
                in_flight=up.in_flight,
                shed=up.shed,
            ),
            buses=tuple(buses),
            open_alarms=len(self.engine.state.alarms.open_alarms()),
        )

    def floor_map(self) -> list[RoomRow]:
        """Every room for the map."""
        return self.rooms()

    def rooms(self) -> list[RoomRow]:
        """Every room, in floor-file order."""
        return [
            RoomRow.from_snapshot(self.engine.room_snapshot(r))
            for r in self.engine.state.room_ids()
        ]

    async def room(self, room: str) -> RoomDetail:
        """Everything about one room."""
        snapshot = self.engine.room_snapshot(room)  # KeyError for a room not on the floor
        events = await self.store.read(lambda c: schema.events_page(c, None, room, RECENT_EVENTS))
        return RoomDetail(
            room=room,
            snapshot=snapshot,
            devices=tuple(d for d in self.devices() if d.room == room),
            alarms=tuple(
                AlarmRow.from_snapshot(a.snapshot())
                for a in self.engine.state.alarms.open_alarms()
                if a.room == room
            ),
            events=tuple(EventRow.from_stored(e) for e in events),
        )

    def devices(self) -> list[DeviceRow]:
        """Every Modbus device's health, in floor-file order."""
        stats = {d.name: d for s in self.schedulers.values() for d in s.stats().devices}
        out = []
        for spec in self.config.devices():
            st = stats.get(spec.name)
            out.append(
                DeviceRow(
                    name=spec.name,
                    room=spec.room,
                    role=str(spec.role),
                    bus=spec.bus,
                    unit=spec.unit,
                    profile=spec.profile.name,
                    online=bool(st and st.online),
                    success_rate=st.success_rate if st else None,
                    latency_ms=st.latency_ms_p50 if st else None,
                    last_seen_s=st.last_seen_s if st else None,
                    consecutive_failures=st.consecutive_failures if st else 0,
                    reason=st.reason if st and not st.online else None,
                )
            )
        return out

    def alarms(self) -> list[AlarmRow]:
        """The open alarms, oldest first."""
        return [
            AlarmRow.from_snapshot(a.snapshot()) for a in self.engine.state.alarms.open_alarms()
        ]

    async def ack_alarm(self, alarm_id: str, by: str, actor: str) -> AlarmRow:
        """Acknowledge an alarm from the floor."""
        return await self._alarm_change(AlarmAction("ack", alarm_id, by))

    async def resolve_alarm(self, alarm_id: str, by: str, actor: str) -> AlarmRow:
        """Resolve an alarm from the floor (a bathroom call is refused)."""
        return await self._alarm_change(AlarmAction("resolve", alarm_id, by))

    async def _alarm_change(self, action: AlarmAction) -> AlarmRow:
        outcome = await self.inbox.submit(action)  # committed: the event is on disk
        if isinstance(outcome, Refusal):
            raise ViewRefused(outcome.code, outcome.message)
        if not isinstance(outcome, Alarm):
            raise ViewRefused("internal", f"alarm {action.alarm_id} was not changed")
        return AlarmRow.from_snapshot(outcome.snapshot())

    async def events(self, since_seq: int | None, room: str | None, limit: int) -> list[EventRow]:
        """Stored events in seq order."""
        rows = await self.store.read(lambda c: schema.events_page(c, since_seq, room, limit))
        return [EventRow.from_stored(e) for e in rows]

    def wait_events(self) -> Awaitable[None]:
        """Resolves once new events are appended."""
        return self.committed.next()

    async def outbox(self) -> OutboxInfo:
        """The outbox's depth and what it keeps."""
        depth, oldest_seq, oldest_ts, last_delivered, kept = await self.store.read(_outbox)
        return OutboxInfo(
            depth=depth,
            oldest_undelivered_seq=oldest_seq,
            oldest_undelivered_ts=oldest_ts,
            last_delivered_seq=last_delivered,
            delivered_kept=kept,
            shed=self.uplink.stats().shed,
            refused=self.uplink.stats().refused,
        )

    async def energy(self, room: str | None, days: int) -> EnergyLedger:
        """The stored day rows of the ledger, with today's running totals from the floor."""
        state = self.engine.state
        rooms = state.room_ids() if room is None else [self._room_id(room)]
        now = self.engine.now()
        tz = state.layout.timezone
        today = local_date(now, tz)
        since = today - timedelta(days=days - 1)
        stored = await self.store.read(
            functools.partial(rooms_store.load_ledger, since=since, room=room)
        )
        by_room: dict[str, list[EnergyDay]] = {r: [] for r in rooms}
        for r, doc in stored:
            if r in by_room and doc.get("date") != today.isoformat():
                by_room[r].append(_energy_day(r, doc, today=False))
        for r in rooms:
            live = copy.deepcopy(state.rooms.by_room[r].ledger)  # the view changes nothing
            live.advance(now)
            by_room[r].append(_energy_day(r, live.day.doc(), today=True))
        rows = tuple(row for r in rooms for row in sorted(by_room[r], key=lambda d: d.date))
        return EnergyLedger(self.config.gateway.timezone, days, rows)

    def _room_id(self, room: str) -> RoomId:
        layout = self.engine.state.layout.room(room)
        if layout is None:
            raise KeyError(room)
        return layout.room

    async def scan(self, bus: str, progress: Callable[[ScanProgress], None]) -> list[ScanHit]:
        """Probe unit ids 1-247 on a Modbus bus between its normal work."""
        sched = self.schedulers[bus]
        configured = {d.unit: d.name for d in self.config.devices(bus)}

        def on_progress(done: int, total: int, found: int) -> None:
            progress(ScanProgress(done, total, found))

        hits = await sched.scan(range(1, 248), on_progress, profiles=self.config.profiles.values())
        return [
            ScanHit(
                unit=h.unit,
                tables=tuple(str(t) for t in h.tables),
                profiles=h.profiles,
                configured=configured.get(h.unit),
            )
            for h in hits
        ]

    def health(self) -> HealthView:
        """The floor's health now."""
        if self.monitor is None:
            raise ViewRefused("unavailable", "this daemon does not watch its health")
        h = self.monitor.health()
        reasons = tuple(
            HealthReasonRow(r.code, str(r.level), r.message, r.critical) for r in h.reasons
        )
        return HealthView(str(h.level), reasons)

    def config_show(self) -> ConfigView:
        """The floor file running and remote configuration's state."""
        keeper, record = self.configs, self.engine.state.config
        if keeper is None:
            raise ViewRefused("unavailable", "this daemon does not keep its configuration")
        pending = record.pending
        until = pending.deadline if pending is not None else None
        return ConfigView(
            sha256=keeper.running.sha256,
            source="local" if keeper.running.local else "remote",
            path=str(keeper.local.path),
            summary=self.config.summary(),
            last_good=record.last_good or keeper.local_sha,
            pending_sha256=None if pending is None else pending.sha256,
            pending_until=None if until is None else format_ts(until),
            text=keeper.running.text,
        )

    async def config_history(self, limit: int) -> ConfigHistory:
        """The newest ``limit`` steps of remote configuration, oldest first."""
        rows = await self.store.read(lambda c: config_store.history(c, limit))
        return ConfigHistory(
            tuple(ConfigHistoryRow(r.ts, r.action, r.sha256, r.reason, r.by) for r in rows)
        )

    def locks(self) -> LockTable:
        """Every lock's slots by kind, staff keys due, pending writes, battery; lockdown."""
        state = self.engine.state
        now = datetime.now(UTC)
        authz = state.authz
        rules = authz.staff.rules
        split = SLOT_COUNT - rules.staff_slots
        rows = []
        for room in state.room_ids():
            device = state.layout.device(room, "lock")
            if device is None:
                continue
            slots = [state.points.last_known(device, "slot", i) for i in range(SLOT_COUNT)]
            desired = authz.desired(room, now)
            plan = plan_lock(desired, [v if isinstance(v, int) else None for v in slots])
            held = [v for v in slots if isinstance(v, int) and v]
            battery = lock_kind.battery(state, room, now)
            due = [k.key_id for k in authz.staff.active() if k.token in desired.staff]
            rows.append(
                LockRow(
                    room=room,
                    online=state.points.online(device),
                    guest=sum(1 for i, v in enumerate(slots) if i < split and v),
                    staff=sum(1 for i, v in enumerate(slots) if i >= split and v),
                    free=SLOT_COUNT - len(held),
                    pending=len(plan.writes),
                    staff_keys=tuple(due),
                    overflow=authz.staff_overflow(room, now),
                    battery=battery.percent,
                    battery_level=battery.level,
                    battery_stale=battery.stale,
                )
            )
        lockdown = authz.staff.lockdown
        on = lockdown is not None and lockdown.on
        return LockTable(
            locks=tuple(rows),
            staff_slots=rules.staff_slots,
            lockdown=on,
            lockdown_by=lockdown.by if lockdown is not None and on else None,
            lockdown_since=format_ts(lockdown.since) if lockdown is not None and on else None,
        )

    async def audit_log(self, since: str | None, limit: int) -> AuditLog:
        """The last ``limit`` audit rows, at or after ``since`` if given."""
        since_ts = None if since is None else format_ts(parse_ts(since))
        records = await self.store.read(lambda c: schema.audit_rows(c, since_ts, limit))
        return AuditLog(
            tuple(
                AuditRow(r.seq, r.ts, r.actor, r.action, r.room, dict(r.detail), r.hash)
                for r in records
            )
        )

    async def audit_verify(self) -> AuditCheck:
        """The audit log's whole hash chain, checked (in the store's reader thread)."""
        check = await self.store.read(lambda c: check_chain(*schema.audit_chain(c)))
        return AuditCheck(check.ok, check.rows, check.unchained, check.first_bad, check.problem)

    def _bus_health(self, name: str, sched: BusScheduler) -> BusHealth:
        st = sched.stats()
        errors = sum(st.errors.values())
        rate = errors / st.transactions if st.transactions else 0.0
        offline = tuple(d.name for d in st.devices if d.state == "offline")
        return BusHealth(name, st.kind, round(st.tx_per_s, 1), round(rate, 4), offline)


def _energy_day(room: str, doc: Mapping[str, object], *, today: bool) -> EnergyDay:
    """A ledger row as floorctl shows it."""
    seconds = doc.get("seconds")
    kwh = doc.get("energy_kwh")
    return EnergyDay(
        room=room,
        date=str(doc.get("date")),
        seconds={str(k): v for k, v in seconds.items()} if isinstance(seconds, dict) else {},
        hvac_run_s=_int(doc.get("hvac_run_s")),
        lights_on_absent_s=_int(doc.get("lights_on_absent_s")),
        setback_degree_hours=float(_number(doc.get("setback_degree_hours"))),
        energy_kwh=None if kwh is None else float(_number(kwh)),
        today=today,
    )


def _number(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _int(value: object) -> int:
    return round(_number(value))


def _outbox(conn: sqlite3.Connection) -> tuple[int, int | None, str | None, int | None, int]:
    depth, oldest = conn.execute(
        "SELECT count(*), min(seq) FROM events WHERE delivered_at IS NULL"
    ).fetchone()
    oldest_ts = None
    if oldest is not None:
        oldest_ts = conn.execute("SELECT ts FROM events WHERE seq = ?", (oldest,)).fetchone()[0]
    last, kept = conn.execute(
        "SELECT max(seq), count(*) FROM events WHERE delivered_at IS NOT NULL"
    ).fetchone()
    return int(depth), oldest, oldest_ts, last, int(kept)
