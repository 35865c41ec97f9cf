"""The journal: the outbox of events and the audit log — the only module that appends to them.

Only the engine's committer calls these, inside the transaction of the decision that
caused them, so ``seq`` order is decision order and nothing is announced that is not on
disk. (An import-linter contract keeps every other module away from here.)
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Mapping
from datetime import datetime

from gateway.adapters.schema import StoredEvent, json_object, json_text
from gateway.model.errors import StoreError
from gateway.model.time import format_ts

__all__ = ["append_audit", "append_event"]


def append_event(
    conn: sqlite3.Connection,
    type: str,
    *,
    room: str | None,
    data: Mapping[str, object],
    ts: datetime,
    low_value: bool = False,
) -> StoredEvent:
    """Append an event with the next gapless ``seq``; must run inside the caller's transaction."""
    if not conn.in_transaction:
        raise StoreError("append_event must run inside a transaction")
    stamp = format_ts(ts)
    text = json_text(dict(data))
    rows = conn.execute(
        "UPDATE counters SET value = value + 1 WHERE name = 'event_seq' RETURNING value"
    ).fetchall()
    if not rows:
        raise StoreError("counter event_seq is missing")
    seq = int(rows[0][0])
    event_id = uuid.uuid4().hex
    conn.execute(
        "INSERT INTO events (seq, id, ts, type, room, data, low_value)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (seq, event_id, stamp, type, room, text, int(low_value)),
    )
    return StoredEvent(seq, event_id, stamp, type, room, json_object(text))


def append_audit(
    conn: sqlite3.Connection,
    *,
    actor: str,
    action: str,
    room: str | None,
    detail: Mapping[str, object],
    ts: datetime,
) -> None:
    """Record who did what (remote unlock, acknowledgement…) in the audit log."""
    conn.execute(
        "INSERT INTO audit (ts, actor, action, room, detail) VALUES (?, ?, ?, ?, ?)",
        (format_ts(ts), actor, action, room, json_text(dict(detail))),
    )
