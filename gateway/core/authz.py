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
from datetime import datetime, timedelta

from drivers.ids import DeviceRef
from gateway.core.effects import Audit, Emit, SaveLockdown, SaveStaffKey, SaveStay, WritePoint
from gateway.core.locksync import SLOT_COUNT, Desired, normalize_token, token_hash
from gateway.core.staff import StaffAccess, StaffRules
from gateway.core.stay import (
    CONFLICT,
    INVALID,
    LocksChanged,
    Refusal,
    RoomOccupied,
    RoomVacant,
    Stay,
    ended_stay,
    kept_preferences,
    normalize_all,
    occupied,
    settle,
    sorted_stays,
)
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

AuthzEffect = (
    SaveStay
    | SaveStaffKey
    | SaveLockdown
    | Emit
    | Audit
    | WritePoint
    | RoomOccupied
    | RoomVacant
    | LocksChanged
)
Outcome = tuple["Authz", list[AuthzEffect]] | Refusal


class Authz:
    """Every stay of the floor, by room; immutable (operations return a new Authz)."""

    __slots__ = ("_last_tick", "_rooms", "_slot_count", "_staff")

    def __init__(
        self,
        rooms: Mapping[str, tuple[Stay, ...]],
        *,
        slot_count: int = SLOT_COUNT,
        last_tick: datetime | None = None,
        staff: StaffAccess | None = None,
    ) -> None:
        """Wrap stays grouped by room (use ``from_stays``); ``slot_count``: the lock's guest
        slots, the most distinct tokens one stay may hold."""
        if slot_count < 1:
            raise ValueError(f"slot_count must be >= 1, got {slot_count}")
        self._rooms: dict[str, tuple[Stay, ...]] = dict(rooms)
        self._slot_count = slot_count
        self._last_tick = last_tick
        self._staff = staff if staff is not None else StaffAccess(StaffRules(), {})

    @classmethod
    def from_stays(
        cls,
        stays: Iterable[Stay],
        *,
        slot_count: int = SLOT_COUNT,
        staff: StaffAccess | None = None,
    ) -> Authz:
        """Rebuild from stored stays; ValueError on a duplicate (room, stay_id)."""
        rooms: dict[str, list[Stay]] = {}
        for s in stays:
            same = rooms.setdefault(s.room, [])
            if any(o.stay_id == s.stay_id for o in same):
                raise ValueError(f"duplicate stay {s.room}/{s.stay_id}")
            same.append(s)
        return cls(
            {r: sorted_stays(ss) for r, ss in rooms.items()}, slot_count=slot_count, staff=staff
        )

    def _evolve(
        self,
        rooms: Mapping[str, tuple[Stay, ...]] | None = None,
        *,
        last_tick: datetime | None = None,
        staff: StaffAccess | None = None,
    ) -> Authz:
        """A copy with what is given replaced."""
        return Authz(
            self._rooms if rooms is None else rooms,
            slot_count=self._slot_count,
            last_tick=self._last_tick if last_tick is None else last_tick,
            staff=self._staff if staff is None else staff,
        )

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
            toks = normalize_all(tokens)
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
        if old is not None and old.moved_to is not None:
            return Refusal(CONFLICT, f"stay {stay_id} moved to room {old.moved_to}")
        clash = base._overlapping(room, stay_id, vf, vu, now)
        if clash is not None:
            return Refusal(CONFLICT, f"overlaps stay {clash.stay_id} of room {room}")
        valid_now = vf <= now < vu
        occupied_at = old.occupied_at if old is not None else None
        was_occupied = occupied_at is not None
        prefs = kept_preferences(preferences)
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
            effects.append(occupied(new))
        return base._changed(new, now, pre, effects)

    def checkout(self, room: str, stay_id: str, now: datetime) -> Outcome:
        """Revoke every token of the stay now; the room becomes vacant if it was occupied."""
        now = to_ms(now)
        found = self._open_stay(room, stay_id, now, moved_ok=True)
        if isinstance(found, Refusal):
            return found
        base, pre, s = found
        state, effects = base._checked_out(s, now, pre)
        grace = state._grace_of(room, stay_id, now)
        if grace is None:
            return state, effects
        # The guest left: the room it moved from closes too.
        state, more = state._checked_out(grace, now, [])
        return state, [*effects, *more]

    def _checked_out(
        self, s: Stay, now: datetime, pre: list[AuthzEffect]
    ) -> tuple[Authz, list[AuthzEffect]]:
        ended = ended_stay(s, now, "command")
        effects: list[AuthzEffect] = [
            SaveStay(ended),
            Emit("room.checked_out", s.room, {"stay_id": s.stay_id, "reason": "command"}),
        ]
        if s.occupied_at is not None:
            effects.append(RoomVacant(s.room, s.stay_id, "command"))
        return self._changed(ended, now, pre, effects)

    def _grace_of(self, room: str, stay_id: str, now: datetime) -> Stay | None:
        """The stay that moved to ``room`` and still opens its old room (its grace)."""
        return next(
            (
                s
                for r, stays in self._rooms.items()
                if r != room
                for s in stays
                if s.stay_id == stay_id and s.moved_to == room and not s.ended(now)
            ),
            None,
        )

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

    def add_token(
        self, room: str, stay_id: str, token: str, now: datetime, actor: str = "central"
    ) -> Outcome:
        """Issue one more key for a stay that has not ended."""
        return self._token_change(room, stay_id, token, to_ms(now), actor, add=True)

    def revoke_token(
        self, room: str, stay_id: str, token: str, now: datetime, actor: str = "central"
    ) -> Outcome:
        """Revoke one key of a stay that has not ended (a lost card)."""
        return self._token_change(room, stay_id, token, to_ms(now), actor, add=False)

    def unlock(self, room: str, by: str, reason: str, now: datetime) -> Outcome:
        """Remote momentary unlock (devices.md: write 1, reads back 0), audited; refused
        (``conflict``) in lockdown."""
        if self._staff.locked_down:
            return Refusal(CONFLICT, "the floor is in lockdown: remote unlock is refused")
        return self, [
            WritePoint(DeviceRef.of(room, "lock"), "unlock", 1, verify=False),
            Audit(by, "unlock", room, {"reason": reason}),
        ]

    def move_room(
        self, stay_id: str, from_room: str, to_room: str, grace_s: int, now: datetime
    ) -> Outcome:
        """Move a stay: its tokens open ``to_room`` at once and ``from_room`` until the grace
        ends, when the old room's stay ends (``room.checked_out``, reason ``moved``).

        The new room's stay keeps the stay's tokens, end and preferences, and starts now
        (or at its ``valid_from`` if later); the old room stays sold until the grace ends
        (at once with no grace, or for a stay that has not started).
        """
        now = to_ms(now)
        if from_room == to_room:
            return Refusal(INVALID, "from and to are the same room")
        found = self._open_stay(from_room, stay_id, now)
        if isinstance(found, Refusal):
            return found
        base, pre, s = found
        base, pre_to = base._at(to_room, now)
        if base.stay(to_room, stay_id) is not None:
            return Refusal(CONFLICT, f"room {to_room} already has a stay {stay_id}")
        vf = max(s.valid_from, now)
        clash = base._overlapping(to_room, stay_id, vf, s.valid_until, now)
        if clash is not None:
            return Refusal(CONFLICT, f"overlaps stay {clash.stay_id} of room {to_room}")
        grace_until = min(now + timedelta(seconds=grace_s), s.valid_until)
        moved = Stay(
            room=to_room,
            stay_id=stay_id,
            valid_from=vf,
            valid_until=s.valid_until,
            tokens=s.tokens,
            checked_out_at=None,
            checkout_reason=None,
            generation=1,
            preferences=dict(s.preferences),
            occupied_at=now if vf <= now else None,
        )
        data = {"stay_id": stay_id, "from": from_room, "grace_until": format_ts(grace_until)}
        effects: list[AuthzEffect] = [SaveStay(moved), Emit("room.moved", to_room, data)]
        if moved.occupied_at is not None:
            effects.append(occupied(moved))
        state, out = base._changed(moved, now, [*pre, *pre_to], effects)
        if grace_until <= now or s.valid_from >= grace_until:
            old = ended_stay(s, now, "moved")
            tail: list[AuthzEffect] = [
                SaveStay(old),
                Emit("room.checked_out", from_room, {"stay_id": stay_id, "reason": "moved"}),
            ]
            if s.occupied_at is not None:
                tail.append(RoomVacant(from_room, stay_id, "moved"))
        else:
            old = dataclasses.replace(
                s, valid_until=grace_until, moved_to=to_room, generation=s.generation + 1
            )
            tail = [SaveStay(old)]
        state, more = state._changed(old, now, [], tail)
        return state, [*out, *more]

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
            settled, room_effects = settle(stays, now)
            if room_effects or self._crossed(stays, now):
                rooms[room] = settled
                effects += room_effects
                changed.append(room)
        if changed:
            effects.append(LocksChanged(tuple(changed)))
        last = self._last_tick
        if last is not None and last != now:
            shift = self._staff.changed_rooms(last, now)
            rooms_of_shift = [r for r in self._staff.rules.rooms if r in shift and r not in changed]
            if rooms_of_shift:
                effects.append(LocksChanged(tuple(rooms_of_shift), routine=True))
        return self._evolve(rooms, last_tick=now), effects

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
        staff = self._staff.next_change(now)
        if staff is not None and (best is None or staff < best):
            best = staff
        return best

    # -- queries ------------------------------------------------------------------------

    def desired(self, room: str, now: datetime) -> Desired:
        """What the room's lock must hold at ``now``: its guests' tokens in the guest slots
        (none in lockdown), the staff keys due there in the staff slots."""
        now = to_ms(now)
        guest: frozenset[str] = frozenset()
        if not self._staff.locked_down:
            guest = frozenset(
                t for s in self._rooms.get(room, ()) if s.valid_at(now) for t in s.tokens
            )
        staff = self._staff.plan(room, now).tokens
        return Desired(guest, staff, self._staff.rules.staff_slots)

    def desired_tokens(self, room: str, now: datetime) -> frozenset[str]:
        """Every token the room's lock must hold at ``now`` (guests' and staff's)."""
        return self.desired(room, now).tokens

    def staff_overflow(self, room: str, now: datetime) -> tuple[str, ...]:
        """Staff keys due in the room that its staff slots cannot hold now (by key id)."""
        return self._staff.plan(room, to_ms(now)).overflow

    @property
    def staff(self) -> StaffAccess:
        """The staff keys and the lockdown."""
        return self._staff

    def with_staff(self, staff: StaffAccess) -> Authz:
        """This authorisation with other staff keys or lockdown."""
        return self._evolve(staff=staff)

    def locks_moved(self, before: Authz, rooms: Iterable[str], now: datetime) -> list[LocksChanged]:
        """LocksChanged for the rooms whose lock must now hold other than under ``before``."""
        moved = tuple(r for r in rooms if self.desired(r, now) != before.desired(r, now))
        return [LocksChanged(moved)] if moved else []

    def occupancy(self, room: str, now: datetime) -> tuple[str, str | None]:
        """``("occupied", stay_id)`` while a stay is valid, else ``("vacant", None)``."""
        stays = self._rooms.get(room)
        if not stays:
            return "vacant", None
        now = to_ms(now)
        for s in stays:
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

    def rooms_with_preference(self, key: str) -> frozenset[str]:
        """The rooms with a stay (ended ones included) whose guest preferences name ``key``."""
        return frozenset(
            room for room, stays in self._rooms.items() if any(key in s.preferences for s in stays)
        )

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
        return self._evolve(rooms)

    @property
    def slot_count(self) -> int:
        """Credential slots per lock: the most distinct tokens one stay may hold."""
        return self._slot_count

    # -- helpers ------------------------------------------------------------------------

    def _token_change(
        self, room: str, stay_id: str, token: str, now: datetime, actor: str, *, add: bool
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
        effects: list[AuthzEffect] = [SaveStay(new), Audit(actor, action, room, detail)]
        state, out = base._changed(new, now, pre, effects)
        grace = state._grace_of(room, stay_id, now)
        if add or grace is None or tok not in grace.tokens:
            return state, out
        # A lost card no longer opens the room the guest moved from either.
        kept = tuple(t for t in grace.tokens if t != tok)
        old = dataclasses.replace(grace, tokens=kept, generation=grace.generation + 1)
        state, more = state._changed(old, now, [], [SaveStay(old)])
        return state, [*out, *more]

    def _open_stay(
        self, room: str, stay_id: str, now: datetime, *, moved_ok: bool = False
    ) -> tuple[Authz, list[AuthzEffect], Stay] | Refusal:
        """The stay, not ended, with what was due in its room applied first (see ``_at``)."""
        base, pre = self._at(room, now)
        s = base.stay(room, stay_id)
        if s is None:
            return Refusal(CONFLICT, f"no stay {stay_id} in room {room}")
        if s.ended(now):
            return Refusal(CONFLICT, f"stay {stay_id} has ended")
        if s.moved_to is not None and not moved_ok:
            return Refusal(CONFLICT, f"stay {stay_id} moved to room {s.moved_to}")
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
        settled, effects = settle(self._rooms.get(room, ()), now)
        if not effects:
            return self, []
        rooms = dict(self._rooms)
        rooms[room] = settled
        return self._evolve(rooms), list[AuthzEffect](effects)

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
        rooms[room] = sorted_stays([*others, new])
        state = self._evolve(rooms)
        out = [*pre, *effects]
        if pre or state.desired(room, now) != self.desired(room, now):
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
