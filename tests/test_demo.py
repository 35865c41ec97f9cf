"""The README's run command stays true: the demo runs to the end and leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration


def test_demo_runs_to_the_end() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "demo.py")],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "READY=1 received" in out
    for step in ("access.granted", "alarm.escalated", "alarm.resolved", "access.denied"):
        assert step in out, step
    assert "seq gaps: none" in out
    assert "floorgated exited with 0" in out
    assert out.rstrip().endswith("Done. Everything this demo started is stopped.")
