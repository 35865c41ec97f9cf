"""The simulator's control socket: the in-process API (sim.FloorSim) as JSON lines.

Protocol, one JSON document per line, any number of requests per connection:

    -> {"cmd": "press", "args": {"room": "1201", "point": "bath", "ms": 200}}
    <- {"ok": true, "result": {"room": "1201", "point": "bath", "ts": ..., "mono_ns": ...}}
    <- {"ok": false, "error": "no room '9999' on floor bench-12"}

``cmd`` is one of ``COMMANDS`` (FloorSim method names); ``args`` are its keyword
arguments. The socket is a Unix socket, by default ``floorsim.sock`` next to the floor's
``gateway.socket`` (``default_socket``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import structlog

from floorsim.sim import FloorSim
from gateway.config.floor import GatewaySection

__all__ = [
    "COMMANDS",
    "ControlServer",
    "CtlError",
    "CtlUnreachableError",
    "call",
    "default_socket",
    "socket_is_live",
]

log = structlog.get_logger("floorsim.control")

SOCKET_NAME = "floorsim.sock"
MAX_LINE = 1 << 20
COMMANDS = frozenset(
    {
        "present_token",
        "press",
        "staff",
        "door",
        "deadbolt",
        "tamper",
        "keycard",
        "dnd",
        "mur",
        "window",
        "motion",
        "guest",
        "set_outside",
        "set_room_temp",
        "keypad",
        "sensor_fault",
        "set_input",
        "power_cycle",
        "set_fault",
        "clear_fault",
        "line_fault",
        "clear_line_fault",
        "panel_send",
        "panel_raw",
        "panel_garbage",
        "read",
        "get",
        "slots",
        "access_log",
        "coils",
        "registers",
        "lamps",
        "panel_frames",
        "panel_pending",
        "events",
        "status",
        "set_time_scale",
    }
)


class CtlError(Exception):
    """The simulator answered a control request with an error."""


class CtlUnreachableError(Exception):
    """No simulator answers on the control socket."""


def default_socket(gateway: GatewaySection) -> Path:
    """``floorsim.sock`` in the directory of the floor's gateway.socket."""
    return gateway.socket.parent / SOCKET_NAME


def socket_is_live(path: Path) -> bool:
    """True if something accepts connections on the Unix socket at ``path``."""
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


async def call(path: Path, cmd: str, args: dict[str, Any] | None = None) -> Any:
    """Send one request; its result, or CtlError / CtlUnreachableError."""
    try:
        reader, writer = await asyncio.open_unix_connection(str(path), limit=MAX_LINE)
    except OSError as exc:
        raise CtlUnreachableError(f"no floorsim on {path}: {exc.strerror or exc}") from exc
    try:
        writer.write(json.dumps({"cmd": cmd, "args": args or {}}).encode() + b"\n")
        await writer.drain()
        line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    if not line:
        raise CtlUnreachableError(f"floorsim on {path} closed the connection")
    reply = json.loads(line)
    if not reply.get("ok"):
        raise CtlError(str(reply.get("error")))
    return reply.get("result")


class ControlServer:
    """Serves FloorSim's API on a Unix socket (JSON lines)."""

    def __init__(self, sim: FloorSim, path: Path) -> None:
        self.sim = sim
        self.path = path
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen; RuntimeError if another floorsim already answers on the path."""
        if socket_is_live(self.path):
            raise RuntimeError(f"another floorsim answers on {self.path}")
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, str(self.path), limit=MAX_LINE)
        os.chmod(self.path, 0o660)
        log.info("ctl_listening", socket=str(self.path))

    async def stop(self) -> None:
        """Stop listening, drop connections, remove the socket file."""
        if self._server is None:
            return
        self._server.close()
        for task in list(self._conns):
            task.cancel()
        await asyncio.gather(*self._conns, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def handle(self, request: Any) -> dict[str, Any]:
        """One request (parsed JSON) -> its reply."""
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'a request is {"cmd": NAME, "args": {...}}'}
        cmd, args = request["cmd"], request.get("args") or {}
        if cmd not in COMMANDS:
            return {"ok": False, "error": f"unknown command {cmd!r}"}
        if not isinstance(args, dict):
            return {"ok": False, "error": "args must be an object"}
        try:
            result = getattr(self.sim, cmd)(**args)
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            return {"ok": False, "error": str(exc) or type(exc).__name__}
        return {"ok": True, "result": result}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        try:
            while line := await reader.readline():
                try:
                    reply = self.handle(json.loads(line))
                except json.JSONDecodeError as exc:
                    reply = {"ok": False, "error": f"not JSON: {exc}"}
                writer.write(json.dumps(reply, default=_jsonable).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError):
            pass  # a client that went away, or a line over MAX_LINE
        finally:
            self._conns.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, asyncio.CancelledError):
                await writer.wait_closed()


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
