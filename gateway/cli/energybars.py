"""The table of ``floorctl energy``: a room per line, its time as a bar of energy modes.

A bar's segments are in a fixed mode order, each a letter repeated in its colour (the bar
reads without colour too); the totals beside it add the room's days up. gateway.cli.render
prints it.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.table import Table
from rich.text import Text

from gateway.model.views import EnergyDay, EnergyLedger

__all__ = ["BAR_WIDTH", "MODES", "energy_table", "mode_bar"]

BAR_WIDTH = 24
# (mode, letter, style), in the bar's order
MODES: tuple[tuple[str, str, str], ...] = (
    ("comfort", "C", "green"),
    ("away", "A", "cyan"),
    ("unsold", "U", "blue"),
    ("precondition", "P", "yellow"),
    ("window", "W", "magenta"),
    ("manual", "M", "red"),
)


def energy_table(ledger: EnergyLedger) -> Table:
    """Every room of the ledger: its mode bar and totals over the days shown."""
    days = "day" if ledger.days == 1 else f"{ledger.days} days"
    table = Table(
        title=f"Savings ledger, last {days} ({ledger.timezone}; today so far)",
        box=box.SIMPLE_HEAD,
    )
    for name, justify in (
        ("Room", "left"),
        ("Time by mode", "left"),
        ("Saving", "right"),  # away and unsold
        ("Run h", "right"),
        ("°C·h", "right"),  # setback degree-hours
        ("Lights h", "right"),  # lights on while absent or unsold
        ("kWh", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    rooms: dict[str, list[EnergyDay]] = {}
    for row in ledger.rows:
        rooms.setdefault(row.room, []).append(row)
    for room, rows in rooms.items():
        seconds = _seconds(rows)
        total = sum(seconds.values())
        saving = seconds.get("away", 0.0) + seconds.get("unsold", 0.0)
        kwh = [r.energy_kwh for r in rows if r.energy_kwh is not None]
        table.add_row(
            room,
            mode_bar(seconds),
            f"{100 * saving / total:.0f} %" if total else "-",
            f"{sum(r.hvac_run_s for r in rows) / 3600:.1f}",
            f"{sum(r.setback_degree_hours for r in rows):.1f}",
            f"{sum(r.lights_on_absent_s for r in rows) / 3600:.1f}",
            f"{sum(kwh):.1f}" if kwh else "-",
        )
    return table


def mode_bar(seconds: dict[str, float], width: int = BAR_WIDTH) -> Text:
    """The time of each mode as a share of ``width`` cells (a room with no time: dots)."""
    total = sum(seconds.values())
    bar = Text()
    if total <= 0:
        return Text("·" * width, style="dim")
    used = 0
    for i, (mode, letter, style) in enumerate(MODES):
        share = seconds.get(mode, 0.0) / total
        cells = width - used if i == len(MODES) - 1 else round(share * width)
        cells = max(0, min(cells, width - used))
        if share > 0 and cells == 0 and used < width:
            cells = 1  # a mode that happened shows, however short
        bar.append(letter * cells, style=style)
        used += cells
    return bar


def _seconds(rows: Sequence[EnergyDay]) -> dict[str, float]:
    out: dict[str, float] = {}
    for row in rows:
        for mode, s in row.seconds.items():
            if isinstance(s, int | float):
                out[mode] = out.get(mode, 0.0) + float(s)
    return out
