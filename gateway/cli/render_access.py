"""How floorctl shows locks and the audit log to people (``--json`` prints the results)."""

from __future__ import annotations

import json

from rich.console import Group, RenderableType
from rich.text import Text

from gateway.cli.tables import grid, table, ts
from gateway.model.views import AuditCheck, AuditLog, LockRow, LockTable

__all__ = ["audit_check", "audit_log", "lock_table"]

_LEVEL_STYLES = {"low": "yellow", "critical": "bold red"}


def lock_table(t: LockTable) -> RenderableType:
    """Every lock: slots by kind, pending writes, staff keys, battery; lockdown first."""
    head = Text(f"{t.staff_slots} staff slots per lock (the last ones)")
    if t.lockdown:
        head = Text(f"LOCKDOWN since {ts(t.lockdown_since or '?')} by {t.lockdown_by}: ")
        head.append("security keys only", style="bold red")
    rows = table(None, "Room", "Guest", "Staff", "Free", "Pending", "Battery", "Staff keys")
    for c in rows.columns[1:5]:
        c.justify = "right"
    for r in t.locks:
        pending = Text(str(r.pending), style="yellow" if r.pending else "")
        if not r.online:
            pending.append(" (offline)", style="red")
        keys = Text(", ".join(r.staff_keys) or "-")
        if r.overflow:
            keys.append(f"; left out: {', '.join(r.overflow)}", style="yellow")
        rows.add_row(r.room, str(r.guest), str(r.staff), str(r.free), pending, _battery(r), keys)
    return Group(head, rows)


def audit_log(log: AuditLog) -> RenderableType:
    """Audit rows in sequence order."""
    if not log.rows:
        return Text("No audit rows.")
    rows = table(None, "Seq", "Time", "Actor", "Action", "Room", "Detail")
    rows.columns[0].justify = "right"
    for r in log.rows:
        detail = json.dumps(dict(r.detail), ensure_ascii=False, separators=(", ", ": "))
        rows.add_row(str(r.seq), ts(r.ts), r.actor, r.action, r.room or "-", detail)
    return rows


def audit_check(c: AuditCheck) -> RenderableType:
    """The chain's verdict: every row matches, or the first that does not."""
    g = grid()
    verdict = Text("every row matches", style="green")
    if not c.ok:
        verdict = Text(f"row {c.first_bad} does not match: {c.problem}", style="bold red")
    g.add_row("Chain", verdict)
    g.add_row("Rows", Text(f"{c.rows} read, {c.rows - c.unchained} in the chain"))
    if c.unchained:
        g.add_row("Before the chain", Text(f"{c.unchained} older rows, not hashed"))
    return g


def _battery(r: LockRow) -> Text:
    if r.battery_stale:
        return Text("stale", style="yellow")
    if r.battery is None:
        return Text("-")
    return Text(f"{r.battery} %", style=_LEVEL_STYLES.get(r.battery_level or "", ""))
