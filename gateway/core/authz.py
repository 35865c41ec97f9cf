"""Local authorisation: stays, their keys, and the tokens each lock must hold at a time.

mqtt.md: "a token opens the door only between valid_from and valid_until of a stay that
is not checked out, measured by the gateway's clock". ``Authz`` is that rule as an
immutable value: every command returns ``(new Authz, effects)`` or a ``Refusal``, and
``tick(now)`` turns passed boundaries into check-outs (``expired``) and occupied rooms.
Pure: no clock reads, no I/O; times are aware datetimes, kept to the millisecond (as
stored and sent).

Rules, with the choices made where the spec is silent:

- A stay is *valid* at t when it is not checked out and ``valid_from <= t < valid_until``
  (half-open, so back-to-back stays share their boundary instant without overlapping).
  A stay has *ended* once checked out or once ``valid_until <= now`` (expiry is decided
  by time; ``tick`` only records it), and every command on an ended stay is ``conflict``.
- ``checkin`` with the same stay_id replaces tokens, times and preferences (generation
  grows); another stay of the room that has not ended and whose time overlaps is
  ``conflict``; a later, non-overlapping stay may be checked in ahead. ``valid_until`` must
  be after ``valid_from`` and after now (``invalid``): a stay that ends in the past would
  only be checked out again at once.
- Slots: stays of a room never overlap, so at any instant the lock holds the tokens of one
  stay only, and back-to-back stays swap at the boundary (a slot of the old stay is
  overwritten with the new one). The free slots a stay can use are therefore all of them:
  more distinct tokens in one stay than ``slot_count`` is ``conflict`` (checkin and
  ``add_token``).
- ``checkout`` of an unknown or ended stay is ``conflict``; it revokes at once and deletes
  the stay's tokens and preferences (data minimisation; the row stays for the audit).
- ``extend`` moves ``valid_until`` (later or earlier), which must stay after
  ``valid_from`` and after now (``invalid``) and must not create an overlap (``conflict``).
- ``add_token`` of a token already in the stay succeeds without change; ``revoke_token``
  of a token not in the stay is ``conflict`` (well formed, but not what the state holds).
- Events never carry tokens or token hashes of a check-in; only the preferences the
  gateway acts on (``setpoint_c``, ``scene``) are kept, and only for the stay.
- The room becomes occupied (``RoomOccupied``, once per stay: ``Stay.occupied_at``) when a
  stay becomes valid, and vacant (``RoomVacant``) when a stay that made it occupied ends.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from drivers.ids import DeviceRef
from gateway.core.effects import Audit, Emit, SaveStay, WritePoint
from gateway.core.locksync import SLOT_COUNT, normalize_token, token_hash
from gateway.model.time import format_ts, to_ms

__all__ = [
    "CONFLICT",
    "INVALID",
    "Authz",
    "AuthzEffect",
    "LocksChanged",
    "Outcome",
    "Refusal",
    "RoomOccupied",
    "RoomVacant",
    "Stay",
]

CONFLICT = "conflict"
INVALID = "invalid"
_PREFERENCE_KEYS = ("setpoint_c", "scene")


@dataclass(frozen=True, slots=True)
class Stay:
    """A stay: its keys (lowercase 16-hex tokens), its time, and how it ended."""

    room: str
    stay_id: str
    valid_from: datetime
    valid_until: datetime
    tokens: tuple[str, ...] = field(repr=False)  # never in logs
    checked_out_at: datetime | None
    checkout_reason: str | None  # "command" | "expired"
    generation: int
    preferences: Mapping[str, object] = field(default_factory=dict)
    occupied_at: datetime | None = None  # when the room became occupied for this stay

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
    """The tokens these rooms' locks must hold may have changed: reconcile them now."""

    rooms: tuple[str, ...]


AuthzEffect = SaveStay | Emit | Audit | WritePoint | RoomOccupied | RoomVacant | LocksChanged
Outcome = tuple["Authz", list[AuthzEffect]] | Refusal


class Authz:
    """Every stay of the floor, by room; immutable (operations return a new Authz)."""

    __slots__ = ("_last_tick", "_rooms", "_slot_count")

    def __init__(
        self,
        rooms: Mapping[str, tuple[Stay, ...]],
        *,
        slot_count: int = SLOT_COUNT,
        last_tick: datetime | None = None,
    ) -> None:
        """Wrap stays grouped by room (use ``from_stays``)."""
        if slot_count < 1:
            raise ValueError(f"slot_count must be >= 1, got {slot_count}")
        self._rooms: dict[str, tuple[Stay, ...]] = dict(rooms)
        self._slot_count = slot_count
        self._last_tick = last_tick

    @classmethod
    def from_stays(cls, stays: Iterable[Stay], *, slot_count: int = SLOT_COUNT) -> Authz:
        """Rebuild from stored stays; ValueError on a duplicate (room, stay_id)."""
        rooms: dict[str, list[Stay]] = {}
        for s in stays:
            same = rooms.setdefault(s.room, [])
            if any(o.stay_id == s.stay_id for o in same):
                raise ValueError(f"duplicate stay {s.room}/{s.stay_id}")
            same.append(s)
        return cls({r: _sorted(ss) for r, ss in rooms.items()}, slot_count=slot_count)

    # -- commands -----------------------------------------------------------------------

    def checkin(
        self,
        room: str,
        stay_id: str,
        valid_from: datetime,
        valid_until: datetime,
        tokens: Sequence[str],
        *,
        preferences: Mapping[str, object] | None = None,
        now: datetime,
    ) -> Outcome:
        """Authorise ``tokens`` for the room from ``valid_from`` until ``valid_until``."""
        now, vf, vu = to_ms(now), to_ms(valid_from), to_ms(valid_until)
        if vu <= vf:
            return Refusal(INVALID, "valid_until must be after valid_from")
        if vu <= now:
            return Refusal(INVALID, "valid_until is not in the future")
        try:
            toks = _normalize_all(tokens)
        except ValueError as exc:
            return Refusal(INVALID, str(exc))
        if not toks:
            return Refusal(INVALID, "a stay needs at least one token")
        if len(toks) > self._slot_count:
            return Refusal(
                CONFLICT, f"{len(toks)} tokens exceed the lock's {self._slot_count} slots"
            )
        base, pre = self._at(room, now)
        old = base.stay(room, stay_id)
        if old is not None and old.ended(now):
            return Refusal(CONFLICT, f"stay {stay_id} has ended")
        clash = base._overlapping(room, stay_id, vf, vu, now)
        if clash is not None:
            return Refusal(CONFLICT, f"overlaps stay {clash.stay_id} of room {room}")
        valid_now = vf <= now < vu
        occupied_at = old.occupied_at if old is not None else None
        was_occupied = occupied_at is not None
        prefs = _kept_preferences(preferences)
        new = Stay(
            room=room,
            stay_id=stay_id,
            valid_from=vf,
            valid_until=vu,
            tokens=toks,
            checked_out_at=None,
            checkout_reason=None,
            generation=old.generation + 1 if old is not None else 1,
            preferences=prefs,
            occupied_at=(occupied_at or now) if valid_now else None,
        )
        effects: list[AuthzEffect] = [
            SaveStay(new),
            Emit(
                "room.checked_in",
                room,
                {
                    "stay_id": stay_id,
                    "valid_from": format_ts(vf),
                    "valid_until": format_ts(vu),
                    "token_count": len(toks),
                },
            ),
        ]
        if was_occupied and not valid_now:
            effects.append(RoomVacant(room, stay_id, "command"))
        if valid_now and not was_occupied:
            effects.append(_occupied(new))
        return base._changed(new, now, pre, effects)

    def checkout(self, room: str, stay_id: str, now: datetime) -> Outcome:
        """Revoke every token of the stay now; the room becomes vacant if it was occupied."""
        now = to_ms(now)
        found = self._open_stay(room, stay_id, now)
        if isinstance(found, Refusal):
            return found
        base, pre, s = found
        ended = _ended(s, now, "command")
        effects: list[AuthzEffect] = [
            SaveStay(ended),
            Emit("room.checked_out", room, {"stay_id": stay_id, "reason": "command"}),
        ]
        if s.occupied_at is not None:
            effects.append(RoomVacant(room, stay_id, "command"))
        return base._changed(ended, now, pre, effects)

    def extend(self, room: str, stay_id: str, valid_until: datetime, now: datetime) -> Outcome:
        """Move the end of a stay that has not ended."""
        now, vu = to_ms(now), to_ms(valid_until)
        found = self._open_stay(room, stay_id, now)
        if isinstance(found, Refusal):
            return found
        base, pre, s = found
        if vu <= s.valid_from:
            return Refusal(INVALID, "valid_until must be after valid_from")
        if vu <= now:
            return Refusal(INVALID, "valid_until is not in the future")
        if vu == s.valid_until:
            return base._unchanged(room, pre)
        clash = base._overlapping(room, stay_id, s.valid_from, vu, now)
        if clash is not None:
            return Refusal(CONFLICT, f"overlaps stay {clash.stay_id} of room {room}")
        new = dataclasses.replace(s, valid_until=vu, generation=s.generation + 1)
        data = {
            "stay_id": stay_id,
            "valid_until": format_ts(vu),
            "previous_valid_until": format_ts(s.valid_until),
        }
        effects: list[AuthzEffect] = [SaveStay(new), Emit("room.stay_extended", room, data)]
        return base._changed(new, now, pre, effects)

    def add_token(self, room: str, stay_id: str, token: str, now: datetime) -> Outcome:
        """Issue one more key for a stay that has not ended."""
        return self._token_change(room, stay_id, token, to_ms(now), add=True)

    def revoke_token(self, room: str, stay_id: str, token: str, now: datetime) -> Outcome:
        """Revoke one key of a stay that has not ended (a lost card)."""
        return self._token_change(room, stay_id, token, to_ms(now), add=False)

    def unlock(
        self, room: str, by: str, reason: str, now: datetime
    ) -> tuple[Authz, list[AuthzEffect]]:
        """Remote momentary unlock (devices.md: write 1, reads back 0), audited."""
        return self, [
            WritePoint(DeviceRef.of(room, "lock"), "unlock", 1, verify=False),
            Audit(by, "unlock", room, {"reason": reason}),
        ]

    # -- time ---------------------------------------------------------------------------

    def tick(self, now: datetime) -> tuple[Authz, list[AuthzEffect]]:
        """Apply what is due at ``now``: expiries, then stays that became valid.

        ``LocksChanged`` names every room with a transition, or with a boundary passed since
        the previous tick (after the wall clock went back, a boundary can pass again).
        """
        now = to_ms(now)
        rooms = dict(self._rooms)
        effects: list[AuthzEffect] = []
        changed: list[str] = []
        for room, stays in self._rooms.items():
            settled, room_effects = _settle(stays, now)
            if room_effects or self._crossed(stays, now):
                rooms[room] = settled
                effects += room_effects
                changed.append(room)
        if changed:
            effects.append(LocksChanged(tuple(changed)))
        return Authz(rooms, slot_count=self._slot_count, last_tick=now), effects

    def next_boundary(self, now: datetime) -> datetime | None:
        """When ``tick`` next has something to do (``now`` if already due; None: never)."""
        now = to_ms(now)
        best: datetime | None = None
        for stays in self._rooms.values():
            for s in stays:
                if s.checked_out_at is not None:
                    continue
                if s.valid_until <= now or (s.valid_from <= now and s.occupied_at is None):
                    return now
                for b in (s.valid_from, s.valid_until):
                    if b > now and (best is None or b < best):
                        best = b
        return best

    # -- queries ------------------------------------------------------------------------

    def desired_tokens(self, room: str, now: datetime) -> frozenset[str]:
        """The tokens the room's lock must hold at ``now``."""
        now = to_ms(now)
        return frozenset(t for s in self._rooms.get(room, ()) if s.valid_at(now) for t in s.tokens)

    def occupancy(self, room: str, now: datetime) -> tuple[str, str | None]:
        """``("occupied", stay_id)`` while a stay is valid, else ``("vacant", None)``."""
        now = to_ms(now)
        for s in self._rooms.get(room, ()):
            if s.valid_at(now):
                return "occupied", s.stay_id
        return "vacant", None

    def stay_of_token(self, room: str, token: str, now: datetime | None = None) -> str | None:
        """The stay (not checked out) of the room holding this token: valid at ``now`` first."""
        t = token.strip().lower()
        holders = [
            s for s in self._rooms.get(room, ()) if s.checked_out_at is None and t in s.tokens
        ]
        if now is not None:
            at = to_ms(now)
            holders.sort(key=lambda s: not s.valid_at(at))  # stable: then by valid_from
        return holders[0].stay_id if holders else None

    def stay(self, room: str, stay_id: str) -> Stay | None:
        """One stay (ended ones included), or None."""
        return next((s for s in self._rooms.get(room, ()) if s.stay_id == stay_id), None)

    def stays(self, room: str | None = None) -> list[Stay]:
        """Every stay known (ended ones until ``forget``), by room then valid_from."""
        if room is not None:
            return list(self._rooms.get(room, ()))
        return [s for r in sorted(self._rooms) for s in self._rooms[r]]

    def forget(self, ended_before: datetime) -> Authz:
        """Drop stays checked out before ``ended_before`` (as the store purges them)."""
        cut = to_ms(ended_before)
        rooms = {
            r: kept
            for r, ss in self._rooms.items()
            if (kept := tuple(s for s in ss if s.checked_out_at is None or s.checked_out_at >= cut))
        }
        return Authz(rooms, slot_count=self._slot_count, last_tick=self._last_tick)

    @property
    def slot_count(self) -> int:
        """Credential slots per lock: the most distinct tokens one stay may hold."""
        return self._slot_count

    # -- helpers ------------------------------------------------------------------------

    def _token_change(
        self, room: str, stay_id: str, token: str, now: datetime, *, add: bool
    ) -> Outcome:
        try:
            tok = normalize_token(token)
        except ValueError as exc:
            return Refusal(INVALID, str(exc))
        found = self._open_stay(room, stay_id, now)
        if isinstance(found, Refusal):
            return found
        base, pre, s = found
        if add:
            if tok in s.tokens:
                return base._unchanged(room, pre)
            if len(s.tokens) >= self._slot_count:
                return Refusal(CONFLICT, f"the lock's {self._slot_count} slots are all taken")
            tokens = (*s.tokens, tok)
        else:
            if tok not in s.tokens:
                return Refusal(CONFLICT, f"token {token_hash(tok)} is not a key of stay {stay_id}")
            tokens = tuple(t for t in s.tokens if t != tok)
        new = dataclasses.replace(s, tokens=tokens, generation=s.generation + 1)
        action = "add_token" if add else "revoke_token"
        detail = {"stay_id": stay_id, "token_hash": token_hash(tok)}
        effects: list[AuthzEffect] = [SaveStay(new), Audit("central", action, room, detail)]
        return base._changed(new, now, pre, effects)

    def _open_stay(
        self, room: str, stay_id: str, now: datetime
    ) -> tuple[Authz, list[AuthzEffect], Stay] | Refusal:
        """The stay, not ended, with what was due in its room applied first (see ``_at``)."""
        base, pre = self._at(room, now)
        s = base.stay(room, stay_id)
        if s is None:
            return Refusal(CONFLICT, f"no stay {stay_id} in room {room}")
        if s.ended(now):
            return Refusal(CONFLICT, f"stay {stay_id} has ended")
        return base, pre, s

    def _overlapping(
        self, room: str, stay_id: str, vf: datetime, vu: datetime, now: datetime
    ) -> Stay | None:
        for s in self._rooms.get(room, ()):
            if (
                s.stay_id != stay_id
                and not s.ended(now)
                and s.valid_from < vu
                and vf < s.valid_until
            ):
                return s
        return None

    def _at(self, room: str, now: datetime) -> tuple[Authz, list[AuthzEffect]]:
        """This Authz with what is due in ``room`` at ``now`` applied first, and its effects.

        A command must not act on a stay that expired a moment ago but was not ticked yet:
        its vacancy would then follow the command's effects (e.g. a new guest's occupancy).
        """
        settled, effects = _settle(self._rooms.get(room, ()), now)
        if not effects:
            return self, []
        rooms = dict(self._rooms)
        rooms[room] = settled
        return Authz(rooms, slot_count=self._slot_count, last_tick=self._last_tick), effects

    def _unchanged(self, room: str, pre: list[AuthzEffect]) -> tuple[Authz, list[AuthzEffect]]:
        """A command that changes nothing, after ``pre`` (from ``_at``)."""
        return self, [*pre, LocksChanged((room,))] if pre else []

    def _changed(
        self, new: Stay, now: datetime, pre: list[AuthzEffect], effects: list[AuthzEffect]
    ) -> tuple[Authz, list[AuthzEffect]]:
        """This Authz with ``new`` put in place, after ``pre`` (from ``_at``); LocksChanged
        if anything was due or the lock's set at ``now`` moved."""
        room = new.room
        others = [s for s in self._rooms.get(room, ()) if s.stay_id != new.stay_id]
        rooms = dict(self._rooms)
        rooms[room] = _sorted([*others, new])
        state = Authz(rooms, slot_count=self._slot_count, last_tick=self._last_tick)
        out = [*pre, *effects]
        if pre or state.desired_tokens(room, now) != self.desired_tokens(room, now):
            out.append(LocksChanged((room,)))
        return state, out

    def _crossed(self, stays: Iterable[Stay], now: datetime) -> bool:
        last = self._last_tick
        if last is None or now <= last:
            return False
        return any(
            last < b <= now
            for s in stays
            if s.checked_out_at is None
            for b in (s.valid_from, s.valid_until)
        )


def _sorted(stays: Iterable[Stay]) -> tuple[Stay, ...]:
    return tuple(sorted(stays, key=lambda s: (s.valid_from, s.stay_id)))


def _normalize_all(tokens: Sequence[str]) -> tuple[str, ...]:
    # The same key twice is one key; order kept as given.
    return tuple(dict.fromkeys(normalize_token(t) for t in tokens))


def _kept_preferences(preferences: Mapping[str, object] | None) -> dict[str, object]:
    prefs = preferences or {}
    return {k: prefs[k] for k in _PREFERENCE_KEYS if prefs.get(k) is not None}


def _occupied(s: Stay) -> RoomOccupied:
    sp = s.preferences.get("setpoint_c")
    scene = s.preferences.get("scene")
    setpoint = float(sp) if isinstance(sp, int | float) and not isinstance(sp, bool) else None
    return RoomOccupied(s.room, s.stay_id, setpoint, scene if isinstance(scene, str) else None)


def _ended(s: Stay, now: datetime, reason: str) -> Stay:
    """The stay checked out: tokens and preferences deleted (data minimisation)."""
    return dataclasses.replace(
        s,
        tokens=(),
        preferences={},
        checked_out_at=now,
        checkout_reason=reason,
        generation=s.generation + 1,
    )


def _settle(stays: tuple[Stay, ...], now: datetime) -> tuple[tuple[Stay, ...], list[AuthzEffect]]:
    """A room's stays with expiries, then starts, due at ``now`` applied; their effects."""
    effects: list[AuthzEffect] = []
    occupy: list[Stay] = []
    out: list[Stay] = []
    for s in stays:
        if s.checked_out_at is None and s.valid_until <= now:
            ended = _ended(s, now, "expired")
            effects += [
                SaveStay(ended),
                Emit("room.checked_out", s.room, {"stay_id": s.stay_id, "reason": "expired"}),
            ]
            if s.occupied_at is not None:
                effects.append(RoomVacant(s.room, s.stay_id, "expired"))
            out.append(ended)
        elif s.valid_at(now) and s.occupied_at is None:
            started = dataclasses.replace(s, occupied_at=now, generation=s.generation + 1)
            occupy.append(started)
            out.append(started)
        else:
            out.append(s)
    for s in occupy:  # after every vacancy (back-to-back stays)
        effects += [SaveStay(s), _occupied(s)]
    return (tuple(out), effects) if effects else (stays, effects)
