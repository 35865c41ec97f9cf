"""The SQLite store: group commit, gapless seq, migrations, integrity, shutdown."""

from __future__ import annotations

import asyncio
import pathlib
import re
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.adapters import journal, schema
from gateway.adapters import store as store_mod
from gateway.adapters.store import Store
from gateway.model.errors import StoreClosedError, StoreCorruptError, StoreError
from gateway.model.time import format_ts
from tests.waiting import until

T0 = datetime(2026, 11, 23, 6, 3, 22, 123456, tzinfo=UTC)


class Boom(Exception):
    """An op's own failure."""


def store_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("store-")]


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    before = set(threading.enumerate())
    yield
    assert store_threads() == []
    assert set(threading.enumerate()) <= before


@pytest.fixture
async def store(tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "floor.db")
    yield s
    await s.close()


def put_meta(key: str, value: str = "v") -> Callable[[sqlite3.Connection], None]:
    def op(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))

    return op


def meta_keys(conn: sqlite3.Connection) -> set[str]:
    return {row[0] for row in conn.execute("SELECT key FROM meta")}


def event(
    type_: str = "door.opened", room: str | None = "1203"
) -> Callable[[sqlite3.Connection], schema.StoredEvent]:
    def op(conn: sqlite3.Connection) -> schema.StoredEvent:
        return journal.append_event(conn, type_, room=room, data={"n": 1}, ts=T0)

    return op


class Gate:
    """An op that holds the writer until released, so the next ops queue into one batch."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, conn: sqlite3.Connection) -> None:
        self.entered.set()
        assert self.release.wait(10)


# --- open ----------------------------------------------------------------------------


async def test_open_creates_wal_full_latest(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "var" / "lib" / "floorgate" / "floor.db"
    async with await Store.open(path) as s:
        assert path.exists()
        assert path.parent.stat().st_mode & 0o777 & ~0o750 == 0  # at most rwxr-x---
        assert s.schema_version == schema.LATEST_VERSION == len(schema.MIGRATIONS)

        def pragmas(conn: sqlite3.Connection) -> tuple[object, ...]:
            names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "user_version")
            return tuple(conn.execute(f"PRAGMA {n}").fetchone()[0] for n in names)

        latest = schema.LATEST_VERSION
        assert await s.write(pragmas) == ("wal", 2, 1, store_mod.BUSY_TIMEOUT_MS, latest)
        assert await s.read(pragmas) == ("wal", 2, 1, store_mod.BUSY_TIMEOUT_MS, latest)
        assert await s.read(lambda c: c.execute("PRAGMA query_only").fetchone()[0]) == 1


async def test_synchronous_is_a_parameter(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError):
        await Store.open(tmp_path / "x.db", synchronous="sometimes")
    async with await Store.open(tmp_path / "x.db", synchronous="normal") as s:
        assert await s.write(lambda c: c.execute("PRAGMA synchronous").fetchone()[0]) == 1


async def test_migrations_are_numbered_from_one() -> None:
    assert [v for v, _ in schema.MIGRATIONS] == list(range(1, len(schema.MIGRATIONS) + 1))


async def test_open_refuses_a_newer_schema(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "floor.db"
    conn = sqlite3.connect(path, isolation_level=None)
    schema.apply_migrations(conn)
    conn.execute(f"PRAGMA user_version = {schema.LATEST_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await Store.open(path)


async def test_open_maps_os_errors(tmp_path: pathlib.Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(StoreError):
        await Store.open(tmp_path / "file" / "floor.db")


# --- group commit --------------------------------------------------------------------


async def test_concurrent_writes_all_land(store: Store) -> None:
    await asyncio.gather(*(store.write(put_meta(f"k{i}")) for i in range(200)))
    assert await store.read(meta_keys) == {f"k{i}" for i in range(200)}


async def test_failing_op_rolls_back_only_itself(store: Store) -> None:
    def bad(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('bad', 'v')")
        raise Boom("mine")

    gate = Gate()
    held = asyncio.ensure_future(store.write(gate))
    await until(gate.entered.is_set)
    ops = [put_meta("a"), bad, put_meta("a"), put_meta("b")]  # 3rd: IntegrityError (dup key)
    futures = [asyncio.ensure_future(store.write(op)) for op in ops]
    await until(lambda: store._writer._queue.qsize() == len(ops))  # all in one batch
    gate.release.set()
    results = await asyncio.gather(held, *futures, return_exceptions=True)
    assert results[1] is None
    assert isinstance(results[2], Boom)
    assert str(results[2]) == "mine"
    assert isinstance(results[3], sqlite3.IntegrityError)
    assert results[4] is None
    assert await store.read(meta_keys) == {"a", "b"}


async def test_op_that_ends_the_transaction_fails_its_batch_and_rest_rerun(store: Store) -> None:
    gate = Gate()
    held = asyncio.ensure_future(store.write(gate))
    await until(gate.entered.is_set)
    ops = [put_meta("lost"), lambda c: c.execute("ROLLBACK"), put_meta("rerun")]
    futures = [asyncio.ensure_future(store.write(op)) for op in ops]
    await until(lambda: store._writer._queue.qsize() == len(ops))
    gate.release.set()
    results = await asyncio.gather(held, *futures, return_exceptions=True)
    assert isinstance(results[1], StoreError)
    assert isinstance(results[2], StoreError)
    assert results[3] is None
    assert await store.read(meta_keys) == {"rerun"}


async def test_backlog_is_split_into_bounded_batches(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "MAX_BATCH", 7)
    gate = Gate()
    held = asyncio.ensure_future(store.write(gate))
    await until(gate.entered.is_set)
    # An outside connection sees only committed rows: ops of one batch all see the same count.
    outside = sqlite3.connect(store.path, check_same_thread=False)
    seen: list[int] = []

    def op(conn: sqlite3.Connection) -> None:
        seen.append(outside.execute("SELECT count(*) FROM meta").fetchone()[0])
        conn.execute("INSERT INTO meta (key, value) VALUES (?, 'v')", (f"k{len(seen)}",))

    futures = [asyncio.ensure_future(store.write(op)) for _ in range(50)]
    await until(lambda: store._writer._queue.qsize() == 50)
    gate.release.set()
    await asyncio.gather(held, *futures)
    outside.close()
    assert [seen.count(n) for n in sorted(set(seen))] == [7] * 7 + [1]


async def test_cancelled_caller_still_commits(store: Store) -> None:
    gate = Gate()
    held = asyncio.ensure_future(store.write(gate))
    await until(gate.entered.is_set)
    doomed = asyncio.ensure_future(store.write(put_meta("kept")))
    await until(lambda: store._writer._queue.qsize() == 1)
    doomed.cancel()
    gate.release.set()
    await held
    await store.ping()
    assert doomed.cancelled()
    assert await store.read(meta_keys) == {"kept"}


# --- events --------------------------------------------------------------------------


async def test_seq_is_gapless_and_survives_reopen_and_purge(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "floor.db"
    async with await Store.open(path) as s:
        events = await asyncio.gather(*(s.write(event()) for _ in range(50)))

        def append_then_fail(conn: sqlite3.Connection) -> None:
            event()(conn)
            raise Boom

        with pytest.raises(Boom):
            await s.write(append_then_fail)
        assert sorted(e.seq for e in events) == list(range(1, 51))
    async with await Store.open(path) as s:
        assert (await s.write(event())).seq == 51
        pending = await s.read(lambda c: schema.first_undelivered(c, 1000))
        assert [e.seq for e in pending] == list(range(1, 52))
        await s.write(lambda c: schema.mark_delivered(c, [e.seq for e in pending], T0))
        assert await s.write(lambda c: schema.first_undelivered(c, 10)) == []
        later = T0 + timedelta(days=1)
        assert await s.write(lambda c: schema.purge_delivered(c, later)) == 51
        assert await s.read(lambda c: schema.events_since(c, 0, 100)) == []
        fresh = await s.write(event("gateway.started", None))
        assert fresh.seq == 52
        assert await s.read(lambda c: schema.events_since(c, 0, 100)) == [fresh]


async def test_stored_event_round_trips(store: Store) -> None:
    def op(conn: sqlite3.Connection) -> schema.StoredEvent:
        return journal.append_event(
            conn, "alarm.raised", room="1203", data={"level": 0, "who": "Zoë"}, ts=T0
        )

    ev = await store.write(op)
    assert ev.ts == "2026-11-23T06:03:22.123Z"
    assert re.fullmatch(r"[0-9a-f]{32}", ev.id)
    assert await store.read(lambda c: schema.events_since(c, 0, 10)) == [ev]
    raw = await store.read(lambda c: c.execute("SELECT data FROM events").fetchone()[0])
    assert raw == '{"level":0,"who":"Zoë"}'


async def test_low_value_events_are_purged_sooner(store: Store) -> None:
    def op(conn: sqlite3.Connection) -> None:
        for low in (False, True, False, True):
            journal.append_event(conn, "door.opened", room="1203", data={}, ts=T0, low_value=low)
        journal.append_event(conn, "door.closed", room="1203", data={}, ts=T0, low_value=True)
        schema.mark_delivered(conn, [1, 2, 3, 4], T0)  # seq 5 stays undelivered

    await store.write(op)
    deleted = await store.write(
        lambda c: schema.purge_delivered(c, T0, low_value_older_than=T0 + timedelta(hours=1))
    )
    assert deleted == 2
    left = await store.read(lambda c: [e.seq for e in schema.events_since(c, 0, 10)])
    assert left == [1, 3, 5]


async def test_event_and_state_change_are_atomic(store: Store) -> None:
    def op(conn: sqlite3.Connection) -> None:
        schema.set_point_value(conn, "1203/rio", "bath_count", 3, 1.0)
        journal.append_event(conn, "room.dnd", room="1203", data={"on": True}, ts=T0)
        raise Boom

    with pytest.raises(Boom):
        await store.write(op)
    assert await store.read(schema.load_point_values) == {}
    assert await store.read(lambda c: schema.events_since(c, 0, 10)) == []
    assert await store.read(schema.current_seq) == 0
    assert (await store.write(event())).seq == 1


async def test_point_values_upsert(store: Store) -> None:
    await store.write(lambda c: schema.set_point_value(c, "1203/rio", "bath_count", 1, 1.0))
    await store.write(lambda c: schema.set_point_value(c, "1203/rio", "bath_count", 2, 2.0))
    await store.write(lambda c: schema.set_point_value(c, "1203/tstat", "temp", 23.4, 2.0))
    assert await store.read(schema.load_point_values) == {
        ("1203/rio", "bath_count"): 2,
        ("1203/tstat", "temp"): 23.4,
    }


async def test_audit_rows(store: Store) -> None:
    await store.write(
        lambda c: journal.append_audit(
            c, actor="desk-1", action="unlock", room="1203", detail={"reason": "x"}, ts=T0
        )
    )
    rows = await store.read(lambda c: c.execute("SELECT ts, actor, detail FROM audit").fetchall())
    assert rows == [("2026-11-23T06:03:22.123Z", "desk-1", '{"reason":"x"}')]


def test_append_event_outside_a_transaction_is_refused(tmp_path: pathlib.Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    schema.apply_migrations(conn)
    with pytest.raises(StoreError):
        journal.append_event(conn, "x", room=None, data={}, ts=T0)
    conn.close()


def test_format_ts() -> None:
    assert format_ts(T0) == "2026-11-23T06:03:22.123Z"
    cet = timezone(timedelta(hours=1))
    assert format_ts(datetime(2026, 1, 1, 0, 30, tzinfo=cet)) == "2025-12-31T23:30:00.000Z"
    with pytest.raises(ValueError):
        format_ts(datetime(2026, 1, 1))  # noqa: DTZ001


@given(
    st.datetimes(
        min_value=datetime(1900, 1, 2),  # noqa: DTZ001
        max_value=datetime(9999, 12, 30),  # noqa: DTZ001
        timezones=st.timezones(),
    )
)
def test_format_ts_round_trips(dt: datetime) -> None:
    text = format_ts(dt)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", text)
    back = datetime.fromisoformat(text)
    exact = dt.astimezone(UTC)
    assert back == exact.replace(microsecond=exact.microsecond // 1000 * 1000)


# --- migrations and integrity --------------------------------------------------------


async def test_upgrade_from_migration_1(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "floor.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert schema.apply_migrations(conn, schema.MIGRATIONS[:1]) == (0, 1)
    conn.executescript(
        """
        BEGIN;
        INSERT INTO stays VALUES ('1203', 'R-1', '2026-11-20T14:00:00.000Z',
                                  '2026-11-25T11:00:00.000Z', NULL, NULL, 1, '{}');
        INSERT INTO tokens VALUES ('1203', 'R-1', '00112233445566ff');
        INSERT INTO events (seq, id, ts, type, room, data)
            VALUES (1, 'e1', '2026-11-20T14:00:00.000Z', 'room.checked_in', '1203', '{}');
        UPDATE counters SET value = 1 WHERE name = 'event_seq';
        COMMIT;
        """
    )
    conn.close()

    async with await Store.open(path) as s:
        assert s.schema_version == schema.LATEST_VERSION

        def inspect(conn: sqlite3.Connection) -> tuple[list[str], list[str], int]:
            tables = [
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ]
            columns = [r[1] for r in conn.execute("PRAGMA table_info(events)")]
            low = conn.execute("SELECT low_value FROM events").fetchone()[0]
            return tables, columns, low

        tables, columns, low = await s.read(inspect)
        assert {"audit", "stays", "tokens", "events", "counters"} <= set(tables)
        assert "low_value" in columns
        assert low == 0
        [old] = await s.read(lambda c: schema.events_since(c, 0, 10))
        assert (old.seq, old.id, old.type) == (1, "e1", "room.checked_in")
        assert (await s.write(event())).seq == 2
        # foreign_keys=ON holds on our connection: deleting the stay cascades to its tokens.
        await s.write(lambda c: c.execute("DELETE FROM stays WHERE stay_id = 'R-1'"))
        assert await s.read(lambda c: c.execute("SELECT count(*) FROM tokens").fetchone()[0]) == 0


async def _make_db_with_pages(path: pathlib.Path) -> None:
    async with await Store.open(path) as s:

        def fill(conn: sqlite3.Connection) -> None:
            conn.execute("CREATE INDEX meta_value ON meta (value)")
            for i in range(300):
                conn.execute("INSERT INTO meta VALUES (?, ?)", (f"k{i:03d}", f"{i:03d}" * 150))

        await s.write(fill)


async def test_corrupt_pages_refuse_to_open(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "floor.db"
    await _make_db_with_pages(path)
    size = path.stat().st_size
    assert size > 50 * 4096
    with path.open("r+b") as f:
        f.seek(size // 2)
        f.write(b"\xa5" * 8192)
    with pytest.raises(StoreCorruptError) as info:
        await Store.open(path)
    assert not isinstance(info.value, sqlite3.Error)


async def test_integrity_report_refuses_to_open(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "floor.db"
    await _make_db_with_pages(path)
    # Point the index at another column: every page is well-formed, but it no longer matches.
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "UPDATE sqlite_schema SET sql = 'CREATE INDEX meta_value ON meta (key)'"
        " WHERE name = 'meta_value'"
    )
    conn.close()
    with pytest.raises(StoreCorruptError, match="integrity_check failed") as info:
        await Store.open(path)
    assert len(str(info.value).splitlines()) <= 6


async def test_garbage_file_raises_store_error(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "floor.db"
    path.write_bytes(b"this is not a database, just text. " * 300)
    with pytest.raises(StoreError) as info:
        await Store.open(path)
    assert not isinstance(info.value, sqlite3.Error)
    assert isinstance(info.value.__cause__, sqlite3.DatabaseError)


# --- reader --------------------------------------------------------------------------


async def test_reader_sees_committed_data_and_cannot_write(store: Store) -> None:
    assert await store.read(meta_keys) == set()
    await store.write(put_meta("k"))
    assert await store.read(meta_keys) == {"k"}
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await store.read(put_meta("nope"))
    assert await store.read(meta_keys) == {"k"}


async def test_read_error_reaches_its_caller(store: Store) -> None:
    with pytest.raises(Boom):
        await store.read(lambda c: _raise(Boom()))
    assert await store.read(meta_keys) == set()


# --- lifecycle -----------------------------------------------------------------------


async def test_close_is_idempotent_and_drains(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "floor.db"
    s = await Store.open(path)
    assert {t.name for t in store_threads()} == {"store-writer", "store-reader"}
    tasks = [asyncio.ensure_future(s.write(put_meta(f"k{i}"))) for i in range(100)]
    await asyncio.sleep(0)  # one turn: every task has queued its write
    await asyncio.gather(s.close(), s.close())
    await s.close()
    assert all(t.done() and t.exception() is None for t in tasks)
    assert store_threads() == []
    with pytest.raises(StoreClosedError):
        await s.write(put_meta("late"))
    with pytest.raises(StoreClosedError):
        await s.read(meta_keys)
    with pytest.raises(StoreClosedError):
        await s.ping()
    async with await Store.open(path) as again:
        assert len(await again.read(meta_keys)) == 100


async def test_crashed_writer_fails_its_callers(store: Store) -> None:
    def die(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('half', 'v')")
        raise SystemExit  # not an Exception: ends the writer thread

    with pytest.raises(StoreError, match="crashed"):
        await store.write(die)
    with pytest.raises(StoreError, match="crashed"):
        await store.write(put_meta("after"))
    assert await store.read(meta_keys) == set()
    await store.close()


async def test_ping_and_last_progress(store: Store) -> None:
    before = store.last_progress
    await until(lambda: time.monotonic() > before)
    await store.ping()
    assert store.last_progress > before
    assert store.last_progress <= time.monotonic()


async def test_sqlite_never_runs_on_the_event_loop_thread(store: Store) -> None:
    """Every write and read runs on the store's own threads, so SQLite never blocks the loop.

    (Loop lag is a benchmark figure, not a test assertion: this checks the cause instead.)
    """
    loop_thread = threading.get_ident()
    seen: set[int] = set()

    def write(conn: sqlite3.Connection) -> None:
        seen.add(threading.get_ident())
        event()(conn)

    def read(conn: sqlite3.Connection) -> int:
        seen.add(threading.get_ident())
        return schema.current_seq(conn)

    await asyncio.gather(*(store.write(write) for _ in range(200)))
    assert await store.read(read) == 200
    assert seen
    assert loop_thread not in seen


def _raise(exc: BaseException) -> None:
    raise exc


async def test_events_page_by_room_from_either_end(tmp_path: pathlib.Path) -> None:
    store = await Store.open(tmp_path / "page.db")
    try:
        t = datetime(2026, 11, 23, tzinfo=UTC)

        def fill(conn: sqlite3.Connection) -> None:
            for i in range(6):
                journal.append_event(conn, "e", room="1201" if i % 2 else None, data={}, ts=t)

        await store.write(fill)
        last = await store.read(lambda c: schema.events_page(c, None, None, 2))
        assert [e.seq for e in last] == [5, 6]
        after = await store.read(lambda c: schema.events_page(c, 2, "1201", 10))
        assert [e.seq for e in after] == [4, 6]
        recent = await store.read(lambda c: schema.events_page(c, None, "1201", 2))
        assert [e.seq for e in recent] == [4, 6]
    finally:
        await store.close()
