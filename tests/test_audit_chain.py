"""The audit log's hash chain: appended by the journal, each row also an ``audit`` event,
checked end to end; an altered, deleted or unchained row is named."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from gateway.adapters import journal, schema, stays
from gateway.adapters.access_store import (
    load_lockdown,
    load_staff_keys,
    save_lockdown,
    save_staff_key,
)
from gateway.adapters.store import Store
from gateway.core.audit import GENESIS, AuditRecord, chain_hash, check_chain
from gateway.core.staff import Lockdown, Schedule, StaffKey
from tests.test_stays_store import stay

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
async def store(tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "floor.db")
    yield s
    await s.close()


def append(conn: sqlite3.Connection, n: int) -> None:
    for i in range(n):
        journal.append_audit(
            conn, actor=f"op-{i}", action="unlock", room="1203", detail={"reason": "ïd"}, ts=T0
        )


async def test_rows_chain_from_genesis_and_each_goes_upstream(store: Store) -> None:
    await store.write(lambda c: append(c, 3))
    records, start = await store.read(schema.audit_chain)
    assert start == 1
    assert [r.seq for r in records] == [1, 2, 3]
    assert records[0].prev_hash == GENESIS
    assert records[1].prev_hash == records[0].hash
    assert records[0].hash == chain_hash(GENESIS, records[0].canonical())
    assert check_chain(records, start).ok
    events = await store.read(lambda c: schema.events_since(c, 0, 10))
    assert [e.type for e in events] == ["audit"] * 3
    data = events[2].data
    assert data == {
        "audit_seq": 3,
        "actor": "op-2",
        "action": "unlock",
        "detail": {"reason": "ïd"},
        "hash": records[2].hash,
        "prev_hash": records[1].hash,
    }
    assert events[2].room == "1203"


async def test_a_row_changed_in_the_database_is_named(store: Store, tmp_path: pathlib.Path) -> None:
    await store.write(lambda c: append(c, 5))
    with sqlite3.connect(tmp_path / "floor.db") as conn:  # as someone with sqlite3 would
        conn.execute("UPDATE audit SET actor = 'nobody' WHERE id = 3")
    check = check_chain(*await store.read(schema.audit_chain))
    assert (check.ok, check.first_bad) == (False, 3)
    assert check.problem == "hash does not match the row's content"


async def test_a_deleted_row_is_found_at_the_next_one(store: Store, tmp_path: pathlib.Path) -> None:
    await store.write(lambda c: append(c, 5))
    with sqlite3.connect(tmp_path / "floor.db") as conn:
        conn.execute("DELETE FROM audit WHERE id = 2")
    check = check_chain(*await store.read(schema.audit_chain))
    assert (check.first_bad, check.problem) == (3, "rows 2..2 missing")


def test_rows_from_before_the_chain_are_counted_not_checked() -> None:
    old = AuditRecord(1, "2026-01-01T00:00:00.000Z", "tech", "x", None, {}, None, None)
    first = AuditRecord(2, "2026-01-02T00:00:00.000Z", "tech", "y", None, {}, GENESIS, None)
    first = dataclasses.replace(first, hash=chain_hash(GENESIS, first.canonical()))
    check = check_chain([old, first], chain_from=2)
    assert (check.ok, check.rows, check.unchained) == (True, 2, 1)
    # Hashes wiped from a row of the chain: named, not taken for an old row.
    wiped = AuditRecord(2, first.ts, "tech", "y", None, {}, None, None)
    assert check_chain([old, wiped], chain_from=2).first_bad == 2


def test_migrating_an_old_database_starts_the_chain_after_its_rows(tmp_path: pathlib.Path) -> None:
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    schema.apply_migrations(conn, schema.MIGRATIONS[:3])
    conn.execute(
        "INSERT INTO audit (ts, actor, action, room, detail) VALUES (?, ?, ?, ?, ?)",
        ("2026-01-01T00:00:00.000Z", "tech", "floorctl.scan", None, "{}"),
    )
    schema.apply_migrations(conn)
    conn.execute("BEGIN")
    append(conn, 2)
    conn.execute("COMMIT")
    check = check_chain(*schema.audit_chain(conn))
    assert (check.ok, check.rows, check.unchained) == (True, 3, 1)
    conn.close()


async def test_staff_keys_and_lockdown_round_trip(store: Store) -> None:
    key = StaffKey(
        "hk-ana",
        "00000000000000b1",
        frozenset({"1201", "1202"}),
        Schedule.parse(["mon", "fri"], "22:00", "06:00"),
        False,
        "command",
        1234,
    )
    await store.write(lambda c: save_staff_key(c, "hk-ana", key, (), T0))
    await store.write(lambda c: save_lockdown(c, Lockdown(True, "sec-1", "drill", T0)))
    keys, revoked = await store.read(load_staff_keys)
    assert (keys, revoked) == ([key], [])
    assert await store.read(load_lockdown) == Lockdown(True, "sec-1", "drill", T0)
    await store.write(lambda c: save_staff_key(c, "hk-ana", None, ("1a2b3c4d",), T0))
    assert await store.read(load_staff_keys) == ([], [("hk-ana", "1a2b3c4d")])


async def test_a_moved_stay_keeps_where_it_went(store: Store) -> None:
    moved = stay(moved_to="1204")
    await store.write(lambda c: stays.save_stay(c, moved))
    assert (await store.read(stays.load_stays))[0].moved_to == "1204"


def test_canonical_row_is_the_spec_form() -> None:
    row = AuditRecord(
        7, "2026-11-23T12:00:00.000Z", "fd-03", "unlock", "1203", {"b": 1, "a": "é"}, None, None
    )
    assert json.loads(row.canonical()) == {
        "seq": 7,
        "ts": "2026-11-23T12:00:00.000Z",
        "actor": "fd-03",
        "action": "unlock",
        "room": "1203",
        "detail": {"a": "é", "b": 1},
    }
    assert row.canonical().startswith(
        b'{"action":"unlock","actor":"fd-03","detail":{"a":"\xc3\xa9"'
    )
