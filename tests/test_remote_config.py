"""Remote configuration, decided (gateway.core.remote_config) and stored (config_store).

The boot plan for every record a start may find, the verdict at the end of a window,
the apply_config handler's refusals, and the record's round trip through SQLite.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from gateway.adapters import config_store, schema
from gateway.core import handlers
from gateway.core.effects import Audit, Emit, Restart, SaveConfig
from gateway.core.health import BusFacts, HealthFacts, Loop
from gateway.core.remote_config import (
    ROLLED_BACK_EXPIRED,
    ROLLED_BACK_RESTARTED,
    ConfigEntry,
    ConfigRecord,
    Pending,
    Proposal,
    boot,
    boot_effects,
    confirm_problems,
    sha256_text,
    verdict_effects,
)
from tests.test_decide import floor_of, layout  # noqa: F401 (fixture)

T0 = datetime(2026, 11, 23, 6, 0, 0, tzinfo=UTC)
LOCAL, NEW, GOOD = "a" * 64, "b" * 64, "c" * 64


def test_no_record_runs_the_local_file() -> None:
    start = boot(ConfigRecord(), LOCAL, T0)
    assert (start.run, start.record, start.outcome, boot_effects(start)) == (
        None,
        ConfigRecord(),
        None,
        [],
    )


def test_a_confirmed_remote_file_runs_again() -> None:
    record = ConfigRecord(active=GOOD, last_good=GOOD, base=LOCAL)
    assert boot(record, LOCAL, T0).run == GOOD


def test_a_switch_starts_the_new_file_and_its_window() -> None:
    pending = Pending(NEW, confirm_s=120, offline_before=1)
    record = ConfigRecord(active=GOOD, last_good=GOOD, base=LOCAL, pending=pending)
    start = boot(record, LOCAL, T0)
    assert start.run == NEW
    assert start.watch_until == T0 + timedelta(seconds=120)
    assert start.record.pending is not None
    assert (start.record.pending.phase, start.record.pending.deadline) == (
        "watching",
        T0 + timedelta(seconds=120),
    )
    assert [type(e) for e in boot_effects(start)] == [Audit]


@pytest.mark.parametrize(
    ("now", "reason"),
    [(T0, ROLLED_BACK_RESTARTED), (T0 + timedelta(seconds=121), ROLLED_BACK_EXPIRED)],
)
def test_a_start_during_or_after_an_unconfirmed_window_rolls_back(
    now: datetime, reason: str
) -> None:
    pending = Pending(NEW, 120, 0, phase="watching", deadline=T0 + timedelta(seconds=120))
    record = ConfigRecord(active=GOOD, last_good=GOOD, base=LOCAL, pending=pending)
    start = boot(record, LOCAL, now)
    assert (start.run, start.outcome, start.sha256, start.reason) == (
        GOOD,
        "rolled_back",
        NEW,
        reason,
    )
    assert start.record == ConfigRecord(active=GOOD, last_good=GOOD, base=LOCAL)
    emitted = [e for e in boot_effects(start) if isinstance(e, Emit)]
    assert emitted == [Emit("config.rolled_back", None, {"sha256": NEW, "reason": reason})]


def test_a_rollback_to_the_local_file_forgets_the_base() -> None:
    pending = Pending(NEW, 60, 0, phase="watching", deadline=T0)
    start = boot(ConfigRecord(base=LOCAL, pending=pending), LOCAL, T0)
    assert (start.run, start.record) == (None, ConfigRecord())


def test_a_file_that_could_not_start_rolls_back_with_why() -> None:
    pending = Pending(NEW, 60, 0, phase="watching", deadline=T0, failure="socket in use")
    start = boot(ConfigRecord(base=LOCAL, pending=pending), LOCAL, T0 - timedelta(seconds=5))
    assert (start.outcome, start.reason) == ("rolled_back", "socket in use")


def test_a_local_file_edited_after_a_remote_apply_wins() -> None:
    record = ConfigRecord(active=GOOD, last_good=GOOD, base=LOCAL)
    start = boot(record, "d" * 64, T0)
    assert (start.run, start.record, start.outcome) == (None, ConfigRecord(), None)
    assert start.entries == (
        ConfigEntry("local", "d" * 64, "the local floor file changed", "local"),
    )
    pending = Pending(NEW, 60, 0, phase="watching", deadline=T0)
    during = boot(ConfigRecord(base=LOCAL, pending=pending), "d" * 64, T0)
    assert (during.outcome, during.sha256) == ("rolled_back", NEW)


def test_the_window_ends_confirmed_or_rolled_back_with_a_restart() -> None:
    pending = Pending(NEW, 60, 0, phase="watching", deadline=T0)
    record = ConfigRecord(active=GOOD, last_good=GOOD, base=LOCAL, pending=pending)
    confirmed = verdict_effects(record, NEW, [])
    assert confirmed is not None
    assert confirmed[0] == ConfigRecord(active=NEW, last_good=NEW, base=LOCAL)
    assert Emit("config.applied", None, {"sha256": NEW, "reason": None}) in confirmed[1]
    assert not any(isinstance(e, Restart) for e in confirmed[1])
    back = verdict_effects(record, NEW, ["bus lan: port or endpoint lost"])
    assert back is not None
    assert back[0] == ConfigRecord(active=GOOD, last_good=GOOD, base=LOCAL)
    told = {"sha256": NEW, "reason": "bus lan: port or endpoint lost"}
    assert Emit("config.rolled_back", None, told) in back[1]
    assert isinstance(back[1][-1], Restart)
    assert verdict_effects(record, GOOD, []) is None  # not the file being confirmed


def test_the_floor_holds_when_the_broker_buses_and_devices_do() -> None:
    buses = (BusFacts("lan", False, 6, ("1203/tstat",)), BusFacts("a", False, 9))
    assert confirm_problems(HealthFacts(buses=buses), offline_before=1) == []
    assert confirm_problems(HealthFacts(buses=buses), offline_before=0) == [
        "1 devices offline, 0 before: 1203/tstat"
    ]
    assert confirm_problems(HealthFacts(broker_down_s=4.2), 0) == [
        "the broker is unreachable (4 s)"
    ]
    stuck = HealthFacts(loops=(Loop("bus[a]", 30, 15),), buses=(BusFacts("x", True, 0),))
    assert confirm_problems(stuck, 0) == [
        "bus[a] has not turned for 30 s (limit 15 s)",
        "bus x: port or endpoint lost",
    ]


def _proposal(**kw: Any) -> Proposal:
    text = kw.pop("text", "[gateway]\n")
    running = sha256_text(text) if kw.pop("same", False) else LOCAL
    return Proposal(sha256_text(text), text, 60, local=LOCAL, running=running, **kw)


def test_the_handler_refuses_with_config_refused_and_keeps_the_record(layout: Any) -> None:  # noqa: F811
    floor = floor_of(layout)
    ctx = handlers.Context("c1", "apply_config", T0)
    refused = handlers.HANDLERS["apply_config"](
        floor, _proposal(problems=("line 3: mqtt.host: missing (required)",)), ctx
    )
    assert isinstance(refused, handlers.Refused)
    assert (refused.code, refused.message) == (
        "invalid",
        "1 problem: line 3: mqtt.host: missing (required)",
    )
    assert [type(e) for e in refused.also] == [Emit, Audit, SaveConfig]
    conflict = handlers.HANDLERS["apply_config"](
        floor, _proposal(conflicts=("gateway.id 'a' → 'b'",)), ctx
    )
    assert isinstance(conflict, handlers.Refused)
    assert conflict.code == "conflict"
    floor.config = ConfigRecord(pending=Pending(NEW, 60, 0))
    busy = handlers.HANDLERS["apply_config"](floor, _proposal(text="x"), ctx)
    assert isinstance(busy, handlers.Refused)
    assert busy.code == "conflict"
    assert "being confirmed" in busy.message


def test_the_handler_keeps_the_file_and_restarts(layout: Any) -> None:  # noqa: F811
    floor = floor_of(layout)
    proposal = _proposal(text="[gateway]\nid = 'x'\n")
    done = handlers.HANDLERS["apply_config"](floor, proposal, handlers.Context("c", "t", T0))
    assert isinstance(done, handlers.Done)
    save, audit, restart = done.intents
    assert isinstance(save, SaveConfig)
    assert save.record.base == LOCAL
    assert save.record.pending is not None
    assert save.record.pending.phase == "switching"
    assert save.text == (proposal.sha256, proposal.text)
    assert isinstance(audit, Audit)
    assert audit.action == "config.apply"
    assert isinstance(restart, Restart)
    same = handlers.HANDLERS["apply_config"](
        floor, _proposal(same=True), handlers.Context("c", "t", T0)
    )
    assert isinstance(same, handlers.Done)
    assert same.result is not None
    assert same.result["unchanged"] is True


def test_the_record_files_and_history_round_trip_through_the_store() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    schema.apply_migrations(conn)
    assert config_store.load_record(conn) == ConfigRecord()
    pending = Pending(NEW, 60, 2, "watching", T0, by="op-1", failure=None)
    record = ConfigRecord(active=GOOD, last_good=GOOD, base=LOCAL, pending=pending)
    config_store.save(conn, record, (NEW, "[gateway]\n"), ConfigEntry("applying", NEW), T0)
    assert config_store.load_record(conn) == record
    assert config_store.load_text(conn, NEW) == "[gateway]\n"
    for i in range(config_store.KEEP_FILES + 3):
        text = (f"{i:064x}", f"# {i}\n")
        config_store.save(conn, record, text, ConfigEntry("refused", text[0]), T0)
    assert config_store.load_text(conn, NEW) == "[gateway]\n"  # the record names it
    kept = conn.execute("SELECT count(*) FROM config_files").fetchone()[0]
    assert kept == config_store.KEEP_FILES + 1
    rows = config_store.history(conn, 5)
    assert [r.action for r in rows] == ["refused"] * 5
    assert rows[-1].sha256 == f"{config_store.KEEP_FILES + 2:064x}"
