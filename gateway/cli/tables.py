"""Table building blocks shared by floorctl's renderers: compact tables, grids, times."""

from __future__ import annotations

import re

from rich import box
from rich.table import Table

__all__ = ["grid", "table", "ts"]

_TS = re.compile(r"^(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.\d+)?Z$")


def table(title: str | None, *columns: str, key_width: int = 0) -> Table:
    """A compact table with these columns (the first one never cut nor wrapped)."""
    # Compact (one space of padding, no outer edge) to fit 80 columns. The first column
    # is the key (room, device, alarm id: what one types next) and is never cut or
    # wrapped; the others wrap when the terminal is too narrow.
    t = Table(
        box=box.SIMPLE_HEAD,
        title=title,
        title_justify="left",
        show_edge=False,
        pad_edge=False,
        padding=(0, 1),
        collapse_padding=True,
    )
    for i, name in enumerate(columns):
        if i == 0:
            t.add_column(name, no_wrap=True, min_width=max(key_width, len(name)))
        else:
            t.add_column(name, overflow="fold")
    return t


def grid() -> Table:
    """A two-column grid: bold names, then values that fold."""
    g = Table.grid(padding=(0, 2))
    g.add_column(style="bold", no_wrap=True)
    g.add_column(overflow="fold")
    return g


def ts(ts: str, *, short: bool = False) -> str:
    """RFC 3339 UTC as ``2026-11-23 06:03:22Z`` (short: ``11-23 06:03:22Z``)."""
    m = _TS.match(ts)
    if not m:
        return ts
    return f"{m.group(1)[5:] if short else m.group(1)} {m.group(2)}Z"
