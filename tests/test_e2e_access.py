"""End to end: staff keys on a schedule, lockdown across kill -9, room moves, lock batteries,
operator signatures and roles, and the audit chain checked by floorctl."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from drivers.profile import Table
from tests.e2e import (  # noqa: F401 (fixtures)
    TOKEN,
    WAIT_S,
    Floor,
    mosquitto_fixture,
    mqtt_certs,
    running,
    slot_tokens,
    start,
    ts,
)
from tests.mosquitto import Mosquitto
from tests.waiting import until

HK = "00000000000000b1"  # housekeeping
ENG = "00000000000000b2"  # engineering, floor-wide, no schedule
SEC = "00000000000000b3"  # security, floor-wide
STRANGER = 0x0BADC0DE0BADC0DE
STAFF_FIRST_SLOT = 32 - 8  # [locks] staff_slots default: the last 8 slots
FLOORCTL = Path(sys.executable).parent / "floorctl"


def staff_slots(f: Floor, room: str) -> set[int]:
    return {s["token"] for s in f.sim.slots(room) if s["token"] and s["slot"] >= STAFF_FIRST_SLOT}


def granted(f: Floor, room: str, token: str) -> bool:
    return bool(f.sim.present_token(room, int(token, 16))["granted"])


async def checkin(f: Floor, room: str, stay_id: str = "S-1", token: str = TOKEN) -> None:
    now = datetime.now(UTC)
    reply = await f.command(
        "checkin",
        {
            "room": room,
            "stay_id": stay_id,
            "valid_from": ts(now - timedelta(minutes=1)),
            "valid_until": ts(now + timedelta(hours=2)),
            "tokens": [token],
        },
    )
    assert reply["ok"] is True, reply


def _hhmm(dt: datetime) -> str:
    return dt.strftime("%H:%M")


async def test_a_housekeeping_key_opens_its_zone_during_its_shift_only(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto) as f:
        # The shortest shift a schedule can say: until the next whole minute (or the one
        # after, if that is too close to see the key written first).
        now = datetime.now(UTC)
        end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        if (end - now).total_seconds() < 20:
            end += timedelta(minutes=1)
        schedule = {"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]}
        schedule |= {"from": _hhmm(now - timedelta(minutes=1)), "until": _hhmm(end)}
        body = {"op": "add", "key_id": "hk-ana", "token": HK, "zones": ["1201", "1202"]}
        reply = await f.command("staff_key", {**body, "schedule": schedule})
        assert reply["ok"] is True, reply
        for room in ("1201", "1202"):
            await until(lambda r=room: int(HK, 16) in staff_slots(f, r), timeout=WAIT_S)  # type: ignore[misc]
        assert granted(f, "1201", HK)
        assert not granted(f, "1203", HK)  # not its zone
        event = await f.event("access.granted", "1201")
        assert event["data"]["key_id"] == "hk-ana"
        assert HK not in str(event)
        # The shift ends: the key leaves the locks and no longer opens.
        wait = (end - datetime.now(UTC)).total_seconds() + WAIT_S
        await until(lambda: int(HK, 16) not in slot_tokens(f.sim, "1201"), timeout=wait)
        assert not granted(f, "1201", HK)


async def test_lockdown_holds_through_kill_9_and_ends_only_by_command(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    def keys(data: dict[str, Any]) -> None:
        data["staff_key"] = [
            {"key_id": "eng", "token": ENG, "zones": ["floor"]},
            {"key_id": "sec", "token": SEC, "zones": ["floor"], "security": True},
        ]

    async with running(run_dir, mosquitto, {"slot_verify_s": 1}, edit=keys) as f:
        await checkin(f, "1203")
        everyone = {int(TOKEN, 16), int(ENG, 16), int(SEC, 16)}
        await until(lambda: slot_tokens(f.sim, "1203") == everyone, timeout=WAIT_S)
        assert granted(f, "1203", TOKEN)
        reply = await f.command("lockdown", {"on": True, "by": "sec-02", "reason": "drill"})
        assert reply["ok"] is True, reply
        changed = await f.event("lockdown.changed")
        assert changed["data"] == {"on": True, "by": "sec-02", "reason": "drill"}
        security_only = {int(SEC, 16)}
        await until(lambda: slot_tokens(f.sim, "1203") == security_only, timeout=WAIT_S)
        assert not granted(f, "1203", TOKEN)
        assert not granted(f, "1203", ENG)
        assert granted(f, "1203", SEC)
        refused = await f.command("unlock", {"room": "1203", "by": "fd", "reason": "locked out"})
        assert refused["error"]["code"] == "conflict"

        # A power cut: the lockdown is on disk, the restarted gateway keeps it.
        f.proc.kill()
        f.proc.wait()
        f.proc = start(f.path)
        await f.event("gateway.started", n=2)
        # A key written behind its back shows the restarted keeper at work: removed, and
        # nothing but the security key comes back.
        words = [(STRANGER >> s) & 0xFFFF for s in (48, 32, 16, 0)]
        f.sim.device("1203/lock").write(Table.HOLDING, 100 + 4 * 5, words, multiple=True)
        await until(lambda: STRANGER not in slot_tokens(f.sim, "1203"), timeout=WAIT_S)
        assert slot_tokens(f.sim, "1203") == security_only
        refused = await f.command("unlock", {"room": "1203", "by": "fd", "reason": "again"})
        assert refused["error"]["code"] == "conflict"
        assert not [e for e in f.typed("lockdown.changed") if e["data"]["on"] is False]

        reply = await f.command("lockdown", {"on": False, "by": "sec-02", "reason": "all clear"})
        assert reply["ok"] is True, reply
        await until(lambda: slot_tokens(f.sim, "1203") == everyone, timeout=WAIT_S)
        assert granted(f, "1203", TOKEN)


async def test_a_moved_guest_opens_the_new_room_at_once_and_the_old_until_the_grace(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto) as f:
        await checkin(f, "1203")
        await until(lambda: int(TOKEN, 16) in slot_tokens(f.sim, "1203"), timeout=WAIT_S)
        body = {"stay_id": "S-1", "from": "1203", "to": "1204", "grace_s": 8}
        reply = await f.command("move_room", body)
        assert reply["ok"] is True, reply
        moved = await f.event("room.moved", "1204")
        assert moved["data"]["from"] == "1203"
        await until(lambda: int(TOKEN, 16) in slot_tokens(f.sim, "1204"), timeout=WAIT_S)
        assert granted(f, "1204", TOKEN)
        assert granted(f, "1203", TOKEN)  # the grace: both rooms open
        out = await f.event("room.checked_out", "1203")
        assert out["data"] == {"stay_id": "S-1", "reason": "moved"}
        await until(lambda: int(TOKEN, 16) not in slot_tokens(f.sim, "1203"), timeout=WAIT_S)
        assert not granted(f, "1203", TOKEN)
        assert granted(f, "1204", TOKEN)


async def test_battery_low_then_critical(run_dir: Path, mosquitto: Mosquitto) -> None:
    def fast(data: dict[str, Any]) -> None:
        data["poll"] = {"intervals_ms": {"slow": 500}}

    async with running(run_dir, mosquitto, edit=fast) as f:
        await f.event("gateway.started")
        f.sim.set_input("1203/lock", "battery", 18)
        low = await f.event("lock.battery", "1203")
        assert low["data"] == {"percent": 18, "level": "low"}
        f.sim.set_input("1203/lock", "battery", 9)
        critical = await f.event("lock.battery", "1203", n=2)
        assert critical["data"] == {"percent": 9, "level": "critical"}


def _public_hex(key: Ed25519PrivateKey) -> str:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


async def test_operator_roles_and_hmac_refused(run_dir: Path, mosquitto: Mosquitto) -> None:
    front_desk = Ed25519PrivateKey.generate()
    security = Ed25519PrivateKey.generate()

    def operators(data: dict[str, Any]) -> None:
        data["operator"] = [
            {"id": "fd-03", "public_key": _public_hex(front_desk), "roles": ["front_desk"]},
            {"id": "sec-02", "public_key": _public_hex(security), "roles": ["security"]},
        ]
        data["mqtt"]["allow_hmac"] = False

    async with running(run_dir, mosquitto, edit=operators) as f:
        lockdown = {"on": True, "by": "fd-03", "reason": "not mine to call"}
        reply = await f.command("lockdown", lockdown, operator=("fd-03", front_desk))
        assert (reply["ok"], reply["error"]["code"], reply["by"]) == (False, "forbidden", "fd-03")
        hmac = await f.command("resync", {})
        assert hmac["error"]["code"] == "unauthenticated"
        ok = await f.command(
            "lockdown", {**lockdown, "by": "sec-02"}, operator=("sec-02", security)
        )
        assert (ok["ok"], ok["by"]) == (True, "sec-02")
        changed = await f.event("lockdown.changed")
        assert changed["data"]["by"] == "sec-02"
        # forbidden is not recorded: the same id may come again, signed by someone allowed.
        rejected = f.typed("command.rejected")
        assert [e["data"]["code"] for e in rejected] == ["forbidden", "unauthenticated"]
        assert rejected[0]["data"]["by"] == "fd-03"


async def _floorctl(f: Floor, *args: str) -> tuple[int, str, str]:
    socket_path = f.path.parent / "floorctl.sock"
    proc = await asyncio.create_subprocess_exec(
        str(FLOORCTL),
        "--socket",
        str(socket_path),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_audit_verify_finds_a_row_changed_with_sqlite3(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto) as f:
        for reason in ("first", "second", "third"):
            reply = await f.command("unlock", {"room": "1203", "by": "fd", "reason": reason})
            assert reply["ok"] is True, reply
        copies = await f.event("audit", n=3)
        assert copies["data"]["action"] == "unlock"
        code, out, _ = await _floorctl(f, "audit", "verify")
        assert code == 0, out
        assert "every row matches" in out
        code, out, _ = await _floorctl(f, "--json", "audit")
        assert code == 0
        assert '"reason": "second"' in out
        db = run_dir / "state" / "floorgate.db"
        with sqlite3.connect(db, timeout=10) as conn:
            conn.execute('UPDATE audit SET detail = \'{"reason":"nothing happened"}\' WHERE id = 2')
        code, out, err = await _floorctl(f, "audit", "verify")
        assert code == 1, (out, err)
        assert "audit row 2" in err
