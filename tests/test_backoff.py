"""The shared backoff: growth, cap, jitter bounds, reset."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from drivers.backoff import Backoff


def test_grows_to_cap_without_jitter() -> None:
    b = Backoff(initial_s=0.5, cap_s=4.0, jitter="none")
    assert [b.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_reset_starts_again() -> None:
    b = Backoff(initial_s=1.0, cap_s=60.0, jitter="none")
    for _ in range(5):
        b.next_delay()
    b.reset()
    assert b.next_delay() == 1.0


@given(st.integers(min_value=0, max_value=200), st.integers(min_value=0, max_value=2**32))
def test_jitter_stays_within_bounds(failures: int, seed: int) -> None:
    full = Backoff(initial_s=0.5, cap_s=60.0, rng=random.Random(seed), failures=failures)
    equal = Backoff(
        initial_s=0.5, cap_s=60.0, jitter="equal", rng=random.Random(seed), failures=failures
    )
    top = full.ceiling()
    assert top <= 60.0
    assert 0.0 <= full.next_delay() <= top
    assert top / 2 <= equal.next_delay() <= top


def test_full_jitter_spreads_floors() -> None:
    delays = {round(Backoff(rng=random.Random(s), failures=6).next_delay(), 3) for s in range(30)}
    assert len(delays) > 20  # thirty floors do not all pick the same delay


@pytest.mark.parametrize(("initial", "cap", "factor"), [(0, 1, 2), (2, 1, 2), (1, 2, 0.5)])
def test_refuses_nonsense(initial: float, cap: float, factor: float) -> None:
    with pytest.raises(ValueError, match=r"initial_s|factor"):
        Backoff(initial_s=initial, cap_s=cap, factor=factor)
