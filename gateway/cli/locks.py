"""``floorctl locks``: every lock's slots (guest, staff, free, pending), staff keys, battery."""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, Context, command
from gateway.model.views import LockTable

__all__ = ["add_to", "locks"]

_EPILOG = """\
Each lock has 32 slots: the last [locks] staff_slots hold staff keys, the rest guests'.
'pending' counts slots still to be written (the lock is offline, or the write is under
way); 'left out' names staff keys due in the lock that its staff slots cannot hold
(security keys go first, then the oldest; a guest is never evicted). A battery not read
for 24 h shows as stale."""


def add_to(commands: Commands) -> None:
    """Add ``locks``."""
    command(
        commands, "locks", "lock slots, staff keys, pending writes, battery", locks, epilog=_EPILOG
    )


def locks(ctx: Context, args: argparse.Namespace) -> LockTable:
    """Every lock of the floor."""
    return ctx.client().locks()
