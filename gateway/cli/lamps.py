"""``floorctl lamps test ROOM``: light a room's dome and reassure lamps and check them."""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, Context, Parser, command, json_flag
from gateway.model.views import LampTest

__all__ = ["add_to", "test"]

_EPILOG = """\
examples:
  floorctl lamps test 1201

Lights the room's dome and reassure lamps for 5 s, each write read back by the room
I/O, then puts them back as the open calls want them. A lamp that does not read back
is reported (exit 1) and raises the room's lamp_fault trouble; a lamp that reads back
again resolves it. Audited, like every changing request."""


def add_to(commands: Commands) -> None:
    """Add ``lamps`` with its action ``test``."""
    p = command(
        commands,
        "lamps",
        "call lamps: 'test ROOM' lights and checks them",
        test,
        epilog=_EPILOG,
        with_json=False,
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    actions.required = True
    a = actions.add_parser(
        "test",
        help="light the room's dome and reassure lamps for 5 s and check each read back",
        description="Light the room's dome and reassure lamps for 5 s and check each read back.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    a.set_defaults(handler=test)
    a.add_argument("room", metavar="ROOM", help="the room whose lamps to test")
    json_flag(a)


def test(ctx: Context, args: argparse.Namespace) -> LampTest:
    """Test the lamps of ROOM."""
    return ctx.client().lamp_test(args.room)
