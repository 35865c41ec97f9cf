"""A FloorView over the demo floor (config/floors/demo.toml) in a realistic state.

Rooms 1201-1206 and buses rs485-a, lan, panel as the demo floor has them: 1201 occupied
with DND on, 1202 vacant with MUR, 1203 occupied with an active bathroom call, 1204
vacant with its lock offline, 1205 occupied with an acknowledged bedside call (call
panel) and its door open, 1206 vacant. It follows mqtt.md's rules where the control
socket can see them (a bathroom call cannot be resolved remotely; alarm.* events carry
the alarm snapshot) so the assertions written against it hold for the real engine.

``serving()`` runs a ControlServer over it; ``assert_json_shape()`` checks the stable keys
of every ``floorctl ... --json`` document (reusable against the real daemon).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.adapters.control import ControlServer, Limits
from gateway.model.errors import ViewRefused
from gateway.model.views import (
    AlarmRow,
    BusHealth,
    DeviceRow,
    EnergyDay,
    EnergyLedger,
    EventRow,
    LampCheck,
    LampTest,
    MqttLink,
    OutboxInfo,
    RoomDetail,
    RoomRow,
    ScanHit,
    ScanProgress,
    Status,
)
from tests.waiting import until

T0 = "2026-11-23T06:00:00.000Z"
BUSES = {"rs485-a": "modbus-rtu", "lan": "modbus-tcp", "panel": "callpanel"}
# room -> [(role, bus, unit)] as in demo.toml
LAYOUT: dict[str, list[tuple[str, str, int]]] = {
    "1201": [("tstat", "rs485-a", 1), ("lock", "rs485-a", 2), ("rio", "rs485-a", 3)],
    "1202": [("tstat", "rs485-a", 4), ("lock", "rs485-a", 5), ("rio", "rs485-a", 6)],
    "1203": [("tstat", "lan", 1), ("lock", "lan", 2), ("rio", "lan", 3)],
    "1204": [("tstat", "lan", 4), ("lock", "lan", 5), ("rio", "lan", 6)],
    "1205": [("tstat", "rs485-a", 7), ("lock", "rs485-a", 8)],
    "1206": [("tstat", "rs485-a", 9), ("lock", "rs485-a", 10)],
}
OFFLINE = {"1204/lock"}
# as long as the engine's (uuid4 hex), so that tables are tried at their real width
CALL_ALARM = "a1203bath-5e0c7f3a9d2b4c1e8f6012"  # active bathroom call in 1203
BED_ALARM = "a1205bed-0b9e4d7c2a5f4e3d91c7a34"  # acknowledged bedside call in 1205 (call panel)


def own_group() -> str:
    """The name of the current process's primary group."""
    return grp.getgrgid(os.getegid()).gr_name


@dataclass
class Served:
    """A running control server over a FakeFloor, and what it audited."""

    server: ControlServer
    floor: FakeFloor
    path: Path
    task: asyncio.Task[None]  # serve(); a test may cancel it to stop the "daemon"
    audits: list[tuple[str, str, dict[str, object]]] = field(default_factory=list)


@contextlib.asynccontextmanager
async def serving(
    path: Path,
    floor: FakeFloor | None = None,
    *,
    control_group: str | None = None,
    admin_group: str | None = None,
    limits: Limits | None = None,
    audit_fails: bool = False,
) -> AsyncIterator[Served]:
    """Run a ControlServer on ``path`` (groups default to the caller's own) until exit."""
    audits: list[tuple[str, str, dict[str, object]]] = []

    async def audit(actor: str, action: str, detail: dict[str, object]) -> None:
        audits.append((actor, action, detail))
        if audit_fails:
            raise OSError("disk full")

    floor = floor or FakeFloor()
    server = ControlServer(
        floor,
        path,
        audit=audit,
        control_group=control_group or own_group(),
        admin_group=admin_group or own_group(),
        limits=limits,
    )
    task = asyncio.create_task(server.serve(), name="control")
    try:
        await until(lambda: server.listening.is_set() or task.done())
        if task.done():
            task.result()  # raises why it did not start
        yield Served(server, floor, path, task, audits)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class FakeFloor:
    """FloorView over an in-memory demo floor; ``append`` adds events (and wakes followers)."""

    def __init__(self) -> None:
        self._new_events: asyncio.Future[None] | None = None
        self.scan_gate: asyncio.Event | None = None  # set by a test to hold a scan midway
        self.scans_cancelled = 0
        self.reset()

    def reset(self) -> None:
        """Back to the initial state (the event log restarts too)."""
        self.snapshots: dict[str, dict[str, Any]] = {room: _snapshot(room) for room in LAYOUT}
        self.open_alarms: dict[str, AlarmRow] = {
            CALL_ALARM: AlarmRow(CALL_ALARM, "1203", "call", "bath", "active", 1, T0),
            BED_ALARM: AlarmRow(
                BED_ALARM,
                "1205",
                "call",
                "bed",
                "acknowledged",
                0,
                T0,
                "2026-11-23T06:00:40.000Z",
                "ana",
            ),
        }
        self.events_log: list[EventRow] = []
        self.actors: list[tuple[str, str, str]] = []  # (action, alarm_id, actor)
        for type_, room, data in (
            ("gateway.started", None, {"version": __version__}),
            ("room.checked_in", "1201", {"stay_id": "R-88231"}),
            ("room.dnd", "1201", {"on": True}),
            ("device.offline", "1204", {"device": "1204/lock", "reason": "timeout"}),
            ("alarm.raised", "1203", self.open_alarms[CALL_ALARM].to_json()),
            (
                "alarm.escalated",
                "1203",
                {**self.open_alarms[CALL_ALARM].to_json(), "notify": "duty-manager"},
            ),
            ("door.opened", "1205", {}),
        ):
            self.append(type_, room, data)

    # -- FloorView ------------------------------------------------------------------------

    def status(self) -> Status:
        """The gateway at a glance."""
        buses = tuple(
            BusHealth(
                name,
                kind,
                tx_per_s=38.5 if kind == "modbus-rtu" else 120.0 if kind == "modbus-tcp" else 0.5,
                error_rate=0.25 if name == "lan" else 0.0,
                offline=tuple(sorted(d for d in OFFLINE if _bus_of(d) == name)),
            )
            for name, kind in BUSES.items()
        )
        mqtt = MqttLink(True, "2026-11-23T06:00:01.000Z", 2, 3, "2026-11-23T06:03:22.123Z", 1, 0)
        return Status("demo-12", __version__, T0, 11532.5, mqtt, buses, len(self.open_alarms))

    def floor_map(self) -> list[RoomRow]:
        """Every room, for the map."""
        return [RoomRow.from_snapshot(s) for s in self.snapshots.values()]

    def rooms(self) -> list[RoomRow]:
        """Every room, for the table."""
        return self.floor_map()

    async def room(self, room: str) -> RoomDetail:
        """Everything about one room; KeyError if unknown."""
        snapshot = self.snapshots[room]
        devices = tuple(d for d in self.devices() if d.room == room)
        alarms = tuple(a for a in self.open_alarms.values() if a.room == room)
        events = tuple(e for e in self.events_log if e.room == room)[-10:]
        return RoomDetail(room, dict(snapshot), devices, alarms, events)

    def devices(self) -> list[DeviceRow]:
        """Every device's health."""
        rows = []
        for room, devices in LAYOUT.items():
            for role, bus, unit in devices:
                name = f"{room}/{role}"
                offline = name in OFFLINE
                rows.append(
                    DeviceRow(
                        name,
                        room,
                        role,
                        bus,
                        unit,
                        f"fg-{role}-1",
                        online=not offline,
                        success_rate=0.4 if offline else 0.998,
                        latency_ms=None if offline else 11.0 + unit,
                        last_seen_s=312.0 if offline else 0.8,
                        consecutive_failures=14 if offline else 0,
                        reason="timeout" if offline else None,
                    )
                )
        rows.append(
            DeviceRow(
                "floorpanel",
                None,
                "floorpanel",
                "rs485-a",
                40,
                "fg-floorpanel-1",
                True,
                1.0,
                9.0,
                0.5,
            )
        )
        return rows

    def alarms(self) -> list[AlarmRow]:
        """Open alarms, oldest first."""
        return list(self.open_alarms.values())

    async def ack_alarm(self, alarm_id: str, by: str, actor: str) -> AlarmRow:
        """Acknowledge: stops escalation; the call stays on."""
        alarm = self._alarm(alarm_id)
        if alarm.state != "active":
            raise ViewRefused("conflict", f"alarm {alarm_id} is already {alarm.state}")
        self.actors.append(("ack", alarm_id, actor))
        alarm = replace(alarm, state="acknowledged", acknowledged_at=_now(), acknowledged_by=by)
        self.open_alarms[alarm_id] = alarm
        self._set_call(alarm.room, "acknowledged")
        self.append("alarm.acknowledged", alarm.room, alarm.to_json())
        return alarm

    async def resolve_alarm(self, alarm_id: str, by: str, actor: str) -> AlarmRow:
        """Resolve; a bathroom call must be reset at the room (mqtt.md)."""
        alarm = self._alarm(alarm_id)
        if alarm.kind == "call" and alarm.point == "bath":
            raise ViewRefused("conflict", "a bathroom call must be reset at the room")
        self.actors.append(("resolve", alarm_id, actor))
        alarm = replace(alarm, state="resolved", resolved_at=_now(), resolved_by=by)
        del self.open_alarms[alarm_id]
        self._set_call(alarm.room, "idle")
        self.append("alarm.resolved", alarm.room, alarm.to_json())
        return alarm

    async def events(self, since_seq: int | None, room: str | None, limit: int) -> list[EventRow]:
        """Events in seq order: after ``since_seq``, else the last ``limit``."""
        rows = [e for e in self.events_log if room is None or e.room == room]
        if since_seq is None:
            return rows[-limit:]
        return [e for e in rows if e.seq > since_seq][:limit]

    def wait_events(self) -> asyncio.Future[None]:
        """One future shared by every follower, resolved by the next append."""
        if self._new_events is None or self._new_events.done():
            self._new_events = asyncio.get_running_loop().create_future()
        return self._new_events

    async def outbox(self) -> OutboxInfo:
        """Three events waiting since the broker blinked."""
        last = self.events_log[-1].seq
        return OutboxInfo(3, last - 2, "2026-11-23T06:03:22.123Z", last - 3, last - 3, 0, 2)

    async def lamp_test(self, room: str) -> LampTest:
        """Every room I/O's lamps read back, but 1202's reassure lamp, which is stuck."""
        if room not in LAYOUT or not any(role == "rio" for role, _, _ in LAYOUT[room]):
            raise KeyError(room)
        stuck = room == "1202"
        return LampTest(
            room,
            5.0,
            (LampCheck("dome_lamp", True, True), LampCheck("reassure_lamp", not stuck, True)),
        )

    async def energy(self, room: str | None, days: int) -> EnergyLedger:
        """Yesterday and today of every room (or one): 1203 mostly away, the others unsold."""
        rooms = list(LAYOUT) if room is None else [room]
        if room is not None and room not in LAYOUT:
            raise KeyError(room)
        rows = []
        for r in rooms:
            seconds = {"comfort": 30000, "away": 56400} if r == "1203" else {"unsold": 86400}
            for date, today in (("2026-11-22", False), ("2026-11-23", True))[2 - min(days, 2) :]:
                kwh = 3.25 if r == "1203" else None
                rows.append(EnergyDay(r, date, seconds, 7200, 600, 31.3, kwh, today))
        return EnergyLedger("Asia/Shanghai", days, tuple(rows))

    async def scan(self, bus: str, progress: Callable[[ScanProgress], None]) -> list[ScanHit]:
        """Probe 1-247: the configured units answer (and the floor panel at 40 on rs485-a)."""
        if bus not in BUSES or BUSES[bus] == "callpanel":
            raise KeyError(bus)
        configured = {
            unit: f"{room}/{role}"
            for room, devs in LAYOUT.items()
            for role, b, unit in devs
            if b == bus
        }
        if bus == "rs485-a":
            configured[40] = "floorpanel"
        hits: list[ScanHit] = []
        for unit in range(1, 248):
            if unit == 124 and self.scan_gate is not None:
                try:
                    await self.scan_gate.wait()
                except asyncio.CancelledError:
                    self.scans_cancelled += 1
                    raise
            name = configured.get(unit)
            if name is not None and name not in OFFLINE:
                role = name.rsplit("/", 1)[-1]
                tables = ("coils", "holding") if role != "tstat" else ("holding", "input")
                hits.append(ScanHit(unit, tables, (f"fg-{role}-1",), name))
            progress(ScanProgress(unit, 247, len(hits)))
            await asyncio.sleep(0)
        return hits

    # -- test helpers ---------------------------------------------------------------------

    def append(self, type_: str, room: str | None, data: dict[str, Any]) -> EventRow:
        """Append an event and wake every follower."""
        seq = self.events_log[-1].seq + 1 if self.events_log else 1041
        row = EventRow(seq, f"ev{seq:08x}", _now(seq), type_, room, data)
        self.events_log.append(row)
        if self._new_events is not None and not self._new_events.done():
            self._new_events.set_result(None)
        return row

    def _alarm(self, alarm_id: str) -> AlarmRow:
        try:
            return self.open_alarms[alarm_id]
        except KeyError:
            raise ViewRefused("not_found", f"no open alarm {alarm_id!r}") from None

    def _set_call(self, room: str | None, call: str) -> None:
        if room is not None:
            self.snapshots[room]["call"] = call


# -- the JSON shapes of `floorctl ... --json` on the demo floor ----------------------------

ROOM_KEYS = {
    "room", "occupancy", "stay_id", "door", "dnd", "mur", "call", "offline", "keycard",
    "window_open", "temp_c", "setpoint_c", "stale",
}  # fmt: skip
DEVICE_KEYS = {
    "name", "room", "role", "bus", "unit", "profile", "online", "success_rate", "latency_ms",
    "last_seen_s", "consecutive_failures", "reason",
}  # fmt: skip
ALARM_KEYS = {
    "alarm_id", "room", "kind", "point", "state", "level", "raised_at", "acknowledged_at",
    "acknowledged_by", "resolved_at", "resolved_by",
}  # fmt: skip
EVENT_KEYS = {"seq", "id", "ts", "type", "room", "data"}


def _event_shape(event: dict[str, Any]) -> bool:
    """An event's keys: ``room`` only for a room's event (absent for the floor's, as on MQTT)."""
    if "room" in event:
        return set(event) == EVENT_KEYS and isinstance(event["room"], str)
    return set(event) == EVENT_KEYS - {"room"}


def _status_shape(doc: dict[str, Any]) -> None:
    assert set(doc) == {
        "gateway", "version", "started_at", "uptime_s", "mqtt", "buses", "open_alarms",
    }  # fmt: skip
    assert set(doc["mqtt"]) == {
        "connected", "since", "reconnects", "outbox_depth", "oldest_undelivered_ts",
        "in_flight", "shed",
    }  # fmt: skip
    assert {tuple(sorted(b)) for b in doc["buses"]} == {
        ("error_rate", "kind", "name", "offline", "tx_per_s")
    }


def _rooms_shape(doc: dict[str, Any]) -> None:
    assert set(doc) == {"rooms"}
    assert [r["room"] for r in doc["rooms"]] == ["1201", "1202", "1203", "1204", "1205", "1206"]
    assert all(set(r) == ROOM_KEYS for r in doc["rooms"])


def _room_shape(doc: dict[str, Any]) -> None:
    assert set(doc) == {"room", "snapshot", "devices", "alarms", "events"}
    assert doc["snapshot"]["schema"] == 1
    assert all(set(d) == DEVICE_KEYS for d in doc["devices"])
    assert all(set(a) == ALARM_KEYS for a in doc["alarms"])
    assert all(_event_shape(e) for e in doc["events"])


def _devices_shape(doc: dict[str, Any]) -> None:
    assert set(doc) == {"devices"}
    assert all(set(d) == DEVICE_KEYS for d in doc["devices"])


def _alarms_shape(doc: dict[str, Any]) -> None:
    assert set(doc) == {"alarms"}
    assert all(set(a) == ALARM_KEYS for a in doc["alarms"])


def _update_shape(doc: dict[str, Any]) -> None:
    assert set(doc) == {"action", "alarm"}
    assert set(doc["alarm"]) == ALARM_KEYS


def _events_shape(doc: dict[str, Any]) -> None:
    assert set(doc) == {"events"}
    assert doc["events"]
    assert all(_event_shape(e) for e in doc["events"])


def _outbox_shape(doc: dict[str, Any]) -> None:
    assert set(doc) == {
        "depth", "oldest_undelivered_seq", "oldest_undelivered_ts", "last_delivered_seq",
        "delivered_kept", "shed", "refused",
    }  # fmt: skip


def _scan_shape(doc: dict[str, Any]) -> None:
    assert set(doc) == {"bus", "probed", "hits"}
    assert all(set(h) == {"unit", "tables", "profiles", "configured"} for h in doc["hits"])
    if doc["bus"] == "rs485-a":  # every device the demo floor puts there answers
        assert [h["unit"] for h in doc["hits"]] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 40]


def _energy_shape(doc: dict[str, Any]) -> None:
    assert set(doc) == {"timezone", "days", "rows"}
    row = doc["rows"][0]
    assert set(row) == {
        "room", "date", "seconds", "hvac_run_s", "lights_on_absent_s", "setback_degree_hours",
        "energy_kwh", "today",
    }  # fmt: skip


def _lamps_shape(doc: dict[str, Any]) -> None:
    assert set(doc) == {"room", "held_s", "lamps"}
    assert [set(lamp) for lamp in doc["lamps"]] == [{"point", "lit", "restored"}] * 2


_SHAPES: dict[str, Callable[[dict[str, Any]], None]] = {
    "status": _status_shape,
    "floor": _rooms_shape,
    "rooms": _rooms_shape,
    "room": _room_shape,
    "devices": _devices_shape,
    "alarms": _alarms_shape,
    "alarms ack": _update_shape,
    "alarms resolve": _update_shape,
    "events": _events_shape,
    "outbox": _outbox_shape,
    "scan": _scan_shape,
    "energy": _energy_shape,
    "lamps": _lamps_shape,
}


def assert_json_shape(subcommand: str, doc: dict[str, Any]) -> None:
    """Assert the stable keys of ``floorctl SUBCOMMAND --json`` ("alarms ack"…), demo floor."""
    _SHAPES[subcommand](doc)


def _snapshot(room: str) -> dict[str, Any]:
    occupied = room in ("1201", "1203", "1205")
    roles = [role for role, _, _ in LAYOUT[room]]
    lock_offline = f"{room}/lock" in OFFLINE
    return {
        "schema": 1,
        "room": room,
        "ts": T0,
        "occupancy": "occupied" if occupied else "vacant",
        "stay_id": {"1201": "R-88231", "1203": "R-88240", "1205": "R-88251"}.get(room),
        "door": None if lock_offline else ("open" if room == "1205" else "closed"),
        "deadbolt": None if lock_offline else room == "1201",
        "lock_battery": None if lock_offline else 87,
        "climate": {
            "temp_c": 23.4,
            "setpoint_c": 22.5 if occupied else 26.0,
            "mode": "cool",
            "fan": "auto",
            "power": True,
        },
        "lights": {"entry": False, "main": occupied, "bedside": False, "bath": room == "1203"},
        "keycard": occupied,
        "dnd": room == "1201",
        "mur": room == "1202",
        "window_open": False,
        "call": {"1203": "active", "1205": "acknowledged"}.get(room, "idle"),
        "devices": {role: "offline" if f"{room}/{role}" in OFFLINE else "online" for role in roles},
        "observed": dict.fromkeys(roles, "2026-11-23T05:59:20.000Z"),
        "stale": ["climate.temp_c"] if room == "1202" else [],
    }


def _bus_of(device: str) -> str:
    room, role = device.split("/")
    return next(bus for r, bus, _ in LAYOUT[room] if r == role)


def _now(seq: int = 0) -> str:
    return f"2026-11-23T06:{10 + seq % 50:02d}:00.000Z"
