"""The savings ledger through the engine: the local day's rollover in the floor's time
zone, its rows on disk, and ``floorctl energy``'s view of stored and running days."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from drivers.ids import DeviceRef
from drivers.observations import DeviceOnline, PointObserved
from gateway.adapters import rooms_store
from gateway.engine.view import LiveFloorView
from tests.engine_harness import Clock, demo_config, running_engine

SHANGHAI = ZoneInfo("Asia/Shanghai")
# 15:59:50 UTC is 23:59:50 in Shanghai: the local day ends ten seconds later.
BEFORE = datetime(2026, 11, 23, 15, 59, 50, tzinfo=UTC)


def observed(device: str, point: str, value: object) -> PointObserved:
    return PointObserved(DeviceRef.parse(device), point, 0, value, 0.0)  # type: ignore[arg-type]


async def test_the_day_rolls_over_at_local_midnight_and_is_kept(run_dir: Path) -> None:
    layout = dataclasses.replace(demo_config(run_dir).layout(), timezone=SHANGHAI)
    clock = Clock(BEFORE)
    async with running_engine(run_dir, clock, layout=layout) as h:
        tstat = "1201/tstat"
        h.inbox.put(DeviceOnline(DeviceRef.parse(tstat), 0.0))
        h.inbox.put(observed(tstat, "run_minutes", 10))
        clock.now = BEFORE + timedelta(seconds=5)
        h.inbox.put(observed(tstat, "run_minutes", 12))
        await h.settle()
        clock.now = BEFORE + timedelta(seconds=9)
        await h.settle()
        assert _daily(run_dir / "floor.db") == []
        clock.now = BEFORE + timedelta(seconds=10)  # 00:00:00 in Shanghai
        await h.settle()
        daily = {e["room"]: e["data"] for e in _daily(run_dir / "floor.db")}
        assert set(daily) == {"1201", "1202", "1203", "1204", "1205", "1206"}
        assert daily["1201"]["date"] == "2026-11-23"
        assert daily["1201"]["hvac_run_s"] == 120
        rows = await h.store.read(lambda conn: rooms_store.load_ledger(conn, date(2026, 11, 23)))
        assert ("1201", "2026-11-23") in {(r, d["date"]) for r, d in rows}
        view = LiveFloorView(
            h.config, h.store, h.engine, h.inbox,
            schedulers={}, panels={}, uplink=None, outbox=h.committed,  # type: ignore[arg-type]
            started_at=BEFORE,
        )  # fmt: skip
        ledger = await view.energy("1201", 2)
        assert [(r.date, r.today) for r in ledger.rows] == [
            ("2026-11-23", False),
            ("2026-11-24", True),
        ]


def _daily(path: Path) -> list[dict[str, Any]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT room, data FROM events WHERE type = 'energy.daily'")
        return [{"room": r, "data": json.loads(d)} for r, d in rows]
