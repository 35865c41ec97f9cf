"""``floorctl config``: the floor file running (``show``) and remote configuration's ``history``.

``show`` (also plain ``config``) names the file (local, or applied remotely with
``apply_config``), the last-known-good file a rollback returns to, a file being confirmed
and until when, then prints the file. ``history`` lists the steps: applying, applied,
rolled_back (with the reason), refused, local (the local file changed and won).
"""

from __future__ import annotations

import argparse

from gateway.cli.common import Commands, Context, Parser, bounded_int, command, json_flag
from gateway.model.views import ConfigHistory, ConfigView

__all__ = ["add_to", "history", "show"]

_EPILOG = """\
examples:
  floorctl config                      the floor file running, and its text
  floorctl config history              the last 20 steps of remote configuration
  floorctl config history --limit 100"""


def add_to(commands: Commands) -> None:
    """Add ``config`` with its actions ``show`` and ``history``."""
    p = command(
        commands, "config", "the floor file running; 'history' of remote changes", show,
        epilog=_EPILOG,
    )  # fmt: skip
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    text = "the floor file running and the state of remote configuration"
    s = actions.add_parser("show", help=text, description=text[0].upper() + text[1:] + ".")
    s.set_defaults(handler=show)
    json_flag(s)
    text = "remote configuration's steps, oldest first"
    h = actions.add_parser("history", help=text, description=text[0].upper() + text[1:] + ".")
    h.set_defaults(handler=history)
    h.add_argument(
        "--limit", type=bounded_int(1, 1000), default=20, metavar="N", help="at most N (20)"
    )
    json_flag(h)


def show(ctx: Context, args: argparse.Namespace) -> ConfigView:
    """The floor file running."""
    return ctx.client().config_show()


def history(ctx: Context, args: argparse.Namespace) -> ConfigHistory:
    """The newest steps of remote configuration."""
    return ctx.client().config_history(args.limit)
