"""Staff keys, schedules and lockdown (gateway.core.staff, gateway.core.access), and moves."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from gateway.core import access
from gateway.core.authz import Authz, LocksChanged, Refusal
from gateway.core.effects import Audit, Emit, SaveLockdown, SaveStaffKey, SaveStay
from gateway.core.locksync import token_hash
from gateway.core.staff import (
    Lockdown,
    Schedule,
    StaffAccess,
    StaffKey,
    StaffRules,
    next_schedule_change,
    plan_staff,
)

SH = ZoneInfo("Asia/Shanghai")
MON = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday; 20:00 in Shanghai
G1, G2 = "00000000000000a1", "00000000000000a2"


def key(
    key_id: str,
    token: str,
    zones: tuple[str, ...] = ("floor",),
    schedule: Schedule | None = None,
    *,
    security: bool = False,
    order: int = 0,
    source: str = "command",
) -> StaffKey:
    return StaffKey(key_id, token, frozenset(zones), schedule, security, source, order)  # type: ignore[arg-type]


def test_schedule_parse_and_due_within_a_day() -> None:
    s = Schedule.parse(["mon", "tue"], "07:00", "15:00")
    local = datetime(2026, 11, 23, 7, 0, tzinfo=SH)  # Monday 07:00 local
    assert s.due(local)
    assert s.due(local.replace(hour=14, minute=59))
    assert not s.due(local.replace(hour=15))  # until is exclusive
    assert not s.due(local.replace(hour=6, minute=59))
    assert not s.due(local + timedelta(days=2))  # Wednesday
    assert s.to_json() == {"days": ["mon", "tue"], "from": "07:00", "until": "15:00"}


def test_a_night_shift_runs_past_midnight_into_the_next_day() -> None:
    s = Schedule.parse(["sun"], "22:00", "06:00")
    sunday = datetime(2026, 11, 29, 23, 0, tzinfo=SH)
    assert s.due(sunday)
    assert s.due(sunday + timedelta(hours=6, minutes=59))  # Monday 05:59
    assert not s.due(sunday + timedelta(hours=7))  # Monday 06:00
    assert not s.due(sunday - timedelta(hours=2))  # Sunday 21:00
    assert not s.due(sunday - timedelta(days=6))  # Monday 23:00: not a Monday shift


@pytest.mark.parametrize(
    ("days", "start", "end"),
    [([], "07:00", "15:00"), (["xyz"], "07:00", "15:00"), (["mon"], "7:00", "15:00"),
     (["mon"], "24:00", "15:00"), (["mon"], "08:00", "08:00")],
)  # fmt: skip
def test_schedule_refusals(days: list[str], start: str, end: str) -> None:
    with pytest.raises(ValueError):
        Schedule.parse(days, start, end)


def test_local_hours_hold_across_a_dst_change() -> None:
    ny = ZoneInfo("America/New_York")
    s = Schedule.parse(["sun"], "01:00", "04:00")
    # 2026-03-08: clocks jump from 02:00 to 03:00 local.
    assert s.due(datetime(2026, 3, 8, 6, 30, tzinfo=UTC).astimezone(ny))  # 01:30 EST
    assert s.due(datetime(2026, 3, 8, 7, 30, tzinfo=UTC).astimezone(ny))  # 03:30 EDT
    assert not s.due(datetime(2026, 3, 8, 8, 30, tzinfo=UTC).astimezone(ny))  # 04:30 EDT


def test_next_schedule_change_is_the_next_local_boundary() -> None:
    s = Schedule.parse(["mon"], "21:00", "23:30")
    nxt = next_schedule_change([s], MON, SH)  # 20:00 local
    assert nxt == datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
    assert next_schedule_change([s], nxt, SH) == datetime(2026, 11, 23, 15, 30, tzinfo=UTC)
    assert next_schedule_change([], MON, SH) is None


def test_plan_puts_security_first_then_the_oldest_and_reports_the_rest() -> None:
    keys = [
        key("hk-new", "00000000000000b1", order=30),
        key("hk-old", "00000000000000b2", order=10),
        key("sec", "00000000000000b3", security=True, order=50),
        key("eng", "00000000000000b4", ("1202",), order=1),  # another zone
    ]
    plan = plan_staff(keys, "1201", MON, 2, lockdown=False)
    assert plan.tokens == {"00000000000000b3", "00000000000000b2"}
    assert plan.overflow == ("hk-new",)
    locked = plan_staff(keys, "1201", MON, 2, lockdown=True)
    assert locked.tokens == {"00000000000000b3"}


def test_file_keys_come_before_command_keys_of_any_age() -> None:
    keys = [
        key("cmd", "00000000000000b1", order=1),
        key("file", "00000000000000b2", order=99, source="file"),
    ]
    assert plan_staff(keys, "1201", MON, 1, lockdown=False).overflow == ("cmd",)


def test_a_revoked_file_key_stays_revoked_until_the_file_gives_a_new_token() -> None:
    file_key = key("hk", "00000000000000b1", source="file")
    rules = StaffRules(rooms=("1201",), staff_slots=2, file_keys=(file_key,))
    staff = StaffAccess.restore(rules)
    revoked = staff.revoke("hk")
    assert revoked is not None
    after, hashes = revoked
    assert after.active() == []
    assert hashes == (token_hash("00000000000000b1"),)
    tombstones = [("hk", h) for h in hashes]
    assert StaffAccess.restore(rules, (), tombstones).active() == []
    reissued = StaffRules(
        rooms=("1201",), file_keys=(key("hk", "00000000000000b9", source="file"),)
    )
    assert [k.token for k in StaffAccess.restore(reissued, (), tombstones).active()] == [
        "00000000000000b9"
    ]
    # A command key of the same id replaces the file's.
    override = key("hk", "00000000000000c1", order=5)
    assert StaffAccess.restore(rules, [override]).key("hk") == override


def authz(*keys: StaffKey, slots: int = 2) -> Authz:
    rules = StaffRules(rooms=("1201", "1202"), staff_slots=slots, tz=SH)
    return Authz.from_stays(
        [], slot_count=30, staff=StaffAccess(rules, {k.key_id: k for k in keys})
    )


def test_adding_a_key_saves_audits_and_reconciles_its_zone_only() -> None:
    a = authz()
    k = key("hk", "00000000000000b1", ("1201",))
    a2, effects = access.add_staff_key(a, k, "sec-1", MON)  # type: ignore[misc]
    assert [type(e) for e in effects] == [SaveStaffKey, Audit, LocksChanged]
    assert effects[2] == LocksChanged(("1201",))
    audit = effects[1]
    assert isinstance(audit, Audit)
    assert audit.actor == "sec-1"
    assert "00000000000000b1" not in repr(effects)  # never the token, only its hash
    assert a2.desired("1201", MON).staff == {"00000000000000b1"}
    assert a2.desired("1202", MON).staff == frozenset()


def test_a_key_outside_its_schedule_changes_no_lock_until_its_shift() -> None:
    later = Schedule.parse(["mon"], "21:00", "22:00")  # 20:00 local now
    a, effects = access.add_staff_key(
        authz(), key("hk", "00000000000000b1", ("1201",), later), "c", MON
    )  # type: ignore[misc]
    assert not any(isinstance(e, LocksChanged) for e in effects)
    a, ticked = a.tick(MON)
    a, ticked = a.tick(MON + timedelta(hours=1))
    assert LocksChanged(("1201",), routine=True) in ticked  # nobody waits on a shift
    assert a.desired("1201", MON + timedelta(hours=1)).staff == {"00000000000000b1"}
    assert a.next_boundary(MON + timedelta(hours=1)) == MON + timedelta(hours=2)
    a, ticked = a.tick(MON + timedelta(hours=2))
    assert LocksChanged(("1201",), routine=True) in ticked
    assert a.desired("1201", MON + timedelta(hours=2)).staff == frozenset()


def test_revoking_an_unknown_key_is_a_conflict() -> None:
    refused = access.revoke_staff_key(authz(), "nobody", "c", MON)
    assert isinstance(refused, Refusal)
    assert refused.code == "conflict"


def test_lockdown_keeps_security_keys_only_refuses_unlock_and_is_idempotent() -> None:
    sec, hk = key("sec", "00000000000000b1", security=True), key("hk", "00000000000000b2")
    a, _ = authz(sec, hk).checkin("1201", "s1", MON, MON + timedelta(days=1), [G1], now=MON)  # type: ignore[misc]
    a, effects = access.set_lockdown(a, True, "sec-1", "police", MON)  # type: ignore[misc]
    assert [type(e) for e in effects] == [SaveLockdown, Emit, Audit, LocksChanged]
    emit = effects[1]
    assert isinstance(emit, Emit)
    assert (emit.type, emit.data) == (
        "lockdown.changed",
        {"on": True, "by": "sec-1", "reason": "police"},
    )
    d = a.desired("1201", MON)
    assert (d.guest, d.staff) == (frozenset(), {"00000000000000b1"})
    refused = a.unlock("1201", "fd", "locked out", MON)
    assert isinstance(refused, Refusal)
    assert refused.code == "conflict"
    same, nothing = access.set_lockdown(a, True, "sec-2", "again", MON)  # type: ignore[misc]
    assert nothing == []
    assert same.staff.lockdown == Lockdown(True, "sec-1", "police", MON)
    off, _ = access.set_lockdown(a, False, "sec-1", "all clear", MON)  # type: ignore[misc]
    assert off.desired("1201", MON).guest == {G1}


# -- moves --------------------------------------------------------------------------------


def staying(start: datetime = MON - timedelta(hours=1)) -> Authz:
    a, _ = authz().checkin("1201", "s1", start, MON + timedelta(days=1), [G1, G2], now=MON)  # type: ignore[misc]
    return a


def test_a_move_opens_the_new_room_at_once_and_the_old_until_the_grace_ends() -> None:
    a, effects = staying().move_room("s1", "1201", "1202", 300, MON)  # type: ignore[misc]
    moved = [e for e in effects if isinstance(e, Emit) and e.type == "room.moved"]
    assert moved == [
        Emit(
            "room.moved",
            "1202",
            {"stay_id": "s1", "from": "1201", "grace_until": "2026-11-23T12:05:00.000Z"},
        )
    ]
    assert a.desired("1202", MON).guest == {G1, G2}
    assert a.desired("1201", MON).guest == {G1, G2}
    assert a.occupancy("1201", MON) == ("occupied", "s1")  # still sold until the grace ends
    assert a.occupancy("1202", MON) == ("occupied", "s1")
    end = MON + timedelta(seconds=300)
    a, ticked = a.tick(end)
    outs = [e for e in ticked if isinstance(e, Emit) and e.type == "room.checked_out"]
    assert outs == [Emit("room.checked_out", "1201", {"stay_id": "s1", "reason": "moved"})]
    assert a.desired("1201", end).guest == frozenset()
    assert a.desired("1202", end).guest == {G1, G2}


def test_no_grace_or_a_stay_not_begun_ends_the_old_room_at_once() -> None:
    a, effects = staying().move_room("s1", "1201", "1202", 0, MON)  # type: ignore[misc]
    assert Emit("room.checked_out", "1201", {"stay_id": "s1", "reason": "moved"}) in effects
    assert a.desired("1201", MON).guest == frozenset()
    later = staying(start=MON + timedelta(hours=2))
    a, _ = later.move_room("s1", "1201", "1202", 300, MON)  # type: ignore[misc]
    assert a.stay("1201", "s1").checkout_reason == "moved"  # type: ignore[union-attr]
    assert a.stay("1202", "s1").valid_from == MON + timedelta(hours=2)  # type: ignore[union-attr]


def test_move_refusals() -> None:
    a = staying()
    for args, code in (
        (("s1", "1201", "1201", 300), "invalid"),
        (("nope", "1201", "1202", 300), "conflict"),
    ):
        refused = a.move_room(*args, MON)  # type: ignore[arg-type]
        assert isinstance(refused, Refusal)
        assert refused.code == code
    other, _ = a.checkin("1202", "s2", MON, MON + timedelta(hours=3), [G2], now=MON)  # type: ignore[misc]
    refused = other.move_room("s1", "1201", "1202", 300, MON)
    assert isinstance(refused, Refusal)
    assert refused.code == "conflict"


def test_checkout_of_the_new_room_ends_the_grace_and_a_lost_card_opens_neither() -> None:
    a, _ = staying().move_room("s1", "1201", "1202", 300, MON)  # type: ignore[misc]
    lost, _ = a.revoke_token("1202", "s1", G2, MON)  # type: ignore[misc]
    assert lost.desired("1201", MON).guest == {G1}
    assert lost.desired("1202", MON).guest == {G1}
    refused = lost.extend("1201", "s1", MON + timedelta(days=2), MON)
    assert isinstance(refused, Refusal)  # the old room's stay only ends
    out, effects = lost.checkout("1202", "s1", MON)  # type: ignore[misc]
    rooms = sorted(e.room for e in effects if isinstance(e, Emit) and e.type == "room.checked_out")
    assert rooms == ["1201", "1202"]
    assert all(s.checked_out_at is not None for s in out.stays())
    assert sum(isinstance(e, SaveStay) for e in effects) == 2
