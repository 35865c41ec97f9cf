"""Stays, tokens and access-log heads in a real Store: round trips, minimisation, purge."""

from __future__ import annotations

import dataclasses
import pathlib
import sqlite3
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from gateway.adapters import schema
from gateway.adapters.stays import (
    load_log_heads,
    load_stays,
    purge_stays,
    save_log_head,
    save_stay,
)
from gateway.adapters.store import Store
from gateway.core.authz import Authz, AuthzEffect, Refusal, Stay
from gateway.core.effects import SaveStay

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
H = timedelta(hours=1)
K1, K2 = "00000000000000a1", "00000000000000a2"


@pytest.fixture
async def store(tmp_path: pathlib.Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "floor.db")
    yield s
    await s.close()


def stay(**changes: object) -> Stay:
    base = Stay(
        room="1203",
        stay_id="R-1",
        valid_from=T0,
        valid_until=T0 + 48 * H,
        tokens=(K2, K1),
        checked_out_at=None,
        checkout_reason=None,
        generation=1,
        preferences={"setpoint_c": 21.5, "scene": "warm"},
        occupied_at=T0 + timedelta(milliseconds=7),
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def token_rows(conn: sqlite3.Connection) -> list[tuple[str, str, str]]:
    return conn.execute("SELECT room, stay_id, token FROM tokens ORDER BY rowid").fetchall()


async def test_round_trip_keeps_every_field(store: Store) -> None:
    active = stay()
    future = stay(
        room="1204", stay_id="R-2", preferences={}, occupied_at=None, valid_from=T0 + 24 * H
    )
    await store.write(lambda c: (save_stay(c, future), save_stay(c, active)))
    assert await store.read(load_stays) == [active, future]


async def test_update_replaces_tokens_and_checkout_deletes_them(store: Store) -> None:
    await store.write(lambda c: save_stay(c, stay()))
    await store.write(lambda c: save_stay(c, stay(tokens=(K1,), generation=2)))
    assert await store.read(token_rows) == [("1203", "R-1", K1)]
    # Even a value that still holds tokens: once checked out, none are stored.
    ended = stay(checked_out_at=T0 + H, checkout_reason="command", generation=3)
    await store.write(lambda c: save_stay(c, ended))
    assert await store.read(token_rows) == []
    [loaded] = await store.read(load_stays)
    assert loaded.tokens == ()
    assert (loaded.checked_out_at, loaded.checkout_reason, loaded.generation) == (
        T0 + H,
        "command",
        3,
    )


async def test_authz_effects_persisted_and_replayed_give_the_same_state(
    tmp_path: pathlib.Path,
) -> None:
    path = tmp_path / "floor.db"
    a = Authz.from_stays([])
    steps = [
        lambda x: x.checkin("1203", "R-1", T0, T0 + 2 * H, [K1], now=T0 - H),
        lambda x: x.checkin("1203", "R-2", T0 + 2 * H, T0 + 9 * H, [K2], now=T0 - H),
        lambda x: x.tick(T0),
        lambda x: x.add_token("1203", "R-1", K2, T0 + H / 2),
        lambda x: x.tick(T0 + 3 * H),  # R-1 expires, R-2 becomes occupied
        lambda x: x.checkin("1204", "R-3", T0, T0 + 5 * H, [K1], now=T0 + 3 * H),
        lambda x: x.checkout("1204", "R-3", T0 + 4 * H),
    ]
    async with await Store.open(path) as s:
        for step in steps:
            result = step(a)
            assert not isinstance(result, Refusal), result
            a, effects = result
            saves = [e.stay for e in effects if isinstance(e, SaveStay)]
            await s.write(lambda c, saves=saves: [save_stay(c, x) for x in saves])
    async with await Store.open(path) as s:  # a restart
        loaded = await s.read(load_stays)
    replayed = Authz.from_stays(loaded)
    assert replayed.stays() == a.stays()
    for t in (T0, T0 + H, T0 + 3 * H, T0 + 8 * H, T0 + 10 * H):
        for room in ("1203", "1204"):
            assert replayed.desired_tokens(room, t) == a.desired_tokens(room, t)
    after_restart: list[AuthzEffect] = replayed.tick(T0 + 4 * H)[1]
    assert after_restart == []  # nothing is done twice


async def test_purge_deletes_only_stays_ended_before_the_horizon(store: Store) -> None:
    old = stay(stay_id="old", checked_out_at=T0, checkout_reason="expired", tokens=())
    recent = stay(stay_id="recent", checked_out_at=T0 + 10 * H, checkout_reason="command")
    active = stay(stay_id="active", valid_until=T0 + 100 * H)
    await store.write(lambda c: [save_stay(c, x) for x in (old, recent, active)])
    assert await store.write(lambda c: purge_stays(c, T0 + H)) == 1
    assert [x.stay_id for x in await store.read(load_stays)] == ["active", "recent"]
    assert await store.write(lambda c: purge_stays(c, T0 + 1000 * H)) == 1
    assert [x.stay_id for x in await store.read(load_stays)] == ["active"]
    assert await store.read(token_rows) == [("1203", "active", K2), ("1203", "active", K1)]


async def test_log_heads(store: Store) -> None:
    assert await store.read(load_log_heads) == {}
    await store.write(
        lambda c: (save_log_head(c, "1203/lock", 5), save_log_head(c, "1204/lock", 0))
    )
    await store.write(lambda c: save_log_head(c, "1203/lock", 65535))
    assert await store.read(load_log_heads) == {"1203/lock": 65535, "1204/lock": 0}


async def test_a_version_2_database_gains_occupied_at(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "floor.db"
    conn = sqlite3.connect(path, isolation_level=None)
    assert schema.apply_migrations(conn, schema.MIGRATIONS[:2]) == (0, 2)
    conn.execute(
        "INSERT INTO stays VALUES ('1203', 'R-1', '2026-11-23T12:00:00.000Z',"
        " '2026-11-25T11:00:00.000Z', NULL, NULL, 4, '{\"setpoint_c\":22}')"
    )
    conn.execute("INSERT INTO tokens VALUES ('1203', 'R-1', ?)", (K1,))
    conn.close()
    async with await Store.open(path) as s:
        assert s.schema_version == schema.LATEST_VERSION
        [loaded] = await s.read(load_stays)
        heads = await s.read(load_log_heads)
    assert loaded == stay(
        valid_until=datetime(2026, 11, 25, 11, tzinfo=UTC),
        tokens=(K1,),
        generation=4,
        preferences={"setpoint_c": 22},
        occupied_at=None,
    )
    assert heads == {}
