"""The engine: every effect handled, one commit path, seq order equal to decision order."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any, get_args

import pytest

from drivers.ids import DeviceRef, RoomId
from drivers.observations import PointObserved
from drivers.panelproto import LampState
from drivers.profile import PollClass
from gateway.core import effects as fx
from gateway.core.alarms import Alarm, AlarmKind, AlarmState
from gateway.core.authz import Stay
from gateway.core.decide import Decision
from gateway.core.inputs import AlarmAction, AuditAction, Input, Lifecycle, Tick
from gateway.core.remote_config import ConfigRecord
from gateway.core.staff import Lockdown, StaffKey
from gateway.engine import engine as engine_module
from gateway.engine.commands import CommandProcessor
from gateway.engine.engine import Inbox
from tests.engine_harness import T0, Clock, running_engine
from tests.test_command_processor import KEY, command

LOCK = DeviceRef.parse("1203/lock")
RIO = DeviceRef.parse("1201/rio")


def one_of_each() -> list[fx.Effect]:
    """An instance of every effect type of the core."""
    alarm = Alarm("a-1", "1201", AlarmKind.CALL, "bath", AlarmState.ACTIVE, 0, T0)
    stay = Stay("1201", "S-1", T0, T0 + timedelta(days=1), ("00000000000000aa",), None, None, 1)
    key = StaffKey("hk-1", "00000000000000bb", frozenset({"1201"}), None, False, "command", 1)
    return [
        fx.Emit("room.dnd", "1201", {"on": True}),
        fx.Audit("tech", "floorctl.test", "1201", {"x": 1}),
        fx.SaveAlarm(alarm),
        fx.SaveStay(stay),
        fx.SaveStaffKey("hk-1", key),
        fx.SaveLockdown(Lockdown(True, "sec-1", "drill", T0)),
        fx.SaveCounter(RIO, "bath_count", 7),
        fx.SaveLogHead(LOCK, 12),
        fx.MarkWelcomed(RoomId("1201"), "S-1"),
        fx.SaveRoomStatus(RoomId("1201"), "clean", "S-1"),
        fx.SaveLedger((("1201", {"date": "2026-11-23", "hvac_run_s": 60}),), keep_days=400),
        fx.RecordCommand("c-9", T0, b'{"schema":1,"id":"c-9","ok":true,"result":{}}'),
        fx.WritePoint(RIO, "light_main", True, priority=PollClass.ROOM),
        fx.SetPanelLamp("panel", "1205", LampState.ON),
        fx.Retain("alarms/a-1", {"alarm_id": "a-1"}),
        fx.ReconcileLock(RoomId("1203"), "change"),
        fx.ReadAccessLog(LOCK),
        fx.DeviceBack(LOCK),
        fx.Republish(),
        fx.SaveConfig(ConfigRecord(active="ab" * 32), ("ab" * 32, "[gateway]\n"), None),
        fx.Restart("test"),
    ]


def test_the_list_covers_every_effect_type() -> None:
    assert {type(e) for e in one_of_each()} == set(get_args(fx.Effect))


def _stored(conn: sqlite3.Connection) -> dict[str, Any]:
    one = lambda sql: conn.execute(sql).fetchone()  # noqa: E731
    return {
        "event": one("SELECT type FROM events WHERE type = 'room.dnd'"),
        "audit": one("SELECT action FROM audit"),
        "alarm": one("SELECT alarm_id FROM alarms"),
        "stay": one("SELECT stay_id FROM stays"),
        "staff_key": one("SELECT key_id FROM staff_keys"),
        "lockdown": one("SELECT active, set_by FROM lockdown"),
        "counter": one("SELECT value FROM point_values WHERE point = 'bath_count'"),
        "head": one("SELECT head FROM lock_log_heads"),
        "welcomed": one("SELECT value FROM point_values WHERE point = 'welcomed'"),
        "command": one("SELECT id FROM commands"),
        "config": one("SELECT sha256 FROM config_files"),
        "room_status": one("SELECT housekeeping, hold_stay FROM room_status"),
        "ledger": one("SELECT room, day FROM energy_ledger"),
    }


async def test_every_effect_is_persisted_or_carried_out(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Marker(Tick):
        """An input the patched decide answers with every effect."""

    real = engine_module.decide

    def decide(state: Any, item: Input, now: Any) -> Decision:
        return Decision(one_of_each()) if isinstance(item, Marker) else real(state, item, now)

    monkeypatch.setattr(engine_module, "decide", decide)
    async with running_engine(run_dir) as h:
        await h.inbox.submit(Marker())
        stored = await h.store.read(_stored)
        assert stored == {
            "event": ("room.dnd",),  # the first; the audit row's copy follows
            "audit": ("floorctl.test",),
            "alarm": ("a-1",),
            "stay": ("S-1",),
            "staff_key": ("hk-1",),
            "lockdown": (1, "sec-1"),
            "counter": ("7",),
            "head": (12,),
            "welcomed": ('"S-1"',),
            "command": ("c-9",),
            "config": ("ab" * 32,),
            "room_status": ("clean", "S-1"),
            "ledger": ("1201", "2026-11-23"),
        }
        assert [(str(w.device), w.point) for w in h.actuators.writes] == [
            ("1201/rio", "light_main")
        ]
        assert h.lamps == [("panel", "1205", LampState.ON)]
        assert h.retained.take()["alarms/a-1"] == {"alarm_id": "a-1"}
        assert h.retained.take_resync()
        assert h.locks.wanted == [("1203", "change", False)]
        assert h.locks.logs == [LOCK]
        assert h.actuators.resent == [LOCK]
        assert h.restarts == ["test"]


class RecordingInbox(Inbox):
    """An inbox that remembers the order inputs were queued in."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[Input] = []

    def put(self, item: Input) -> None:
        self.order.append(item)
        super().put(item)

    def submit(self, item: Input) -> Any:
        self.order.append(item)
        return super().submit(item)


def _events(conn: sqlite3.Connection) -> list[tuple[int, str, dict[str, Any]]]:
    rows = conn.execute("SELECT seq, type, data FROM events ORDER BY seq")
    return [(int(s), str(t), json.loads(d)) for s, t, d in rows]


def _mark(item: Input) -> str | None:
    """What event an input leaves in the outbox, to find it there."""
    match item:
        case PointObserved(point="dnd", value=value):
            return f"room.dnd:{value}"
        case Lifecycle(data=data):
            return f"gateway.started:{data['n']}"
        case AuditAction():
            return None  # audit rows: checked by their own order below
        case _:
            name = type(item).__name__
            return f"command:{item.id}" if name in ("RunCommand", "CommandRefused") else None


async def test_seq_order_is_decision_order_under_concurrent_inputs(run_dir: Path) -> None:
    inbox = RecordingInbox()
    clock = Clock(live=True)
    async with running_engine(run_dir, clock, inbox=inbox) as h:
        processor = CommandProcessor(h.store, KEY, inbox.submit, clock=clock)
        now = clock()

        async def commands() -> None:
            for i in range(20):  # stale: refused, each with its command.rejected event
                await processor.handle(command(id=f"k{i}", issued_at=now - timedelta(hours=1)))

        async def observations() -> None:
            for i in range(60):
                inbox.put(PointObserved(RIO, "dnd", 0, i % 2 == 0, 0.0))
                await asyncio.sleep(0)

        async def lifecycle() -> None:
            for i in range(20):
                await inbox.submit(Lifecycle("gateway.started", {"n": i}))

        async def floorctl() -> None:
            for i in range(20):
                await inbox.submit(AuditAction("tech", f"floorctl.n{i}", None, {}))
                await inbox.submit(AlarmAction("ack", f"nope-{i}", "tech"))

        await asyncio.gather(commands(), observations(), lifecycle(), floorctl())
        await h.settle()
        events = await h.store.read(_events)
        audit = await h.store.read(
            lambda c: [r[0] for r in c.execute("SELECT action FROM audit ORDER BY rowid")]
        )

    seen: list[str] = []
    for _, type_, data in events:
        if type_ == "room.dnd":
            seen.append(f"room.dnd:{data['on']}")
        elif type_ == "gateway.started":
            seen.append(f"gateway.started:{data['n']}")
        elif type_ == "command.rejected":
            seen.append(f"command:{data['id']}")
    expected = [m for m in (_mark(i) for i in inbox.order) if m is not None]
    # The first dnd value is a baseline (no event); every later change is one.
    expected.remove("room.dnd:True")
    assert seen == expected
    assert [s for s, _, _ in events] == list(range(1, len(events) + 1))  # gapless
    assert audit == [f"floorctl.n{i}" for i in range(20)]
