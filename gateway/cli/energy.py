"""``floorctl energy``: the savings ledger, a bar per room (``--room``, ``--days``)."""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, Context, command
from gateway.model.views import EnergyLedger

__all__ = ["add_to", "energy"]

_EPILOG = """\
Each room's bar shows how its time was spent, by energy mode: C comfort,
A away, U unsold, P precondition, W window, M manual. Saving: the share of
time away or unsold. Run h: the fan-coil's run hours. °C·h: setback degree-
hours (degrees held away from comfort, times hours). Lights h: lights on
while absent or unsold. Today's totals are so far. examples:
  floorctl energy
  floorctl energy --room 1203 --days 30 --json"""


def add_to(commands: Commands) -> None:
    """Add ``energy``."""
    p = command(
        commands,
        "energy",
        "the savings ledger: time per energy mode, run hours, setback, per room",
        energy,
        epilog=_EPILOG,
    )
    p.add_argument("--room", metavar="ROOM", help="one room only")
    p.add_argument(
        "--days", type=_days, default=7, metavar="N", help="the last N local days (1-400; 7)"
    )


def energy(ctx: Context, args: argparse.Namespace) -> EnergyLedger:
    """The ledger of the last ``--days`` local days, today's so far included."""
    return ctx.client().energy(args.room, args.days)


def _days(text: str) -> int:
    try:
        days = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of days") from None
    if not 1 <= days <= 400:
        raise argparse.ArgumentTypeError("--days is 1 to 400 (the ledger keeps 400 days)")
    return days
