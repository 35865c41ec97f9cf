"""``floorctl scan BUS``: which unit ids answer on a Modbus bus, with a progress bar."""

from __future__ import annotations

import argparse

from gateway.cli import render
from gateway.cli.common import Commands, Context, command
from gateway.model.views import ScanResult

__all__ = ["add_to", "scan"]

_EPILOG = """\
The daemon probes between its normal work: emergency polling goes first, so a
scan of an RS-485 line takes a while. It lists each answering unit, the
register tables it has and the profiles it is consistent with.

example:
  floorctl scan rs485-a"""


def add_to(commands: Commands) -> None:
    """Add ``scan BUS``."""
    p = command(
        commands, "scan", "find which unit ids (1-247) answer on a bus", scan, epilog=_EPILOG
    )
    p.add_argument("bus", metavar="BUS", help="bus name, as in the floor file")


def scan(ctx: Context, args: argparse.Namespace) -> ScanResult:
    """Probe unit ids 1-247 on the bus; progress is drawn on stderr (terminals only)."""
    client = ctx.client()
    with render.scan_bar(ctx.err, args.bus) as update:
        return client.scan(args.bus, update)
