"""floorctl: the technician's CLI, a thin client of the daemon's control socket.

The socket is found from ``--socket PATH``, else ``--config FLOOR.toml`` (its
``gateway.socket``), else ``/run/floorgate/floorctl.sock`` (operations.md).
Exit codes (operations.md): 0 success, 1 the daemon answered with an error,
2 usage error, 69 the daemon cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gateway.config.load import load_gateway_section
from gateway.errors import ConfigError

EX_OK = 0
EX_ERROR = 1
EX_USAGE = 2
EX_UNAVAILABLE = 69
DEFAULT_SOCKET = Path("/run/floorgate/floorctl.sock")
PROTOCOL_VERSION = 1
CONNECT_TIMEOUT_S = 5.0


class Unreachable(Exception):
    """The daemon's socket cannot be reached."""


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_usage(sys.stderr)
        return EX_USAGE
    try:
        path = socket_path(args.socket, args.config)
    except ConfigError as exc:
        print(f"floorctl: cannot read the floor file: {exc.problems[0]}", file=sys.stderr)
        return EX_USAGE
    request = {"v": PROTOCOL_VERSION, "cmd": args.command, "args": _request_args(args)}
    try:
        reply = call(path, request)
    except Unreachable as exc:
        print(f"floorctl: the daemon cannot be reached at {path}: {exc}", file=sys.stderr)
        print("floorctl: is floorgated running? (systemctl status floorgate)", file=sys.stderr)
        return EX_UNAVAILABLE
    if not reply.get("ok"):
        error = reply.get("error", {})
        print(f"floorctl: {error.get('message', 'the daemon refused')}", file=sys.stderr)
        return EX_ERROR
    print(json.dumps(reply.get("result"), indent=2, sort_keys=True))
    return EX_OK


def socket_path(explicit: Path | None, config: Path | None) -> Path:
    """Where the daemon's control socket is, by the operations.md rule."""
    if explicit is not None:
        return explicit
    if config is not None:
        return load_gateway_section(config).socket
    return DEFAULT_SOCKET


def call(path: Path, request: dict[str, Any]) -> dict[str, Any]:
    """Send one request line and read one reply line."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CONNECT_TIMEOUT_S)
            sock.connect(str(path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            data = sock.makefile("rb").readline()
    except (FileNotFoundError, ConnectionRefusedError, TimeoutError) as exc:
        raise Unreachable(exc.strerror or str(exc)) from exc
    except PermissionError as exc:
        raise Unreachable("permission denied (are you in the floorgate group?)") from exc
    if not data:
        raise Unreachable("the daemon closed the connection without answering")
    reply: dict[str, Any] = json.loads(data)
    return reply


def _request_args(args: argparse.Namespace) -> dict[str, Any]:
    skip = {"socket", "config", "json", "command"}
    return {k: v for k, v in vars(args).items() if k not in skip and v is not None}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="floorctl",
        description="Query and operate the floor's gateway (floorgated) from the floor.",
        epilog="Exit codes: 0 success, 1 the daemon answered with an error, 2 usage error, "
        "69 the daemon cannot be reached.",
    )
    p.add_argument("--socket", type=Path, help="the daemon's control socket")
    p.add_argument("--config", type=Path, help="floor file (its gateway.socket is used)")
    p.add_argument("--json", action="store_true", help="print one JSON document")
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.add_parser("status", help="uptime, MQTT link, outbox, buses, open alarms")
    sub.add_parser("floor", help="a map of the floor's rooms at a glance")
    sub.add_parser("rooms", help="every room in a table")
    room = sub.add_parser("room", help="everything about one room")
    room.add_argument("room", metavar="ROOM")
    sub.add_parser("devices", help="device health table")
    alarms = sub.add_parser("alarms", help="open alarms; ack or resolve one")
    alarm_sub = alarms.add_subparsers(dest="action", metavar="ACTION")
    for action in ("ack", "resolve"):
        a = alarm_sub.add_parser(action, help=f"{action} an alarm")
        a.add_argument("alarm_id", metavar="ALARM_ID")
        a.add_argument("--by", required=True, metavar="NAME", help="who does it (audited)")
    events = sub.add_parser("events", help="recent events")
    events.add_argument("--since-seq", type=int, metavar="N")
    events.add_argument("--room", metavar="ROOM")
    events.add_argument("--follow", action="store_true", default=None)
    sub.add_parser("outbox", help="events waiting for the broker")
    scan = sub.add_parser("scan", help="find which unit ids answer on a bus")
    scan.add_argument("bus", metavar="BUS")
    for sp in [*sub.choices.values(), *alarm_sub.choices.values()]:
        # --json is accepted after the subcommand too
        sp.add_argument("--json", action="store_true", default=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    sys.exit(main())
