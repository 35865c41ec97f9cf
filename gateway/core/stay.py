"""A stay and the values the authorisation core speaks in: refusals, room and lock changes.

The stay rules themselves are gateway.core.authz's; here are the values, and what happens
to a room's stays when time passes (``settle``): expiries first, then stays that became
valid.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from gateway.core.effects import Emit, SaveStay
from gateway.core.locksync import normalize_token

__all__ = [
    "CONFLICT",
    "INVALID",
    "LocksChanged",
    "Refusal",
    "RoomOccupied",
    "RoomVacant",
    "Stay",
    "StayEffect",
    "ended_stay",
    "kept_preferences",
    "normalize_all",
    "occupied",
    "settle",
    "sorted_stays",
]

CONFLICT = "conflict"
INVALID = "invalid"
_PREFERENCE_KEYS = ("setpoint_c", "scene", "wellbeing_h")


@dataclass(frozen=True, slots=True)
class Stay:
    """A stay: its keys (lowercase 16-hex tokens), its time, and how it ended."""

    room: str
    stay_id: str
    valid_from: datetime
    valid_until: datetime
    tokens: tuple[str, ...] = field(repr=False)  # never in logs
    checked_out_at: datetime | None
    checkout_reason: str | None  # "command" | "expired" | "moved"
    generation: int
    preferences: Mapping[str, object] = field(default_factory=dict)
    occupied_at: datetime | None = None  # when the room became occupied for this stay
    moved_to: str | None = None  # the room the stay moved to; this one ends at its grace

    def valid_at(self, t: datetime) -> bool:
        """Its tokens open the door at ``t``."""
        return self.checked_out_at is None and self.valid_from <= t < self.valid_until

    def ended(self, now: datetime) -> bool:
        """Checked out, or past its ``valid_until``."""
        return self.checked_out_at is not None or self.valid_until <= now


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a command changed nothing: ``conflict`` or ``invalid`` (mqtt.md error codes)."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class RoomOccupied:
    """A stay became valid: the room is occupied (guest preferences, if any)."""

    room: str
    stay_id: str
    setpoint_c: float | None
    scene: str | None


@dataclass(frozen=True, slots=True)
class RoomVacant:
    """The stay that occupied the room ended: ``reason`` "command" or "expired"."""

    room: str
    stay_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class LocksChanged:
    """The tokens these rooms' locks must hold may have changed: reconcile them now.

    ``routine``: a staff schedule turned, nobody waits on it; a guest's or a command's
    change is urgent and goes first.
    """

    rooms: tuple[str, ...]
    routine: bool = False


def sorted_stays(stays: Iterable[Stay]) -> tuple[Stay, ...]:
    return tuple(sorted(stays, key=lambda s: (s.valid_from, s.stay_id)))


def normalize_all(tokens: Sequence[str]) -> tuple[str, ...]:
    # The same key twice is one key; order kept as given.
    return tuple(dict.fromkeys(normalize_token(t) for t in tokens))


def kept_preferences(preferences: Mapping[str, object] | None) -> dict[str, object]:
    prefs = preferences or {}
    return {k: prefs[k] for k in _PREFERENCE_KEYS if prefs.get(k) is not None}


def occupied(s: Stay) -> RoomOccupied:
    sp = s.preferences.get("setpoint_c")
    scene = s.preferences.get("scene")
    setpoint = float(sp) if isinstance(sp, int | float) and not isinstance(sp, bool) else None
    return RoomOccupied(s.room, s.stay_id, setpoint, scene if isinstance(scene, str) else None)


def ended_stay(s: Stay, now: datetime, reason: str) -> Stay:
    """The stay checked out: tokens and preferences deleted (data minimisation)."""
    return dataclasses.replace(
        s,
        tokens=(),
        preferences={},
        checked_out_at=now,
        checkout_reason=reason,
        generation=s.generation + 1,
    )


StayEffect = SaveStay | Emit | RoomVacant | RoomOccupied
"""What time passing does to a room's stays."""


def settle(stays: tuple[Stay, ...], now: datetime) -> tuple[tuple[Stay, ...], list[StayEffect]]:
    """A room's stays with expiries, then starts, due at ``now`` applied; their effects."""
    effects: list[StayEffect] = []
    occupy: list[Stay] = []
    out: list[Stay] = []
    for s in stays:
        if s.checked_out_at is None and s.valid_until <= now:
            reason = "moved" if s.moved_to is not None else "expired"
            ended = ended_stay(s, now, reason)
            effects += [
                SaveStay(ended),
                Emit("room.checked_out", s.room, {"stay_id": s.stay_id, "reason": reason}),
            ]
            if s.occupied_at is not None:
                effects.append(RoomVacant(s.room, s.stay_id, reason))
            out.append(ended)
        elif s.valid_at(now) and s.occupied_at is None:
            started = dataclasses.replace(s, occupied_at=now, generation=s.generation + 1)
            occupy.append(started)
            out.append(started)
        else:
            out.append(s)
    for s in occupy:  # after every vacancy (back-to-back stays)
        effects += [SaveStay(s), occupied(s)]
    return (tuple(out), effects) if effects else (stays, effects)
