"""Shared fixtures: floor files written into a temporary run directory."""

from __future__ import annotations

import copy
import secrets
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from tests.mosquitto import free_ports

REPO = Path(__file__).resolve().parent.parent
FLOORS = REPO / "config" / "floors"


@pytest.fixture
def run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A run directory with a command key, exported as FLOORGATE_RUN_DIR.

    The demo floor's MQTT and Modbus TCP ports are exported too, as loopback ports free
    now: a floor loaded or a daemon started from it never reaches whatever listens on
    the defaults (1883, 15020) on this machine. Tests that run a broker or a simulator
    put their own ports in the floor file.
    """
    d = tmp_path / "run"
    d.mkdir()
    (d / "command.key").write_text(secrets.token_hex(32) + "\n")
    monkeypatch.setenv("FLOORGATE_RUN_DIR", str(d))
    mqtt_port, modbus_port = free_ports(2)
    monkeypatch.setenv("FLOORGATE_MQTT_PORT", str(mqtt_port))
    monkeypatch.setenv("FLOORGATE_MODBUS_PORT", str(modbus_port))
    return d


def demo_floor_dict() -> dict[str, Any]:
    """The shipped demo floor, parsed (environment references left as written)."""
    return tomllib.loads((FLOORS / "demo.toml").read_text())


@pytest.fixture
def write_floor(run_dir: Path) -> Callable[..., Path]:
    """Write a floor (default: the demo floor, optionally edited) and return its path."""

    def write(data: dict[str, Any] | None = None, name: str = "floor.toml") -> Path:
        path = run_dir / name
        path.write_text(tomli_w.dumps(copy.deepcopy(data or demo_floor_dict())))
        return path

    return write
