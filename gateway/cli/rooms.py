"""``floorctl floor``, ``rooms`` and ``room ROOM``: the rooms, as a map, a table, or one."""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, Context, command
from gateway.model.views import FloorMap, RoomDetail, RoomTable

__all__ = ["add_to", "floor", "room", "rooms"]

_FLOOR_EPILOG = """\
Each room is a cell: its id over six slots (occupancy, door, DND, MUR, call,
devices). Letters: O occupied, . vacant, / door open, D do not disturb,
M make up room, ! call active, a call acknowledged, X device offline.
Colour repeats the most urgent state: red call, yellow acknowledged,
magenta device offline, cyan door open, blue DND, green occupied."""


def add_to(commands: Commands) -> None:
    """Add ``floor``, ``rooms`` and ``room ROOM``."""
    command(
        commands, "floor", "a map of the floor's rooms at a glance", floor, epilog=_FLOOR_EPILOG
    )
    command(
        commands, "rooms", "every room in a table: occupancy, door, service, call, climate", rooms
    )
    p = command(
        commands,
        "room",
        "everything about one room: state, devices and recent events",
        room,
        epilog="example:\n  floorctl room 1203",
    )
    p.add_argument("room", metavar="ROOM", help="room id, as in the floor file")


def floor(ctx: Context, args: argparse.Namespace) -> FloorMap:
    """Every room, in floor-file order, for the map."""
    return ctx.client().floor()


def rooms(ctx: Context, args: argparse.Namespace) -> RoomTable:
    """Every room, in floor-file order, for the table."""
    return ctx.client().rooms()


def room(ctx: Context, args: argparse.Namespace) -> RoomDetail:
    """One room: its state, devices, open alarms and recent events."""
    return ctx.client().room(args.room)
