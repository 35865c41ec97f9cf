"""`floorsim` and `floorsim ctl` as processes, and the control socket's JSON-lines API."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from floorsim.control import ControlServer, CtlError, CtlUnreachableError, call
from floorsim.sim import FloorSim
from floorsim.wire import PortInUseError
from tests.conftest import FLOORS
from tests.test_floorsim_support import free_port, load, rtu_client, running
from tests.waiting import until

FLOORSIM = [sys.executable, "-m", "floorsim.main"]
BENCH_BUSES = ("tty-rs485-a", "tty-rs485-b", "tty-rs485-c", "tty-rs485-d", "tty-callpanel")


async def run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run a floorsim command to completion (bounded); (returncode, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        *FLOORSIM, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env
    )
    try:
        async with asyncio.timeout(30):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def env(run_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FLOORGATE_RUN_DIR": str(run_dir),
        "FLOORGATE_MODBUS_PORT": str(free_port()),
    }


@pytest.fixture
async def bench_sim(
    run_dir: Path, env: dict[str, str]
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`floorsim --config config/floors/bench.toml`, ready (socket and links up)."""
    proc = await asyncio.create_subprocess_exec(
        *FLOORSIM,
        "--config",
        str(FLOORS / "bench.toml"),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await until(
            lambda: (
                proc.returncode is not None
                or (
                    (run_dir / "floorsim.sock").exists()
                    and all((run_dir / b).is_symlink() for b in BENCH_BUSES)
                )
            ),
            timeout=20,
        )
        assert proc.returncode is None, "floorsim exited early"
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_bench_floor_end_to_end(
    bench_sim: asyncio.subprocess.Process, run_dir: Path, env: dict[str, str]
) -> None:
    rc, out, err = await run("ctl", "press", "1201", "bath", "--ms", "200", env=env)
    assert rc == 0, err
    pressed = json.loads(out)
    assert pressed["room"] == "1201"
    assert pressed["ts"] > 0
    assert pressed["mono_ns"] > 0
    async with rtu_client(run_dir / "tty-rs485-a") as rtu:
        r = await rtu.read_input_registers(0, count=3, device_id=3)  # room 1201's rio
        assert r.registers == [1, 0, 0]
    rc, out, _ = await run("ctl", "press", "1255", "bed", env=env)  # a call-panel room
    assert rc == 0
    assert json.loads(out)["body"].startswith("CALL,1255,BED,")
    # A second floorsim on the same floor is refused and leaves the first one alone.
    rc, _, err = await run("--config", str(FLOORS / "bench.toml"), env=env)
    assert rc == 1
    assert "another floorsim" in err
    assert all((run_dir / b).is_symlink() for b in BENCH_BUSES)

    assert bench_sim.returncode is None
    bench_sim.send_signal(signal.SIGTERM)
    async with asyncio.timeout(10):
        assert await bench_sim.wait() == 0
    leftovers = sorted(p.name for p in run_dir.iterdir())
    assert leftovers == ["command.key"], leftovers


async def test_ctl_exit_codes(run_dir: Path, env: dict[str, str]) -> None:
    rc, _, err = await run("ctl", "status", env=env)
    assert rc == 69
    assert "no floorsim" in err
    rc, _, _ = await run("ctl", "press", env=env)  # missing ROOM
    assert rc == 2
    async with running(load(FLOORS / "demo.toml")) as sim:
        server = ControlServer(sim, run_dir / "floorsim.sock")
        await server.start()
        try:
            rc, _, err = await run("ctl", "press", "9999", env=env)
            assert rc == 1
            assert "no room '9999'" in err
            rc, out, _ = await run(
                "ctl", "--config", str(FLOORS / "demo.toml"), "token", "1201", "0x10", env=env
            )
            assert rc == 0
            assert json.loads(out)["result"] == "denied"
        finally:
            await server.stop()
    assert not (run_dir / "floorsim.sock").exists()


async def test_refuses_a_port_path_that_is_not_ours(run_dir: Path, env: dict[str, str]) -> None:
    port = run_dir / "tty-rs485-a"
    port.write_text("not a tty")
    rc, _, err = await run("--config", str(FLOORS / "demo.toml"), env=env)
    assert rc == 1
    assert str(port) in err
    assert "not a symlink" in err
    assert port.read_text() == "not a tty"  # untouched
    assert not (run_dir / "tty-callpanel").exists()  # nothing half-started left behind
    assert not (run_dir / "floorsim.sock").exists()


async def test_port_links_stale_and_foreign(
    write_floor: Callable[..., Path], run_dir: Path
) -> None:
    config = load(write_floor())
    port = run_dir / "tty-rs485-a"
    os.symlink("/dev/pts/4242", port)  # left by a floorsim that was killed
    async with running(config) as sim:
        assert os.readlink(port) == sim.lines["rs485-a"].link.tty_name
    assert not os.path.lexists(port)
    os.symlink("/dev/null", port)
    with pytest.raises(PortInUseError, match="not a floorsim pty link"):
        await FloorSim(config).start()
    assert os.readlink(port) == "/dev/null"
    assert sorted(p.name for p in run_dir.iterdir()) == ["command.key", "floor.toml", "tty-rs485-a"]


async def test_every_ctl_command_over_the_socket(
    write_floor: Callable[..., Path], run_dir: Path
) -> None:
    sock = run_dir / "floorsim.sock"
    async with running(load(write_floor())) as sim:
        server = ControlServer(sim, sock)
        await server.start()
        try:

            async def ctl(cmd: str, **args: Any) -> Any:
                return await call(sock, cmd, args)

            assert (await ctl("present_token", room="1201", token=5))["result"] == "denied"
            for cmd in ("door", "window"):
                await ctl(cmd, room="1201", is_open=True)
            for cmd in ("deadbolt", "tamper", "keycard", "dnd", "mur", "sensor_fault"):
                assert "mono_ns" in await ctl(cmd, room="1201", on=True)
            read = await ctl("read", target="1201/rio")
            assert (read["keycard"], read["dnd"], read["mur"], read["window_open"]) == (True,) * 4
            lock = await ctl("read", target="1201/lock")
            assert (lock["door_open"], lock["deadbolt"], lock["tamper"]) == (True,) * 3
            await ctl("set_room_temp", room="1202", celsius=24.5)
            assert await ctl("get", target="1202/tstat", point="room_temp") == 24.5
            assert (await ctl("keypad", room="1202", celsius=30))["setpoint"] == 26.0
            await ctl("set_input", target="rs485-a:5", point="battery", value=12)
            assert await ctl("registers", target="1202/lock", table="input", address=0) == [12]
            await ctl("press", room="1202", point="bed", ms=0)
            await ctl("staff", room="1202", ms=0)
            assert await ctl("registers", target="1202/rio", table="input", address=0, count=3) == [
                0,
                1,
                1,
            ]
            await ctl("power_cycle", target="floorpanel")
            assert await ctl("coils", target="floorpanel") == {
                "floor_sounder": False,
                "floor_call_lamp": False,
                "trouble_lamp": False,
                "trouble_buzzer": False,
            }
            await ctl("motion", room="1202")
            assert await ctl("registers", target="1202/rio", table="input", address=3) == [1]
            assert (await ctl("read", target="1202/rio"))["motion"] is True
            assert (await ctl("guest", room="1203", state="in"))["state"] == "in"
            assert (await ctl("read", target="1203/lock"))["door_open"] is True
            assert (await ctl("guest", room="1203", state="sleep"))["state"] == "sleep"
            with pytest.raises(CtlError, match="guest state"):
                await ctl("guest", room="1203", state="dancing")
            assert (await ctl("set_outside", celsius=12.5))["outside_c"] == 12.5
            assert len(await ctl("slots", room="1201")) == 32
            assert (await ctl("access_log", room="1201"))["log_head"] == 1
            faults = await ctl("set_fault", target="1201/tstat", kind="slow", value=20)
            assert faults["faults"] == {"rs485-a:1": {"slow": 20}}
            assert (await ctl("clear_fault", target="1201/tstat"))["faults"] == {}
            await ctl("set_fault", target="panel", kind="silent")
            await ctl("clear_fault", target="panel")
            seq = (await ctl("line_fault", room="1205", point="bath", code="SHORT"))["seq"]
            assert [p["seq"] for p in await ctl("panel_pending")] == [seq]
            await ctl("clear_line_fault", room="1205", point="bath")
            await ctl("panel_send", body="HB,1")
            await ctl("panel_raw", data="0d0a")
            await ctl("panel_garbage", count=2)
            assert await ctl("lamps") == {}
            assert await ctl("panel_frames") == []
            assert (await ctl("set_time_scale", scale=10))["time_scale"] == 10
            status = await ctl("status")
            assert status["time_scale"] == 10
            assert status["buses"]["lan"]["kind"] == "modbus-tcp"
            kinds = {e["kind"] for e in await ctl("events")}
            assert {"token", "press", "staff", "input", "fault_set", "keypad"} <= kinds
            assert [e["room"] for e in await ctl("events", kind="press")] == ["1202"]
            with pytest.raises(CtlError, match="exception 02"):
                await ctl("registers", target="1201/lock", table="input", address=2)
            with pytest.raises(CtlError, match="unknown command"):
                await ctl("stop")
            with pytest.raises(CtlError, match="no device"):
                await ctl("read", target="9999/lock")
            with pytest.raises(CtlError, match="unexpected keyword"):
                await ctl("press", room="1201", colour="red")
            # A second server on a live socket is refused.
            with pytest.raises(RuntimeError, match="another floorsim"):
                await ControlServer(sim, sock).start()
        finally:
            await server.stop()
    with pytest.raises(CtlUnreachableError):
        await call(sock, "status")
