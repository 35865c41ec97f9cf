"""Read planner: fewest requests within the spec limits; split and remember on exception 02."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from drivers.planner import ReadPlanner, Want, wants_for
from drivers.profile import Point, PollClass, Profile, Table
from gateway.config.load import load_profile, shipped_profiles_dir


def _profile(name: str) -> Profile:
    return load_profile(shipped_profiles_dir() / f"{name}.toml")


def _polled(prof: Profile) -> list[Point]:
    """Points read with the room's state (not write-only, not slow verification)."""
    return [
        p for p in prof.point if p.poll not in (PollClass.NEVER,) and (p.interval_ms or 0) < 30000
    ]


def test_full_room_read_is_at_most_six_requests() -> None:
    planner = ReadPlanner()
    total = 0
    for name in ("fg-tstat-1", "fg-lock-1", "fg-rio-1"):
        total += len(planner.plan(wants_for(_polled(_profile(name)))))
    assert total <= 6


def test_rio_counters_are_one_request() -> None:
    rio = _profile("fg-rio-1")
    counters = [p for p in rio.point if p.poll is PollClass.EMERGENCY]
    (req,) = ReadPlanner().plan(wants_for(counters))
    assert (req.table, req.address, req.count) == (Table.INPUT, 0, 3)


def test_slots_split_at_32_registers() -> None:
    slot = _profile("fg-lock-1").by_role()["slot"]
    reqs = ReadPlanner().plan(wants_for([slot]))
    assert [(r.address, r.count) for r in reqs] == [(100, 32), (132, 32), (164, 32), (196, 32)]
    assert sum(len(r.items) for r in reqs) == 32


def test_access_log_entry_reads_in_one_request() -> None:
    lock = _profile("fg-lock-1").by_role()
    entry = [Want(lock[r], 5) for r in ("log_seq", "log_result", "log_token")]
    (req,) = ReadPlanner().plan(entry)
    assert (req.address, req.count) == (10 + 6 * 5, 6)
    raw = list(range(100, 106))
    assert req.slice_for(entry[2], raw) == [102, 103, 104, 105]


def test_gap_merges_near_addresses_but_not_far_ones() -> None:
    a = Point(name="a", table="holding", address=0)
    b = Point(name="b", table="holding", address=4)
    c = Point(name="c", table="holding", address=20)
    reqs = ReadPlanner(max_gap_registers=3).plan(wants_for([a, b, c]))
    assert [(r.address, r.count) for r in reqs] == [(0, 5), (20, 1)]
    reqs = ReadPlanner(max_gap_registers=2).plan(wants_for([a, b, c]))
    assert [(r.address, r.count) for r in reqs] == [(0, 1), (4, 1), (20, 1)]


def test_exception_02_splits_and_is_remembered() -> None:
    rdf = _profile("siemens-rdf302")  # holding 100, 101, 102, 107: a hole at 103..106
    planner = ReadPlanner()
    holding = [p for p in rdf.point if p.table is Table.HOLDING]
    (merged,) = planner.plan(wants_for(holding))
    assert (merged.address, merged.count) == (100, 8)
    split = planner.refused(merged)
    assert [(r.address, r.count) for r in split] == [(100, 3), (107, 1)]
    assert [(r.address, r.count) for r in planner.plan(wants_for(holding))] == [(100, 3), (107, 1)]


points = st.builds(
    lambda table, address, width: Point(
        name="p",
        table=table,
        address=address,
        type="bit" if table in ("coil", "discrete") else width,
    ),
    st.sampled_from(["coil", "discrete", "input", "holding"]),
    st.integers(0, 300),
    st.sampled_from(["u16", "u32", "u64"]),
)


@given(st.lists(points, min_size=1, max_size=40), st.integers(0, 8))
def test_plan_covers_everything_within_limits(pts: list[Point], gap: int) -> None:
    planner = ReadPlanner(max_gap_registers=gap, max_gap_bits=gap)
    wants = wants_for(pts)
    reqs = planner.plan(wants)
    covered = [w for r in reqs for w in r.items]
    assert sorted(map(id, covered)) == sorted(map(id, wants))
    for r in reqs:
        assert r.count <= (64 if r.table.is_bit else 32)
        for w in r.items:
            assert w.table is r.table
            assert r.address <= w.start
            assert w.end <= r.address + r.count - 1
