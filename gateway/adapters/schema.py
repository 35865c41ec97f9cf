"""The store's schema: numbered migrations, and the domain helpers that run inside it.

Every function here is synchronous and takes the caller's ``sqlite3.Connection``; they
are meant to run inside ``Store.write`` / ``Store.read`` on the store's threads, so an
event is appended in the same transaction as the state change that caused it.

Conventions: times are RFC 3339 UTC text with milliseconds and ``Z`` (``format_ts``),
fixed width, so text order is time order; JSON columns hold compact JSON; the schema
version is ``PRAGMA user_version``. Migrations are append-only: never edit a released one,
add the next number.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.core.audit import AuditRecord
from gateway.model.errors import StoreError
from gateway.model.time import format_ts

MIGRATIONS: list[tuple[int, str]] = [
    (
        1,
        """
        CREATE TABLE meta (
            key   TEXT NOT NULL PRIMARY KEY,
            value TEXT NOT NULL
        );
        CREATE TABLE counters (
            name  TEXT NOT NULL PRIMARY KEY,
            value INTEGER NOT NULL
        );
        INSERT INTO counters (name, value) VALUES ('event_seq', 0);
        CREATE TABLE point_values (
            device     TEXT NOT NULL,
            point      TEXT NOT NULL,
            value      TEXT,  -- JSON
            updated_at REAL,
            PRIMARY KEY (device, point)
        );
        CREATE TABLE stays (
            room            TEXT NOT NULL,
            stay_id         TEXT NOT NULL,
            valid_from      TEXT,
            valid_until     TEXT,
            checked_out_at  TEXT NULL,
            checkout_reason TEXT NULL,
            generation      INTEGER NOT NULL,
            preferences     TEXT,  -- JSON
            PRIMARY KEY (room, stay_id)
        );
        CREATE TABLE tokens (
            room    TEXT NOT NULL,
            stay_id TEXT NOT NULL,
            token   TEXT NOT NULL,
            PRIMARY KEY (room, stay_id, token),
            FOREIGN KEY (room, stay_id) REFERENCES stays (room, stay_id) ON DELETE CASCADE
        );
        CREATE TABLE alarms (
            alarm_id        TEXT NOT NULL PRIMARY KEY,
            room            TEXT NULL,
            kind            TEXT,
            point           TEXT,
            state           TEXT,
            level           INTEGER,
            raised_at       TEXT,
            acknowledged_at TEXT NULL,
            acknowledged_by TEXT NULL,
            resolved_at     TEXT NULL,
            resolved_by     TEXT NULL,
            level_due_at    TEXT NULL,
            data            TEXT  -- JSON
        );
        CREATE INDEX alarms_unresolved ON alarms (raised_at) WHERE resolved_at IS NULL;
        CREATE TABLE events (
            seq          INTEGER PRIMARY KEY,
            id           TEXT UNIQUE NOT NULL,
            ts           TEXT NOT NULL,
            type         TEXT NOT NULL,
            room         TEXT NULL,
            data         TEXT NOT NULL,  -- JSON
            delivered_at TEXT NULL
        );
        CREATE INDEX events_delivered_at ON events (delivered_at);
        CREATE TABLE commands (
            id          TEXT NOT NULL PRIMARY KEY,
            executed_at TEXT NOT NULL,
            reply       TEXT NOT NULL  -- JSON
        );
        CREATE INDEX commands_executed_at ON commands (executed_at);
        """,
    ),
    (
        2,
        """
        CREATE TABLE audit (
            id     INTEGER PRIMARY KEY,
            ts     TEXT NOT NULL,
            actor  TEXT NOT NULL,
            action TEXT NOT NULL,
            room   TEXT NULL,
            detail TEXT NOT NULL  -- JSON
        );
        CREATE INDEX audit_ts ON audit (ts);
        -- low-value events (door.opened/closed…) are purged sooner once delivered
        ALTER TABLE events ADD COLUMN low_value INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX events_low_value ON events (low_value, delivered_at);
        """,
    ),
    (
        3,
        """
        -- the room became occupied for this stay (exactly once, across restarts)
        ALTER TABLE stays ADD COLUMN occupied_at TEXT NULL;
        CREATE INDEX stays_checked_out_at ON stays (checked_out_at)
            WHERE checked_out_at IS NOT NULL;
        -- the newest access-log seq handled per lock
        CREATE TABLE lock_log_heads (
            device TEXT NOT NULL PRIMARY KEY,
            head   INTEGER NOT NULL
        );
        """,
    ),
    (
        4,
        """
        -- guest-room management: the PMS's housekeeping status and a set_energy hold
        CREATE TABLE room_status (
            room         TEXT NOT NULL PRIMARY KEY,
            housekeeping TEXT NULL,
            hold_stay    TEXT NULL,
            updated_at   REAL NOT NULL
        );
        -- the savings ledger: one row per room and local day, kept 400 days
        CREATE TABLE energy_ledger (
            room TEXT NOT NULL,
            day  TEXT NOT NULL,  -- local date, YYYY-MM-DD
            data TEXT NOT NULL,  -- JSON: the energy.daily data
            PRIMARY KEY (room, day)
        );
        CREATE INDEX energy_ledger_day ON energy_ledger (day);
        """,
    ),
    (
        5,
        """
        -- a stay moved to another room ends in its old room when its grace does
        ALTER TABLE stays ADD COLUMN moved_to TEXT NULL;
        -- staff keys added by command (floor-file keys live in the floor file)
        CREATE TABLE staff_keys (
            key_id   TEXT NOT NULL PRIMARY KEY,
            token    TEXT NOT NULL,
            zones    TEXT NOT NULL,  -- JSON list of room ids, or ["floor"]
            schedule TEXT NULL,      -- JSON {days, from, until}; NULL: always
            security INTEGER NOT NULL,
            added_ms INTEGER NOT NULL
        );
        -- revoked staff keys: key id and token hash (so a revoked floor-file key stays so)
        CREATE TABLE staff_keys_revoked (
            key_id     TEXT NOT NULL,
            token_hash TEXT NOT NULL,
            revoked_at TEXT NOT NULL,
            PRIMARY KEY (key_id, token_hash)
        );
        -- the floor's lockdown, one row: it survives restarts and power loss
        CREATE TABLE lockdown (
            id     INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
            active INTEGER NOT NULL,
            set_by TEXT NOT NULL,
            reason TEXT NOT NULL,
            since  TEXT NOT NULL
        );
        -- the audit log becomes a hash chain; rows written before this migration keep
        -- NULL hashes and stand before the chain's start (gateway.adapters.journal)
        ALTER TABLE audit ADD COLUMN prev_hash TEXT NULL;
        ALTER TABLE audit ADD COLUMN hash TEXT NULL;
        CREATE TABLE audit_chain (
            id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
            chain_from INTEGER NOT NULL  -- the first audit row of the chain
        );
        INSERT INTO audit_chain (id, chain_from) SELECT 1, COALESCE(MAX(id), 0) + 1 FROM audit;
        """,
    ),
    (
        6,
        """
        -- remote configuration: the floor files applied remotely, by sha256
        CREATE TABLE config_files (
            sha256    TEXT NOT NULL PRIMARY KEY,
            text      TEXT NOT NULL,
            stored_at TEXT NOT NULL
        );
        -- which file runs, the last-known-good one, the one being confirmed (one row)
        CREATE TABLE config_state (
            id     INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
            record TEXT NOT NULL  -- JSON
        );
        CREATE TABLE config_history (
            id     INTEGER PRIMARY KEY,
            ts     TEXT NOT NULL,
            action TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            reason TEXT NULL,
            by     TEXT NULL
        );
        """,
    ),
]
"""(version, SQL script) pairs, versions 1, 2, … in order; each runs in one transaction."""

LATEST_VERSION: int = MIGRATIONS[-1][0]


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """One row of the event outbox, as delivered upstream."""

    seq: int
    id: str
    ts: str
    type: str
    room: str | None
    data: dict[str, object]


def apply_migrations(
    conn: sqlite3.Connection, migrations: Sequence[tuple[int, str]] = MIGRATIONS
) -> tuple[int, int]:
    """Apply migrations newer than ``user_version``, one transaction each; return (before, after).

    ``conn`` must be in autocommit mode (``isolation_level=None``) and outside a transaction.
    Raises StoreError if the database is newer than the newest migration given.
    """
    versions = [version for version, _ in migrations]
    if versions != sorted(set(versions)) or (versions and versions[0] < 1):
        raise ValueError(f"migration versions must be increasing and >= 1: {versions}")
    if conn.in_transaction:
        raise StoreError("apply_migrations must run outside a transaction")
    before = user_version(conn)
    latest = versions[-1] if versions else 0
    if before > latest:
        raise StoreError(f"database schema version {before} is newer than supported ({latest})")
    current = before
    for version, sql in migrations:
        if version <= current:
            continue
        try:
            # executescript commits a pending transaction first, so BEGIN lives in the script.
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {int(version)};\nCOMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        current = version
    return before, current


def user_version(conn: sqlite3.Connection) -> int:
    """Return the schema version recorded in ``PRAGMA user_version``."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def current_seq(conn: sqlite3.Connection) -> int:
    """Return the last ``seq`` handed out (0 before the first event)."""
    row = conn.execute("SELECT value FROM counters WHERE name = 'event_seq'").fetchone()
    if row is None:
        raise StoreError("counter event_seq is missing")
    return int(row[0])


def set_point_value(
    conn: sqlite3.Connection, device: str, point: str, value: object, ts: float
) -> None:
    """Upsert the last value (JSON-serialisable) of one device point."""
    conn.execute(
        "INSERT INTO point_values (device, point, value, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (device, point)"
        " DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
        (device, point, json_text(value), ts),
    )


def load_point_values(conn: sqlite3.Connection) -> dict[tuple[str, str], object]:
    """Return every stored point value keyed by (device, point)."""
    rows = conn.execute("SELECT device, point, value FROM point_values")
    return {(device, point): json.loads(value) for device, point, value in rows}


def events_since(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[StoredEvent]:
    """Return up to ``limit`` stored events with ``seq > after_seq``, in seq order."""
    rows = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608
        (after_seq, limit),
    )
    return [_event_from_row(row) for row in rows]


def events_between(conn: sqlite3.Connection, first: int, last: int) -> list[StoredEvent]:
    """The stored events with ``first <= seq <= last``, in seq order (gaps: purged or shed)."""
    rows = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq",  # noqa: S608
        (first, last),
    )
    return [_event_from_row(row) for row in rows]


def events_page(
    conn: sqlite3.Connection, since_seq: int | None, room: str | None, limit: int
) -> list[StoredEvent]:
    """Stored events in seq order, only ``room``'s if given: the first ``limit`` after
    ``since_seq``, or (``since_seq`` None) the last ``limit``."""
    where = ["(? IS NULL OR room = ?)"]
    params: list[object] = [room, room]
    if since_seq is not None:
        where.append("seq > ?")
        params.append(since_seq)
    order = "ASC" if since_seq is not None else "DESC"
    rows = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE {' AND '.join(where)}"  # noqa: S608
        f" ORDER BY seq {order} LIMIT ?",
        (*params, limit),
    )
    return sorted((_event_from_row(row) for row in rows), key=lambda e: e.seq)


def first_undelivered(conn: sqlite3.Connection, limit: int) -> list[StoredEvent]:
    """Return up to ``limit`` undelivered events, oldest seq first."""
    rows = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events"  # noqa: S608
        " WHERE delivered_at IS NULL ORDER BY seq LIMIT ?",
        (limit,),
    )
    return [_event_from_row(row) for row in rows]


def mark_delivered(conn: sqlite3.Connection, seqs: Sequence[int], ts: datetime) -> None:
    """Mark events delivered at ``ts``; an event already marked keeps its first time."""
    stamp = format_ts(ts)
    conn.executemany(
        "UPDATE events SET delivered_at = ? WHERE seq = ? AND delivered_at IS NULL",
        [(stamp, seq) for seq in seqs],
    )


def purge_delivered(
    conn: sqlite3.Connection,
    older_than: datetime,
    *,
    low_value_older_than: datetime | None = None,
) -> int:
    """Delete events delivered before ``older_than`` (low-value: before the 2nd cutoff); count them.

    Undelivered events are never purged, and ``seq`` is never reused (it lives in counters).
    """
    deleted = conn.execute(
        "DELETE FROM events WHERE delivered_at IS NOT NULL AND delivered_at < ?",
        (format_ts(older_than),),
    ).rowcount
    if low_value_older_than is not None:
        deleted += conn.execute(
            "DELETE FROM events"
            " WHERE low_value = 1 AND delivered_at IS NOT NULL AND delivered_at < ?",
            (format_ts(low_value_older_than),),
        ).rowcount
    return deleted


# -- outbox upkeep and the command replay cache (gateway.adapters.outbox, gateway.engine.commands)


def undelivered_after(conn: sqlite3.Connection, after_seq: int, limit: int) -> list[StoredEvent]:
    """Return up to ``limit`` undelivered events with ``seq > after_seq``, in seq order."""
    rows = conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events"  # noqa: S608
        " WHERE delivered_at IS NULL AND seq > ? ORDER BY seq LIMIT ?",
        (after_seq, limit),
    )
    return [_event_from_row(row) for row in rows]


def outbox_backlog(conn: sqlite3.Connection) -> tuple[int, str | None]:
    """Return (number of undelivered events, ``ts`` of the oldest undelivered or None)."""
    count, oldest_seq = conn.execute(
        "SELECT COUNT(*), MIN(seq) FROM events WHERE delivered_at IS NULL"
    ).fetchone()
    if oldest_seq is None:
        return 0, None
    row = conn.execute("SELECT ts FROM events WHERE seq = ?", (oldest_seq,)).fetchone()
    return int(count), str(row[0])


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes of the database's pages in use (free pages are reused, so not counted)."""
    pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
    free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
    return (pages - free) * int(conn.execute("PRAGMA page_size").fetchone()[0])


def shed_low_value(conn: sqlite3.Connection, max_bytes: int, step: int = 100) -> tuple[int, int]:
    """Delete low-value events, oldest first, until ``used_bytes <= max_bytes``.

    Delivered low-value events go first; then undelivered ones, which are counted in the
    persisted ``events_shed`` counter. No other event is ever deleted. Returns (delivered
    deleted, undelivered shed); must run inside the caller's transaction.
    """
    if not conn.in_transaction:
        raise StoreError("shed_low_value must run inside a transaction")
    dropped = [0, 0]
    for index, delivered in enumerate(("IS NOT NULL", "IS NULL")):
        while used_bytes(conn) > max_bytes:
            deleted = conn.execute(
                "DELETE FROM events WHERE seq IN (SELECT seq FROM events"  # noqa: S608
                f" WHERE low_value = 1 AND delivered_at {delivered} ORDER BY seq LIMIT ?)",
                (step,),
            ).rowcount
            if deleted == 0:
                break
            dropped[index] += deleted
    if dropped[1]:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES ('events_shed', ?)"
            " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (dropped[1],),
        )
    return dropped[0], dropped[1]


def events_shed(conn: sqlite3.Connection) -> int:
    """How many undelivered low-value events were shed at the disk cap, ever."""
    row = conn.execute("SELECT value FROM counters WHERE name = 'events_shed'").fetchone()
    return 0 if row is None else int(row[0])


def find_command(conn: sqlite3.Connection, command_id: str, since: datetime) -> str | None:
    """Return the reply (JSON text) of ``command_id`` if executed at or after ``since``."""
    row = conn.execute(
        "SELECT reply FROM commands WHERE id = ? AND executed_at >= ?",
        (command_id, format_ts(since)),
    ).fetchone()
    return None if row is None else str(row[0])


def record_command(
    conn: sqlite3.Connection, command_id: str, executed_at: datetime, reply: str
) -> None:
    """Record an executed command and its reply (replacing an expired record of the id)."""
    conn.execute(
        "INSERT OR REPLACE INTO commands (id, executed_at, reply) VALUES (?, ?, ?)",
        (command_id, format_ts(executed_at), reply),
    )


def purge_commands(conn: sqlite3.Connection, older_than: datetime) -> int:
    """Delete replay-cache records executed before ``older_than``; return how many."""
    return conn.execute(
        "DELETE FROM commands WHERE executed_at < ?", (format_ts(older_than),)
    ).rowcount


_EVENT_COLUMNS = "seq, id, ts, type, room, data"


def _event_from_row(row: tuple[int, str, str, str, str | None, str]) -> StoredEvent:
    seq, event_id, ts, type_, room, data = row
    return StoredEvent(int(seq), event_id, ts, type_, room, json_object(data))


def json_text(value: object) -> str:
    """Compact JSON text; NaN/Infinity refused."""
    # Compact, and strict: NaN/Infinity are not JSON and would break consumers upstream.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def json_object(text: str) -> dict[str, object]:
    """A JSON object read back (StoreError if the text is not one)."""
    value = json.loads(text)
    if not isinstance(value, dict):
        raise StoreError("stored event data is not a JSON object")
    return value


# -- the audit log (appended by gateway.adapters.journal only) ---------------------------


def audit_rows(
    conn: sqlite3.Connection, since: str | None = None, limit: int | None = None
) -> list[AuditRecord]:
    """Audit rows in sequence order: all, or those at or after ``since`` (RFC 3339), the
    last ``limit`` of them if given."""
    rows = conn.execute(
        "SELECT id, ts, actor, action, room, detail, prev_hash, hash FROM audit"
        " WHERE (? IS NULL OR ts >= ?) ORDER BY id DESC LIMIT ?",
        (since, since, -1 if limit is None else limit),
    ).fetchall()
    return [_audit_record(r) for r in reversed(rows)]


def audit_chain(conn: sqlite3.Connection) -> tuple[list[AuditRecord], int]:
    """Every audit row in sequence order, and the first sequence number of the chain."""
    rows = conn.execute(
        "SELECT id, ts, actor, action, room, detail, prev_hash, hash FROM audit ORDER BY id"
    ).fetchall()
    start = conn.execute("SELECT chain_from FROM audit_chain WHERE id = 1").fetchone()
    return [_audit_record(r) for r in rows], 1 if start is None else int(start[0])


def _audit_record(
    row: tuple[int, str, str, str, str | None, str, str | None, str | None],
) -> AuditRecord:
    seq, ts, actor, action, room, detail, prev_hash, digest = row
    try:
        doc: dict[str, object] = json.loads(detail)
    except ValueError:
        doc = {"unreadable": detail}  # an altered row: shown as it is, and fails the chain
    return AuditRecord(int(seq), ts, actor, action, room, doc, prev_hash, digest)
