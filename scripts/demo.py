"""The demo: a simulated floor, a broker, the gateway and a scripted central system.

The central system (this script, through the floorgate_central library) talks to the
gateway over MQTT only, signing its commands with the floor's key, and narrates what
comes back: a check-in with a guest preference, a key opening the door and the welcome
scene, a bathroom pull cord and its escalation, acknowledgement, reset in the room,
checkout and the key refused, then the broker stopped and restarted with nothing lost.
It shows ``floorctl floor`` along the way.

Every sentence is checked before it is printed: the story waits for what it is about to
state (a lamp lit, a slot written, an event received). Events are printed by ``seq``
at the step that causes them, each once; an event the story did not cause is printed as
such, with what it means. Times, ids, the key and paths change at every run.

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
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import tomli_w

import floorgate_central as fc

REPO = Path(__file__).resolve().parent.parent
FLOOR = REPO / "config" / "floors" / "demo.toml"
BIN = Path(sys.executable).parent
GATEWAY = "demo-12"
ROOT = "hotel/demo/demo-12"
TOKEN = "5eed0f1c0ffee042"  # noqa: S105 (the demo guest's key card)
WAIT_S = 30.0
ESCALATE_S = 5  # the demo's second escalation level, instead of demo.toml's 60 s
TTY = sys.stdout.isatty()

# Events the floor may report without the story causing them, and what they mean.
UNCAUSED = {
    "device.offline": "a simulated device missed its polls (a busy machine can cause it)",
    "device.online": "that device answers again",
    "device.fault": "a device reported a fault",
    "callpanel.offline": "the call panel went quiet for 15 s",
    "callpanel.online": "the call panel is heard again",
    "lock.drift_repaired": "the gateway corrected a lock slot",
}


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
    """Run floorctl or floorsim (found in the venv) and show the command and its output."""
    proc = subprocess.run(
        [str(BIN / args[0]), *args[1:]], capture_output=True, text=True, check=False, timeout=30
    )
    out = (proc.stdout + proc.stderr).rstrip()
    if show:
        print("  $", " ".join(args))
        print("\n".join(f"    {line}" for line in out.splitlines()), flush=True)
    return out


async def until(cond: Callable[[], Any], what: str, limit_s: float = WAIT_S) -> Any:
    """Wait (bounded) for a condition; the demo stops, saying what it waited for, if not."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if value := cond():
            return value
        await asyncio.sleep(0.02)
    raise SystemExit(f"demo: timed out waiting for {what}")


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


class Narrator:
    """Prints the events the central system received, in seq order, each once."""

    def __init__(self, floor: fc.Floor) -> None:
        self.floor = floor
        self.shown = 0  # the last seq printed

    async def expect(self, *wanted: tuple[str, str | None]) -> list[fc.Event]:
        """Wait for each (type, room) after the last printed seq; print every event up to them."""
        hits: list[fc.Event] = await until(
            lambda: self._found(wanted), " and ".join(t for t, _ in wanted)
        )
        last = max(e.seq for e in hits)
        for event in sorted(self.floor.history, key=_seq):
            if self.shown < event.seq <= last:
                self._print(event, caused=event in hits)
        self.shown = last
        return hits

    async def arrive(self, *wanted: tuple[str, str | None], limit_s: float) -> bool:
        """Whether each (type, room) arrives within ``limit_s`` (nothing is printed)."""
        deadline = time.monotonic() + limit_s
        while self._found(wanted) is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def _found(self, wanted: tuple[tuple[str, str | None], ...]) -> list[fc.Event] | None:
        fresh = sorted((e for e in self.floor.history if e.seq > self.shown), key=_seq)
        hits: list[fc.Event] = []
        for type_, room in wanted:
            hit = next(
                (e for e in fresh if e.type == type_ and e.room == room and e not in hits), None
            )
            if hit is None:
                return None
            hits.append(hit)
        return hits

    def _print(self, event: fc.Event, *, caused: bool) -> None:
        if event.gap is not None:
            note(f"◀ seqs {event.gap.first}..{event.gap.last} never arrived")
        room = f" room {event.room}" if event.room else ""
        note(f"◀ event {event.seq:>3} {event.type}{room} {_brief(event)}".rstrip())
        if not caused:
            why = UNCAUSED.get(event.type)
            note(f"  (not caused by the story{': ' + why if why else ''})")


async def demo(run_dir: Path, floor_file: Path, broker: Broker, key: bytes) -> None:
    """Start the broker, the central system, floorsim and the gateway; tell the story."""
    say("Check the floor file (6 rooms: RS-485, Modbus TCP, a call panel, a floor panel)")
    note(f"demo.toml, escalating after 0, {ESCALATE_S} and 60 s, in {run_dir}")
    run("floorgated", "--config", str(floor_file), "--check")
    say(f"Start the hotel's MQTT broker ({broker.name}) on a free loopback port")
    await broker.start()

    say("Start the central system (this script): a persistent MQTT session on the floor's topics")
    async with fc.Central(
        "127.0.0.1", broker.port, client_id="demo-central", keys={GATEWAY: key}, roots=[ROOT],
        # amqtt speaks MQTT 3.1.1 only; "auto" would first try 5 and wait for it to fail.
        protocol="auto" if broker.mosquitto else "3.1.1", reconnect_max_s=0.5,
    ) as hotel:  # fmt: skip
        await hotel.wait_connected(timeout_s=WAIT_S)
        note(f"connected over MQTT {hotel.protocol}, subscribed to {ROOT}/…")
        async with running(run_dir, floor_file) as gateway:
            floor = await hotel.floor(GATEWAY, timeout_s=WAIT_S)
            await until(lambda: floor.online, "the gateway's status online")
            tell = Narrator(floor)
            note(f"the central system sees the floor {GATEWAY}: its retained status says online")
            await until(_all_online, "every device online")
            note("every device answers the gateway and the call panel's heartbeat is heard:")
            await tell.expect(("gateway.started", None), ("callpanel.online", None))
            note("(times, ids, the key and paths change at every run)")
            say("The floor as the technician sees it")
            run("floorctl", "floor")

            await checkin(floor, tell)
            alarm_id = await bathroom_call(floor, tell)
            await reset_and_checkout(floor, tell, alarm_id)
            await outage(hotel, floor, tell, broker)

            say("Stop the gateway with SIGTERM: a clean stop")
            gateway.send_signal(signal.SIGTERM)
            await tell.expect(("gateway.stopping", None))
            await until(lambda: not floor.online, "the retained status offline")
            note("its retained status now says offline (published by the gateway as it stopped)")
            code = await asyncio.to_thread(gateway.wait, 15)
            note(f"floorgated exited with {code}")


@contextlib.asynccontextmanager
async def running(run_dir: Path, floor_file: Path) -> AsyncIterator[subprocess.Popen[str]]:
    """floorsim, then floorgated (READY=1 awaited as systemd would); both stopped by PID."""
    procs: list[subprocess.Popen[str]] = []
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(run_dir / "notify.sock"))
    try:
        say("Start the simulated floor (floorsim): ptys for the serial lines, a TCP listener")
        # A demo script: starting a process blocks the loop for a moment, harmlessly.
        sim = subprocess.Popen(  # noqa: ASYNC220
            [str(BIN / "floorsim"), "--config", str(floor_file)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        procs.append(sim)
        await until(
            lambda: (run_dir / "floorsim.sock").exists() or sim.poll() is not None, "floorsim"
        )
        if sim.poll() is not None:
            raise SystemExit("demo: floorsim did not start")

        say("Start the gateway (floorgated); it tells us READY=1 as it tells systemd")
        env = dict(os.environ, NOTIFY_SOCKET=str(run_dir / "notify.sock"))
        with (run_dir / "floorgated.log").open("w") as log:
            gateway = subprocess.Popen(  # noqa: ASYNC220
                [str(BIN / "floorgated"), "--config", str(floor_file), "--log-format", "json"],
                env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
            )  # fmt: skip
        procs.append(gateway)
        notify.settimeout(WAIT_S)
        await asyncio.to_thread(_ready, notify)
        note("READY=1 received (its structured log goes to floorgated.log)")
        yield gateway
    finally:
        notify.close()
        for proc in procs:  # only what this demo started, by PID
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    await asyncio.to_thread(proc.wait, 10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


async def checkin(floor: fc.Floor, tell: Narrator) -> None:
    """Check-in, the key at the door, the welcome scene."""
    now = datetime.now(UTC)
    say("Front desk checks a guest into room 1201 (preferred 21.5 °C)")
    body = {
        "room": "1201",
        "stay_id": "R-1042",
        "valid_from": fc.format_ts(now - timedelta(minutes=1)),
        "valid_until": fc.format_ts(now + timedelta(hours=20)),
        "tokens": [TOKEN],
        "preferences": {"setpoint_c": 21.5},
    }
    await command(floor, "checkin", body)
    await tell.expect(("room.checked_in", "1201"))
    used = await until(lambda: _slot_with(TOKEN), "the key in the lock's slots")
    note(
        f"the lock now holds the key 0x{used['token']:016x} in slot {used['slot']} of its 32 "
        "(floorsim ctl slots 1201)"
    )
    await until(lambda: _get("1201/tstat", "setpoint") == "21.5", "the setpoint 21.5")
    note("and the thermostat is set to the guest's 21.5 °C:")
    run("floorsim", "ctl", "get", "1201/tstat", "setpoint")

    say("The guest presents the key at the door; it opens")
    run("floorsim", "ctl", "token", "1201", f"0x{TOKEN}")
    (granted,) = await tell.expect(("access.granted", "1201"))
    # As an integrator checks it: SHA-256 of the 16 lowercase hex digits, first 8 digits.
    mine = hashlib.sha256(TOKEN.lower().encode()).hexdigest()[:8]
    theirs = granted.data["token_hash"]
    verdict = "the same" if mine == theirs else "DIFFERENT"
    note(f"the event carries token_hash {theirs}; sha256({TOKEN!r}) computed here starts {mine}:")
    note(f"{verdict}. Events never carry the token itself")
    say("The guest opens the door, goes in and closes it behind them")
    run("floorsim", "ctl", "door", "1201", "open", show=False)
    await tell.expect(("door.opened", "1201"))
    await until(
        lambda: _get("1201/rio", "light_entry") == _get("1201/rio", "light_main") == "true",
        "the welcome scene",
    )
    note("first opening of the stay: the welcome scene switched entry and main lights on")
    run("floorsim", "ctl", "door", "1201", "close", show=False)
    await tell.expect(("door.closed", "1201"))


async def bathroom_call(floor: fc.Floor, tell: Narrator) -> str:
    """A bathroom call, its escalation and its acknowledgement; the alarm's id."""
    say("Later, the guest pulls the bathroom cord (a 100 ms pull)")
    run("floorsim", "ctl", "press", "1201", "bath", "--ms", "100")
    (raised,) = await tell.expect(("alarm.raised", "1201"))
    alarm_id = str(raised.data["alarm_id"])
    await until(
        lambda: (
            _get("1201/rio", "dome_lamp") == "true"
            and _get("1201/rio", "reassure_lamp") == "true"
            and _get("floorpanel", "floor_call_lamp") == "true"
        ),
        "the call lamps",
    )
    note("the corridor dome lamp and the reassurance lamp are lit; floor panel call lamp on")
    await until(lambda: alarm_id in floor.alarms, "the retained alarm")
    note(f"the central system's open alarms: {_alarm(floor.alarms[alarm_id])}")
    run("floorctl", "floor")

    say(f"Nobody acknowledges for {ESCALATE_S} s: the alarm escalates to the next level")
    await tell.expect(("alarm.escalated", "1201"))
    await until(lambda: _level(floor, alarm_id) == 1, "the retained alarm at level 1")
    note(f"the central system's open alarms: {_alarm(floor.alarms[alarm_id])}")

    say("The duty manager acknowledges from the central system")
    await command(floor, "ack_alarm", {"alarm_id": alarm_id, "by": "duty-manager"})
    await tell.expect(("alarm.acknowledged", "1201"))
    await until(lambda: _state(floor, alarm_id) == "acknowledged", "the alarm acknowledged")
    note(f"the central system's open alarms: {_alarm(floor.alarms[alarm_id])}")
    return alarm_id


async def reset_and_checkout(floor: fc.Floor, tell: Narrator, alarm_id: str) -> None:
    """The refused remote reset, the reset at the room, checkout and the key refused."""
    say("The desk tries to reset the bathroom call remotely: refused (nurse-call practice)")
    await command(floor, "resolve_alarm", {"alarm_id": alarm_id, "by": "desk"})
    await tell.expect(("command.rejected", None))

    say("Staff arrive and turn the presence key at the room: the call is reset")
    run("floorsim", "ctl", "staff", "1201", "--ms", "100")
    await tell.expect(("alarm.resolved", "1201"))
    await until(lambda: _get("1201/rio", "dome_lamp") == "false", "the lamps off")
    await until(lambda: alarm_id not in floor.alarms, "the alarm closed at the central")
    note("the lamps are off; the central system's open alarms: none")
    run("floorctl", "alarms")

    say("Checkout: the key is revoked at once")
    await command(floor, "checkout", {"room": "1201", "stay_id": "R-1042"})
    await tell.expect(("room.checked_out", "1201"))
    await until(lambda: _slot_with(TOKEN) is None, "the key removed from the lock")
    note("no slot of the lock holds the key any more; the card is presented again:")
    run("floorsim", "ctl", "token", "1201", f"0x{TOKEN}")
    await tell.expect(("access.denied", "1201"))


async def outage(hotel: fc.Central, floor: fc.Floor, tell: Narrator, broker: Broker) -> None:
    """The broker goes away; a call and a DND switch meanwhile; nothing is lost."""
    say(f"The broker ({broker.name}) goes down")
    await broker.stop()
    await until(lambda: not hotel.connected, "the central system's link down")
    await until(lambda: not _gateway_link(), "the gateway's link down")
    note("the central system and the gateway have lost their connections (floorctl status")
    note("says so); the floor carries on by itself")
    say("Meanwhile a guest in 1203 presses the bedside call button")
    run("floorsim", "ctl", "press", "1203", "bed", "--ms", "100")
    await until(lambda: _local_event("alarm.raised", "1203"), "the call recorded on the gateway")
    await until(lambda: _get("floorpanel", "floor_sounder") == "true", "the floor sounder")
    note("with the link down the floor sounder sounds at once: the floor staff must hear it")
    await until(lambda: _local_event("alarm.escalated", "1203"), "the escalation on the gateway")
    note(f"nobody acknowledges: {ESCALATE_S} s later the gateway escalates it, by its own clock")
    say("The guest in 1202 switches on do-not-disturb")
    run("floorsim", "ctl", "dnd", "1202", "on")
    await until(lambda: _local_event("room.dnd", "1202"), "DND recorded on the gateway")
    note("all three events are kept on the gateway's disk, waiting for the broker:")
    run("floorctl", "outbox")

    say("The broker comes back: the gateway republishes the floor's state, then sends the events")
    await broker.start()
    await until(lambda: hotel.connected and floor.online, "the central system and the floor back")
    calls = await until(
        lambda: [a for a in floor.alarms.values() if a.room == "1203" and a.level == 1],
        "the 1203 call at level 1",
    )
    note(f"status online; open alarms: {_alarm(calls[0])} (retained: the state now)")
    before = tell.shown
    wanted = (("alarm.raised", "1203"), ("alarm.escalated", "1203"), ("room.dnd", "1202"))
    if broker.mosquitto is None and not await tell.arrive(*wanted, limit_s=10):
        # amqtt forgets sessions when it restarts: what the gateway sent before the central
        # system subscribed again went to nobody. Mosquitto keeps them (persistence).
        note("the events did not reach the central system: the embedded broker forgot its")
        note("session at the restart (Mosquitto keeps it). The gateway still has them:")
        run("floorctl", "events", "--since-seq", str(before))
        return
    await tell.expect(*wanted)
    after = [e for e in floor.history if e.seq > before]
    missing = [f"{r.first}..{r.last}" for r in floor.missing]
    note(
        f"{len(after)} events arrived after the outage, in seq order; "
        f"seq gaps: {', '.join(missing) or 'none'}"
    )
    run("floorctl", "floor")


async def command(floor: fc.Floor, type_: str, body: dict[str, Any]) -> fc.Reply:
    """Send a command and print it and its reply (a refusal is part of the story too)."""
    note(f"▶ command {type_} {json.dumps(body)}")
    reply = await floor.send(type_, body)
    if reply.ok:
        note(f"◀ reply ok {json.dumps(dict(reply.result))}")
    else:
        note(f"◀ reply refused: {reply.code}: {reply.message}")
    return reply


def main() -> int:
    """Set up, run the story, clean up."""
    run_dir = Path(tempfile.mkdtemp(prefix="floorgate-demo-"))
    os.environ["FLOORGATE_RUN_DIR"] = str(run_dir)  # floorsim ctl finds its socket here
    os.environ["FLOORGATE_MODBUS_PORT"] = str(free_port())
    os.environ["FLOORGATE_MQTT_PORT"] = port = str(free_port())
    key_hex = secrets.token_hex(32)
    (run_dir / "command.key").write_text(key_hex + "\n")
    (run_dir / "command.key").chmod(0o600)
    floor_file = run_dir / "floor.toml"
    os.environ["FLOORGATE_CONFIG"] = str(floor_file)  # floorctl finds the gateway's socket
    data = tomllib.loads(FLOOR.read_text())
    # Escalation in seconds rather than minutes, so the story does not wait.
    data["escalation"] = [
        {"after_s": 0, "notify": "floor-staff"},
        {"after_s": ESCALATE_S, "notify": "duty-manager"},
        {"after_s": 60, "notify": "security"},
    ]
    floor_file.write_text(tomli_w.dumps(data))
    broker = Broker(run_dir, int(port))
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(demo(run_dir, floor_file, broker, bytes.fromhex(key_hex)))
        loop.run_until_complete(broker.stop())
        say("Done. Everything this demo started is stopped.")
        return 0
    finally:
        loop.run_until_complete(broker.stop())
        loop.close()
        if os.environ.get("FLOORGATE_DEMO_KEEP"):
            print(f"(kept {run_dir} for inspection)")
        else:
            shutil.rmtree(run_dir, ignore_errors=True)


def _ready(notify: socket.socket) -> None:
    while "READY=1" not in notify.recv(4096).decode().split("\n"):
        pass


def _seq(event: fc.Event) -> int:
    return event.seq


def _brief(event: fc.Event) -> str:
    data = event.data
    if event.type.startswith("alarm."):
        extra = f" → {data['notify']}" if "notify" in data else ""
        return f"({data.get('point')}, level {data.get('level')}{extra})"
    keep = {k: v for k, v in data.items() if k not in ("version",)}
    return json.dumps(keep) if keep else ""


def _alarm(alarm: fc.Alarm) -> str:
    return f"{alarm.point} in {alarm.room}, {alarm.state}, level {alarm.level}"


def _level(floor: fc.Floor, alarm_id: str) -> int | None:
    alarm = floor.alarms.get(alarm_id)
    return None if alarm is None else alarm.level


def _state(floor: fc.Floor, alarm_id: str) -> str | None:
    alarm = floor.alarms.get(alarm_id)
    return None if alarm is None else alarm.state


def _slot_with(token: str) -> dict[str, Any] | None:
    slots = json.loads(run("floorsim", "ctl", "slots", "1201", show=False) or "[]")
    return next((s for s in slots if s.get("token") == int(token, 16)), None)


def _get(device: str, point: str) -> str:
    return run("floorsim", "ctl", "get", device, point, show=False).strip().lower()


def _all_online() -> bool:
    doc = json.loads(run("floorctl", "devices", "--json", show=False) or "{}")
    return bool(doc.get("devices")) and all(d["online"] for d in doc["devices"])


def _gateway_link() -> bool:
    """The gateway's MQTT link is up (floorctl status)."""
    doc = json.loads(run("floorctl", "status", "--json", show=False) or "{}")
    return bool(doc.get("mqtt", {}).get("connected"))


def _local_event(type_: str, room: str) -> bool:
    """The gateway has recorded such an event (floorctl, with the broker away)."""
    doc = json.loads(run("floorctl", "events", "--limit", "5", "--json", show=False) or "{}")
    return any(e["type"] == type_ and e.get("room") == room for e in doc.get("events", []))


if __name__ == "__main__":
    sys.exit(main())
