"""floorctl's renderings of the floor's health and of remote configuration (for people).

Part of gateway.cli.render, kept apart to keep that module readable; ``--json`` of these
results is render's, like every other.
"""

from __future__ import annotations

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from gateway.model.views import ConfigHistory, ConfigView, HealthView

__all__ = ["config_history", "config_view", "health_view"]

_LEVEL_STYLES = {"ok": "bold green", "degraded": "bold yellow", "failed": "bold red"}
_ACTION_STYLES = {"applied": "green", "rolled_back": "red", "refused": "yellow"}


def health_view(h: HealthView) -> RenderableType:
    """``floorctl health``: the level, then one line per reason."""
    head = Text(f"Health: {h.level}", style=_LEVEL_STYLES.get(h.level, ""))
    if not h.reasons:
        return head
    table = _table("Reason", "Level", "What")
    for r in h.reasons:
        what = Text(r.message)
        if r.critical:
            what.append(" [watchdog]", style="bold red")
        table.add_row(r.code, Text(r.level, style=_LEVEL_STYLES.get(r.level, "")), what)
    return Group(head, table)


def config_view(c: ConfigView) -> RenderableType:
    """``floorctl config show``: where the running file comes from, then its text."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    source = "the local floor file" if c.source == "local" else "applied remotely"
    grid.add_row("Running", Text(f"{c.sha256[:12]} ({source})"))
    grid.add_row("Local file", Text(c.path))
    grid.add_row("Floor", Text(c.summary))
    grid.add_row("Last-known-good", Text(c.last_good[:12]))
    if c.pending_sha256 is not None:
        pending = Text(f"{c.pending_sha256[:12]}", style="yellow")
        if c.pending_until:
            pending.append(f", confirmed or rolled back at {_ts(c.pending_until)}")
        grid.add_row("Being confirmed", pending)
    return Group(grid, Text(), Text(c.text.rstrip("\n")))


def config_history(h: ConfigHistory) -> RenderableType:
    """``floorctl config history``: one line per step, oldest first."""
    if not h.entries:
        return Text("No remote configuration yet: the local floor file has always run.")
    table = _table("Time", "Step", "File", "By", "Reason")
    for e in h.entries:
        step = Text(e.action, style=_ACTION_STYLES.get(e.action, ""))
        table.add_row(_ts(e.ts), step, e.sha256[:12], e.by or "-", e.reason or "-")
    return table


def _table(*columns: str) -> Table:
    table = Table(
        box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 1),
        collapse_padding=True,
    )  # fmt: skip
    for i, name in enumerate(columns):
        table.add_column(name, no_wrap=i == 0, overflow="fold")
    return table


def _ts(ts: str) -> str:
    return ts.replace("T", " ").split(".")[0].removesuffix("Z") + "Z"
