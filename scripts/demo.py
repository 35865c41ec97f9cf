"""The demo: a simulated floor, the gateway, and a short scenario a person can watch.

Everything runs unprivileged under a temporary run directory (FLOORGATE_RUN_DIR) with free
loopback ports, and everything started here is stopped here, by PID.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLOOR = REPO / "config" / "floors" / "demo.toml"
BIN = Path(sys.executable).parent


def say(text: str) -> None:
    print(f"\n\033[1m▶ {text}\033[0m" if sys.stdout.isatty() else f"\n> {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
    out = (proc.stdout + proc.stderr).strip()
    print("  $", " ".join(Path(a).name if a.startswith(str(BIN)) else a for a in args))
    print("\n".join(f"    {line}" for line in out.splitlines()))
    return out


def wait_until(cond: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise SystemExit(f"demo: timed out waiting for {what}")


def main() -> int:
    run_dir = Path(tempfile.mkdtemp(prefix="floorgate-demo-"))
    os.environ["FLOORGATE_RUN_DIR"] = str(run_dir)
    os.environ["FLOORGATE_MODBUS_PORT"] = str(free_port())
    os.environ["FLOORGATE_MQTT_PORT"] = str(free_port())
    key = run_dir / "command.key"
    key.write_text(secrets.token_hex(32) + "\n")
    key.chmod(0o600)
    procs: list[subprocess.Popen[str]] = []
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(run_dir / "notify.sock"))
    try:
        say("Check the floor file (6 rooms: RS-485, Modbus TCP, a call panel, a floor panel)")
        run(str(BIN / "floorgated"), "--config", str(FLOOR), "--check")

        say("Start the simulated floor (floorsim): ptys for the serial lines, a TCP listener")
        sim = subprocess.Popen(
            [str(BIN / "floorsim"), "--config", str(FLOOR)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        procs.append(sim)
        ctl = [str(BIN / "floorsim"), "ctl", "--config", str(FLOOR)]
        wait_until((run_dir / "floorsim.sock").exists, "floorsim")
        status = json.loads(subprocess.check_output([*ctl, "status"], text=True, timeout=30))
        for name, bus in status["buses"].items():
            where = bus.get("port") or bus.get("address")
            what = f"units {bus['units']}" if "units" in bus else f"rooms {bus['rooms']}"
            print(f"    {name:8} {bus['kind']:11} {where}  {what}")

        say("Start the gateway (floorgated); it tells us READY=1 like it tells systemd")
        env = dict(os.environ, NOTIFY_SOCKET=str(run_dir / "notify.sock"))
        gw = subprocess.Popen(
            [str(BIN / "floorgated"), "--config", str(FLOOR), "--log-format", "console"],
            env=env, text=True,
        )  # fmt: skip
        procs.append(gw)
        notify.settimeout(20)
        while "READY=1" not in notify.recv(4096).decode().split("\n"):
            pass
        print("    READY=1 received")

        say("A guest pulls the bathroom cord in room 1201 for 200 ms")
        run(*ctl, "press", "1201", "bath", "--ms", "200")
        run(*ctl, "get", "1201/rio", "bath_count")
        print("    (the room I/O counted the pull; the gateway's bus drivers are being built)")

        say("Present a key at room 1204's lock: no stay is checked in, so it is refused")
        run(*ctl, "token", "1204", "0x00c0ffee00c0ffee")

        say("Stop the gateway with SIGTERM: a clean stop within 5 s")
        gw.send_signal(signal.SIGTERM)
        print(f"    floorgated exited with {gw.wait(timeout=10)}")
        with sqlite3.connect(run_dir / "state" / "floorgate.db") as db:
            rows = db.execute("SELECT seq, type, ts FROM events ORDER BY seq").fetchall()
        say("Its outbox in SQLite (seq is gapless and survives restarts)")
        for seq, kind, ts in rows:
            print(f"    {seq:>4}  {ts}  {kind}")
        say("Done.")
        return 0
    finally:
        for proc in procs:  # only what this demo started, by PID
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        notify.close()
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
