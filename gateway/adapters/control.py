"""The control socket: floorctl's requests, answered from the floor's FloorView.

A Unix stream socket at ``gateway.socket``; the protocol (one request line, one reply
line, stream lines for ``events --follow`` and ``scan``) is described in gateway.model.views.

Who may ask what (gateway.adapters.control_access): read-only requests need the control
group (or the admin group), root or the daemon's own user; changing requests
(``alarms.ack``, ``alarms.resolve``, ``scan``) need the admin group, root or the daemon's
own user, and every one of them,
refused or not, is audited with the caller's uid and user name (``audit`` callback).

The socket file is ``0660``, group ``control_group``: a first fence before the daemon's
own check. It is bound owner-only (umask 077) and only then given its group and mode, so
at no moment can anyone outside the owner and that group connect.

Nothing a client sends can end the server: requests are capped in size and time, every
malformed request gets an error reply, and each connection is handled in its own task
whose failures are logged and contained.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import socket
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.adapters.control_access import Access, Peer, authorize
from gateway.config.floor import GatewaySection
from gateway.model.errors import ControlSocketError, ViewRefused
from gateway.model.views import (
    CHANGING_COMMANDS,
    COMMANDS,
    MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
    AlarmTable,
    AlarmUpdate,
    DeviceTable,
    EventLog,
    FloorMap,
    FloorView,
    RoomTable,
    ScanProgress,
    ScanResult,
)

__all__ = ["AuditFn", "ControlServer", "Limits"]

log = structlog.get_logger("gateway.control")

AuditFn = Callable[[str, str, dict[str, object]], Awaitable[None]]
"""``audit(actor, action, detail)``: persist who asked for a change (the lead's store)."""

MAX_EVENTS = 1000  # per events request (and per follow batch)
SCAN_UNITS = 247  # Modbus unit ids 1-247
LINGER_MAX_BYTES = 1 << 20  # input dropped after refusing an over-long request


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-connection bounds."""

    max_request_bytes: int = MAX_REQUEST_BYTES
    request_timeout_s: float = 5.0  # to send the request line
    answer_timeout_s: float = 30.0  # for the daemon to answer a non-streaming request
    write_timeout_s: float = 10.0  # for the client to take a reply or stream line
    max_connections: int = 32


class ControlServer:
    """Serves FloorView on the control socket until cancelled."""

    def __init__(
        self,
        view: FloorView,
        path: Path,
        *,
        audit: AuditFn,
        control_group: str = "floorgate",
        admin_group: str = "floorgate-admin",
        limits: Limits | None = None,
    ) -> None:
        """``audit`` records every changing request; it is awaited once per request."""
        self.view = view
        self.path = path
        self.audit = audit
        self.control_group = control_group
        self.admin_group = admin_group
        self.limits = limits or Limits()
        self.listening = asyncio.Event()  # set while the socket accepts connections
        self._conns: set[asyncio.Task[Any]] = set()
        self._scanning: set[str] = set()

    @property
    def connections(self) -> int:
        """How many client connections are open now."""
        return len(self._conns)

    @classmethod
    def for_gateway(cls, view: FloorView, gateway: GatewaySection, audit: AuditFn) -> ControlServer:
        """A server at the floor file's ``gateway.socket`` with its groups."""
        return cls(
            view,
            gateway.socket,
            audit=audit,
            control_group=gateway.control_group,
            admin_group=gateway.admin_group,
        )

    async def serve(self) -> None:
        """Listen until cancelled, then drop connections and remove the socket file.

        Raises ControlSocketError at once if another daemon answers on the path or the
        socket cannot be created.
        """
        sock = self._listen_socket()
        inode = os.lstat(self.path).st_ino
        server: asyncio.Server | None = None
        try:
            server = await asyncio.start_unix_server(
                self._accept, sock=sock, limit=self.limits.max_request_bytes
            )
            self.listening.set()
            log.info("control_listening", socket=str(self.path), group=self.control_group)
            await server.serve_forever()
        finally:
            self.listening.clear()
            if server is None:
                sock.close()
            else:
                server.close()
            self._remove_socket(inode)
            conns = list(self._conns)
            for task in conns:
                task.cancel()
            if conns:
                await asyncio.wait(conns)
            log.info("control_stopped", socket=str(self.path))

    # -- the socket file ----------------------------------------------------------------

    def _listen_socket(self) -> socket.socket:
        path = self.path
        _clear_stale(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Owner-only at bind time, so nobody can connect before group and mode are
            # set below (no bind-then-chmod window). umask is process-wide: 077 only ever
            # narrows what another thread might create at the same instant.
            old = os.umask(0o077)
            try:
                sock.bind(os.fspath(path))
            finally:
                os.umask(old)
            self._give_group(path)
            os.chmod(path, 0o660)
            sock.listen(64)
            sock.setblocking(False)
        except OSError as exc:
            sock.close()
            raise ControlSocketError(
                f"cannot create the control socket {path}: {exc.strerror or exc}"
            ) from exc
        return sock

    def _give_group(self, path: Path) -> None:
        """Give the socket file the control group; if there is none, say so once, at info.

        A missing group is how an unprivileged demo or test runs, so it is no warning:
        the socket then keeps the daemon's own group, and the line says what to do.
        """
        missing = [
            g for g in dict.fromkeys((self.control_group, self.admin_group)) if not _group_exists(g)
        ]
        if missing:
            log.info(
                "control_group_missing",
                group=self.control_group,
                missing=missing,
                hint=_missing_groups_hint(self.control_group, self.admin_group, missing),
            )
        if self.control_group in missing:
            return
        try:
            os.chown(path, -1, grp.getgrnam(self.control_group).gr_gid)
        except OSError as exc:
            log.warning("control_group_not_set", group=self.control_group, error=str(exc))

    def _remove_socket(self, inode: int) -> None:
        # Only our own file: a daemon started after us may own the path by now.
        with contextlib.suppress(FileNotFoundError):
            if os.lstat(self.path).st_ino == inode:
                self.path.unlink()

    # -- one connection -----------------------------------------------------------------

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Our own task per connection (not asyncio's callback task): serve() cancels and
        # awaits them all on the way out.
        task = asyncio.create_task(self._connection(reader, writer), name="control-connection")
        self._conns.add(task)
        task.add_done_callback(self._conns.discard)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._serve_one(reader, writer)
        except ConnectionError as exc:  # the client went away or stopped reading
            log.debug("control_client_gone", error=repr(exc))
            writer.transport.abort()
        except Exception:  # the edge: nothing a client does may end the server
            log.exception("control_connection_failed")
            writer.transport.abort()
        finally:
            writer.close()

    async def _serve_one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer.of(writer.get_extra_info("socket"))
        try:
            line = await self._read_request(reader)
            if line is None:
                return  # connected and left without asking
            self._check_capacity()
            cmd, raw_args = _parse(line)
        except ViewRefused as exc:
            log.info("control_request_refused", code=exc.code, uid=peer.uid, user=peer.user)
            await self._send(writer, _error(exc.code, exc.message))
            if exc.code in ("too_large", "timeout"):
                await _linger(reader, writer)
            return
        await self._request(peer, cmd, raw_args, reader, writer)

    def _check_capacity(self) -> None:
        if len(self._conns) > self.limits.max_connections:
            raise ViewRefused("busy", "too many floorctl connections; try again")

    async def _read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        limits = self.limits
        try:
            async with asyncio.timeout(limits.request_timeout_s):
                return await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:  # EOF: a final line without newline
            return exc.partial or None
        except asyncio.LimitOverrunError as exc:
            raise ViewRefused(
                "too_large", f"a request is at most {limits.max_request_bytes} bytes"
            ) from exc
        except TimeoutError as exc:
            raise ViewRefused(
                "timeout", f"no complete request line within {limits.request_timeout_s:g} s"
            ) from exc

    async def _request(
        self,
        peer: Peer,
        cmd: str,
        raw_args: dict[str, Any],
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        changing = cmd in CHANGING_COMMANDS
        args_detail: dict[str, object] = {}
        outcome, extra = "ok", {}
        reply: dict[str, Any]
        try:
            self._authorize(peer, Access.CHANGE if changing else Access.READ)
            args = _ARGS[cmd].model_validate(raw_args)
            args_detail = args.model_dump()
            result = await self._dispatch(peer, cmd, args, reader, writer)
            if result is None:
                return  # a stream that ended with the client
            extra = {"found": len(result["hits"])} if cmd == "scan" else {}
            reply = {"v": PROTOCOL_VERSION, "ok": True, "result": result}
        except ViewRefused as exc:
            outcome = exc.code
            log.info("control_request_refused", cmd=cmd, code=exc.code, user=peer.user)
            reply = _error(exc.code, exc.message)
        except ValidationError as exc:
            outcome = "bad_request"
            reply = _error("bad_request", _validation_message(cmd, exc))
        except ConnectionError:
            outcome = "client_gone"
            raise
        except asyncio.CancelledError:
            outcome = "interrupted"  # the daemon is stopping
            raise
        except Exception:  # a failure of the view: answer, log with the stack, carry on
            outcome = "internal"
            log.exception("control_request_failed", cmd=cmd)
            reply = _error("internal", "the daemon failed to answer; see its log")
        finally:
            if changing:
                detail = {"uid": peer.uid, "user": peer.user, "pid": peer.pid}
                detail |= {"args": args_detail, "outcome": outcome, **extra}
                await self._audit(peer, cmd, detail)
        log.debug("control_request", cmd=cmd, user=peer.user, outcome=outcome)
        await self._send(writer, reply)

    def _authorize(self, peer: Peer, access: Access) -> None:
        refusal = authorize(
            peer,
            access,
            control_group=self.control_group,
            admin_group=self.admin_group,
            owner_uid=os.geteuid(),
        )
        if refusal is not None:
            raise ViewRefused("forbidden", refusal)

    async def _audit(self, peer: Peer, cmd: str, detail: dict[str, object]) -> None:
        try:
            await self.audit(peer.user, cmd, detail)
        except Exception:  # the reply still goes out; the failure is the store's to report
            log.exception("control_audit_failed", cmd=cmd, user=peer.user)

    async def _dispatch(
        self,
        peer: Peer,
        cmd: str,
        args: Any,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> dict[str, Any] | None:
        view = self.view
        if cmd == "scan":
            return await self._scan(args, reader, writer)
        if cmd == "events" and args.follow:
            await self._follow(args, reader, writer)
            return None
        try:
            async with asyncio.timeout(self.limits.answer_timeout_s):
                match cmd:
                    case "status":
                        return view.status().to_json()
                    case "floor":
                        return FloorMap(tuple(view.floor_map())).to_json()
                    case "rooms":
                        return RoomTable(tuple(view.rooms())).to_json()
                    case "room":
                        return (await view.room(args.room)).to_json()
                    case "devices":
                        return DeviceTable(tuple(view.devices())).to_json()
                    case "alarms":
                        return AlarmTable(tuple(view.alarms())).to_json()
                    case "alarms.ack":
                        row = await view.ack_alarm(args.alarm_id, args.by, peer.user)
                        return AlarmUpdate("ack", row).to_json()
                    case "alarms.resolve":
                        row = await view.resolve_alarm(args.alarm_id, args.by, peer.user)
                        return AlarmUpdate("resolve", row).to_json()
                    case "events":
                        rows = await view.events(args.since_seq, args.room, args.limit)
                        return EventLog(tuple(rows)).to_json()
                    case "health":
                        return view.health().to_json()
                    case "config.show":
                        return view.config_show().to_json()
                    case "config.history":
                        return (await view.config_history(args.limit)).to_json()
                    case "energy":
                        return (await view.energy(args.room, args.days)).to_json()
                    case "locks":
                        return view.locks().to_json()
                    case "audit":
                        return (await view.audit_log(args.since, args.limit)).to_json()
                    case "audit.verify":
                        return (await view.audit_verify()).to_json()
                    case "lamps.test":
                        return (await view.lamp_test(args.room)).to_json()
                    case _:  # "outbox"
                        return (await view.outbox()).to_json()
        except KeyError as exc:
            raise ViewRefused("not_found", _not_found(cmd, args)) from exc
        except TimeoutError as exc:
            timeout = self.limits.answer_timeout_s
            raise ViewRefused("timeout", f"the daemon did not answer within {timeout:g} s") from exc

    async def _follow(
        self, args: _EventsArgs, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Stream events until the client hangs up (EOF) or stops reading."""
        gone = asyncio.ensure_future(_until_eof(reader))
        since = args.since_seq
        try:
            while not gone.done():
                pending = self.view.wait_events()
                # A shared future (one for every follower) must not be cancelled by us.
                waiter = (
                    asyncio.shield(pending)
                    if isinstance(pending, asyncio.Future)
                    else asyncio.ensure_future(pending)
                )
                try:
                    since = await self._send_new_events(writer, since, args)
                    await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
        finally:
            gone.cancel()

    async def _send_new_events(
        self, writer: asyncio.StreamWriter, since: int | None, args: _EventsArgs
    ) -> int:
        while True:
            batch = await self.view.events(since, args.room, args.limit)
            for row in batch:
                await self._send(
                    writer, {"v": PROTOCOL_VERSION, "stream": "event", "data": row.to_json()}
                )
            more = since is not None and len(batch) >= args.limit
            # since None asked for the last events: nothing matching before them, and if
            # there were none at all, every later event is new (seq > 0).
            since = batch[-1].seq if batch else (since or 0)
            if not more:
                return since

    async def _scan(
        self, args: _ScanArgs, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> dict[str, Any] | None:
        if args.bus in self._scanning:
            raise ViewRefused("busy", f"a scan of bus {args.bus!r} is already running")
        last = ScanProgress(0, SCAN_UNITS)

        def progress(p: ScanProgress) -> None:
            nonlocal last
            last = p
            if not writer.is_closing():
                writer.write(
                    _line({"v": PROTOCOL_VERSION, "stream": "progress", "data": p.to_json()})
                )

        self._scanning.add(args.bus)
        scan = asyncio.ensure_future(self.view.scan(args.bus, progress))
        gone = asyncio.ensure_future(_until_eof(reader))
        try:
            await asyncio.wait({scan, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not scan.done():
                scan.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await scan
            self._scanning.discard(args.bus)
        if scan.cancelled():
            raise ViewRefused("cancelled", "the client hung up: scan stopped")
        try:
            hits = scan.result()
        except KeyError as exc:
            raise ViewRefused("not_found", f"no bus {args.bus!r} on this floor") from exc
        return ScanResult(args.bus, last.done, tuple(hits)).to_json()

    async def _send(self, writer: asyncio.StreamWriter, doc: dict[str, Any]) -> None:
        """Write one line; ConnectionError if the client is gone or stopped reading."""
        writer.write(_line(doc))
        try:
            async with asyncio.timeout(self.limits.write_timeout_s):
                await writer.drain()
        except TimeoutError as exc:
            raise ConnectionAbortedError("the client stopped reading") from exc


# -- requests -----------------------------------------------------------------------------

_Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _NoArgs(_Args):
    pass


class _RoomArgs(_Args):
    room: _Name


class _AlarmArgs(_Args):
    alarm_id: Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
    by: _Name


class _EventsArgs(_Args):
    since_seq: Annotated[int, Field(ge=0)] | None = None
    room: _Name | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_EVENTS)] = 50
    follow: bool = False


class _ScanArgs(_Args):
    bus: _Name


class _HistoryArgs(_Args):
    limit: Annotated[int, Field(ge=1, le=1000)] = 20


class _EnergyArgs(_Args):
    room: _Name | None = None
    days: Annotated[int, Field(ge=1, le=400)] = 7


class _AuditArgs(_Args):
    since: (
        Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")] | None
    ) = None
    limit: Annotated[int, Field(ge=1, le=MAX_EVENTS)] = 50


_ARGS: dict[str, type[_Args]] = {
    "status": _NoArgs,
    "floor": _NoArgs,
    "rooms": _NoArgs,
    "room": _RoomArgs,
    "devices": _NoArgs,
    "alarms": _NoArgs,
    "alarms.ack": _AlarmArgs,
    "alarms.resolve": _AlarmArgs,
    "events": _EventsArgs,
    "outbox": _NoArgs,
    "scan": _ScanArgs,
    "health": _NoArgs,
    "config.show": _NoArgs,
    "config.history": _HistoryArgs,
    "energy": _EnergyArgs,
    "locks": _NoArgs,
    "audit": _AuditArgs,
    "audit.verify": _NoArgs,
    "lamps.test": _RoomArgs,
}
assert set(_ARGS) == COMMANDS


def _parse(line: bytes) -> tuple[str, dict[str, Any]]:
    """The command and raw arguments of a request line; ViewRefused if malformed."""
    try:
        doc = json.loads(line)
    except (ValueError, RecursionError) as exc:  # RecursionError: absurdly nested JSON
        raise ViewRefused("bad_request", "a request is one JSON object on one line") from exc
    if not isinstance(doc, dict):
        raise ViewRefused("bad_request", 'a request is {"v":1,"cmd":NAME,"args":{...}}')
    version = doc.get("v")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ViewRefused(
            "unsupported_version",
            f"this daemon speaks protocol v{PROTOCOL_VERSION}, not {version!r}: "
            "use the floorctl of the same release",
        )
    cmd, args = doc.get("cmd"), doc.get("args", {})
    if not isinstance(cmd, str) or cmd not in COMMANDS:
        known = ", ".join(sorted(COMMANDS))
        raise ViewRefused("unknown_command", f"unknown command {cmd!r} (known: {known})")
    if not isinstance(args, dict):
        raise ViewRefused("bad_request", "args must be a JSON object")
    return cmd, args


def _validation_message(cmd: str, exc: ValidationError) -> str:
    problems = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "args"
        problems.append(f"{where}: {err['msg']}")
    return f"bad arguments for {cmd!r}: " + "; ".join(problems)


def _not_found(cmd: str, args: Any) -> str:
    if cmd == "room" or (cmd == "energy" and args.room is not None):
        return f"no room {args.room!r} on this floor"
    if cmd.startswith("alarms."):
        return f"no open alarm {args.alarm_id!r} (floorctl alarms lists them)"
    return "not found"


def _error(code: str, message: str) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "ok": False, "error": {"code": code, "message": message}}


def _line(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then drop what the client still sends (bounded): closing with unread
    input would reset the connection before the client reads our reply."""
    writer.write_eof()
    dropped = 0
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(1.0):
            while dropped < LINGER_MAX_BYTES and (chunk := await reader.read(1 << 16)):
                dropped += len(chunk)


async def _until_eof(reader: asyncio.StreamReader) -> None:
    """Return when the client hangs up; anything it sends meanwhile is ignored."""
    while await reader.read(4096):
        pass


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _missing_groups_hint(control_group: str, admin_group: str, missing: list[str]) -> str:
    """What a missing control or admin group means for floorctl, and what to do about it."""
    try:
        own = grp.getgrgid(os.getegid()).gr_name
    except KeyError:
        own = f"gid {os.getegid()}"
    me = _user_name(os.geteuid())
    effects = []
    if control_group in missing:
        effects.append(f"only root, user {me!r} and group {own!r} can use floorctl")
    if admin_group in missing:
        effects.append(f"only root and user {me!r} can acknowledge, resolve or scan")
    names = " and ".join(repr(g) for g in missing)
    return (
        f"{'; '.join(effects)}. Create {names} (groupadd --system NAME; scripts/install does "
        "it) or name existing groups in the floor file's [gateway] control_group and "
        "admin_group"
    )


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _clear_stale(path: Path) -> None:
    """Remove a socket file nobody listens on; refuse if a daemon answers or it is no socket."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlSocketError(f"{path} exists and is not a socket: refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # A local connect answers at once (accepted or refused); the bound is for a full backlog.
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
    except ConnectionRefusedError:
        path.unlink(missing_ok=True)
        log.info("control_stale_socket_removed", socket=str(path))
        return
    except OSError as exc:
        raise ControlSocketError(f"cannot check {path}: {exc.strerror or exc}") from exc
    finally:
        probe.close()
    raise ControlSocketError(f"another daemon is listening on {path}: refusing to start")
