"""The floor's wiring diagram: what is built from what, and every task it runs.

Read top to bottom: the floor restored from disk; the inbox every input goes into; the
buses and call panels that feed it; the write queues and the lock keeper that act on the
buses; the engine that decides and commits; the commands, the MQTT uplink and the control
socket around it. Every object gets its collaborators when it is built, and every
long-lived task is spawned into the one supervisor, named after what it owns
(``bus[rs485-a]``, ``callpanel[panel]``, ``mqtt``, ``committer``…). The bus and call-panel
owners and the committer beat a progress monitor: the watchdog is withheld when one of
them stalls.
"""

from __future__ import annotations

import functools
import sqlite3
import uuid
from datetime import UTC, datetime

import structlog

from drivers.callpanel import CallPanelDriver
from drivers.lines import CallPanelBus, RtuBus, TcpBus
from drivers.modbus import ModbusTransport
from drivers.scheduler import BusScheduler
from gateway import __version__
from gateway.adapters import access_store, alarms_store, rooms_store, schema, stays
from gateway.adapters.control import ControlServer
from gateway.adapters.mqtt import Uplink
from gateway.adapters.signals import Broadcast, ReplayRequests, RetainedChanges
from gateway.adapters.store import Store
from gateway.config.floor import FloorConfig
from gateway.config.inventory import inventory
from gateway.config.load import read_command_key
from gateway.core.decide import Stored, restore
from gateway.core.inputs import LinkChanged, UplinkRefusing
from gateway.engine.actuators import Actuators
from gateway.engine.commands import CommandProcessor
from gateway.engine.engine import Engine, Inbox
from gateway.engine.locks import LockKeeper
from gateway.engine.view import LiveFloorView
from gateway.supervisor import Supervisor

log = structlog.get_logger("gateway.app")

# A bus owner or call panel that has not turned for this long withholds the watchdog, and
# so does a committer that has not committed (it commits a tick at least every second).
BUS_MAX_SILENCE_S = 15.0
COMMITTER_MAX_SILENCE_S = 30.0


async def build(config: FloorConfig, store: Store, supervisor: Supervisor) -> Inbox:
    """Restore the floor from disk, wire it, and spawn its tasks; the inbox takes inputs."""
    started_at = datetime.now(UTC)
    stored, heads = await store.read(_load_stored)
    state, initial = restore(config.layout(), stored, datetime.now(UTC), new_id=_new_id)
    inbox = Inbox()

    schedulers: dict[str, BusScheduler] = {}
    panels: dict[str, CallPanelDriver] = {}
    for bus in config.buses:
        match bus:
            case RtuBus() | TcpBus():
                progress = supervisor.progress(f"bus[{bus.name}]", max_silence_s=BUS_MAX_SILENCE_S)
                transport = (
                    ModbusTransport.rtu(bus)
                    if isinstance(bus, RtuBus)
                    else ModbusTransport.tcp(bus)
                )
                schedulers[bus.name] = BusScheduler(
                    transport,
                    config.devices(bus.name),
                    on_observation=inbox.put,
                    intervals_ms={**config.poll.intervals_ms, **bus.intervals_ms},
                    kind=bus.kind,
                    offline_after=config.poll.offline_after,
                    probe_max_s=config.poll.probe_max_s,
                    beat=progress.beat,
                )
            case CallPanelBus():
                progress = supervisor.progress(
                    f"callpanel[{bus.name}]", max_silence_s=BUS_MAX_SILENCE_S
                )
                panels[bus.name] = CallPanelDriver(bus, inbox.put, beat=progress.beat)

    device_bus = {ref: info.bus for ref, info in state.layout.devices.items()}
    actuators = Actuators(
        {name: s.write for name, s in schedulers.items()}, device_bus, report=inbox.put
    )
    locks = LockKeeper(
        state,
        readers={name: s.read for name, s in schedulers.items()},
        writers={name: s.write for name, s in schedulers.items()},
        submit=inbox.put,
        heads=heads,
        slot_verify_s=config.policy.slot_verify_s,
    )
    retained = RetainedChanges()
    committed = Broadcast()
    engine = Engine(
        state,
        initial,
        inbox,
        store,
        actuators=actuators,
        lamps={name: panel.send_lamp for name, panel in panels.items()},
        locks=locks,
        retained=retained,
        outbox=committed,
    )

    replays = ReplayRequests()
    processor = CommandProcessor(
        store,
        config.credentials(read_command_key(config.mqtt.command_key_file)),
        inbox.submit,
        replays=replays,
    )
    uplink = Uplink(
        config,
        store,
        version=__version__,
        started_at=started_at,
        current_state=engine.current_state,
        on_command=processor.handle,
        retained=retained,
        outbox=committed,
        replays=replays,
        inventory=inventory(config, __version__),
        on_link=lambda up: inbox.put(LinkChanged(up)),
        on_refusing=lambda refusing: inbox.put(UplinkRefusing(refusing)),
    )
    view = LiveFloorView(
        config,
        store,
        engine,
        inbox,
        schedulers=schedulers,
        panels=panels,
        uplink=uplink,
        outbox=committed,
        started_at=started_at,
        actuators=actuators,
    )
    control = ControlServer.for_gateway(view, config.gateway, view.audit)

    for name, scheduler in schedulers.items():
        supervisor.spawn(f"bus[{name}]", scheduler.run)
    for name in actuators.buses:
        supervisor.spawn(f"actuator[{name}]", functools.partial(actuators.run, name))
    for name, panel in panels.items():
        supervisor.spawn(f"callpanel[{name}]", panel.run)
    supervisor.spawn("committer", engine.run)
    supervisor.spawn("timers", engine.timers)
    supervisor.spawn("reconciler", locks.reconciler)
    supervisor.spawn("slot-verify", locks.slot_verifier)
    supervisor.spawn("access-log", locks.log_reader)
    supervisor.spawn("mqtt", uplink.run)
    supervisor.spawn("control", control.serve)
    log.info(
        "floor_built",
        buses=len(schedulers),
        panels=len(panels),
        rooms=len(config.rooms),
        events_seq=await store.read(schema.current_seq),
    )
    return inbox


def _load_stored(conn: sqlite3.Connection) -> tuple[Stored, dict[str, int]]:
    """What the floor kept on disk, and each lock's last access-log entry read."""
    staff_keys, revoked = access_store.load_staff_keys(conn)
    stored = Stored(
        schema.load_point_values(conn),
        stays.load_stays(conn),
        alarms_store.load_open_alarms(conn),
        stays.load_welcomed(conn),
        rooms_store.load_room_status(conn),
        rooms_store.load_latest_days(conn),
        staff_keys=staff_keys,
        revoked=revoked,
        lockdown=access_store.load_lockdown(conn),
    )
    return stored, stays.load_log_heads(conn)


def _new_id() -> str:
    return uuid.uuid4().hex
