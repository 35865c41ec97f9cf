"""The metrics module: every named metric, bounded labels, the listener, the textfile.

The figures come from gateway.metrics_sample's made-up floor; the real floor is scraped
by a real Prometheus in tests/test_e2e_metrics.py.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.adapters import metrics as metrics_module
from gateway.metrics_sample import sample
from tests.mosquitto import HOST, free_port
from tests.prometheus import PROMTOOL, needs_promtool
from tests.waiting import until

DOCS = Path(__file__).resolve().parent.parent / "docs"

# operations.md "Metrics": at least these (counters carry _total on the wire).
SPEC = {
    "floorgate_up": set(),
    "floorgate_bus_transactions": {"bus", "result"},
    "floorgate_bus_utilisation": {"bus"},
    "floorgate_device_up": {"device"},
    "floorgate_outbox_pending": set(),
    "floorgate_outbox_oldest_seconds": set(),
    "floorgate_events_shed": set(),
    "floorgate_mqtt_connected": set(),
    "floorgate_publish_refused": set(),
    "floorgate_alarms_open": {"kind"},
    "floorgate_call_publish_seconds": set(),
    "floorgate_commands": {"type", "result"},
    "floorgate_lock_slots_pending": set(),
    "floorgate_rooms": {"energy_mode"},
}


def families() -> dict[str, object]:
    return {f.name: f for f in text_string_to_metric_families(sample().render().decode())}


def test_every_metric_of_the_spec_has_help_and_its_labels() -> None:
    found = families()
    for name, labels in SPEC.items():
        family = found[name]
        assert family.documentation, name  # type: ignore[attr-defined]
        samples = family.samples  # type: ignore[attr-defined]
        assert samples, name
        keys = {k for s in samples for k in s.labels if k != "le"}
        assert keys == labels, (name, keys)


def test_the_figures_are_read_at_render_time() -> None:
    text = sample().render().decode()
    assert 'floorgate_bus_transactions_total{bus="rs485-a",result="ok"} 1017.0' in text
    assert 'floorgate_bus_transactions_total{bus="rs485-a",result="timeout"} 3.0' in text
    assert 'floorgate_bus_transactions_total{bus="lan",result="bus_gone"} 4.0' in text
    assert 'floorgate_device_up{device="1201/lock"} 0.0' in text
    assert 'floorgate_bus_gone{bus="lan"} 1.0' in text
    assert "floorgate_outbox_oldest_seconds 2.0" in text
    assert 'floorgate_alarm_unacknowledged_seconds{kind="call"} 35.0' in text
    assert 'floorgate_call_publish_seconds_bucket{le="5.0"} 1.0' in text
    assert 'floorgate_commands_total{result="unauthenticated",type="other"} 1.0' in text
    assert 'floorgate_health_reason{reason="devices_offline"} 1.0' in text
    assert 'floorgate_health_reason{reason="loop_stalled"} 0.0' in text
    assert 'floorgate_log_messages_total{event="device_offline",level="warning"} 1.0' in text


@needs_promtool
def test_promtool_accepts_the_exposition_and_the_example_alert_rules() -> None:
    assert PROMTOOL is not None
    check = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=sample().render(), capture_output=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
    rules = subprocess.run(
        [PROMTOOL, "check", "rules", str(DOCS / "prometheus-alerts.yml")],
        capture_output=True,
        check=False,
    )
    assert rules.returncode == 0, rules.stdout + rules.stderr


async def test_the_listener_answers_get_metrics_and_nothing_else() -> None:
    metrics = sample()
    port = free_port()
    server = asyncio.create_task(metrics.serve(HOST, port))
    try:

        async def ask(request: bytes) -> bytes:
            reader, writer = await asyncio.open_connection(HOST, port)
            writer.write(request)
            await writer.drain()
            answer = await reader.read()
            writer.close()
            return answer

        async def listening() -> bool:
            try:
                await ask(b"GET / HTTP/1.0\r\n\r\n")
            except OSError:
                return False
            return True

        async with asyncio.timeout(10):
            while not await listening():
                await asyncio.sleep(0.05)
        ok = await ask(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert ok.startswith(b"HTTP/1.1 200 OK\r\n")
        assert b"\r\n\r\n# HELP floorgate_info" in ok
        head = await ask(b"HEAD /metrics HTTP/1.1\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        assert head.endswith(b"\r\n\r\n")
        assert (await ask(b"GET /secret HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
        assert (await ask(b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
        assert (await ask(b"\x00garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
    finally:
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server


async def test_the_textfile_is_replaced_atomically(tmp_path: Path) -> None:
    path = tmp_path / "floorgate.prom"
    path.write_text("old\n")
    seen: list[str] = []
    real = metrics_module.os.replace

    def replace(src: str, dst: Path) -> None:
        seen.append(Path(dst).read_text())  # the old file stays whole until the rename
        real(src, dst)

    metrics = sample()
    writer = asyncio.create_task(metrics.write_textfile(path, 0.05))
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(metrics_module.os, "replace", replace)
            await until(lambda: len(seen) >= 2, timeout=10)
    finally:
        writer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await writer
    assert seen[0] == "old\n"
    assert path.read_text().startswith("# HELP floorgate_info")
    assert [p.name for p in tmp_path.iterdir()] == ["floorgate.prom"]  # no temporary left
    assert oct(path.stat().st_mode & 0o777) == "0o644"
