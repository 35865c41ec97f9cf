"""The control protocol, client side: one connection per request, typed results.

The wire format is gateway.model.views's: one request line, one reply line, and stream
lines before the reply for ``scan`` and ``events`` with ``follow``. Every method raises
DaemonUnreachableError when no daemon answers on the socket and ViewRefused when the
daemon answers with an error (or with a reply this client cannot read); SocketRefused, a
ViewRefused, when the socket's file mode refuses the user.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Protocol, Self, TypeVar

from gateway.model.errors import DaemonUnreachableError, ViewRefused
from gateway.model.views import (
    PROTOCOL_VERSION,
    AlarmTable,
    AlarmUpdate,
    AuditCheck,
    AuditLog,
    ConfigHistory,
    ConfigView,
    DeviceTable,
    EnergyLedger,
    EventLog,
    EventRow,
    FloorMap,
    HealthView,
    LampTest,
    LockTable,
    OutboxInfo,
    RoomDetail,
    RoomTable,
    ScanProgress,
    ScanResult,
    Status,
)

__all__ = ["Client", "SocketRefused", "StreamEnded"]

CONNECT_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 40.0  # the daemon gives up on a query after 30 s and says so
SCAN_IDLE_TIMEOUT_S = 120.0  # longest silence between two scan progress lines


class SocketRefused(ViewRefused):
    """The socket's file mode refused the user (the kernel, before the daemon saw us)."""


class StreamEnded(DaemonUnreachableError):
    """A stream the daemon had accepted ended: the daemon stopped or restarted."""


class _FromJson(Protocol):
    @classmethod
    def from_json(cls, doc: object) -> Self: ...


_T = TypeVar("_T", bound=_FromJson)


class Client:
    """floorctl's requests to the daemon at ``path``, each answered by a typed result."""

    def __init__(self, path: Path, *, timeout: float = ANSWER_TIMEOUT_S) -> None:
        """``timeout`` bounds the wait for a reply (not for a followed event stream)."""
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
        """``floorctl alarms``: the open alarms."""
        return self._typed(AlarmTable, "alarms")

    def ack(self, alarm_id: str, by: str) -> AlarmUpdate:
        """Acknowledge the open alarm whose full id is ``alarm_id``."""
        return self._typed(AlarmUpdate, "alarms.ack", {"alarm_id": alarm_id, "by": by})

    def resolve(self, alarm_id: str, by: str) -> AlarmUpdate:
        """Resolve the open alarm whose full id is ``alarm_id``."""
        return self._typed(AlarmUpdate, "alarms.resolve", {"alarm_id": alarm_id, "by": by})

    def events(self, since_seq: int | None, room: str | None, limit: int) -> EventLog:
        """Events after ``since_seq`` (else the last ``limit``), only ``room``'s if given."""
        return self._typed(EventLog, "events", _events_args(since_seq, room, limit))

    @contextmanager
    def event_stream(
        self, since_seq: int | None, room: str | None, limit: int
    ) -> Iterator[Iterator[EventRow]]:
        """Follow the events: connected on entry, yields the events as they come.

        The events are those ``events`` would give, then each new one. Iterating raises
        StreamEnded when the daemon hangs up; entering raises DaemonUnreachableError if
        no daemon answers.
        """
        args = {**_events_args(since_seq, room, limit), "follow": True}
        with self._connected(None) as sock:
            _send(sock, "events", args)
            yield self._streamed_events(sock.makefile("rb"))

    def locks(self) -> LockTable:
        """``locks``."""
        return self._typed(LockTable, "locks")

    def audit(self, since: str | None, limit: int) -> AuditLog:
        """``audit``: the last ``limit`` rows, at or after ``since`` if given."""
        args: dict[str, Any] = {"limit": limit}
        if since is not None:
            args["since"] = since
        return self._typed(AuditLog, "audit", args)

    def audit_verify(self) -> AuditCheck:
        """``audit verify``: the whole chain checked."""
        return self._typed(AuditCheck, "audit.verify")

    def lamp_test(self, room: str) -> LampTest:
        """``lamps test ROOM``."""
        return self._typed(LampTest, "lamps.test", {"room": room})

    def outbox(self) -> OutboxInfo:
        """``floorctl outbox``."""
        return self._typed(OutboxInfo, "outbox")

    def health(self) -> HealthView:
        """``floorctl health``."""
        return self._typed(HealthView, "health")

    def config_show(self) -> ConfigView:
        """``floorctl config show``."""
        return self._typed(ConfigView, "config.show")

    def config_history(self, limit: int) -> ConfigHistory:
        """``floorctl config history``."""
        return self._typed(ConfigHistory, "config.history", {"limit": limit})

    def energy(self, room: str | None, days: int) -> EnergyLedger:
        """``floorctl energy``."""
        args: dict[str, Any] = {"days": days}
        if room is not None:
            args["room"] = room
        return self._typed(EnergyLedger, "energy", args)

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
        with self._connected(timeout) as sock:
            _send(sock, cmd, args or {})
            lines = sock.makefile("rb")
            while True:
                reply = _read(lines)
                if "stream" in reply:
                    if on_stream is not None:
                        on_stream(str(reply["stream"]), reply.get("data"))
                    continue
                return _result(reply)

    def _streamed_events(self, lines: BinaryIO) -> Iterator[EventRow]:
        while True:
            try:
                line = lines.readline()
            except OSError as exc:
                raise StreamEnded(exc.strerror or str(exc)) from exc
            if not line:
                raise StreamEnded("it closed the event stream")
            reply = _decoded(line)
            if reply.get("stream") == "event":
                yield _parsed(EventRow, reply.get("data"))
            elif "stream" not in reply:
                _result(reply)  # an error reply raises; a result ends a stream too
                raise StreamEnded("it ended the event stream")

    @contextmanager
    def _connected(self, timeout: float | None) -> Iterator[socket.socket]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(CONNECT_TIMEOUT_S)
            try:
                _connect(sock, str(self.path))
            except PermissionError as exc:
                raise SocketRefused(
                    "forbidden",
                    f"permission denied on {self.path}: you are not in the daemon's control "
                    "group ('floorgate' unless the floor file says otherwise). Ask an "
                    "administrator to run 'usermod -aG floorgate USER', then log in again.",
                ) from exc
            except (OSError, TimeoutError) as exc:
                raise DaemonUnreachableError(exc.strerror or str(exc)) from exc
            sock.settimeout(timeout)
            yield sock

    def _typed(self, cls: type[_T], cmd: str, args: dict[str, Any] | None = None) -> _T:
        return _parsed(cls, self.request(cmd, args, timeout=self.timeout))


def _connect(sock: socket.socket, path: str) -> None:
    sock.connect(path)


def _send(sock: socket.socket, cmd: str, args: dict[str, Any]) -> None:
    request = {"v": PROTOCOL_VERSION, "cmd": cmd, "args": args}
    try:
        sock.sendall(json.dumps(request).encode() + b"\n")
    except OSError as exc:
        raise DaemonUnreachableError(exc.strerror or str(exc)) from exc


def _read(lines: BinaryIO) -> dict[str, Any]:
    try:
        line = lines.readline()
    except TimeoutError as exc:
        raise DaemonUnreachableError("the daemon did not answer in time") from exc
    except OSError as exc:
        raise DaemonUnreachableError(exc.strerror or str(exc)) from exc
    if not line:
        raise DaemonUnreachableError("the daemon closed the connection without answering")
    return _decoded(line)


def _decoded(line: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(line)
    except ValueError as exc:
        raise ViewRefused("bad_reply", "the daemon's reply is not JSON") from exc
    if not isinstance(reply, dict):
        raise ViewRefused("bad_reply", "the daemon's reply is not a JSON object")
    return reply


def _result(reply: dict[str, Any]) -> Any:
    if reply.get("ok") is True:
        return reply.get("result")
    error = reply.get("error")
    if not isinstance(error, dict):
        raise ViewRefused("bad_reply", f"unreadable reply from the daemon: {reply!r}")
    raise ViewRefused(str(error.get("code")), str(error.get("message")))


def _parsed(cls: type[_T], doc: Any) -> _T:
    try:
        return cls.from_json(doc)
    except ValueError as exc:
        raise ViewRefused("bad_reply", f"unreadable reply from the daemon: {exc}") from exc


def _events_args(since_seq: int | None, room: str | None, limit: int) -> dict[str, Any]:
    args: dict[str, Any] = {"limit": limit}
    if since_seq is not None:
        args["since_seq"] = since_seq
    if room is not None:
        args["room"] = room
    return args
