"""Alarm ids as git treats object names: typed as any unique prefix, shown in short form.

An alarm id is long (32 hex digits from the engine). A technician types its head:
``pick(prefix, open_alarms)`` finds the one open alarm it names. Tables show each id as
its shortest prefix that is unique among the ids shown, and never shorter than
``SHORT_MIN`` characters, so what a table shows can be typed back.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gateway.model.errors import ViewRefused
from gateway.model.views import AlarmRow

__all__ = ["PREFIX_MIN", "SHORT_MIN", "AlarmIdError", "pick", "short_ids"]

SHORT_MIN = 8  # characters of an id shown in tables (git's default is 7)
PREFIX_MIN = 4  # the shortest prefix accepted (git's minimum too)


class AlarmIdError(ViewRefused):
    """An alarm id prefix names no open alarm (``not_found``) or several (``ambiguous``)."""


def pick(prefix: str, alarms: Sequence[AlarmRow]) -> AlarmRow:
    """The open alarm ``prefix`` names: its full id, else the one id starting with it.

    Case does not matter for a prefix (ids are hex). AlarmIdError if the prefix is
    shorter than PREFIX_MIN, matches nothing, or matches several (they are listed).
    """
    for alarm in alarms:
        if alarm.alarm_id == prefix:
            return alarm
    if len(prefix) < PREFIX_MIN:
        raise AlarmIdError(
            "not_found",
            f"no open alarm has the id {prefix!r}, and a shorter id needs at least "
            f"{PREFIX_MIN} characters to pick one (floorctl alarms lists the open alarms)",
        )
    head = prefix.casefold()
    found = [a for a in alarms if a.alarm_id.casefold().startswith(head)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise AlarmIdError(
            "not_found",
            f"no open alarm id starts with {prefix!r} (floorctl alarms lists the open alarms)",
        )
    short = short_ids(a.alarm_id for a in found)
    lines = [
        f"  {short[a.alarm_id]}  {'room ' + a.room if a.room else 'floor'}, "
        f"{a.kind} {a.point}, {a.state}"
        for a in found
    ]
    raise AlarmIdError(
        "ambiguous",
        f"alarm id {prefix!r} is ambiguous: {len(found)} open alarms start with it:\n"
        + "\n".join(lines)
        + "\ntype more of the id",
    )


def short_ids(ids: Iterable[str], minimum: int = SHORT_MIN) -> dict[str, str]:
    """Each id's shortest prefix unique among ``ids`` (at least ``minimum`` characters).

    Uniqueness ignores case, as ``pick`` does; an id that is a prefix of another is kept
    whole.
    """
    unique = sorted(set(ids), key=str.casefold)
    folded = [i.casefold() for i in unique]
    out: dict[str, str] = {}
    for n, alarm_id in enumerate(unique):
        need = minimum
        for other in (folded[n - 1] if n else None, folded[n + 1] if n + 1 < len(unique) else None):
            if other is not None:
                need = max(need, _common(folded[n], other) + 1)
        out[alarm_id] = alarm_id[:need]
    return out


def _common(a: str, b: str) -> int:
    """The length of the common prefix of ``a`` and ``b``."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n
