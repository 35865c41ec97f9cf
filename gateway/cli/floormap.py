"""The floor map of ``floorctl floor``: every room as a cell, within the console's width.

A cell is a room's id over six fixed slots (occupancy, door, DND, MUR, call, devices),
each a letter or a blank (LEGEND); colour only repeats the most urgent state, so the map
reads without colour too. gateway.cli.render prints it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.text import Text

from gateway.model.views import RoomRow

__all__ = ["LEGEND", "FloorMapRenderable", "floor_map", "room_flags"]

# The floor map's cell: a room's id over six fixed slots, each a letter or a blank.
# (letter, meaning, style) in slot order; style repeats the letter in colour.
LEGEND: tuple[tuple[str, str, str], ...] = (
    ("O", "occupied", "green"),
    (".", "vacant", "dim"),
    ("/", "door open", "bold cyan"),
    ("D", "do not disturb", "blue"),
    ("M", "make up room", "cyan"),
    ("!", "call active", "bold white on red"),
    ("a", "call acknowledged", "black on yellow"),
    ("X", "device offline", "bold magenta"),
    ("s", "stale values", "bold red"),
)
# A cell's background, by its most urgent state.
_CELL_STYLES = {
    "call_active": "bold white on red",
    "call_acknowledged": "black on yellow",
    "offline": "white on magenta",
    "stale": "black on bright_red",
    "door_open": "black on cyan",
    "dnd": "white on blue",
    "mur": "black on bright_cyan",
    "occupied": "black on green",
    "vacant": "",
}


def room_flags(row: RoomRow) -> str:
    """The six map slots of a room: occupancy, door, DND, MUR, call, devices (see LEGEND);
    the devices slot says ``X`` for a device offline, else ``s`` for values not current."""
    occupancy = {"occupied": "O", "vacant": "."}.get(row.occupancy or "", "?")
    door = "/" if row.door == "open" else " "
    call = {"active": "!", "acknowledged": "a"}.get(row.call, " ")
    return "".join(
        (
            occupancy,
            door,
            "D" if row.dnd else " ",
            "M" if row.mur else " ",
            call,
            "X" if row.offline else ("s" if row.stale else " "),
        )
    )


def floor_map(rows: Sequence[RoomRow], width: int) -> RenderableType:
    """The floor at a glance: a grid of room cells within ``width`` columns, and a legend."""
    cell = max([6, *(len(r.room) for r in rows)]) + 2
    per_line = max(1, (width + 1) // (cell + 1))
    lines: list[Text] = []
    for start in range(0, len(rows), per_line):
        chunk = rows[start : start + per_line]
        top, bottom = Text(), Text()
        for i, row in enumerate(chunk):
            style = _CELL_STYLES[_cell_state(row)]
            if i:
                top.append(" ")
                bottom.append(" ")
            top.append(f" {row.room:<{cell - 2}} ", style=style)
            bottom.append(f" {room_flags(row):<{cell - 2}} ", style=style)
        lines += [top, bottom, Text()]
    return Group(_floor_summary(rows, width), Text(), *lines, _legend(width))


class FloorMapRenderable:
    """Lays the map out at the width of the console it is printed on."""

    def __init__(self, rows: Sequence[RoomRow]) -> None:
        self.rows = rows

    def __rich_console__(self, console: Console, options: Any) -> Iterator[RenderableType]:
        yield floor_map(self.rows, options.max_width)


# -- helpers ------------------------------------------------------------------------------


def _cell_state(row: RoomRow) -> str:
    if row.call == "active":
        return "call_active"
    if row.call == "acknowledged":
        return "call_acknowledged"
    if row.offline:
        return "offline"
    if row.stale:
        return "stale"
    if row.door == "open":
        return "door_open"
    if row.dnd:
        return "dnd"
    if row.mur:
        return "mur"
    return "occupied" if row.occupancy == "occupied" else "vacant"


def _floor_summary(rows: Sequence[RoomRow], width: int) -> Text:
    counts = [
        (sum(r.occupancy == "occupied" for r in rows), "occupied", ""),
        (sum(r.call == "active" for r in rows), "call active", "bold red"),
        (sum(r.call == "acknowledged" for r in rows), "call acknowledged", "yellow"),
        (sum(bool(r.offline) for r in rows), "with a device offline", "magenta"),
        (sum(bool(r.stale) and not r.offline for r in rows), "with stale values", "red"),
        (sum(r.door == "open" for r in rows), "door open", "cyan"),
    ]
    parts = [(f"{len(rows)} rooms", "bold")]
    parts += [(f"{n} {label}", style) for n, label, style in counts if n or label == "occupied"]
    return _packed(parts, " · ", width)


def _legend(width: int) -> Text:
    parts: list[tuple[str, str] | list[tuple[str, str]]] = [
        [(letter, style), (f" {meaning}", "dim")] for letter, meaning, style in LEGEND
    ]
    legend = _packed(parts, "  ", width)
    legend.append("\nslots: occupancy, door, DND, MUR, call, devices", style="dim")
    return legend


def _packed(
    parts: Sequence[tuple[str, str] | list[tuple[str, str]]], separator: str, width: int
) -> Text:
    """Parts (each one or more styled pieces) joined, breaking lines only between parts."""
    text, line = Text(), 0
    for part in parts:
        pieces = [part] if isinstance(part, tuple) else part
        size = sum(len(piece) for piece, _ in pieces)
        if line and line + len(separator) + size > width:
            text.append("\n")
            line = 0
        elif line:
            text.append(separator)
            line += len(separator)
        for piece, style in pieces:
            text.append(piece, style=style)
        line += size
    return text
