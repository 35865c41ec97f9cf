"""``floorctl alarms``: the open alarms; ``alarms ack|resolve ALARM_ID --by NAME``.

ALARM_ID is the full id or any unique prefix of an open alarm's id (at least 4
characters, case ignored), as git takes object names: floorctl lists the open alarms,
picks the one the prefix names (gateway.cli.alarm_ids) and sends the daemon its full id.
A prefix that names none or several ends with exit 1, naming the candidates.
"""

from __future__ import annotations

import argparse

from gateway.cli.alarm_ids import pick
from gateway.cli.common import Commands, Context, Parser, command, json_flag
from gateway.model.views import AlarmTable, AlarmUpdate

__all__ = ["ack", "add_to", "alarms", "resolve"]

_EPILOG = """\
examples:
  floorctl alarms
  floorctl alarms ack 5d0c7a1e --by ana
  floorctl alarms resolve 5d0c --by ana

ALARM_ID may be any unique prefix of an open alarm's id (4 characters or more),
as the table shows it. Acknowledging stops escalation; the call stays on until
staff reset it at the room. A bathroom call cannot be resolved from here
(nurse-call practice)."""


def add_to(commands: Commands) -> None:
    """Add ``alarms`` with its actions ``ack`` and ``resolve``."""
    p = command(commands, "alarms", "open alarms; 'ack' or 'resolve' one", alarms, epilog=_EPILOG)
    actions = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    for name, handler, text in (
        ("ack", ack, "acknowledge an alarm: stops escalation (the call stays on)"),
        ("resolve", resolve, "resolve an alarm (not a bathroom call: reset it at the room)"),
    ):
        a = actions.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        a.set_defaults(handler=handler)
        a.add_argument(
            "alarm_id",
            metavar="ALARM_ID",
            help="the alarm's id or a unique prefix of it, from 'floorctl alarms'",
        )
        a.add_argument("--by", required=True, metavar="NAME", help="your name (audited)")
        json_flag(a)


def alarms(ctx: Context, args: argparse.Namespace) -> AlarmTable:
    """The open alarms, oldest first."""
    return ctx.client().alarms()


def ack(ctx: Context, args: argparse.Namespace) -> AlarmUpdate:
    """Acknowledge the open alarm ALARM_ID names, as NAME."""
    client = ctx.client()
    alarm = pick(args.alarm_id, client.alarms().alarms)
    return client.ack(alarm.alarm_id, args.by)


def resolve(ctx: Context, args: argparse.Namespace) -> AlarmUpdate:
    """Resolve the open alarm ALARM_ID names, as NAME."""
    client = ctx.client()
    alarm = pick(args.alarm_id, client.alarms().alarms)
    return client.resolve(alarm.alarm_id, args.by)
