"""A real Prometheus for tests (Debian's ``prometheus``): scrapes a target every second.

``running_prometheus(tmp, target)`` starts it on a free loopback port with its own data
directory and a 1 s scrape interval, and stops it (by its PID) when the block ends;
``query`` asks its HTTP API for an instant vector. Tests skip, saying why, when the
``prometheus`` binary is missing (scripts/setup installs it; CI has it).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mosquitto import HOST, free_port

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None, reason="needs Debian's prometheus package (scripts/setup installs it)"
)
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="needs promtool, of Debian's prometheus package (scripts/setup)"
)


@dataclass
class Prometheus:
    """A running Prometheus and where its API answers."""

    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    def query(self, expr: str) -> dict[tuple[tuple[str, str], ...], float]:
        """The instant vector of ``expr`` now: labels (sorted, without __name__) → value."""
        url = f"http://{HOST}:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            with urllib.request.urlopen(url, timeout=5) as reply:
                doc = json.load(reply)
        except (urllib.error.URLError, ConnectionError):
            return {}
        out = {}
        for sample in doc["data"]["result"]:
            labels = tuple(sorted((k, v) for k, v in sample["metric"].items() if k != "__name__"))
            out[labels] = float(sample["value"][1])
        return out

    def value(self, expr: str) -> float | None:
        """The single value of ``expr`` now (None when it has no sample)."""
        values = list(self.query(expr).values())
        return values[0] if len(values) == 1 else None


@contextlib.contextmanager
def running_prometheus(tmp: Path, target: str) -> Iterator[Prometheus]:
    """Prometheus scraping ``target`` (HOST:PORT, /metrics) every second."""
    assert PROMETHEUS is not None
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: floorgate\n    static_configs:\n"
        f'      - targets: ["{target}"]\n'
    )
    port = free_port()
    log = tmp / "prometheus.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'data'}",
                f"--web.listen-address={HOST}:{port}",
                "--storage.tsdb.retention.time=1h",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Prometheus(port, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
