"""Staff keys added by command, revoked staff keys and the lockdown, in the store.

Synchronous helpers on the caller's ``sqlite3.Connection``, run inside ``Store.write`` /
``Store.read`` like those of ``schema``: the committer saves them in the transaction of the
decision that changed them, and the floor is restored from them at start. Floor-file
staff keys are not stored (the file is read again at every start); their revocations are.
"""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from gateway.core.staff import FLOOR_ZONE, Lockdown, Schedule, StaffKey
from gateway.model.errors import StoreError
from gateway.model.time import format_ts

__all__ = ["load_lockdown", "load_staff_keys", "save_lockdown", "save_staff_key"]


def save_staff_key(
    conn: sqlite3.Connection,
    key_id: str,
    key: StaffKey | None,
    revoked: tuple[str, ...],
    at: datetime,
) -> None:
    """Store a key added by command, or its revocation (``key`` None) with the token
    hashes revoked under its id."""
    if key is None:
        conn.execute("DELETE FROM staff_keys WHERE key_id = ?", (key_id,))
        conn.executemany(
            "INSERT OR IGNORE INTO staff_keys_revoked (key_id, token_hash, revoked_at)"
            " VALUES (?, ?, ?)",
            [(key_id, h, format_ts(at)) for h in revoked],
        )
        return
    schedule = None if key.schedule is None else json.dumps(key.schedule.to_json())
    conn.execute(
        "INSERT OR REPLACE INTO staff_keys (key_id, token, zones, schedule, security, added_ms)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (key_id, key.token, json.dumps(sorted(key.zones)), schedule, int(key.security), key.order),
    )


def load_staff_keys(conn: sqlite3.Connection) -> tuple[list[StaffKey], list[tuple[str, str]]]:
    """The keys added by command, and the revoked (key id, token hash) pairs."""
    keys = []
    found = conn.execute(
        "SELECT key_id, token, zones, schedule, security, added_ms FROM staff_keys"
        " ORDER BY added_ms, key_id"
    )
    for key_id, token, zones, schedule, security, added_ms in found:
        try:
            sched = None
            if schedule is not None:
                doc = json.loads(schedule)
                sched = Schedule.parse(doc["days"], doc["from"], doc["until"])
            zone_list = json.loads(zones)
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"staff key {key_id}: {exc}") from exc
        keys.append(
            StaffKey(
                key_id=key_id,
                token=token,
                zones=frozenset(str(z) for z in zone_list) or frozenset({FLOOR_ZONE}),
                schedule=sched,
                security=bool(security),
                source="command",
                order=int(added_ms),
            )
        )
    revoked = [
        (str(k), str(h))
        for k, h in conn.execute("SELECT key_id, token_hash FROM staff_keys_revoked")
    ]
    return keys, revoked


def save_lockdown(conn: sqlite3.Connection, lockdown: Lockdown) -> None:
    """Store the lockdown as now set (on or off)."""
    conn.execute(
        "INSERT OR REPLACE INTO lockdown (id, active, set_by, reason, since)"
        " VALUES (1, ?, ?, ?, ?)",
        (int(lockdown.on), lockdown.by, lockdown.reason, format_ts(lockdown.since)),
    )


def load_lockdown(conn: sqlite3.Connection) -> Lockdown | None:
    """The lockdown as last set (None: never set on this floor)."""
    row = conn.execute("SELECT active, set_by, reason, since FROM lockdown WHERE id = 1").fetchone()
    if row is None:
        return None
    active, by, reason, since = row
    return Lockdown(bool(active), str(by), str(reason), datetime.fromisoformat(since))
