"""The ``floorsim`` command: serve a simulated floor, or control a running one.

    floorsim --config FLOOR.toml [--ctl-socket PATH] [--time-scale X] [--log-level L]
    floorsim ctl [--socket PATH | --config FLOOR.toml] COMMAND ARGS...

Serving runs until SIGTERM/SIGINT and leaves no pty link, listener or socket behind.
Exit codes: 0 clean stop; 1 cannot serve (a port path that is not ours, an address in
use, another floorsim on the control socket); 78 invalid floor file.

``floorsim ctl`` prints the result as JSON. It finds the control socket from
``--socket``, else ``--config`` (``floorsim.sock`` beside the floor's gateway.socket),
else ``$FLOORSIM_SOCKET``, else ``$FLOORGATE_RUN_DIR/floorsim.sock`` (the shipped floors
put gateway.socket in that directory), else ``/run/floorgate/floorsim.sock``.
Exit codes: 0 success, 1 the simulator answered with an error, 2 usage, 69 unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import structlog

from floorsim.control import (
    ControlServer,
    CtlError,
    CtlUnreachableError,
    call,
    default_socket,
    socket_is_live,
)
from floorsim.sim import GUEST_STATES, FloorSim
from floorsim.thermal import OUTSIDE_C
from floorsim.wire import PortInUseError
from gateway.config.load import format_report, load_floor, load_gateway_section
from gateway.logging import configure_logging
from gateway.model.errors import ConfigError

__all__ = ["main"]

log = structlog.get_logger("floorsim")

EX_OK, EX_FAIL, EX_USAGE, EX_UNAVAILABLE, EX_CONFIG = 0, 1, 2, 69, 78


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``floorsim`` console script."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["ctl"]:
        return ctl_main(args[1:])
    return serve_main(args)


# -- serving ---------------------------------------------------------------------------------


def serve_main(argv: Sequence[str]) -> int:
    """``floorsim --config FLOOR.toml ...``: serve until SIGTERM/SIGINT."""
    p = argparse.ArgumentParser(
        prog="floorsim",
        description="Serve the simulated floor hardware a floor file names "
        "(use 'floorsim ctl --help' to control a running one).",
    )
    p.add_argument("--config", type=Path, required=True, help="the floor file (TOML)")
    p.add_argument(
        "--ctl-socket", type=Path, help="control socket (default: beside gateway.socket)"
    )
    p.add_argument(
        "--time-scale", type=float, default=1.0, help="device time speed-up (drift, HB, repeats)"
    )
    p.add_argument(
        "--outside-c", type=float, default=OUTSIDE_C, help="outside temperature, °C (default 30)"
    )
    p.add_argument(
        "--rio-v1",
        action="append",
        default=[],
        metavar="ROOM",
        help="serve this room's room I/O as a v1 FG-RIO-1, without a motion sensor (repeatable)",
    )
    p.add_argument("--log-level", default="info")
    p.add_argument("--log-json", action="store_true", help="JSON log lines even on a terminal")
    p.add_argument(
        "--no-speed-check",
        action="store_true",
        help="answer RTU requests whatever baud rate the opener set on the pty",
    )
    args = p.parse_args(argv)
    configure_logging(level=args.log_level, json=True if args.log_json else None)
    try:
        config, warnings = load_floor(args.config)
    except ConfigError as exc:
        print(format_report(exc.problems, args.config), file=sys.stderr)
        return EX_CONFIG
    for w in warnings:
        log.warning("config_warning", warning=w)
    if not 0 < args.time_scale <= 1_000_000:
        p.error("--time-scale must be in (0, 1e6]")
    unknown = [r for r in args.rio_v1 if all(room.id != r for room in config.rooms)]
    if unknown:
        p.error(f"--rio-v1: no room {', '.join(unknown)} on this floor")
    sim = FloorSim(
        config,
        time_scale=args.time_scale,
        check_line_speed=not args.no_speed_check,
        v1_rio_rooms=args.rio_v1,
        outside_c=args.outside_c,
    )
    ctl_path = args.ctl_socket or default_socket(config.gateway)
    try:
        asyncio.run(_serve(sim, ctl_path))
    except (PortInUseError, RuntimeError, OSError) as exc:
        print(f"floorsim: cannot serve {args.config}: {exc}", file=sys.stderr)
        return EX_FAIL
    return EX_OK


async def _serve(sim: FloorSim, ctl_path: Path) -> None:
    if socket_is_live(ctl_path):  # before touching any port link another floorsim owns
        raise RuntimeError(f"another floorsim answers on {ctl_path}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ctl = ControlServer(sim, ctl_path)
    try:
        await sim.start()
        await ctl.start()
        log.info("floorsim_ready", ctl_socket=str(ctl_path), buses=sorted(sim.status()["buses"]))
        await stop.wait()
        log.info("floorsim_stopping")
    finally:
        await ctl.stop()
        await sim.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


# -- ctl client --------------------------------------------------------------------------------

Build = Callable[[argparse.Namespace], dict[str, Any]]


def ctl_main(argv: Sequence[str]) -> int:
    """``floorsim ctl ...``: one request to a running simulator; prints its JSON result."""
    parser = _ctl_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "cmd", None):
        parser.print_usage(sys.stderr)
        return EX_USAGE
    try:
        path = _socket_path(args)
    except ConfigError as exc:
        print(format_report(exc.problems, args.config), file=sys.stderr)
        return EX_CONFIG
    build: Build = args.build
    try:
        result = asyncio.run(call(path, args.cmd, build(args)))
    except CtlUnreachableError as exc:
        print(f"floorsim ctl: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    except CtlError as exc:
        print(f"floorsim ctl: {exc}", file=sys.stderr)
        return EX_FAIL
    print(json.dumps(result, indent=2))
    return EX_OK


def _socket_path(args: argparse.Namespace) -> Path:
    if args.socket is not None:
        return Path(args.socket)
    if args.config is not None:
        return default_socket(load_gateway_section(args.config))
    if os.environ.get("FLOORSIM_SOCKET"):
        return Path(os.environ["FLOORSIM_SOCKET"])
    if os.environ.get("FLOORGATE_RUN_DIR"):
        return Path(os.environ["FLOORGATE_RUN_DIR"]) / "floorsim.sock"
    return Path("/run/floorgate/floorsim.sock")


def _ctl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="floorsim ctl", description="Control a running floorsim.")
    p.add_argument("--socket", type=Path, help="the simulator's control socket")
    p.add_argument("--config", type=Path, help="find the socket from this floor file")
    sub = p.add_subparsers(title="commands", metavar="COMMAND")

    def cmd(name: str, method: str, build: Build, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(cmd=method, build=build)
        return sp

    on_off = {"on": True, "off": False, "in": True, "out": False, "open": True, "close": False}

    def switch(name: str, method: str, states: tuple[str, str], help_: str, key: str) -> None:
        sp = cmd(name, method, lambda a: {"room": a.room, key: on_off[a.state]}, help_)
        sp.add_argument("room")
        sp.add_argument("state", choices=states)

    sp = cmd(
        "press",
        "press",
        lambda a: {"room": a.room, "point": a.point, "ms": a.ms},
        "press a call point for a duration (rio counter +1, or the panel's CALL)",
    )
    sp.add_argument("room")
    sp.add_argument("point", nargs="?", default="bath", help="bath (default), bed, other (panel)")
    sp.add_argument("--ms", type=int, default=200, help="how long it is held (default 200)")
    sp = cmd(
        "staff",
        "staff",
        lambda a: {"room": a.room, "ms": a.ms, "point": a.point},
        "turn the staff-presence key (rio staff_count +1, or the panel's CANCEL)",
    )
    sp.add_argument("room")
    sp.add_argument("--ms", type=int, default=200)
    sp.add_argument("--point", help="panel rooms: cancel this point only")
    sp = cmd(
        "token",
        "present_token",
        lambda a: {"room": a.room, "token": int(a.token, 0)},
        "present a credential token (decimal or 0x hex) at the room's lock",
    )
    sp.add_argument("room")
    sp.add_argument("token")
    switch("door", "door", ("open", "close"), "open or close the door leaf", "is_open")
    switch("deadbolt", "deadbolt", ("on", "off"), "throw or withdraw the deadbolt", "on")
    switch("tamper", "tamper", ("on", "off"), "open or close the lock's tamper switch", "on")
    switch("keycard", "keycard", ("in", "out"), "key card in or out of the holder", "on")
    switch("dnd", "dnd", ("on", "off"), "do-not-disturb switch", "on")
    switch("mur", "mur", ("on", "off"), "make-up-room switch", "on")
    switch("window", "window", ("open", "close"), "window contact", "is_open")
    switch("sensor-fault", "sensor_fault", ("on", "off"), "break the thermostat sensor", "on")
    sp = cmd("motion", "motion", _one_arg("room"), "one detection of the room's motion sensor")
    sp.add_argument("room")
    sp = cmd(
        "guest",
        "guest",
        lambda a: {"room": a.room, "state": a.state},
        "a scripted guest: in (enters, moves about), out (leaves), sleep (inside, still)",
    )
    sp.add_argument("room")
    sp.add_argument("state", choices=GUEST_STATES)
    sp = cmd("outside", "set_outside", lambda a: {"celsius": a.celsius}, "outside temperature (°C)")
    sp.add_argument("celsius", type=float)
    for name, method, help_ in (
        ("temp", "set_room_temp", "force the room's physical temperature (°C)"),
        ("keypad", "keypad", "a guest sets the thermostat at its keypad (°C)"),
    ):
        sp = cmd(name, method, lambda a: {"room": a.room, "celsius": a.celsius}, help_)
        sp.add_argument("room")
        sp.add_argument("celsius", type=float)
    sp = cmd(
        "set",
        "set_input",
        lambda a: {
            "target": a.target,
            "point": a.point,
            "value": _value(a.value),
            "index": a.index,
        },
        "set any point of a device as the physical world would (battery, humidity...)",
    )
    sp.add_argument("target", help="ROOM/ROLE, floorpanel or BUS:UNIT")
    sp.add_argument("point")
    sp.add_argument("value", help="JSON (12, 21.5, true, null) or a bare enum name")
    sp.add_argument("--index", type=int, default=0)
    sp = cmd(
        "power-cycle",
        "power_cycle",
        lambda a: {"target": a.target},
        "power a device off and on (coils drop; slots, logs, counters stay)",
    )
    sp.add_argument("target")
    sp = cmd(
        "fault",
        "set_fault",
        lambda a: {
            "target": a.target,
            "kind": a.kind,
            "value": _value(a.value) if a.value else None,
        },
        "switch a fault on: silent | corrupt N | exception CODE | slow MS | stuck COIL |"
        " refuse ADDRESS | garbage MS",
    )
    sp.add_argument("target", help="BUS, BUS:UNIT, ROOM/ROLE, floorpanel, or a panel bus")
    sp.add_argument(
        "kind", choices=("silent", "corrupt", "exception", "slow", "stuck", "refuse", "garbage")
    )
    sp.add_argument("value", nargs="?")
    sp = cmd(
        "clear",
        "clear_fault",
        lambda a: {"target": a.target, "kind": a.kind},
        "switch one fault (or every fault) of a target off",
    )
    sp.add_argument("target")
    sp.add_argument("kind", nargs="?")
    sp = cmd(
        "line-fault",
        "line_fault",
        lambda a: {"room": a.room, "point": a.point, "code": a.code.upper()},
        "a call-point line fault on a panel room (the panel sends FAULT)",
    )
    sp.add_argument("room")
    sp.add_argument("point")
    sp.add_argument("code", help="CUT or SHORT")
    sp = cmd(
        "line-ok",
        "clear_line_fault",
        lambda a: {"room": a.room, "point": a.point},
        "repair a call-point line",
    )
    sp.add_argument("room")
    sp.add_argument("point")
    sp = cmd(
        "panel-send",
        "panel_send",
        lambda a: {"body": a.body, "cs": a.cs, "repeat": a.repeat, "bus": a.bus},
        "send an arbitrary panel frame $BODY*CS",
    )
    sp.add_argument("body")
    sp.add_argument("--cs", help="force this checksum (two hex digits)")
    sp.add_argument("--repeat", action="store_true", help="append ,<seq> and repeat until ACKed")
    sp.add_argument("--bus")
    sp = cmd(
        "panel-raw",
        "panel_raw",
        lambda a: {"data": a.hex, "bus": a.bus},
        "put raw bytes (hex) on the panel line",
    )
    sp.add_argument("hex")
    sp.add_argument("--bus")
    sp = cmd(
        "panel-garbage",
        "panel_garbage",
        lambda a: {"count": a.count, "bus": a.bus},
        "send garbage lines on the panel line",
    )
    sp.add_argument("count", nargs="?", type=int, default=1)
    sp.add_argument("--bus")
    for name, method, arg, help_ in (
        ("read", "read", "target", "every point of a device, decoded"),
        ("slots", "slots", "room", "the lock's credential slots"),
        ("log", "access_log", "room", "the lock's log_head and access-log ring"),
        ("coils", "coils", "target", "a device's coils (lights, lamps)"),
    ):
        sp = cmd(name, method, _one_arg(arg), help_)
        sp.add_argument(arg)
    sp = cmd(
        "get",
        "get",
        lambda a: {"target": a.target, "point": a.point, "index": a.index},
        "one point of a device, decoded",
    )
    sp.add_argument("target")
    sp.add_argument("point")
    sp.add_argument("--index", type=int, default=0)
    sp = cmd(
        "registers",
        "registers",
        lambda a: {"target": a.target, "table": a.table, "address": a.address, "count": a.count},
        "raw cells of a device's table",
    )
    sp.add_argument("target")
    sp.add_argument("table", choices=("coil", "discrete", "input", "holding"))
    sp.add_argument("address", type=int)
    sp.add_argument("count", type=int, nargs="?", default=1)
    for name, method, help_ in (
        ("lamps", "lamps", "the corridor lamps the gateway set on the panel"),
        ("panel-pending", "panel_pending", "panel messages not yet acknowledged"),
    ):
        sp = cmd(name, method, lambda a: {"bus": a.bus}, help_)
        sp.add_argument("--bus")
    sp = cmd(
        "panel-frames",
        "panel_frames",
        lambda a: {"since_seq": a.since, "bus": a.bus},
        "every line the gateway sent to the panel, timestamped",
    )
    sp.add_argument("--since", type=int, default=0)
    sp.add_argument("--bus")
    sp = cmd(
        "events",
        "events",
        lambda a: {"since_seq": a.since, "kind": a.kind, "room": a.room, "limit": a.limit},
        "the event journal",
    )
    sp.add_argument("--since", type=int, default=0)
    sp.add_argument("--kind")
    sp.add_argument("--room")
    sp.add_argument("--limit", type=int)
    cmd("status", "status", lambda a: {}, "buses, ports, counters, faults, time scale")
    sp = cmd(
        "time-scale", "set_time_scale", lambda a: {"scale": a.scale}, "change device time speed"
    )
    sp.add_argument("scale", type=float)
    return p


def _one_arg(key: str) -> Build:
    def build(a: argparse.Namespace) -> dict[str, Any]:
        return {key: getattr(a, key)}

    return build


def _value(text: str) -> Any:
    """A command-line value: JSON if it parses (12, 21.5, true, null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


if __name__ == "__main__":
    sys.exit(main())
