"""Metrics and health end to end: a real Prometheus scrapes the daemon running on floorsim.

A device floorsim silences drops ``floorgate_device_up`` and makes the floor degraded (in
``floorctl health`` and in the retained status); events while the broker is down raise
``floorgate_outbox_pending``; a call is timed to its PUBACK; the exposition passes
``promtool check metrics`` and the textfile is written beside.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main as floorctl
from tests.e2e import (  # noqa: F401 (fixtures)
    HOST,
    ROOT,
    WAIT_S,
    mosquitto_fixture,
    mqtt_certs,
    retained_until,
    running,
)
from tests.mosquitto import Mosquitto, free_port
from tests.prometheus import PROMTOOL, needs_prometheus, running_prometheus
from tests.waiting import until

pytestmark = [pytest.mark.integration, needs_prometheus]


def with_metrics(run_dir: Path, port: int) -> Any:
    def edit(data: dict[str, Any]) -> None:
        data["metrics"] = {
            "listen": f"{HOST}:{port}",
            "textfile": str(run_dir / "floorgate.prom"),
            "textfile_every_s": 0.5,
        }
        data["health"] = {"broker_down_s": 1}

    return edit


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://{HOST}:{port}/metrics", timeout=5) as reply:
        assert reply.headers["Content-Type"].startswith("text/plain; version=")
        return str(reply.read().decode())


async def test_prometheus_sees_a_silent_device_and_the_outbox_growing_while_the_broker_is_down(
    run_dir: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    port = free_port()
    sock = str(run_dir / "floorctl.sock")
    async with running(run_dir, mosquitto, edit=with_metrics(run_dir, port)) as f:
        with running_prometheus(run_dir / "prometheus", f"{HOST}:{port}") as prom:
            await until(lambda: prom.value("floorgate_up") == 1, timeout=WAIT_S, interval=0.5)
            lock = 'floorgate_device_up{device="1203/lock"}'
            await until(lambda: prom.value(lock) == 1, timeout=WAIT_S, interval=0.5)
            assert floorctl(["--socket", sock, "health"]) == 0
            capsys.readouterr()

            # A device floorsim silences: down in Prometheus, the floor degraded.
            f.sim.set_fault("1203/lock", "silent")
            await until(lambda: prom.value(lock) == 0, timeout=WAIT_S, interval=0.5)
            reason = 'floorgate_health_reason{reason="devices_offline"}'
            await until(lambda: prom.value(reason) == 1, timeout=WAIT_S, interval=0.5)
            assert prom.value("floorgate_health") == 1
            assert floorctl(["--socket", sock, "--json", "health"]) == 1
            health = json.loads(capsys.readouterr().out)
            assert health["level"] == "degraded"
            assert any(
                r["code"] == "devices_offline" and "1203/lock" in r["message"]
                for r in health["reasons"]
            )
            status = await retained_until(
                mosquitto,
                f"{ROOT}/status",
                lambda s: s.get("health", {}).get("level") == "degraded",
            )
            assert status["online"] is True
            assert "devices_offline" in [r["code"] for r in status["health"]["reasons"]]
            f.sim.clear_fault("1203/lock")
            await until(lambda: prom.value(lock) == 1, timeout=WAIT_S, interval=0.5)
            await retained_until(
                mosquitto, f"{ROOT}/status", lambda s: s.get("health", {}).get("level") == "ok"
            )

            # A call, timed from the floor to the broker's PUBACK.
            f.sim.press("1201", "bath", ms=50)
            await f.event("alarm.raised", "1201")
            count = "floorgate_call_publish_seconds_count"
            await until(lambda: (prom.value(count) or 0) >= 1, timeout=WAIT_S, interval=0.5)
            assert (await f.command("resync", {}))["ok"] is True
            ok = 'floorgate_commands_total{type="resync",result="ok"}'
            await until(lambda: prom.value(ok) == 1, timeout=WAIT_S, interval=0.5)

            # The broker down: the floor goes on, its events wait in the outbox.
            mosquitto.stop()
            await until(
                lambda: prom.value("floorgate_mqtt_connected") == 0, timeout=WAIT_S, interval=0.5
            )
            for room in ("1201", "1202"):  # changes that stay, so each is polled and told
                f.sim.door(room, True)
                f.sim.dnd(room, True)
            await until(
                lambda: (prom.value("floorgate_outbox_pending") or 0) >= 4,
                timeout=WAIT_S,
                interval=0.5,
            )
            await until(
                lambda: (prom.value("floorgate_outbox_oldest_seconds") or 0) > 0,
                timeout=WAIT_S,
                interval=0.5,
            )
            broker = 'floorgate_health_reason{reason="broker_unreachable"}'
            await until(lambda: prom.value(broker) == 1, timeout=WAIT_S, interval=0.5)
            mosquitto.start()
            await until(
                lambda: prom.value("floorgate_outbox_pending") == 0, timeout=WAIT_S, interval=0.5
            )

            text = scrape(port)
        if PROMTOOL is not None:
            check = subprocess.run(
                [PROMTOOL, "check", "metrics"],
                input=text.encode(),
                capture_output=True,
                check=False,
            )
            assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()
        for name in (
            "floorgate_up", "floorgate_bus_transactions_total", "floorgate_bus_utilisation",
            "floorgate_device_up", "floorgate_outbox_pending", "floorgate_outbox_oldest_seconds",
            "floorgate_events_shed_total", "floorgate_mqtt_connected",
            "floorgate_publish_refused_total", "floorgate_alarms_open",
            "floorgate_call_publish_seconds_bucket", "floorgate_commands_total",
            "floorgate_lock_slots_pending", "floorgate_rooms", "floorgate_health",
        ):  # fmt: skip
            assert f"\n{name}" in text, name
        textfile = run_dir / "floorgate.prom"
        await until(textfile.exists, timeout=WAIT_S)
        assert textfile.read_text().startswith("# HELP")
