"""The journal: the outbox of events and the audit log — the only module that appends to them.

The audit log is a hash chain (gateway.core.audit): each row's ``prev_hash`` and ``hash``
are computed here as it is appended, and the row goes upstream as an ``audit`` event in
the same transaction.

Only the engine's committer calls these, inside the transaction of the decision that
caused them, so ``seq`` order is decision order and nothing is announced that is not on
disk. (An import-linter contract keeps every other module away from here.)
"""

from __future__ import annotations

import dataclasses
import sqlite3
import uuid
from collections.abc import Mapping
from datetime import datetime

from gateway.adapters.schema import StoredEvent, json_object, json_text
from gateway.core.audit import GENESIS, AuditRecord, chain_hash
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
) -> AuditRecord:
    """Append a row to the audit log's hash chain, and the same row as an ``audit`` event
    (so the central system holds a second copy); inside the caller's transaction."""
    if not conn.in_transaction:
        raise StoreError("append_audit must run inside a transaction")
    last = conn.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
    seq = 1 if last is None else int(last[0]) + 1
    prev = GENESIS if last is None or last[1] is None else str(last[1])
    text = json_text(dict(detail))
    row = AuditRecord(seq, format_ts(ts), actor, action, room, json_object(text), prev, None)
    digest = chain_hash(prev, row.canonical())
    conn.execute(
        "INSERT INTO audit (id, ts, actor, action, room, detail, prev_hash, hash)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (seq, row.ts, actor, action, room, text, prev, digest),
    )
    data = {
        "audit_seq": seq,
        "actor": actor,
        "action": action,
        "detail": row.detail,
        "hash": digest,
        "prev_hash": prev,
    }
    append_event(conn, "audit", room=room, data=data, ts=ts)
    return dataclasses.replace(row, hash=digest)
