"""The control socket server: protocol, permissions, audit, streaming, robustness."""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import pwd
import shutil
import socket
import stat
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from gateway.adapters.control import ControlServer, Limits
from gateway.adapters.control_access import Access, Peer, authorize, is_member
from gateway.model.errors import ControlSocketError
from gateway.model.views import (
    AlarmTable,
    DeviceTable,
    EventLog,
    FloorMap,
    OutboxInfo,
    RoomDetail,
    RoomTable,
    Status,
)
from tests.fake_floor import BED_ALARM, CALL_ALARM, FakeFloor, Served, own_group, serving
from tests.waiting import until

NO_SUCH_GROUP = "floorgate-test-no-such-group"


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    """A short directory path (sun_path is 108 bytes) that any user may traverse."""
    d = Path(tempfile.mkdtemp(prefix="fgctl-", dir="/tmp"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
async def served(sock_dir: Path) -> AsyncIterator[Served]:
    """A control server over the fake demo floor; the test user may do everything."""
    async with serving(sock_dir / "ctl.sock") as s:
        yield s


def request(cmd: str, **args: Any) -> bytes:
    """One request line."""
    return json.dumps({"v": 1, "cmd": cmd, "args": args}).encode() + b"\n"


async def exchange(path: Path, payload: bytes, *, half_close: bool = False) -> list[dict[str, Any]]:
    """Send ``payload``; every line the server sends until it closes, parsed."""
    reader, writer = await asyncio.open_unix_connection(str(path), limit=1 << 22)
    try:
        writer.write(payload)
        if half_close:
            writer.write_eof()
        await writer.drain()
        async with asyncio.timeout(5):
            data = await reader.read()
    finally:
        writer.close()
    return [json.loads(line) for line in data.splitlines()]


async def ask(path: Path, cmd: str, **args: Any) -> dict[str, Any]:
    """One request, its one reply."""
    (reply,) = await exchange(path, request(cmd, **args))
    return reply


# -- protocol -----------------------------------------------------------------------------


async def test_each_query_answers_its_typed_result(served: Served) -> None:
    path, floor = served.path, served.floor
    cases: list[tuple[str, dict[str, Any], Any, Any]] = [
        ("status", {}, Status, floor.status()),
        ("floor", {}, FloorMap, FloorMap(tuple(floor.floor_map()))),
        ("rooms", {}, RoomTable, RoomTable(tuple(floor.rooms()))),
        ("room", {"room": "1203"}, RoomDetail, await floor.room("1203")),
        ("devices", {}, DeviceTable, DeviceTable(tuple(floor.devices()))),
        ("alarms", {}, AlarmTable, AlarmTable(tuple(floor.alarms()))),
        ("events", {"limit": 3}, EventLog, EventLog(tuple(floor.events_log[-3:]))),
        ("outbox", {}, OutboxInfo, await floor.outbox()),
    ]
    for cmd, args, cls, expected in cases:
        reply = await ask(path, cmd, **args)
        assert reply["v"] == 1
        assert reply["ok"] is True, (cmd, reply)
        assert cls.from_json(reply["result"]) == expected, cmd
        assert reply["result"] == expected.to_json()


async def test_events_since_seq_and_room(served: Served) -> None:
    log = served.floor.events_log
    reply = await ask(served.path, "events", since_seq=log[2].seq, limit=2)
    assert [e["seq"] for e in reply["result"]["events"]] == [log[3].seq, log[4].seq]
    reply = await ask(served.path, "events", room="1203")
    assert {e["room"] for e in reply["result"]["events"]} == {"1203"}


async def test_socket_file_mode_group_and_removal(sock_dir: Path) -> None:
    path = sock_dir / "ctl.sock"
    group = "nogroup" if os.geteuid() == 0 else own_group()
    async with serving(path, control_group=group):
        st = os.lstat(path)
        assert stat.S_ISSOCK(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == grp.getgrnam(group).gr_gid
    assert not path.exists()


async def test_a_missing_group_is_said_once_at_info_with_what_to_do(sock_dir: Path) -> None:
    with structlog.testing.capture_logs() as logs:
        async with serving(
            sock_dir / "ctl.sock", control_group=NO_SUCH_GROUP, admin_group=NO_SUCH_GROUP
        ) as s:
            assert (await ask(s.path, "status"))["ok"] is True  # root, or the daemon's group
            await ask(s.path, "alarms")
    (said,) = [e for e in logs if "group" in e["event"]]
    assert said["event"] == "control_group_missing"
    assert said["log_level"] == "info"
    assert said["missing"] == [NO_SUCH_GROUP]
    assert "groupadd" in said["hint"]
    assert "control_group" in said["hint"]
    assert "can use floorctl" in said["hint"]
    with structlog.testing.capture_logs() as logs:
        async with serving(sock_dir / "ctl.sock"):  # both groups exist: nothing to say
            pass
    assert not [e for e in logs if "group" in e["event"]]


async def test_stale_socket_is_replaced(sock_dir: Path) -> None:
    path = sock_dir / "ctl.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a killed daemon leaves
    async with serving(path) as s:
        assert (await ask(s.path, "status"))["ok"] is True


async def test_refuses_to_start_beside_a_running_daemon(served: Served) -> None:
    second = ControlServer(FakeFloor(), served.path, audit=_no_audit)
    with pytest.raises(ControlSocketError, match="another daemon is listening"):
        await second.serve()
    assert (await ask(served.path, "status"))["ok"] is True  # the first one is untouched


async def test_refuses_to_replace_a_file_that_is_no_socket(sock_dir: Path) -> None:
    path = sock_dir / "ctl.sock"
    path.write_text("precious")
    with pytest.raises(ControlSocketError, match="not a socket"):
        await ControlServer(FakeFloor(), path, audit=_no_audit).serve()
    assert path.read_text() == "precious"


# -- robustness ---------------------------------------------------------------------------

GARBAGE: list[tuple[bytes, str]] = [
    (b"not json\n", "bad_request"),
    (b"\xff\xfe\x00\n", "bad_request"),
    (b"[1, 2]\n", "bad_request"),
    (b"[" * 10_000 + b"\n", "bad_request"),  # nesting deeper than the JSON parser's recursion
    (b'{"cmd": "status"}\n', "unsupported_version"),
    (b'{"v": 2, "cmd": "status"}\n', "unsupported_version"),
    (b'{"v": true, "cmd": "status"}\n', "unsupported_version"),
    (b'{"v": 1, "cmd": "reboot"}\n', "unknown_command"),
    (b'{"v": 1, "cmd": ["status"]}\n', "unknown_command"),
    (b'{"v": 1, "cmd": "status", "args": []}\n', "bad_request"),
    (b'{"v": 1, "cmd": "status", "args": {"x": 1}}\n', "bad_request"),
    (b'{"v": 1, "cmd": "room", "args": {}}\n', "bad_request"),
    (b'{"v": 1, "cmd": "room", "args": {"room": 1203}}\n', "bad_request"),
    (b'{"v": 1, "cmd": "room", "args": {"room": "9999"}}\n', "not_found"),
    (b'{"v": 1, "cmd": "events", "args": {"limit": true}}\n', "bad_request"),
    (b'{"v": 1, "cmd": "events", "args": {"limit": 1e400}}\n', "bad_request"),
    (b'{"v": 1, "cmd": "events", "args": {"since_seq": -1}}\n', "bad_request"),
    (b'{"v": 1, "cmd": "events", "args": {"limit": 1' + b"0" * 5000 + b"}}\n", "bad_request"),
    (
        b'{"v": 1, "cmd": "alarms.ack", "args": {"alarm_id": "x", "by": "a\\u0000b"}}\n',
        "bad_request",
    ),
    (b'{"v": 1, "cmd": "alarms.ack", "args": {"alarm_id": "nope", "by": "ana"}}\n', "not_found"),
    (b"x" * 100_000, "too_large"),
]


@pytest.mark.parametrize(("payload", "code"), GARBAGE)
async def test_garbage_gets_an_error_reply(served: Served, payload: bytes, code: str) -> None:
    (reply,) = await exchange(served.path, payload)
    assert reply["v"] == 1
    assert reply["ok"] is False
    assert reply["error"]["code"] == code
    assert reply["error"]["message"]
    assert (await ask(served.path, "status"))["ok"] is True


async def test_half_closed_and_silent_clients(served: Served) -> None:
    # A request without newline, then EOF (`printf ... | socat`): still answered.
    (reply,) = await exchange(served.path, b'{"v":1,"cmd":"status"}', half_close=True)
    assert reply["ok"] is True
    # Connected and gone without a word: nothing to answer, nothing breaks.
    assert await exchange(served.path, b"", half_close=True) == []
    assert (await ask(served.path, "status"))["ok"] is True


async def test_client_too_slow_to_ask_is_timed_out(sock_dir: Path) -> None:
    async with serving(sock_dir / "ctl.sock", limits=Limits(request_timeout_s=0.1)) as s:
        (reply,) = await exchange(s.path, b'{"v":1,"cmd":"sta')
        assert reply["error"]["code"] == "timeout"


async def test_connection_limit(sock_dir: Path) -> None:
    async with serving(sock_dir / "ctl.sock", limits=Limits(max_connections=2)) as s:
        idle = [await asyncio.open_unix_connection(str(s.path)) for _ in range(2)]
        await until(lambda: s.server.connections == 2)
        (reply,) = await exchange(s.path, request("status"))
        assert reply["error"]["code"] == "busy"
        for _, writer in idle:
            writer.close()
        await until(lambda: not s.server.connections)
        assert (await ask(s.path, "status"))["ok"] is True


class _BrokenFloor(FakeFloor):
    def status(self) -> Any:
        raise RuntimeError("engine bug")


async def test_a_failing_view_is_an_internal_error_not_a_crash(sock_dir: Path) -> None:
    async with serving(sock_dir / "ctl.sock", _BrokenFloor()) as s:
        reply = await ask(s.path, "status")
        assert reply["error"] == {
            "code": "internal",
            "message": "the daemon failed to answer; see its log",
        }
        assert (await ask(s.path, "floor"))["ok"] is True


# -- changes and audit --------------------------------------------------------------------


async def test_changing_requests_are_audited_with_uid_and_user(served: Served) -> None:
    me = pwd.getpwuid(os.geteuid()).pw_name
    reply = await ask(served.path, "alarms.ack", alarm_id=CALL_ALARM, by="ana")
    assert reply["result"]["action"] == "ack"
    assert reply["result"]["alarm"]["acknowledged_by"] == "ana"
    assert served.floor.actors == [("ack", CALL_ALARM, me)]
    refused = await ask(served.path, "alarms.resolve", alarm_id=CALL_ALARM, by="ana")
    assert refused["error"]["code"] == "conflict"
    resolved = await ask(served.path, "alarms.resolve", alarm_id=BED_ALARM, by="bo")
    assert resolved["result"]["alarm"]["state"] == "resolved"
    assert [(a, action, d["outcome"]) for a, action, d in served.audits] == [
        (me, "alarms.ack", "ok"),
        (me, "alarms.resolve", "conflict"),
        (me, "alarms.resolve", "ok"),
    ]
    detail = served.audits[0][2]
    assert detail["uid"] == os.geteuid()
    assert detail["user"] == me
    assert detail["pid"] == os.getpid()
    assert detail["args"] == {"alarm_id": CALL_ALARM, "by": "ana"}


async def test_a_failing_audit_does_not_lose_the_reply(sock_dir: Path) -> None:
    async with serving(sock_dir / "ctl.sock", audit_fails=True) as s:
        reply = await ask(s.path, "alarms.ack", alarm_id=CALL_ALARM, by="ana")
        assert reply["ok"] is True
        assert len(s.audits) == 1


async def test_read_requests_are_not_audited(served: Served) -> None:
    for cmd in ("status", "floor", "alarms", "events"):
        await ask(served.path, cmd)
    assert served.audits == []


# -- permissions --------------------------------------------------------------------------


def _peer(uid: int = 1001, user: str = "tech") -> Peer:
    return Peer(pid=1, uid=uid, gid=1001, user=user)


@pytest.mark.parametrize(
    ("groups", "read", "change"),
    [
        (set(), False, False),
        ({"floorgate"}, True, False),
        ({"floorgate-admin"}, True, True),
        ({"floorgate", "floorgate-admin"}, True, True),
    ],
)
def test_authorize_by_group(groups: set[str], read: bool, change: bool) -> None:
    def member(peer: Peer, group: str) -> bool:
        return group in groups

    for access, allowed in ((Access.READ, read), (Access.CHANGE, change)):
        refusal = authorize(
            _peer(), access, control_group="floorgate", admin_group="floorgate-admin", member=member
        )
        assert (refusal is None) == allowed
        if refusal is not None:
            assert "permission denied" in refusal
            assert "tech (uid 1001)" in refusal
            assert "floorgate-admin" in refusal


def test_root_may_do_everything() -> None:
    for access in Access:
        assert (
            authorize(
                _peer(0, "root"),
                access,
                control_group="a",
                admin_group="b",
                member=lambda p, g: False,
            )
            is None
        )


def test_membership_from_the_group_database() -> None:
    me = Peer(os.getpid(), os.geteuid(), os.getegid(), pwd.getpwuid(os.geteuid()).pw_name)
    assert is_member(me, own_group())
    assert not is_member(me, NO_SUCH_GROUP)
    # a configured supplementary membership counts although SO_PEERCRED does not carry it
    for entry in grp.getgrall():
        if entry.gr_mem:
            user = entry.gr_mem[0]
            try:
                uid = pwd.getpwnam(user).pw_uid
            except KeyError:
                continue
            assert is_member(Peer(1, uid, 65534, user), entry.gr_name)
            break
    refusal = authorize(
        Peer(1, 4242, 4242, "uid:4242"), Access.READ, control_group=NO_SUCH_GROUP, admin_group="x"
    )
    assert refusal is not None
    assert "no such group" in refusal


@pytest.mark.skipif(os.geteuid() == 0, reason="root may do everything")
async def test_permissions_of_the_calling_user(sock_dir: Path) -> None:
    async with serving(sock_dir / "a.sock", admin_group=NO_SUCH_GROUP) as s:
        assert (await ask(s.path, "status"))["ok"] is True
        reply = await ask(s.path, "alarms.ack", alarm_id=CALL_ALARM, by="ana")
        assert reply["error"]["code"] == "forbidden"
        assert NO_SUCH_GROUP in reply["error"]["message"]
        assert s.floor.actors == []
        assert s.audits[0][2]["outcome"] == "forbidden"
    async with serving(
        sock_dir / "b.sock", control_group=NO_SUCH_GROUP, admin_group=NO_SUCH_GROUP
    ) as s:
        assert (await ask(s.path, "status"))["error"]["code"] == "forbidden"


async def _as_nobody(path: Path, payload: bytes) -> tuple[int, list[dict[str, Any]], str]:
    """Send ``payload`` with socat running as nobody:nogroup (no supplementary groups)."""
    nobody = pwd.getpwnam("nobody")
    proc = await asyncio.create_subprocess_exec(
        "socat", "-t", "5", "-", f"UNIX-CONNECT:{path}",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=[],
    )  # fmt: skip
    try:
        async with asyncio.timeout(10):
            out, err = await proc.communicate(payload)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, [json.loads(x) for x in out.splitlines()], err.decode()


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("socat") is None, reason="needs root to act as nobody"
)
async def test_permissions_of_another_user(sock_dir: Path) -> None:
    nogroup = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    # nobody is in the control group but not in the admin group
    async with serving(sock_dir / "a.sock", control_group=nogroup, admin_group=NO_SUCH_GROUP) as s:
        _, (reply,), _ = await _as_nobody(s.path, request("status"))
        assert reply["ok"] is True
        _, (reply,), _ = await _as_nobody(
            s.path, request("alarms.ack", alarm_id=CALL_ALARM, by="x")
        )
        assert reply["error"]["code"] == "forbidden"
        assert "nobody" in reply["error"]["message"]
        assert NO_SUCH_GROUP in reply["error"]["message"]
        assert s.floor.actors == []
        ((actor, action, detail),) = s.audits
        assert (actor, action, detail["outcome"]) == ("nobody", "alarms.ack", "forbidden")
        assert detail["uid"] == pwd.getpwnam("nobody").pw_uid
    # outside the control group: the socket's file mode stops nobody before the daemon
    async with serving(sock_dir / "b.sock", control_group=NO_SUCH_GROUP) as s:
        code, replies, err = await _as_nobody(s.path, request("status"))
        assert code != 0
        assert replies == []
        assert "Permission denied" in err
        # and with the file opened up, the daemon itself refuses
        s.path.chmod(0o666)
        _, (reply,), _ = await _as_nobody(s.path, request("status"))
        assert reply["error"]["code"] == "forbidden"
        assert "neither group" in reply["error"]["message"]


# -- streaming ----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def following(path: Path, **args: Any) -> AsyncIterator[asyncio.StreamReader]:
    """An open ``events --follow`` stream."""
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(request("events", follow=True, **args))
    try:
        yield reader
    finally:
        writer.close()


async def next_line(reader: asyncio.StreamReader) -> dict[str, Any]:
    """The next stream line (bounded wait)."""
    async with asyncio.timeout(5):
        line: dict[str, Any] = json.loads(await reader.readline())
    return line


async def test_follow_streams_then_waits_for_new_events(served: Served) -> None:
    floor = served.floor
    async with following(served.path, limit=2) as a, following(served.path, room="1205") as b:
        assert [(await next_line(a))["data"]["seq"] for _ in range(2)] == [
            e.seq for e in floor.events_log[-2:]
        ]
        assert (await next_line(b))["data"]["type"] == "door.opened"
        new = floor.append("room.dnd", "1203", {"on": True})
        assert await next_line(a) == {"v": 1, "stream": "event", "data": new.to_json()}
        new = floor.append("door.closed", "1205", {})
        assert (await next_line(a))["data"]["seq"] == new.seq
        assert (await next_line(b))["data"]["seq"] == new.seq  # filtered: 1203's not seen
    await until(lambda: not served.server.connections)  # the server noticed both hang-ups


async def test_one_follower_leaving_does_not_stop_another(served: Served) -> None:
    since = served.floor.events_log[-1].seq
    async with following(served.path, since_seq=since) as stays:
        async with following(served.path, since_seq=since):
            await until(lambda: served.server.connections == 2)
        await until(lambda: served.server.connections == 1)
        new = served.floor.append("room.mur", "1202", {"on": False})
        assert (await next_line(stays))["data"]["seq"] == new.seq


async def test_follow_catches_up_in_batches(served: Served) -> None:
    since = served.floor.events_log[-1].seq
    async with following(served.path, since_seq=since, limit=2) as reader:
        await until(lambda: served.server.connections)
        added = [served.floor.append("room.keycard", "1201", {"on": i % 2 == 0}) for i in range(5)]
        assert [(await next_line(reader))["data"]["seq"] for _ in added] == [e.seq for e in added]


async def test_a_follower_that_stops_reading_is_dropped(sock_dir: Path) -> None:
    limits = Limits(write_timeout_s=0.1)
    async with serving(sock_dir / "ctl.sock", limits=limits) as s:
        since = s.floor.events_log[-1].seq
        async with following(s.path, since_seq=since):  # and never reads
            await until(lambda: s.server.connections)
            big = {"blob": "x" * 65536}

            def dropped() -> bool:
                s.floor.append("device.fault", "1201", big)
                return not s.server.connections

            await until(dropped, interval=0.02)
        assert (await ask(s.path, "status"))["ok"] is True


async def test_scan_streams_progress_then_its_result(served: Served) -> None:
    lines = await exchange(served.path, request("scan", bus="rs485-a"))
    progress, final = lines[:-1], lines[-1]
    assert [p["stream"] for p in progress] == ["progress"] * 247
    assert [p["data"]["done"] for p in progress] == list(range(1, 248))
    assert final["ok"] is True
    result = final["result"]
    assert result["bus"] == "rs485-a"
    assert result["probed"] == 247
    units = [h["unit"] for h in result["hits"]]
    assert units == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 40]
    assert result["hits"][-1] == {
        "unit": 40,
        "tables": ["coils", "holding"],
        "profiles": ["fg-floorpanel-1"],
        "configured": "floorpanel",
    }
    ((_, action, detail),) = served.audits
    assert (action, detail["outcome"], detail["found"]) == ("scan", "ok", 11)


async def test_scan_of_an_unknown_bus(served: Served) -> None:
    (reply,) = await exchange(served.path, request("scan", bus="nope"))
    assert reply["error"]["code"] == "not_found"
    assert "nope" in reply["error"]["message"]


async def test_scan_stops_when_the_client_hangs_up(served: Served) -> None:
    served.floor.scan_gate = asyncio.Event()
    reader, writer = await asyncio.open_unix_connection(str(served.path))
    writer.write(request("scan", bus="lan"))
    while (await next_line(reader))["data"]["done"] < 123:
        pass
    (reply,) = await exchange(served.path, request("scan", bus="lan"))
    assert reply["error"]["code"] == "busy"  # one scan of a bus at a time
    writer.close()
    await until(lambda: served.floor.scans_cancelled == 1)
    await until(lambda: len(served.audits) == 2)
    assert [d["outcome"] for _, _, d in served.audits] == ["busy", "cancelled"]
    served.floor.scan_gate.set()
    assert (await exchange(served.path, request("scan", bus="lan")))[-1]["ok"] is True


async def _no_audit(actor: str, action: str, detail: dict[str, object]) -> None:
    raise AssertionError("nothing to audit here")
