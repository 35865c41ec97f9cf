"""The soak's CI form: bench/soak.py for two minutes, with a broker flap each way and a
SIGKILL of the daemon, at a high rate; its final accounting must show nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_two_minutes_of_soak_lose_nothing_and_miss_no_alarm() -> None:
    argv = [
        sys.executable, str(REPO / "bench" / "soak.py"), "--duration", "2m", "--rate", "60",
        "--flap-every", "40s", "--kill-every", "70s", "--report-every", "10m",
        "--warmup", "20s", "--png", "",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("SOAK RESULT ")]
    assert lines, done.stdout[-3000:] + done.stderr[-3000:]
    figures = json.loads(lines[-1].removeprefix("SOAK RESULT "))
    assert figures["events"] > 100
    assert figures["lost"] == 0, done.stdout
    assert figures["out_of_order"] == 0, done.stdout
    assert figures["alarms_missed"] == 0, done.stdout
    assert figures["alarms_raised"] == figures["presses"]
    assert figures["flaps"] >= 2
    assert figures["flaps_undrained"] == 0, done.stdout
    assert figures["kills"] >= 1
    assert figures["array_elements"] == 60 * (3 * 16 + 32)  # the bench floor's locks
    assert 0 < figures["array_elements_read"] <= figures["array_elements"], done.stdout
