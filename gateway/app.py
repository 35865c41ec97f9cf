"""The floor's wiring diagram: what is built from what, and every task it runs.

Read top to bottom: the floor restored from disk; the inbox every input goes into; the
buses and call panels that feed it; the write queues and the lock keeper that act on the
buses; the engine that decides and commits; the commands, the MQTT uplink and the control
socket around it. Every object gets its collaborators when it is built, and every
long-lived task is spawned into the one supervisor, named after what it owns
(``bus[rs485-a]``, ``callpanel[panel]``, ``mqtt``, ``committer``…). The bus and call-panel
owners and the committer beat a progress monitor; the health monitor reads them with
everything else the floor knows, and its critical reasons (a stalled loop) withhold the
watchdog. The metrics read the same objects at render time. Which floor file runs was
decided before (gateway.engine.configs); a decision to run another one restarts the
daemon.
"""

from __future__ import annotations

import asyncio
import dataclasses
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
from gateway.adapters.metrics import FloorMetrics, MetricsSources
from gateway.adapters.mqtt import Uplink
from gateway.adapters.signals import Broadcast, ReplayRequests, RetainedChanges
from gateway.adapters.store import Store
from gateway.config.inventory import inventory
from gateway.config.load import read_command_key
from gateway.core.decide import Stored, restore
from gateway.core.health import HealthLimits
from gateway.core.inputs import LinkChanged, UplinkRefusing
from gateway.engine.actuators import Actuators
from gateway.engine.commands import CommandProcessor
from gateway.engine.configs import ConfigKeeper
from gateway.engine.engine import Engine, Inbox
from gateway.engine.health import HealthMonitor, StorageProbe
from gateway.engine.locks import LockKeeper
from gateway.engine.view import LiveFloorView
from gateway.logging import warning_counts
from gateway.supervisor import Supervisor

log = structlog.get_logger("gateway.app")

# A bus owner or call panel that has not turned for this long withholds the watchdog, and
# so does a committer that has not committed (it commits a tick at least every second).
BUS_MAX_SILENCE_S = 15.0
COMMITTER_MAX_SILENCE_S = 30.0
# A restart asked by a command (apply_config) waits this long, so the command's reply is
# published before the link is closed (a lost reply is still had again by its id).
RESTART_GRACE_S = 1.0


async def build(configs: ConfigKeeper, store: Store, supervisor: Supervisor) -> Inbox:
    """Restore the floor from disk, wire it, and spawn its tasks; the inbox takes inputs."""
    config = configs.config
    started_at = datetime.now(UTC)
    stored, heads = await store.read(_load_stored)
    stored = dataclasses.replace(stored, config=configs.record)
    state, initial = restore(config.layout(), stored, datetime.now(UTC), new_id=_new_id)
    initial += configs.initial_effects()
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
    committer = supervisor.progress("committer", max_silence_s=COMMITTER_MAX_SILENCE_S)
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
        beat=committer.beat,
        restart=functools.partial(_restart_soon, supervisor),
    )

    replays = ReplayRequests()
    processor = CommandProcessor(
        store,
        config.credentials(read_command_key(config.mqtt.command_key_file)),
        inbox.submit,
        replays=replays,
        prepare={"apply_config": configs.prepare},
    )
    # The metrics, the uplink and the health monitor read each other: the lambdas below
    # name objects built a few lines further down (read at render time, never before).
    metrics = FloorMetrics(
        MetricsSources(
            buses={name: s.stats for name, s in schedulers.items()},
            link=lambda: uplink.stats(),  # noqa: PLW0108 -- built below
            floor=engine.figures,
            commands=processor.counts,
            lock_slots_pending=locks.pending_slots,
            health=lambda: monitor.health(),  # noqa: PLW0108 -- built below
            log_counts=warning_counts,
            config_pending=lambda: engine.state.config.pending is not None,
        ),
        gateway=config.gateway.id,
        version=__version__,
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
        health=lambda: monitor.health().to_dict(),
        on_delivered=metrics.delivered,
    )
    monitor = HealthMonitor(
        link=uplink.stats,
        buses={name: s.summary for name, s in schedulers.items()},
        loops=supervisor.loops,
        alarms=lambda: engine.figures().technical,
        clock_jump=lambda: engine.clock_jump,
        storage=StorageProbe(
            store, config.gateway.state_dir, config.mqtt.outbox_max_mib * 1024 * 1024
        ),
        limits=HealthLimits(config.health.broker_down_s, config.health.clock_jump_hold_s),
    )
    supervisor.watchdog_gate(monitor.critical)
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
        health=monitor,
        configs=configs,
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
    supervisor.spawn("health", monitor.run)
    supervisor.spawn("config-watch", functools.partial(configs.watch, monitor.facts, inbox.submit))
    if (address := config.metrics.address) is not None:
        supervisor.spawn("metrics", functools.partial(metrics.serve, *address))
    if config.metrics.textfile is not None:
        every = config.metrics.textfile_every_s
        textfile = functools.partial(metrics.write_textfile, config.metrics.textfile, every)
        supervisor.spawn("metrics-textfile", textfile)
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


def _restart_soon(supervisor: Supervisor, reason: str) -> None:
    """Restart after ``RESTART_GRACE_S``: the reply of the command that asked goes out first."""
    asyncio.get_running_loop().call_later(RESTART_GRACE_S, supervisor.request_restart, reason)
