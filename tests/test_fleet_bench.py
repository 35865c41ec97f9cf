"""The fleet bench's CI form: 20 simulated floors and a daemon on floorsim, two partitioned
floorgate_central consumers, a broker restart each way; nothing may be lost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_twenty_floors_lose_nothing_through_broker_restarts() -> None:
    argv = [
        sys.executable, str(REPO / "bench" / "fleet.py"), "--floors", "20", "--workers", "2",
        "--daemons", "1", "--seconds", "10", "--warmup", "2", "--events-per-room-hour", "60",
        "--jitter", "1",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("FLEET RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    (verdict,) = json.loads(lines[-1].removeprefix("FLEET RESULT "))
    assert verdict["events"] > 100, done.stdout
    assert verdict["lost"] == 0, done.stdout
    assert verdict["out_of_order"] == 0, done.stdout
    assert verdict["restarts_back"] == [[20, 20], [20, 20]], done.stdout
