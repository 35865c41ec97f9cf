"""Staff keys on weekly schedules, and the floor's lockdown: pure values and rules.

operations.md, "Locks, staff keys and lockdown": a staff key "is written into the locks of
its zones only during its schedule, in the floor's time zone, and removed when the
schedule ends. More staff keys due in one lock than its staff slots: security keys first,
then the oldest; the rest are reported". mqtt.md ``staff_key``: a schedule runs "from
``from``:00 inclusive to ``until``:00 exclusive; an ``until`` earlier than ``from`` runs
past midnight into the next day". Lockdown: "every lock keeps only security keys".

Choices where the text is silent: ``from`` equal to ``until`` is refused (an all-day key
has no schedule); local times are compared on the floor's wall clock, so across a DST
change a shift keeps its local hours (a start inside the skipped hour begins when the
clock reaches the next valid time). "Oldest" is the order keys were added: floor-file
keys first, in file order, then keys added by command.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Literal

from gateway.core.locksync import token_hash

__all__ = [
    "DAYS",
    "FLOOR_ZONE",
    "Lockdown",
    "Schedule",
    "StaffAccess",
    "StaffKey",
    "StaffPlan",
    "StaffRules",
    "next_schedule_change",
    "plan_staff",
]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # datetime.weekday() order
FLOOR_ZONE = "floor"  # a zone of every room of the floor


@dataclass(frozen=True, slots=True)
class Schedule:
    """Weekly hours: on ``days`` (0 = Monday), from ``start`` to ``end`` local minutes."""

    days: frozenset[int]
    start: int  # minutes after local midnight, inclusive
    end: int  # exclusive; earlier than start: runs past midnight into the next day

    @classmethod
    def parse(cls, days: Iterable[str], start: str, end: str) -> Schedule:
        """From ``mon``..``sun`` and ``HH:MM`` texts; ValueError if malformed."""
        try:
            day_set = frozenset(DAYS.index(d) for d in days)
        except ValueError:
            raise ValueError(f"days are {', '.join(DAYS)}") from None
        if not day_set:
            raise ValueError("a schedule needs at least one day")
        s, e = _minutes(start), _minutes(end)
        if s == e:
            raise ValueError("from and until are the same time (a key always due has no schedule)")
        return cls(day_set, s, e)

    def due(self, local: datetime) -> bool:
        """True when the local wall time ``local`` falls inside the schedule."""
        minute = local.hour * 60 + local.minute
        today = local.weekday()
        if self.start < self.end:
            return today in self.days and self.start <= minute < self.end
        yesterday = (today - 1) % 7
        return (today in self.days and minute >= self.start) or (
            yesterday in self.days and minute < self.end
        )

    def to_json(self) -> dict[str, object]:
        """As the ``staff_key`` command gives it."""
        return {
            "days": [DAYS[d] for d in sorted(self.days)],
            "from": _hhmm(self.start),
            "until": _hhmm(self.end),
        }


@dataclass(frozen=True, slots=True)
class StaffKey:
    """A staff credential: its token, the rooms it opens, when, and whether it is security's."""

    key_id: str
    token: str = field(repr=False)  # lowercase 16 hex digits; never in logs
    zones: frozenset[str]  # room ids, or FLOOR_ZONE
    schedule: Schedule | None  # None: always due
    security: bool
    source: Literal["file", "command"]
    order: int  # file position, or the command's time in ms: "the oldest" first

    def covers(self, room: str) -> bool:
        """The key belongs in this room's lock (its zones)."""
        return FLOOR_ZONE in self.zones or room in self.zones

    def due(self, local: datetime) -> bool:
        """Its schedule allows it at the local wall time ``local``."""
        return self.schedule is None or self.schedule.due(local)

    def rank(self) -> tuple[bool, int, int]:
        """Who gets a staff slot first: security, then the oldest."""
        return (not self.security, 0 if self.source == "file" else 1, self.order)


@dataclass(frozen=True, slots=True)
class Lockdown:
    """The floor's lockdown: on or off, who set it and why, since when."""

    on: bool
    by: str
    reason: str
    since: datetime


@dataclass(frozen=True, slots=True)
class StaffPlan:
    """The staff tokens a lock holds now, and the due keys left out for want of slots."""

    tokens: frozenset[str]
    overflow: tuple[str, ...] = ()  # key ids


def plan_staff(
    keys: Sequence[StaffKey], room: str, local: datetime, slots: int, *, lockdown: bool
) -> StaffPlan:
    """The staff keys due in ``room`` at ``local`` that its ``slots`` staff slots hold.

    Security keys first, then the oldest; in lockdown only security keys. A token held by
    two due keys takes one slot.
    """
    due = sorted(
        (k for k in keys if k.covers(room) and k.due(local) and (k.security or not lockdown)),
        key=StaffKey.rank,
    )
    tokens: list[str] = []
    overflow: list[str] = []
    for k in due:
        if k.token in tokens:
            continue
        if len(tokens) < slots:
            tokens.append(k.token)
        else:
            overflow.append(k.key_id)
    return StaffPlan(frozenset(tokens), tuple(overflow))


def next_schedule_change(
    schedules: Iterable[Schedule], now: datetime, tz: tzinfo
) -> datetime | None:
    """The first local ``from`` or ``until`` instant after ``now`` (aware), or None."""
    starts = {m for s in schedules for m in (s.start, s.end)}
    if not starts:
        return None
    today = now.astimezone(tz).date()
    best: datetime | None = None
    for offset in range(-1, 3):  # every schedule has a boundary each day
        day = today + timedelta(days=offset)
        for minute in starts:
            at = _local(day, minute, tz)
            if at > now and (best is None or at < best):
                best = at
    return best


def _local(day: date, minute: int, tz: tzinfo) -> datetime:
    return datetime.combine(day, time(minute // 60, minute % 60), tzinfo=tz)


def _minutes(text: str) -> int:
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() and len(p) == 2 for p in parts):
        raise ValueError(f"{text!r} is not a local time HH:MM")
    hour, minute = int(parts[0]), int(parts[1])
    if hour > 23 or minute > 59:
        raise ValueError(f"{text!r} is not a local time HH:MM")
    return hour * 60 + minute


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


@dataclass(frozen=True, slots=True)
class StaffRules:
    """What the floor file says of staff access: its rooms, the staff slots, the time zone,
    and the staff keys it lists."""

    rooms: tuple[str, ...] = ()
    staff_slots: int = 0
    tz: tzinfo = UTC
    file_keys: tuple[StaffKey, ...] = ()


class StaffAccess:
    """The floor's staff keys and lockdown, as an immutable value (changes return a new one).

    Keys come from the floor file and from ``staff_key`` commands (a command's key replaces
    a key of the same id); a revocation is kept as a tombstone of the key id and its
    token's hash, so a floor-file key revoked by command stays revoked across restarts
    until the file gives that id another token.
    """

    __slots__ = ("_keys", "_lockdown", "_revoked", "_rules")

    def __init__(
        self,
        rules: StaffRules,
        keys: Mapping[str, StaffKey],
        revoked: frozenset[tuple[str, str]] = frozenset(),
        lockdown: Lockdown | None = None,
    ) -> None:
        """Wrap the active keys by id (use ``restore``)."""
        self._rules = rules
        self._keys = dict(keys)
        self._revoked = revoked
        self._lockdown = lockdown

    @classmethod
    def restore(
        cls,
        rules: StaffRules,
        added: Iterable[StaffKey] = (),
        revoked: Iterable[tuple[str, str]] = (),
        lockdown: Lockdown | None = None,
    ) -> StaffAccess:
        """The floor file's keys less the revoked ones, then the keys added by command."""
        tombstones = frozenset(revoked)
        keys = {
            k.key_id: k
            for k in rules.file_keys
            if (k.key_id, token_hash(k.token)) not in tombstones
        }
        for k in sorted(added, key=lambda k: k.order):
            keys[k.key_id] = k
        return cls(rules, keys, tombstones, lockdown)

    @property
    def rules(self) -> StaffRules:
        """The floor file's rules."""
        return self._rules

    @property
    def lockdown(self) -> Lockdown | None:
        """The lockdown as last set (None: never set on this floor)."""
        return self._lockdown

    @property
    def locked_down(self) -> bool:
        """True while the floor is in lockdown."""
        return self._lockdown is not None and self._lockdown.on

    def active(self) -> list[StaffKey]:
        """Every active key, by id."""
        return [self._keys[k] for k in sorted(self._keys)]

    def key(self, key_id: str) -> StaffKey | None:
        """The active key with this id, or None."""
        return self._keys.get(key_id)

    def key_of_token(self, token: str) -> str | None:
        """The id of the active key holding this token (None: not a staff key)."""
        t = token.strip().lower()
        return next((k.key_id for k in self.active() if k.token == t), None)

    def add(self, key: StaffKey) -> StaffAccess:
        """With ``key`` in place of any key of the same id."""
        keys = {**self._keys, key.key_id: key}
        revoked = self._revoked - {(key.key_id, token_hash(key.token))}
        return StaffAccess(self._rules, keys, revoked, self._lockdown)

    def revoke(self, key_id: str) -> tuple[StaffAccess, tuple[str, ...]] | None:
        """Without the key (None if no such active key), and the token hashes now revoked:
        its own and that of a floor-file key of the same id."""
        key = self._keys.get(key_id)
        if key is None:
            return None
        hashes = {token_hash(key.token)}
        hashes |= {token_hash(k.token) for k in self._rules.file_keys if k.key_id == key_id}
        keys = {i: k for i, k in self._keys.items() if i != key_id}
        revoked = self._revoked | {(key_id, h) for h in hashes}
        return StaffAccess(self._rules, keys, revoked, self._lockdown), tuple(sorted(hashes))

    def with_lockdown(self, lockdown: Lockdown) -> StaffAccess:
        """With the lockdown set."""
        return StaffAccess(self._rules, self._keys, self._revoked, lockdown)

    def plan(self, room: str, now: datetime) -> StaffPlan:
        """The staff tokens the room's lock holds at ``now`` (see ``plan_staff``)."""
        local = now.astimezone(self._rules.tz)
        return plan_staff(
            list(self._keys.values()),
            room,
            local,
            self._rules.staff_slots,
            lockdown=self.locked_down,
        )

    def rooms_of(self, key: StaffKey) -> list[str]:
        """The floor's rooms in the key's zones."""
        return [r for r in self._rules.rooms if key.covers(r)]

    def changed_rooms(self, before: datetime, now: datetime) -> set[str]:
        """Rooms with a key whose schedule allowed it at ``before`` and not at ``now``, or
        the reverse."""
        tz = self._rules.tz
        then, local = before.astimezone(tz), now.astimezone(tz)
        out: set[str] = set()
        for k in self._keys.values():
            if k.schedule is not None and k.schedule.due(then) != k.schedule.due(local):
                out.update(self.rooms_of(k))
        return out

    def next_change(self, now: datetime) -> datetime | None:
        """When a schedule next starts or ends (None: no key has a schedule)."""
        schedules = {k.schedule for k in self._keys.values() if k.schedule is not None}
        return next_schedule_change(schedules, now, self._rules.tz)
