"""Wiring: the floor engine, its buses, call panels, MQTT uplink and control socket.

Every long-lived task is spawned into the one supervisor, named after what it owns
(``bus[rs485-a]``, ``callpanel[panel]``, ``mqtt``, ``control``…). The bus and call-panel
owners and the committer are critical loops: each beats a progress monitor, and the
watchdog is withheld when one of them stalls.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import structlog

from drivers.callpanel import CallPanelDriver
from drivers.lines import CallPanelBus, RtuBus, TcpBus
from drivers.modbus import ModbusTransport
from drivers.scheduler import BusScheduler
from gateway import __version__
from gateway.adapters import schema
from gateway.adapters.control import ControlServer
from gateway.adapters.mqtt import Uplink
from gateway.adapters.store import Store
from gateway.config.floor import FloorConfig
from gateway.config.load import read_command_key
from gateway.engine.commands import CommandProcessor
from gateway.engine.floor import Floor
from gateway.engine.handlers import register_handlers
from gateway.engine.view import LiveFloorView
from gateway.supervisor import Supervisor

log = structlog.get_logger("gateway.app")

# A bus owner or call panel that has not turned for this long withholds the watchdog.
BUS_MAX_SILENCE_S = 15.0
COMMITTER_MAX_SILENCE_S = 30.0


async def build(config: FloorConfig, store: Store, supervisor: Supervisor) -> Floor:
    """Restore the floor from disk and spawn every task it needs into the supervisor."""
    started_at = datetime.now(UTC)
    floor = await Floor.open(config, store)
    schedulers: dict[str, BusScheduler] = {}
    panels: dict[str, CallPanelDriver] = {}
    for bus in config.buses:
        if isinstance(bus, (RtuBus, TcpBus)):
            transport = (
                ModbusTransport.rtu(bus) if isinstance(bus, RtuBus) else ModbusTransport.tcp(bus)
            )
            beat = supervisor.progress(f"bus[{bus.name}]", max_silence_s=BUS_MAX_SILENCE_S).beat
            sched = BusScheduler(
                transport,
                config.devices(bus.name),
                on_observation=floor.observe,
                intervals_ms={**config.poll.intervals_ms, **bus.intervals_ms},
                kind=bus.kind,
                offline_after=config.poll.offline_after,
                probe_max_s=config.poll.probe_max_s,
                beat=beat,
            )
            schedulers[bus.name] = sched
            floor.writers[bus.name] = sched.write
            floor.readers[bus.name] = sched.read
            supervisor.spawn(f"bus[{bus.name}]", sched.run)
            supervisor.spawn(f"actuator[{bus.name}]", functools.partial(floor.actuator, bus.name))
        elif isinstance(bus, CallPanelBus):
            beat = supervisor.progress(
                f"callpanel[{bus.name}]", max_silence_s=BUS_MAX_SILENCE_S
            ).beat
            driver = CallPanelDriver(bus, floor.panel_event, beat=beat)
            panels[bus.name] = driver
            floor.lamp_senders[bus.name] = driver.send_lamp
            supervisor.spawn(f"callpanel[{bus.name}]", driver.run)

    key = read_command_key(config.mqtt.command_key_file)
    uplink_ref: list[Uplink] = []
    processor = CommandProcessor(
        store,
        key,
        config.gateway.id,
        on_event_appended=lambda: uplink_ref[0].events_appended() if uplink_ref else None,
    )
    uplink = Uplink(
        config,
        store,
        version=__version__,
        started_at=started_at,
        current_state=floor.current_state,
        on_command=processor.handle,
    )
    uplink_ref.append(uplink)
    floor.on_events = uplink.events_appended
    floor.set_retained = uplink.set_retained
    floor.link_up = lambda: uplink.connected
    register_handlers(processor, floor, uplink)
    supervisor.spawn("mqtt", uplink.run)

    view = LiveFloorView(floor, schedulers, panels, uplink, started_at=started_at)
    control = ControlServer.for_gateway(view, config.gateway, view.audit)
    supervisor.spawn("control", control.serve)

    supervisor.spawn("committer", floor.committer)
    supervisor.spawn("timers", floor.timers)
    supervisor.spawn("reconciler", floor.locks.reconciler)
    supervisor.spawn("slot-verify", floor.locks.slot_verifier)
    supervisor.spawn("access-log", floor.locks.log_reader)
    supervisor.spawn("point-cache", floor.cache_flusher)
    log.info(
        "floor_built",
        buses=len(schedulers),
        panels=len(panels),
        rooms=len(config.rooms),
        events_seq=await store.read(schema.current_seq),
    )
    return floor
