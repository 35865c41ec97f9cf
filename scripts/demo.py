"""The demo: a simulated floor, a broker, the gateway and a scripted central system.

The central system (this script) talks to the gateway over MQTT only, signing its commands
with the floor's key, and narrates what comes back: a check-in with a guest preference, a
key opening the door and the welcome scene, a bathroom pull cord and its escalation,
acknowledgement, reset in the room, checkout and the key refused, then the broker stopped
and restarted with nothing lost. It shows ``floorctl floor`` along the way.

Everything runs unprivileged under a temporary run directory with free loopback ports:
Mosquitto when it is installed, else an embedded pure-Python broker (amqtt) run by this
script (the gateway itself never embeds a broker). Everything started here is stopped
here, by PID, and the run directory is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiomqtt
import tomli_w

REPO = Path(__file__).resolve().parent.parent
FLOOR = REPO / "config" / "floors" / "demo.toml"
BIN = Path(sys.executable).parent
ROOT = "hotel/demo/demo-12"
TOKEN = "5eed0f1c0ffee042"  # noqa: S105 (the demo guest's key card)
WAIT_S = 30.0
TTY = sys.stdout.isatty()


def say(text: str) -> None:
    """A step of the story."""
    print(f"\n\033[1m▶ {text}\033[0m" if TTY else f"\n> {text}", flush=True)


def note(text: str) -> None:
    """A detail of the story."""
    print(f"    {text}", flush=True)


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(*args: str, show: bool = True) -> str:
    """Run a command (floorctl, floorsim ctl) and show it with its output."""
    proc = subprocess.run(args, capture_output=True, text=True, check=False, timeout=30)
    out = (proc.stdout + proc.stderr).rstrip()
    if show:
        print("  $", " ".join(Path(a).name if a.startswith(str(BIN)) else a for a in args))
        print("\n".join(f"    {line}" for line in out.splitlines()), flush=True)
    return out


class Broker:
    """Mosquitto on a free port when installed, else an embedded amqtt broker."""

    def __init__(self, run_dir: Path, port: int) -> None:
        self.run_dir = run_dir
        self.port = port
        self.mosquitto = shutil.which("mosquitto") or (
            "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
        )
        if os.environ.get("FLOORGATE_DEMO_BROKER") == "embedded":
            self.mosquitto = None  # try the fallback on a machine that has Mosquitto
        self.proc: subprocess.Popen[bytes] | None = None
        self.amqtt: Any = None

    @property
    def name(self) -> str:
        """What runs the broker."""
        return "Mosquitto" if self.mosquitto else "an embedded amqtt broker"

    async def start(self) -> None:
        """Start it and wait until it accepts connections."""
        if self.mosquitto:
            conf = self.run_dir / "mosquitto.conf"
            # Started as root, Mosquitto switches to its own user and then cannot save its
            # persistence file in our private run directory (LIBRARY-NOTES.md): sessions of
            # offline subscribers would be lost at the outage. Stay root in that case.
            user = "user root\n" if os.geteuid() == 0 else ""
            conf.write_text(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n{user}"
                f"persistence true\npersistence_location {self.run_dir}/\n"
            )
            # A demo script: starting the broker blocks the loop for a moment, harmlessly.
            self.proc = subprocess.Popen(  # noqa: ASYNC220
                [self.mosquitto, "-c", str(conf)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        else:
            from amqtt.broker import Broker as AmqttBroker  # noqa: PLC0415 (optional)

            for noisy in ("amqtt", "transitions"):  # its own chatter would drown the story
                logging.getLogger(noisy).setLevel(logging.CRITICAL)

            config = {
                "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
                "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {
                    "allow_anonymous": True}},
            }  # fmt: skip
            self.amqtt = AmqttBroker(config)
            await self.amqtt.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            await asyncio.sleep(0.05)
        raise SystemExit("demo: the broker did not start")

    async def stop(self) -> None:
        """Stop it (by PID for Mosquitto)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=10)
        if self.amqtt is not None:
            await self.amqtt.shutdown()
            self.amqtt = None


class Central:
    """The hotel's central system, as far as this floor sees it: MQTT only."""

    def __init__(self, port: int, key: bytes) -> None:
        self.port = port
        self.key = key
        self.messages: list[tuple[str, bytes, bool]] = []
        self.connected = asyncio.Event()
        self.quiet = False

    async def run(self) -> None:
        """Stay subscribed to the floor (persistent session), reconnecting while away."""
        while True:
            try:
                async with aiomqtt.Client(
                    "127.0.0.1", self.port, identifier="demo-central", clean_session=False
                ) as client:
                    self.client = client
                    await client.subscribe(f"{ROOT}/#", qos=1)
                    self.connected.set()
                    async for m in client.messages:
                        payload = bytes(m.payload) if isinstance(m.payload, bytes) else b""
                        self.messages.append((m.topic.value, payload, m.retain))
                        self._narrate(m.topic.value, payload, m.retain)
            except aiomqtt.MqttError:
                self.connected.clear()
                await asyncio.sleep(0.2)

    def _narrate(self, topic: str, payload: bytes, retain: bool) -> None:
        if self.quiet or topic.endswith("/cmd"):
            return
        sub = topic.removeprefix(ROOT + "/")
        if not payload:
            note(f"◀ {sub}: cleared")
            return
        doc = json.loads(payload)
        if sub == "events":
            room = f" room {doc['room']}" if "room" in doc else ""
            note(f"◀ event {doc['seq']:>3} {doc['type']}{room} {_brief(doc['type'], doc['data'])}")
        elif sub == "status":
            note(f"◀ status: online={doc['online']} (retained)")
        elif sub.startswith("alarms/"):
            note(f"◀ alarm {doc['point']} in {doc['room']}: {doc['state']}, level {doc['level']}")
        elif sub == "reply":
            if doc["ok"]:
                note(f"◀ reply ok {json.dumps(doc.get('result', {}))}")
            else:
                note(f"◀ reply refused: {doc['error']['code']}: {doc['error']['message']}")

    async def command(self, type_: str, body: dict[str, Any]) -> dict[str, Any]:
        """Sign and send a command (mqtt.md), and wait for its reply."""
        from gateway.core.commands import sign  # noqa: PLC0415 (after setup)

        env: dict[str, Any] = {
            "schema": 1,
            "id": uuid.uuid4().hex[:12],
            "type": type_,
            "issued_at": _ts(datetime.now(UTC)),
            "body": body,
        }
        env["sig"] = sign(env, self.key)
        note(f"▶ command {type_} {json.dumps(body)}")
        await self.client.publish(f"{ROOT}/cmd", json.dumps(env).encode(), qos=1)
        reply = await self.wait(
            lambda: next((d for d in self.docs("reply") if d["id"] == env["id"]), None),
            f"the reply to {type_}",
        )
        assert isinstance(reply, dict)
        return reply

    def docs(self, sub: str) -> list[dict[str, Any]]:
        """Payloads received on {root}/sub, decoded."""
        return [json.loads(p) for t, p, _ in self.messages if t == f"{ROOT}/{sub}" and p]

    def events(self, type_: str, room: str | None = None) -> list[dict[str, Any]]:
        """Events of a type received so far."""
        return [
            e for e in self.docs("events") if e["type"] == type_ and room in (None, e.get("room"))
        ]

    async def wait(self, cond: Callable[[], Any], what: str, limit_s: float = WAIT_S) -> Any:
        """Wait (bounded) for a condition on what the central system has seen."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if value := cond():
                return value
            await asyncio.sleep(0.02)
        raise SystemExit(f"demo: timed out waiting for {what}")

    async def event(self, type_: str, room: str | None = None) -> dict[str, Any]:
        """Wait for the first event of a type (for a room)."""
        found = await self.wait(lambda: self.events(type_, room), type_)
        return found[0]  # type: ignore[no-any-return]


async def story(run_dir: Path, floor: Path, broker: Broker, key: bytes) -> None:
    """The scenario, step by step."""
    ctl = [str(BIN / "floorsim"), "ctl", "--config", str(floor)]
    floorctl = [str(BIN / "floorctl"), "--config", str(floor)]
    central = Central(broker.port, key)
    listener = asyncio.create_task(central.run())
    try:
        await asyncio.wait_for(central.connected.wait(), WAIT_S)
        await central.wait(
            lambda: any(d.get("online") for d in central.docs("status")), "the gateway online"
        )
        await central.wait(
            lambda: (
                json.loads(run(*floorctl, "status", "--json", show=False) or "{}").get("buses")
                and _all_online(floorctl)
            ),
            "every device online",
        )
        say("The floor as the technician sees it (floorctl floor)")
        run(*floorctl, "floor")

        now = datetime.now(UTC)
        say("Front desk checks a guest into room 1201 (preferred 21.5 °C)")
        await central.command(
            "checkin",
            {
                "room": "1201",
                "stay_id": "R-1042",
                "valid_from": _ts(now - timedelta(minutes=1)),
                "valid_until": _ts(now + timedelta(hours=20)),
                "tokens": [TOKEN],
                "preferences": {"setpoint_c": 21.5},
            },
        )
        await central.wait(lambda: _slot_has(ctl, "1201", TOKEN), "the key in the lock's slots")
        note("the lock now holds the key in one of its 32 slots (floorsim shows it):")
        run(*ctl, "get", "1201/tstat", "setpoint")

        say("The guest presents the key at the door; it opens")
        run(*ctl, "token", "1201", f"0x{TOKEN}")
        granted = await central.event("access.granted", "1201")
        expected = hashlib.sha256(TOKEN.encode()).hexdigest()[:8]
        note(f"the event carries token_hash {granted['data']['token_hash']} (= {expected}),")
        note("never the token itself")
        run(*ctl, "door", "1201", "open", show=False)
        await central.event("door.opened", "1201")
        await central.wait(
            lambda: _coil(ctl, "1201/rio", "light_entry") and _coil(ctl, "1201/rio", "light_main"),
            "the welcome scene",
        )
        note("first opening of the stay: the welcome scene switched entry and main lights on")
        run(*ctl, "door", "1201", "close", show=False)

        say("02:00 — the guest pulls the bathroom cord (a 100 ms pull)")
        run(*ctl, "press", "1201", "bath", "--ms", "100")
        raised = await central.event("alarm.raised", "1201")
        alarm_id = raised["data"]["alarm_id"]
        await central.wait(lambda: _coil(ctl, "1201/rio", "dome_lamp"), "the dome lamp")
        note("the corridor dome lamp and the reassurance lamp are lit; floor panel call lamp on")
        run(*floorctl, "floor")
        say("Nobody answers for 5 s: the alarm escalates to the next level")
        await central.event("alarm.escalated", "1201")
        say("The duty manager acknowledges from the central system")
        await central.command("ack_alarm", {"alarm_id": alarm_id, "by": "duty-manager"})
        await central.event("alarm.acknowledged", "1201")
        say("A bathroom call cannot be reset remotely (nurse-call practice)")
        await central.command("resolve_alarm", {"alarm_id": alarm_id, "by": "desk"})
        say("Staff arrive and turn the presence key at the room: the call is reset")
        run(*ctl, "staff", "1201", "--ms", "100")
        await central.event("alarm.resolved", "1201")
        await central.wait(lambda: not _coil(ctl, "1201/rio", "dome_lamp"), "lamps off")
        run(*floorctl, "alarms")

        say("Checkout: the key is revoked at once")
        await central.command("checkout", {"room": "1201", "stay_id": "R-1042"})
        await central.wait(lambda: not _slot_has(ctl, "1201", TOKEN), "the key removed")
        run(*ctl, "token", "1201", f"0x{TOKEN}")
        await central.event("access.denied", "1201")

        say(f"The broker ({broker.name}) goes down; a guest in 1203 calls meanwhile")
        await broker.stop()
        await central.wait(lambda: not central.connected.is_set(), "the link down")
        before = len(central.docs("events"))
        run(*ctl, "press", "1203", "bed", "--ms", "100")
        run(*ctl, "dnd", "1202", "on", show=False)
        await asyncio.sleep(1.0)  # the story pauses: the outage lasts a moment
        run(*floorctl, "outbox")
        say("The broker comes back: current state first, then the backlog in seq order")
        await broker.start()
        await central.event("alarm.raised", "1203")
        await central.event("room.dnd", "1202")
        seqs = [e["seq"] for e in central.docs("events")]
        missing = sorted(set(range(min(seqs), max(seqs) + 1)) - set(seqs))
        note(f"{len(seqs) - before} events arrived after the outage; seq gaps: {missing or 'none'}")
        run(*floorctl, "floor")
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener


def main() -> int:
    """Set up, run the story, clean up."""
    run_dir = Path(tempfile.mkdtemp(prefix="floorgate-demo-"))
    os.environ["FLOORGATE_RUN_DIR"] = str(run_dir)
    os.environ["FLOORGATE_MODBUS_PORT"] = str(free_port())
    os.environ["FLOORGATE_MQTT_PORT"] = port = str(free_port())
    key_hex = secrets.token_hex(32)
    (run_dir / "command.key").write_text(key_hex + "\n")
    (run_dir / "command.key").chmod(0o600)
    floor = run_dir / "floor.toml"
    data = tomllib.loads(FLOOR.read_text())
    # Escalation in seconds rather than minutes, so the story does not wait.
    data["escalation"] = [
        {"after_s": 0, "notify": "floor-staff"},
        {"after_s": 5, "notify": "duty-manager"},
        {"after_s": 30, "notify": "security"},
    ]
    floor.write_text(tomli_w.dumps(data))
    procs: list[subprocess.Popen[str]] = []
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(run_dir / "notify.sock"))
    broker = Broker(run_dir, int(port))
    loop = asyncio.new_event_loop()
    try:
        say("Check the floor file (6 rooms: RS-485, Modbus TCP, a call panel, a floor panel)")
        run(str(BIN / "floorgated"), "--config", str(floor), "--check")
        say(f"Start the hotel's MQTT broker ({broker.name}) on a free loopback port")
        loop.run_until_complete(broker.start())

        say("Start the simulated floor (floorsim): ptys for the serial lines, a TCP listener")
        sim = subprocess.Popen(
            [str(BIN / "floorsim"), "--config", str(floor)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        procs.append(sim)
        deadline = time.monotonic() + WAIT_S
        while not (run_dir / "floorsim.sock").exists():
            if time.monotonic() > deadline or sim.poll() is not None:
                raise SystemExit("demo: floorsim did not start")
            time.sleep(0.05)

        say("Start the gateway (floorgated); it tells us READY=1 as it tells systemd")
        env = dict(os.environ, NOTIFY_SOCKET=str(run_dir / "notify.sock"))
        log = (run_dir / "floorgated.log").open("w")
        gw = subprocess.Popen(
            [str(BIN / "floorgated"), "--config", str(floor), "--log-format", "json"],
            env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        procs.append(gw)
        notify.settimeout(WAIT_S)
        while "READY=1" not in notify.recv(4096).decode().split("\n"):
            pass
        note("READY=1 received (its structured log goes to floorgated.log)")

        loop.run_until_complete(story(run_dir, floor, broker, bytes.fromhex(key_hex)))

        say("Stop the gateway with SIGTERM: a clean stop")
        gw.send_signal(signal.SIGTERM)
        note(f"floorgated exited with {gw.wait(timeout=15)}")
        say("Done. Everything this demo started is stopped.")
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
        loop.run_until_complete(broker.stop())
        loop.close()
        notify.close()
        if os.environ.get("FLOORGATE_DEMO_KEEP"):
            print(f"(kept {run_dir} for inspection)")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


def _ts(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _brief(type_: str, data: dict[str, Any]) -> str:
    if type_.startswith("alarm."):
        extra = f" → {data['notify']}" if "notify" in data else ""
        return f"({data.get('point')}, level {data.get('level')}{extra})"
    keep = {k: v for k, v in data.items() if k not in ("version",)}
    return json.dumps(keep) if keep else ""


def _slot_has(ctl: list[str], room: str, token: str) -> bool:
    out = run(*ctl, "slots", room, show=False)
    return int(token, 16) in {s.get("token") for s in json.loads(out or "[]")}


def _coil(ctl: list[str], device: str, point: str) -> bool:
    return run(*ctl, "get", device, point, show=False).strip().lower() == "true"


def _all_online(floorctl: list[str]) -> bool:
    doc = json.loads(run(*floorctl, "devices", "--json", show=False) or "{}")
    return all(d["online"] for d in doc.get("devices", [])) and bool(doc.get("devices"))


if __name__ == "__main__":
    sys.exit(main())
