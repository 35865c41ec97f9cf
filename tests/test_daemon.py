"""The daemon process end to end: start, database, sd_notify, SIGTERM, SIGKILL + restart."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import FLOORS

pytestmark = pytest.mark.integration


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.received: list[str] = []

    def wait_for(self, line: str, timeout: float = 15.0) -> float:
        """Wait until a datagram holding `line` arrives; return its arrival time."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.received.append(data)
            if line in data.split("\n"):
                return time.monotonic()
        raise AssertionError(f"{line} not received in {timeout} s; got {self.received}")

    def drain(self) -> list[str]:
        """Everything received since the last call, without waiting."""
        self.sock.settimeout(0)
        out = []
        try:
            while True:
                out.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            pass
        return out

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifySocket]:
    n = NotifySocket(tmp_path / "notify.sock")
    yield n
    n.close()


@pytest.fixture
def start_daemon(
    run_dir: Path, notify: NotifySocket
) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(watchdog_usec: int = 400_000) -> subprocess.Popen[str]:
        env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC=str(watchdog_usec))
        env.pop("WATCHDOG_PID", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.daemon", "--config", str(FLOORS / "demo.toml")],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        procs.append(proc)
        return proc

    yield start
    for proc in procs:  # only the processes this test started, by their PID
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=10)


def _events(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT seq, type FROM events ORDER BY seq"))


def test_start_ready_watchdog_and_clean_stop(
    start_daemon: Callable[..., subprocess.Popen[str]], notify: NotifySocket, run_dir: Path
) -> None:
    proc = start_daemon()
    notify.wait_for("READY=1")
    assert (run_dir / "state" / "floorgate.db").exists()
    notify.wait_for("WATCHDOG=1")
    notify.wait_for("WATCHDOG=1")  # keeps pinging while healthy
    proc.send_signal(signal.SIGTERM)
    notify.wait_for("STOPPING=1")
    out, _ = proc.communicate(timeout=30)
    # 0, not 1: the stop ended every task within the daemon's own 5 s bound.
    assert proc.returncode == 0, out
    assert '"event": "shutdown_timeout"' not in out
    lines = out.splitlines()
    assert any('"event": "gateway_started"' in ln for ln in lines), out
    # No device answers here (no floorsim): only their device.offline events come between.
    events = _lifecycle(_events(run_dir / "state" / "floorgate.db"))
    assert events == [(1, "gateway.started"), (events[-1][0], "gateway.stopping")]


def test_sigkill_then_restart_on_same_database(
    start_daemon: Callable[..., subprocess.Popen[str]], notify: NotifySocket, run_dir: Path
) -> None:
    first = start_daemon()
    notify.wait_for("READY=1")
    first.kill()
    first.communicate(timeout=10)
    second = start_daemon()
    notify.wait_for("READY=1")
    second.send_signal(signal.SIGTERM)
    out, _ = second.communicate(timeout=10)
    assert second.returncode == 0, out
    # seq continues gapless across the kill: the killed run never wrote gateway.stopping.
    events = _events(run_dir / "state" / "floorgate.db")
    assert [seq for seq, _ in events] == list(range(1, len(events) + 1))
    assert [t for _, t in _lifecycle(events)] == [
        "gateway.started",
        "gateway.started",
        "gateway.stopping",
    ]


def test_stopped_process_stops_watchdog_pings(
    start_daemon: Callable[..., subprocess.Popen[str]], notify: NotifySocket
) -> None:
    proc = start_daemon(watchdog_usec=200_000)
    notify.wait_for("READY=1")
    notify.wait_for("WATCHDOG=1")
    proc.send_signal(signal.SIGSTOP)  # the whole process frozen: no loop, no pings
    try:
        _wait_stopped(proc.pid)  # kill() returns before the process is frozen
        notify.drain()
        notify.sock.settimeout(0.6)  # six ping intervals
        with pytest.raises(TimeoutError):
            notify.sock.recv(4096)
    finally:
        proc.send_signal(signal.SIGCONT)
    notify.wait_for("WATCHDOG=1")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=10)
    assert proc.returncode == 0


def _wait_stopped(pid: int, timeout: float = 15.0) -> None:
    """Wait (bounded) until the process is in the stopped state (``T`` in /proc)."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "T":
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} not stopped in {timeout} s")
        time.sleep(0.001)


def _lifecycle(events: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return [(seq, t) for seq, t in events if t.startswith("gateway.")]
