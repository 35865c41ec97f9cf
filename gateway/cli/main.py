"""floorctl: the technician's CLI, a thin client of the daemon's control socket.

The socket is found from ``--socket PATH``, else ``--config FLOOR.toml`` (its
``gateway.socket``), else ``/run/floorgate/floorctl.sock`` (operations.md). Each
subcommand returns a typed result (gateway.model.views) that gateway.cli.render prints as
tables or, with ``--json``, as one JSON document with stable keys (``events --follow
--json``: one document per line).

Exit codes (operations.md), all decided in ``main``: 0 success; 1 the daemon answered
with an error, a refusal included (also when the socket's file mode refuses the user);
2 usage error; 69 the daemon cannot be reached; 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar

from rich.console import Console

from gateway.cli import render
from gateway.cli.completion import completion_script
from gateway.config.load import load_gateway_section
from gateway.model.errors import ConfigError, DaemonUnreachableError, ViewRefused
from gateway.model.views import (
    PROTOCOL_VERSION,
    AlarmTable,
    AlarmUpdate,
    DeviceTable,
    EventLog,
    EventRow,
    FloorMap,
    OutboxInfo,
    Result,
    RoomDetail,
    RoomTable,
    ScanProgress,
    ScanResult,
    Status,
)

EX_OK = 0
EX_ERROR = 1
EX_USAGE = 2
EX_UNAVAILABLE = 69
EX_INTERRUPTED = 130
DEFAULT_SOCKET = Path("/run/floorgate/floorctl.sock")
CONNECT_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 40.0  # the daemon gives up on a query after 30 s and says so
SCAN_IDLE_TIMEOUT_S = 120.0  # longest silence between two scan progress lines


class _FromJson(Protocol):
    @classmethod
    def from_json(cls, doc: object) -> Self: ...


_T = TypeVar("_T", bound=_FromJson)


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 on --help
        return int(exc.code or 0)
    if args.command is None:
        parser.print_usage(sys.stderr)
        print("floorctl: a subcommand is needed (floorctl --help lists them)", file=sys.stderr)
        return EX_USAGE
    if args.command == "completion":
        sys.stdout.write(completion_script(args.shell, parser))
        return EX_OK
    try:
        path = socket_path(args.socket, args.config)
    except ConfigError as exc:
        print(f"floorctl: cannot read the floor file: {exc.problems[0]}", file=sys.stderr)
        return EX_USAGE
    out = Console(markup=False, highlight=False, emoji=False)
    try:
        return _run(Client(path), args, out)
    except DaemonUnreachableError as exc:
        print(f"floorctl: the daemon cannot be reached at {path}: {exc}", file=sys.stderr)
        print("floorctl: is floorgated running? (systemctl status floorgate)", file=sys.stderr)
        return EX_UNAVAILABLE
    except ViewRefused as exc:
        print(f"floorctl: {exc.message}", file=sys.stderr)
        return EX_ERROR
    except KeyboardInterrupt:
        return EX_INTERRUPTED


def socket_path(explicit: Path | None, config: Path | None) -> Path:
    """Where the daemon's control socket is, by the operations.md rule."""
    if explicit is not None:
        return explicit
    if config is not None:
        return load_gateway_section(config).socket
    return DEFAULT_SOCKET


class Client:
    """The control protocol, client side: one connection per request, typed results.

    Raises DaemonUnreachableError (no daemon) or ViewRefused (an error reply, a refusal by
    the socket's file mode, or a reply this client cannot read).
    """

    def __init__(self, path: Path, *, timeout: float = ANSWER_TIMEOUT_S) -> None:
        """``timeout`` bounds the wait for a reply (not for ``follow``)."""
        self.path = path
        self.timeout = timeout

    def status(self) -> Status:
        """``floorctl status``."""
        return self._typed(Status, "status")

    def floor(self) -> FloorMap:
        """``floorctl floor``."""
        return self._typed(FloorMap, "floor")

    def rooms(self) -> RoomTable:
        """``floorctl rooms``."""
        return self._typed(RoomTable, "rooms")

    def room(self, room: str) -> RoomDetail:
        """``floorctl room ROOM``."""
        return self._typed(RoomDetail, "room", {"room": room})

    def devices(self) -> DeviceTable:
        """``floorctl devices``."""
        return self._typed(DeviceTable, "devices")

    def alarms(self) -> AlarmTable:
        """``floorctl alarms``."""
        return self._typed(AlarmTable, "alarms")

    def ack(self, alarm_id: str, by: str) -> AlarmUpdate:
        """``floorctl alarms ack ALARM_ID --by NAME``."""
        return self._typed(AlarmUpdate, "alarms.ack", {"alarm_id": alarm_id, "by": by})

    def resolve(self, alarm_id: str, by: str) -> AlarmUpdate:
        """``floorctl alarms resolve ALARM_ID --by NAME``."""
        return self._typed(AlarmUpdate, "alarms.resolve", {"alarm_id": alarm_id, "by": by})

    def events(self, since_seq: int | None, room: str | None, limit: int) -> EventLog:
        """``floorctl events``: events after ``since_seq`` (else the last ``limit``)."""
        return self._typed(EventLog, "events", _events_args(since_seq, room, limit))

    def follow(
        self,
        since_seq: int | None,
        room: str | None,
        limit: int,
        on_event: Callable[[EventRow], None],
    ) -> None:
        """Call ``on_event`` for each event, then each new one, until the daemon hangs up."""
        args = {**_events_args(since_seq, room, limit), "follow": True}

        def on_stream(kind: str, data: Any) -> None:
            if kind == "event":
                on_event(_parsed(EventRow, data))

        try:
            self.request("events", args, on_stream=on_stream, timeout=None)
        except DaemonUnreachableError as exc:
            raise DaemonUnreachableError(f"the event stream ended ({exc})") from exc
        raise DaemonUnreachableError("the event stream ended")

    def outbox(self) -> OutboxInfo:
        """``floorctl outbox``."""
        return self._typed(OutboxInfo, "outbox")

    def scan(self, bus: str, on_progress: Callable[[ScanProgress], None]) -> ScanResult:
        """``floorctl scan BUS``, reporting progress as it comes."""

        def on_stream(kind: str, data: Any) -> None:
            if kind == "progress":
                on_progress(_parsed(ScanProgress, data))

        result = self.request(
            "scan", {"bus": bus}, on_stream=on_stream, timeout=SCAN_IDLE_TIMEOUT_S
        )
        return _parsed(ScanResult, result)

    def request(
        self,
        cmd: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None,
        on_stream: Callable[[str, Any], None] | None = None,
    ) -> Any:
        """Send one request; the reply's result. Stream lines go to ``on_stream``.

        ``timeout`` bounds each wait for a line (None: wait for ever).
        """
        request = {"v": PROTOCOL_VERSION, "cmd": cmd, "args": args or {}}
        with self._connected(timeout) as sock:
            sock.sendall(json.dumps(request).encode() + b"\n")
            lines = sock.makefile("rb")
            while True:
                reply = self._read(lines)
                if "stream" in reply:
                    if on_stream is not None:
                        on_stream(str(reply["stream"]), reply.get("data"))
                    continue
                if reply.get("ok") is True:
                    return reply.get("result")
                error = reply.get("error")
                if not isinstance(error, dict):
                    raise ViewRefused("bad_reply", f"unreadable reply from the daemon: {reply!r}")
                raise ViewRefused(str(error.get("code")), str(error.get("message")))

    @contextmanager
    def _connected(self, timeout: float | None) -> Iterator[socket.socket]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CONNECT_TIMEOUT_S)
            try:
                _connect(sock, str(self.path))
            except PermissionError as exc:
                raise ViewRefused(
                    "forbidden",
                    f"permission denied on {self.path}: you are not in the daemon's control "
                    "group ('floorgate' unless the floor file says otherwise). Ask an "
                    "administrator to run 'usermod -aG floorgate USER', then log in again.",
                ) from exc
            except (OSError, TimeoutError) as exc:
                raise DaemonUnreachableError(exc.strerror or str(exc)) from exc
            sock.settimeout(timeout)
            yield sock

    @staticmethod
    def _read(lines: Any) -> dict[str, Any]:
        try:
            line = lines.readline()
        except TimeoutError as exc:
            raise DaemonUnreachableError("the daemon did not answer in time") from exc
        except OSError as exc:
            raise DaemonUnreachableError(exc.strerror or str(exc)) from exc
        if not line:
            raise DaemonUnreachableError("the daemon closed the connection without answering")
        try:
            reply = json.loads(line)
        except ValueError as exc:
            raise ViewRefused("bad_reply", "the daemon's reply is not JSON") from exc
        if not isinstance(reply, dict):
            raise ViewRefused("bad_reply", "the daemon's reply is not a JSON object")
        return reply

    def _typed(self, cls: type[_T], cmd: str, args: dict[str, Any] | None = None) -> _T:
        return _parsed(cls, self.request(cmd, args, timeout=self.timeout))


def build_parser() -> argparse.ArgumentParser:
    """floorctl's argument parser (also walked to write the shell completion)."""
    p = _Parser(
        prog="floorctl",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--socket", type=Path, metavar="PATH", help="the daemon's control socket")
    p.add_argument(
        "--config", type=Path, metavar="FLOOR.toml", help="floor file: use its gateway.socket"
    )
    p.add_argument("--json", action="store_true", help="print one JSON document (for scripts)")
    sub = p.add_subparsers(dest="command", metavar="SUBCOMMAND", parser_class=_Parser)
    for name, help_text, epilog in _SUBCOMMANDS:
        sp = sub.add_parser(
            name,
            help=help_text,
            description=help_text[0].upper() + help_text[1:] + ".",
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        if name == "room":
            sp.add_argument("room", metavar="ROOM", help="room id, as in the floor file")
        elif name == "alarms":
            actions = sp.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
            for action, text in (
                ("ack", "acknowledge an alarm: stops escalation (the call stays on)"),
                ("resolve", "resolve an alarm (not a bathroom call: reset it at the room)"),
            ):
                description = text[0].upper() + text[1:] + "."
                a = actions.add_parser(action, help=text, description=description)
                a.add_argument("alarm_id", metavar="ALARM_ID", help="from 'floorctl alarms'")
                a.add_argument("--by", required=True, metavar="NAME", help="your name (audited)")
                _json_flag(a)
        elif name == "events":
            sp.add_argument("--since-seq", type=_seq, metavar="N", help="only events after seq N")
            sp.add_argument("--room", metavar="ROOM", help="only this room's events")
            sp.add_argument(
                "--limit", type=_limit, default=50, metavar="N", help="at most N events (50)"
            )
            sp.add_argument("--follow", "-f", action="store_true", help="keep printing new events")
        elif name == "scan":
            sp.add_argument("bus", metavar="BUS", help="bus name, as in the floor file")
        elif name == "completion":
            sp.add_argument("shell", choices=["bash", "zsh"], help="your shell")
        if name != "completion":
            _json_flag(sp)
    return p


# -- running a subcommand -----------------------------------------------------------------


def _run(client: Client, args: argparse.Namespace, out: Console) -> int:
    result: Result
    match args.command:
        case "status":
            result = client.status()
        case "floor":
            result = client.floor()
        case "rooms":
            result = client.rooms()
        case "room":
            result = client.room(args.room)
        case "devices":
            result = client.devices()
        case "alarms" if args.action == "ack":
            result = client.ack(args.alarm_id, args.by)
        case "alarms" if args.action == "resolve":
            result = client.resolve(args.alarm_id, args.by)
        case "alarms":
            result = client.alarms()
        case "events" if args.follow:
            return _follow(client, args, out)
        case "events":
            result = client.events(args.since_seq, args.room, args.limit)
        case "outbox":
            result = client.outbox()
        case _:  # "scan"
            err = Console(stderr=True, markup=False, highlight=False)
            with render.scan_bar(err, args.bus) as update:
                result = client.scan(args.bus, update)
    if args.json:
        print(render.json_document(result))
    else:
        render.render(result, out)
    return EX_OK


def _follow(client: Client, args: argparse.Namespace, out: Console) -> int:
    def show(event: EventRow) -> None:
        if args.json:
            print(json.dumps(event.to_json(), sort_keys=True, ensure_ascii=False), flush=True)
        else:
            out.print(render.event_line(event))
            out.file.flush()

    try:
        client.follow(args.since_seq, args.room, args.limit, show)
    except KeyboardInterrupt:
        return EX_OK  # Ctrl-C is how one stops following
    return EX_OK  # pragma: no cover (follow returns only by raising)


def _parsed(cls: type[_T], doc: Any) -> _T:
    try:
        return cls.from_json(doc)
    except ValueError as exc:
        raise ViewRefused("bad_reply", f"unreadable reply from the daemon: {exc}") from exc


def _connect(sock: socket.socket, path: str) -> None:
    sock.connect(path)


def _events_args(since_seq: int | None, room: str | None, limit: int) -> dict[str, Any]:
    args: dict[str, Any] = {"limit": limit}
    if since_seq is not None:
        args["since_seq"] = since_seq
    if room is not None:
        args["room"] = room
    return args


class _Parser(argparse.ArgumentParser):
    """Usage errors name the subcommand's help, for a newcomer to find the way."""

    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"{self.prog}: error: {message}\n(see '{self.prog} --help')\n")


def _json_flag(p: argparse.ArgumentParser) -> None:
    # --json is accepted after the subcommand too (operations.md: SUBCOMMAND [--json])
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _seq(text: str) -> int:
    return _bounded(text, 0, None)


def _limit(text: str) -> int:
    return _bounded(text, 1, 1000)


def _bounded(text: str, low: int, high: int | None) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low or (high is not None and value > high):
        bounds = f"{low} or more" if high is None else f"between {low} and {high}"
        raise argparse.ArgumentTypeError(f"{value} is not {bounds}")
    return value


_DESCRIPTION = """\
Query and operate the floor's gateway (floorgated) from the floor.

Reading needs membership of the 'floorgate' group; acknowledging or resolving alarms and
scanning a bus need 'floorgate-admin' (or root). Changes are audited with your user name."""

_EPILOG = """\
examples:
  floorctl status                     is the gateway healthy? MQTT, outbox, buses
  floorctl floor                      every room at a glance (see its legend)
  floorctl room 1203                  everything about room 1203
  floorctl alarms                     open alarms, oldest first
  floorctl alarms ack A7F3 --by ana   acknowledge alarm A7F3 as Ana
  floorctl events --room 1203 -f      follow room 1203's events (Ctrl-C stops)
  floorctl scan rs485-a               which unit ids answer on bus rs485-a
  floorctl --json devices | jq .      any subcommand, as JSON for scripts
  floorctl completion bash > /etc/bash_completion.d/floorctl

exit codes: 0 success, 1 the daemon answered with an error (a refusal included),
2 usage error, 69 the daemon cannot be reached, 130 interrupted.

The socket is --socket PATH, else --config FLOOR.toml's gateway.socket, else
/run/floorgate/floorctl.sock."""

_SUBCOMMANDS: tuple[tuple[str, str, str | None], ...] = (
    ("status", "uptime, MQTT link, outbox, buses and open alarms", None),
    (
        "floor",
        "a map of the floor's rooms at a glance",
        "Each room is a cell: its id over six slots (occupancy, door, DND, MUR, call,\n"
        "devices). Letters: O occupied, . vacant, / door open, D do not disturb,\n"
        "M make up room, ! call active, a call acknowledged, X device offline.\n"
        "Colour repeats the most urgent state: red call, yellow acknowledged,\n"
        "magenta device offline, cyan door open, blue DND, green occupied.",
    ),
    ("rooms", "every room in a table: occupancy, door, service, call, climate", None),
    (
        "room",
        "everything about one room: state, devices and recent events",
        "example:\n  floorctl room 1203",
    ),
    ("devices", "device health: online, success rate, latency, last answer", None),
    (
        "alarms",
        "open alarms; 'ack' or 'resolve' one",
        "examples:\n  floorctl alarms\n  floorctl alarms ack A7F3 --by ana\n"
        "  floorctl alarms resolve A7F3 --by ana\n\n"
        "Acknowledging stops escalation; the call stays on until staff reset it at the room.\n"
        "A bathroom call cannot be resolved from here (nurse-call practice).",
    ),
    (
        "events",
        "recent events, or follow new ones",
        "examples:\n"
        "  floorctl events                    the last 50 events\n"
        "  floorctl events --since-seq 1040   events after seq 1040 (for scripts that poll)\n"
        "  floorctl events --room 1203 -f     room 1203's events as they happen\n"
        "  floorctl events -f --json          one JSON document per line",
    ),
    ("outbox", "events waiting for the broker, and what is kept", None),
    (
        "scan",
        "find which unit ids (1-247) answer on a bus",
        "The daemon probes between its normal work: emergency polling goes first, so a\n"
        "scan of an RS-485 line takes a while. It lists each answering unit, the\n"
        "register tables it has and the profiles it is consistent with.\n\n"
        "example:\n  floorctl scan rs485-a",
    ),
    (
        "completion",
        "print a shell completion script",
        "examples:\n  floorctl completion bash > /etc/bash_completion.d/floorctl\n"
        "  floorctl completion zsh > ~/.zfunc/_floorctl",
    ),
)


if __name__ == "__main__":
    sys.exit(main())
