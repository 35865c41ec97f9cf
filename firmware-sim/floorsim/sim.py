"""FloorSim: the whole simulated floor, built from a floor file, and its in-process API.

    async with FloorSim(config, time_scale=100) as sim:
        sim.press("1201", "bath", ms=100)         # -> {"ts": ..., "mono_ns": ..., ...}
        sim.present_token("1201", 0x1234)         # -> {"result": "granted", ...}
        sim.set_fault("rs485-a:3", "corrupt", 2)  # next 2 answers of unit 3: bad CRC

Targets name a device as ``ROOM/ROLE`` (``1201/lock``), ``floorpanel``, or ``BUS:UNIT``
(``rs485-a:3``); a fault target may also be a whole bus (``rs485-a``) or a call panel's
bus (``panel``). Every method returns JSON-ready data; a physical change returns (and
journals) its timestamp as ``ts`` (``time.time()``, µs) and ``mono_ns``
(``time.monotonic_ns()``). Impossible requests raise ``ValueError`` with the reason.
The same operations are served to ``floorsim ctl`` by control.ControlServer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog

from drivers.lines import CallPanelBus, RtuBus, TcpBus
from drivers.profile import Table
from floorsim.callpanel import CallPanel
from floorsim.devices import (
    Lock,
    RoomIO,
    SimDevice,
    Thermostat,
    connect_room,
    make_device,
    v1_profile,
)
from floorsim.faults import MODBUS_FAULTS, PANEL_FAULTS, FaultBook
from floorsim.journal import Journal, SimClock
from floorsim.modbus import ModbusBus, TcpServer
from floorsim.regmap import ModbusError
from floorsim.thermal import OUTSIDE_C
from floorsim.wire import TURNAROUND_S, RtuLine
from gateway.config.floor import FloorConfig

__all__ = ["GUEST_STATES", "FloorSim"]

log = structlog.get_logger("floorsim")

GUEST_STATES = ("in", "out", "sleep")
GUEST_DOOR_S = 3.0  # device seconds a guest holds the door open, coming or going


class FloorSim:
    """Every device, bus and call panel a floor file names, simulated."""

    def __init__(
        self,
        config: FloorConfig,
        *,
        time_scale: float = 1.0,
        tcp_ports: Mapping[str, int] | None = None,
        turnaround_s: float = TURNAROUND_S,
        check_line_speed: bool = True,
        v1_rio_rooms: Iterable[str] = (),
        outside_c: float = OUTSIDE_C,
    ) -> None:
        self.config = config
        self.v1_rio_rooms = frozenset(v1_rio_rooms)
        self.outside_c = float(outside_c)
        self._guest_timers: dict[str, asyncio.TimerHandle] = {}
        self.clock = SimClock(time_scale)
        self.journal = Journal()
        self.faults = FaultBook()
        self.devices: dict[str, SimDevice] = {}
        self.modbus: dict[str, ModbusBus] = {}
        self.lines: dict[str, RtuLine] = {}
        self.tcp: dict[str, TcpServer] = {}
        self.panels: dict[str, CallPanel] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._build(dict(tcp_ports or {}), turnaround_s, check_line_speed)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Open every pty link and TCP listener and start serving (all or nothing)."""
        try:
            for line in self.lines.values():
                line.open()
            for panel in self.panels.values():
                panel.open()
            for server in self.tcp.values():
                await server.start()
        except BaseException:
            await self.stop()
            raise
        for name, line in self.lines.items():
            self._spawn(line.run(), f"rtu[{name}]")
        for name, panel in self.panels.items():
            self._spawn(panel.run(), f"panel[{name}]")
        self._started = True
        log.info("floor_serving", floor=self.config.gateway.id, devices=len(self.devices))

    async def stop(self) -> None:
        """Stop every task, close every link and listener; leaves nothing behind."""
        for timer in self._guest_timers.values():
            timer.cancel()
        self._guest_timers.clear()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for server in self.tcp.values():
            await server.stop()
        for line in self.lines.values():
            line.close()
        for panel in self.panels.values():
            panel.close()
        if self._started:
            log.info("floor_stopped", floor=self.config.gateway.id)
        self._started = False

    async def __aenter__(self) -> FloorSim:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- where things are ----------------------------------------------------------------------

    def device(self, target: str) -> SimDevice:
        """The device named ``ROOM/ROLE``, ``floorpanel`` or ``BUS:UNIT`` (ValueError if none)."""
        if target in self.devices:
            return self.devices[target]
        bus, unit = _split_unit(target)
        if bus in self.modbus and unit is not None and unit in self.modbus[bus].devices:
            return self.modbus[bus].devices[unit]
        raise ValueError(f"no device {target!r} (use ROOM/ROLE, floorpanel or BUS:UNIT)")

    def tcp_address(self, bus: str) -> tuple[str, int]:
        """The (host, port) a Modbus TCP bus listens on."""
        return self.tcp[bus].address

    def port(self, bus: str) -> Path:
        """The symlinked port path of an RTU or call-panel bus."""
        if bus in self.lines:
            return self.lines[bus].link.path
        return self.panels[bus].link.path

    # -- physical events -----------------------------------------------------------------------

    def present_token(self, room: str, token: int) -> dict[str, Any]:
        """Present a credential at the room's lock: granted or denied, as the lock decides."""
        return self._lock(room).present(_token(token))

    def press(self, room: str, point: str = "bath", ms: int = 200) -> dict[str, Any]:
        """Press a call point (bath/bed) for ``ms``: rio counter +1, or the panel's CALL."""
        rio = self._rio_if_any(room)
        if rio is not None:
            return {"room": room, "point": point, **rio.press(point, ms).as_dict()}
        panel = self._panel_of(room)
        return {"room": room, "point": point, **panel.call(room, point)}

    def staff(self, room: str, ms: int = 200, point: str | None = None) -> dict[str, Any]:
        """Turn the staff-presence key: rio staff_count +1, or the panel's CANCEL(s)."""
        rio = self._rio_if_any(room)
        if rio is not None:
            return {"room": room, **rio.staff(ms).as_dict()}
        return {"room": room, **self._panel_of(room).cancel(room, point)}

    def door(self, room: str, is_open: bool) -> dict[str, Any]:
        """Open or close the door leaf (door_open)."""
        lock = self._lock(room)
        released = lock.released
        return {"released": released, **lock.set_input("door_open", is_open).as_dict()}

    def deadbolt(self, room: str, on: bool) -> dict[str, Any]:
        """Throw or withdraw the guest's privacy deadbolt."""
        return self._lock(room).set_input("deadbolt", on).as_dict()

    def tamper(self, room: str, on: bool) -> dict[str, Any]:
        """Open or close the lock's tamper switch."""
        return self._lock(room).set_input("tamper", on).as_dict()

    def keycard(self, room: str, on: bool) -> dict[str, Any]:
        """Put a key card in the energy-saving holder, or take it out."""
        return self._rio(room).set_input("keycard", on).as_dict()

    def dnd(self, room: str, on: bool) -> dict[str, Any]:
        """Switch "do not disturb" on or off."""
        return self._rio(room).set_input("dnd", on).as_dict()

    def mur(self, room: str, on: bool) -> dict[str, Any]:
        """Switch "make up room" on or off."""
        return self._rio(room).set_input("mur", on).as_dict()

    def window(self, room: str, is_open: bool) -> dict[str, Any]:
        """Open or close the window (contact)."""
        return self._rio(room).set_input("window_open", is_open).as_dict()

    def motion(self, room: str) -> dict[str, Any]:
        """One detection of the room's motion sensor (motion 1 for 30 s, motion_count + 1)."""
        return self._rio(room).motion().as_dict()

    def guest(self, room: str, state: str) -> dict[str, Any]:
        """A scripted guest: ``in`` (enters: door, key card, moving about), ``out`` (leaves:
        key card out, door, nobody moving), ``sleep`` (inside, still: no detections)."""
        if state not in GUEST_STATES:
            raise ValueError(f"guest state {state!r} is not one of {', '.join(GUEST_STATES)}")
        rio = self._rio(room)
        lock = self._room_device(room, "lock", required=False)
        stamp = self.journal.record("guest", f"{room}/guest", room=room, state=state).stamp
        if state == "sleep":
            rio.occupant(False)
            return {"state": state, **stamp.as_dict()}
        entering = state == "in"
        if not entering and rio.regs.has("keycard"):
            rio.set_input("keycard", False)
        if rio.has_motion:
            rio.motion()  # seen at the door, coming or going
        rio.occupant(entering)
        if lock is not None and lock.regs.has("door_open"):
            lock.set_input("door_open", True)
            self._later(room, GUEST_DOOR_S, lambda: self._guest_door_closed(room, entering))
        elif entering and rio.regs.has("keycard"):
            rio.set_input("keycard", True)
        return {"state": state, **stamp.as_dict()}

    def set_outside(self, celsius: float) -> dict[str, Any]:
        """The outside temperature every room drifts toward (°C)."""
        self.outside_c = float(celsius)
        for dev in self.devices.values():
            if isinstance(dev, Thermostat):
                dev.set_outside(self.outside_c)
        ev = self.journal.record("outside", "floor", value=self.outside_c)
        return {"outside_c": self.outside_c, **ev.stamp.as_dict()}

    def set_room_temp(self, room: str, celsius: float) -> dict[str, Any]:
        """Force the room's physical temperature; it then drifts toward the setpoint."""
        return self._tstat(room).set_room_temp(celsius).as_dict()

    def keypad(self, room: str, celsius: float) -> dict[str, Any]:
        """A guest sets the thermostat at its keypad (clamped to the band, or locked out)."""
        return self._tstat(room).keypad(celsius)

    def sensor_fault(self, room: str, on: bool) -> dict[str, Any]:
        """Break (or repair) the thermostat's temperature sensor."""
        return self._tstat(room).set_sensor_fault(on).as_dict()

    def set_input(self, target: str, point: str, value: Any, index: int = 0) -> dict[str, Any]:
        """Set any point of a device as the physical world would (battery, humidity...)."""
        return self.device(target).set_input(point, value, index).as_dict()

    def power_cycle(self, target: str) -> dict[str, Any]:
        """Power a device off and on: coils drop; slots, logs and counters survive."""
        return self.device(target).power_cycle().as_dict()

    # -- faults ----------------------------------------------------------------------------------

    def set_fault(self, target: str, kind: str, value: Any = None) -> dict[str, Any]:
        """Switch a fault on: silent | corrupt N | exception CODE | slow MS | stuck COIL |
        refuse ADDRESS | garbage MS."""
        where = self._fault_target(target)
        if isinstance(where, str):
            if kind not in PANEL_FAULTS:
                raise ValueError(f"a call panel takes faults {', '.join(PANEL_FAULTS)}")
            self.faults.set_panel(where, kind, value)
        else:
            if kind not in MODBUS_FAULTS:
                raise ValueError(f"a Modbus target takes faults {', '.join(MODBUS_FAULTS)}")
            self.faults.set_modbus(*where, kind, value)
        ev = self.journal.record("fault_set", target, fault=kind, value=value)
        return {"faults": self.faults.snapshot(), **ev.stamp.as_dict()}

    def clear_fault(self, target: str, kind: str | None = None) -> dict[str, Any]:
        """Switch one fault (or all faults) of a target off."""
        where = self._fault_target(target)
        if isinstance(where, str):
            self.faults.clear_panel(where, kind)
        else:
            self.faults.clear_modbus(*where, kind)
        ev = self.journal.record("fault_cleared", target, fault=kind)
        return {"faults": self.faults.snapshot(), **ev.stamp.as_dict()}

    def line_fault(self, room: str, point: str, code: str) -> dict[str, Any]:
        """A call-point line fault (CUT/SHORT) on a panel room: the panel sends FAULT."""
        return self._panel_of(room).line_fault(room, point, code)

    def clear_line_fault(self, room: str, point: str) -> dict[str, Any]:
        """Repair a call-point line."""
        return self._panel_of(room).clear_line_fault(room, point)

    def panel_send(
        self, body: str, *, cs: str | None = None, repeat: bool = False, bus: str | None = None
    ) -> dict[str, Any]:
        """Send an arbitrary panel frame (``cs`` forces a checksum; ``repeat`` adds seq+repeats)."""
        return self._panel(bus).send(body, cs=cs, repeat=repeat)

    def panel_raw(self, data: bytes | str, bus: str | None = None) -> dict[str, Any]:
        """Put raw bytes (or hex digits, from the ctl) on a panel line."""
        raw = bytes.fromhex(data) if isinstance(data, str) else data
        return self._panel(bus).send_raw(raw)

    def panel_garbage(self, count: int = 1, bus: str | None = None) -> dict[str, Any]:
        """Send ``count`` garbage lines on a panel line now."""
        return self._panel(bus).send_garbage(count)

    # -- read back -------------------------------------------------------------------------------

    def read(self, target: str) -> dict[str, Any]:
        """Every point of a device, decoded by its profile."""
        return self.device(target).snapshot()

    def get(self, target: str, point: str, index: int = 0) -> Any:
        """One point of a device, decoded."""
        return self.device(target).get(point, index)

    def slots(self, room: str) -> list[dict[str, Any]]:
        """The lock's credential slots (token, and whether its last write was whole)."""
        lock = self._lock(room)
        return [
            {"slot": i, "token": t, "whole": w}
            for i, (t, w) in enumerate(zip(lock.slots(), lock.slots_whole(), strict=True))
        ]

    def access_log(self, room: str) -> dict[str, Any]:
        """The lock's log_head and access-log ring, newest first."""
        lock = self._lock(room)
        return {"log_head": lock.get("log_head"), "entries": lock.log_entries()}

    def coils(self, target: str) -> dict[str, bool]:
        """The coils of a device by role/name (lights, lamps, floor-panel outputs)."""
        dev = self.device(target)
        snap = dev.snapshot()
        return {
            (p.role or p.name): bool(snap[p.role or p.name])
            for p in dev.profile.point
            if p.table is Table.COIL and p.count == 1
        }

    def registers(self, target: str, table: str, address: int, count: int = 1) -> list[int]:
        """Raw cells of a device's table (``coil``, ``discrete``, ``input``, ``holding``)."""
        dev = self.device(target)
        try:
            return dev.read(Table(table), address, count)
        except ModbusError as exc:
            raise ValueError(f"{target}: exception {exc.code:02d}: {exc}") from None

    def lamps(self, bus: str | None = None) -> dict[str, str]:
        """The corridor lamp state the gateway last set per panel room (ON/FLASH/OFF)."""
        return dict(self._panel(bus).lamps)

    def panel_frames(self, since_seq: int = 0, bus: str | None = None) -> list[dict[str, Any]]:
        """Every line the gateway sent to the panel after ``since_seq``, timestamped."""
        return [f.as_dict() for f in self._panel(bus).frames(since_seq)]

    def panel_pending(self, bus: str | None = None) -> list[dict[str, Any]]:
        """Panel messages not acknowledged yet."""
        return self._panel(bus).pending()

    def events(
        self,
        since_seq: int = 0,
        kind: str | None = None,
        room: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The event journal after ``since_seq`` (filtered), oldest first."""
        found = self.journal.query(since_seq=since_seq, kind=kind, room=room, limit=limit)
        return [e.as_dict() for e in found]

    def status(self) -> dict[str, Any]:
        """Buses, ports, listeners, counters, faults and the time scale."""
        buses: dict[str, Any] = {}
        for name, line in self.lines.items():
            buses[name] = {
                "kind": "modbus-rtu",
                "port": str(line.link.path),
                "tty": line.link.tty_name,
                "baud": line.config.baud,
                "units": sorted(line.modbus.devices),
                "counters": {**line.modbus.counters, **line.counters},
            }
        for name, server in self.tcp.items():
            host, port = server.address
            buses[name] = {
                "kind": "modbus-tcp",
                "address": f"{host}:{port}",
                "units": sorted(server.bus.devices),
                "counters": dict(server.bus.counters),
            }
        for name, panel in self.panels.items():
            buses[name] = {
                "kind": "callpanel",
                "port": str(panel.link.path),
                "tty": panel.link.tty_name,
                "rooms": list(panel.rooms),
                "counters": dict(panel.counters),
            }
        return {
            "floor": self.config.gateway.id,
            "time_scale": self.clock.time_scale,
            "rooms": len(self.config.rooms),
            "devices": len(self.devices),
            "buses": buses,
            "faults": self.faults.snapshot(),
            "journal_seq": self.journal.last_seq,
        }

    def set_time_scale(self, scale: float) -> dict[str, Any]:
        """Change how fast device time runs (drift, door release, panel HB and repeats)."""
        self.clock.time_scale = float(scale)
        ev = self.journal.record("time_scale", "floor", value=scale)
        return {"time_scale": self.clock.time_scale, **ev.stamp.as_dict()}

    # -- internals -------------------------------------------------------------------------------

    def _guest_door_closed(self, room: str, entered: bool) -> None:
        """The guest's door swings shut; one who came in puts the key card in the holder."""
        lock = self._room_device(room, "lock", required=False)
        if lock is not None:
            lock.set_input("door_open", False)
        rio = self._rio(room)
        if entered and rio.regs.has("keycard"):
            rio.set_input("keycard", True)

    def _later(self, room: str, device_s: float, action: Callable[[], None]) -> None:
        """Run ``action`` after ``device_s`` of device time (a newer guest step replaces it)."""
        old = self._guest_timers.pop(room, None)
        if old is not None:
            old.cancel()
        loop = asyncio.get_running_loop()
        self._guest_timers[room] = loop.call_later(self.clock.real_seconds(device_s), action)

    def _build(self, tcp_ports: dict[str, int], turnaround_s: float, check_speed: bool) -> None:
        cfg = self.config
        for bus in cfg.buses:
            if isinstance(bus, RtuBus | TcpBus):
                self.modbus[bus.name] = ModbusBus(
                    bus.name, {}, self.faults, self.journal, tcp=isinstance(bus, TcpBus)
                )
        placed: list[tuple[str, str | None, str, str, int]] = [
            (f"{r.id}/{d.role}", r.id, d.profile, d.bus, d.unit)
            for r in cfg.rooms
            for d in r.devices
        ]
        if cfg.floorpanel is not None:
            fp = cfg.floorpanel
            placed.append(("floorpanel", None, fp.profile, fp.bus, fp.unit))
        by_room: dict[str, list[SimDevice]] = {}
        for name, room, profile, bus_name, unit in placed:
            prof = cfg.profiles[profile]
            if room in self.v1_rio_rooms and prof.device == "rio":
                prof = v1_profile(prof)
            dev = make_device(
                prof,
                name=name,
                room=room,
                bus=bus_name,
                unit=unit,
                clock=self.clock,
                journal=self.journal,
            )
            self.devices[name] = dev
            self.modbus[bus_name].devices[unit] = dev
            if room is not None:
                by_room.setdefault(room, []).append(dev)
        for devs in by_room.values():
            connect_room(devs)
        for dev in self.devices.values():
            if isinstance(dev, Thermostat):
                dev.set_outside(self.outside_c)
        for bus in cfg.buses:
            if isinstance(bus, RtuBus):
                self.lines[bus.name] = RtuLine(
                    bus, self.modbus[bus.name], turnaround_s=turnaround_s, check_speed=check_speed
                )
            elif isinstance(bus, TcpBus):
                port = tcp_ports.get(bus.name, bus.port)
                self.tcp[bus.name] = TcpServer(self.modbus[bus.name], bus.host, port)
            elif isinstance(bus, CallPanelBus):
                rooms = tuple(r.id for r in cfg.rooms if r.callpanel == bus.name)
                self.panels[bus.name] = CallPanel(bus, rooms, self.clock, self.journal, self.faults)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        task.add_done_callback(_report_crash)
        self._tasks.append(task)

    def _room_device(self, room: str, role: str, *, required: bool = True) -> SimDevice | None:
        try:
            self.config.room(room)
        except KeyError:
            raise ValueError(f"no room {room!r} on floor {self.config.gateway.id}") from None
        dev = self.devices.get(f"{room}/{role}")
        if dev is None and required:
            raise ValueError(f"room {room} has no {role}")
        return dev

    def _lock(self, room: str) -> Lock:
        dev = self._room_device(room, "lock")
        assert isinstance(dev, Lock)
        return dev

    def _tstat(self, room: str) -> Thermostat:
        dev = self._room_device(room, "tstat")
        assert isinstance(dev, Thermostat)
        return dev

    def _rio(self, room: str) -> RoomIO:
        dev = self._room_device(room, "rio")
        assert isinstance(dev, RoomIO)
        return dev

    def _rio_if_any(self, room: str) -> RoomIO | None:
        dev = self._room_device(room, "rio", required=False)
        return dev if isinstance(dev, RoomIO) else None

    def _panel_of(self, room: str) -> CallPanel:
        bus = self.config.room(room).callpanel
        if bus is None:
            raise ValueError(f"room {room} has neither a rio nor a call panel")
        return self.panels[bus]

    def _panel(self, bus: str | None) -> CallPanel:
        if bus is None:
            if len(self.panels) != 1:
                raise ValueError(f"name the call panel bus ({', '.join(self.panels) or 'none'})")
            return next(iter(self.panels.values()))
        if bus not in self.panels:
            raise ValueError(f"no call panel bus {bus!r}")
        return self.panels[bus]

    def _fault_target(self, target: str) -> str | tuple[str, int | None]:
        if target in self.panels:
            return target
        if target in self.modbus:
            return (target, None)
        dev = self.device(target)
        return (dev.bus, dev.unit)


def _split_unit(target: str) -> tuple[str, int | None]:
    bus, sep, unit = target.rpartition(":")
    if not sep or not unit.isdigit():
        return target, None
    return bus, int(unit)


def _token(token: int | str) -> int:
    value = int(token, 0) if isinstance(token, str) else int(token)
    if not 0 <= value < 1 << 64:
        raise ValueError(f"token {value} is not a 64-bit unsigned value")
    return value


def _report_crash(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.error("task_crashed", task=task.get_name(), exc_info=exc)
