"""Staff keys and lockdown as commands on the floor's authorisation, pure.

Each operation takes the current ``Authz`` and returns ``(new Authz, effects)`` or a
``Refusal``, as the stay commands do: what is saved (``SaveStaffKey``, ``SaveLockdown``),
audited and announced (``lockdown.changed``), and which locks must be reconciled. The rules
of staff keys and lockdown themselves are gateway.core.staff's.
"""

from __future__ import annotations

from datetime import datetime

from gateway.core.authz import CONFLICT, Authz, AuthzEffect, LocksChanged, Outcome, Refusal
from gateway.core.effects import Audit, Emit, SaveLockdown, SaveStaffKey
from gateway.core.locksync import token_hash
from gateway.core.staff import Lockdown, StaffKey
from gateway.model.time import to_ms

__all__ = ["add_staff_key", "revoke_staff_key", "set_lockdown"]


def add_staff_key(authz: Authz, key: StaffKey, actor: str, now: datetime) -> Outcome:
    """Add (or replace) a staff key: written into its zones' locks while it is due."""
    now = to_ms(now)
    staff = authz.staff
    old = staff.key(key.key_id)
    state = authz.with_staff(staff.add(key))
    detail: dict[str, object] = {
        "key_id": key.key_id,
        "token_hash": token_hash(key.token),
        "zones": sorted(key.zones),
        "schedule": None if key.schedule is None else key.schedule.to_json(),
        "security": key.security,
    }
    rooms = set(staff.rooms_of(key)) | set(() if old is None else staff.rooms_of(old))
    effects: list[AuthzEffect] = [
        SaveStaffKey(key.key_id, key),
        Audit(actor, "staff_key.add", None, detail),
    ]
    return state, [*effects, *state.locks_moved(authz, sorted(rooms), now)]


def revoke_staff_key(authz: Authz, key_id: str, actor: str, now: datetime) -> Outcome:
    """Revoke a staff key now (``conflict`` if there is no such key)."""
    now = to_ms(now)
    key = authz.staff.key(key_id)
    revoked = authz.staff.revoke(key_id)
    if key is None or revoked is None:
        return Refusal(CONFLICT, f"no staff key {key_id}")
    staff, hashes = revoked
    state = authz.with_staff(staff)
    effects: list[AuthzEffect] = [
        SaveStaffKey(key_id, None, hashes),
        Audit(actor, "staff_key.revoke", None, {"key_id": key_id, "token_hash": hashes[0]}),
    ]
    return state, [*effects, *state.locks_moved(authz, authz.staff.rooms_of(key), now)]


def set_lockdown(authz: Authz, on: bool, by: str, reason: str, now: datetime) -> Outcome:
    """Lockdown on (every lock keeps only security keys; remote unlock refused) or off
    (every lock back to what is authorised); setting what is already set changes nothing.

    operations.md: lockdown "persists across restarts and power loss; ending it needs a
    ``lockdown`` command with ``on: false`` (never automatic)".
    """
    now = to_ms(now)
    if authz.staff.locked_down == on:
        return authz, []
    lockdown = Lockdown(on, by, reason, now)
    state = authz.with_staff(authz.staff.with_lockdown(lockdown))
    data = {"on": on, "by": by, "reason": reason}
    return state, [
        SaveLockdown(lockdown),
        Emit("lockdown.changed", None, data),
        Audit(by, "lockdown", None, {"on": on, "reason": reason}),
        LocksChanged(authz.staff.rules.rooms),
    ]
