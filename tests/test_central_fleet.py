"""floorgate_central with two real daemons on one Mosquitto: partitioned consumers and a
consumer that catches up by replay (tests/e2e.py harness).

Mosquitto 2.0's ``$share`` deals messages round robin, so per-floor order holds only with
partitioning there; the partitioned mode is what runs here.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import floorgate_central as fc
from tests.e2e import (  # noqa: F401 (fixtures)
    HOST,
    TOKEN,
    WAIT_S,
    mosquitto_fixture,
    mqtt_certs,
    running,
    ts,
)
from tests.mosquitto import Mosquitto
from tests.waiting import until

pytestmark = pytest.mark.integration

DEMO_RUN_DIR = "${FLOORGATE_RUN_DIR:-/tmp/floorgate-demo}"


def second_floor(run_dir: Path, gateway: str) -> tuple[Path, Callable[[dict[str, Any]], None]]:
    """A run directory of its own and an edit making the demo floor ``gateway``."""
    other = run_dir.parent / gateway
    other.mkdir()
    (other / "command.key").write_text((run_dir / "command.key").read_text())

    def edit(data: dict[str, Any]) -> None:
        data["gateway"]["id"] = gateway
        data["mqtt"]["root"] = f"hotel/demo/{gateway}"
        _replace(data, DEMO_RUN_DIR, str(other))

    return other, edit


def _replace(node: Any, old: str, new: str) -> Any:
    if isinstance(node, dict):
        for k, v in node.items():
            node[k] = _replace(v, old, new)
    elif isinstance(node, list):
        node[:] = [_replace(v, old, new) for v in node]
    elif isinstance(node, str):
        return node.replace(old, new)
    return node


def in_order(floor: fc.Floor) -> bool:
    seqs = [e.seq for e in floor.history]
    return seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_two_consumers_partition_two_floors_and_a_late_one_catches_up_by_replay(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    assert fc.partition_of("hotel/demo/demo-12", 2) != fc.partition_of("hotel/demo/demo-14", 2)
    other, edit = second_floor(run_dir, "demo-14")
    key = bytes.fromhex((run_dir / "command.key").read_text())
    keys = {"demo-12": key, "demo-14": key}
    async with (
        running(run_dir, mosquitto, client_id="harness-12"),
        running(other, mosquitto, edit=edit, client_id="harness-14") as f14,
    ):
        members = [
            fc.Central(HOST, mosquitto.port, client_id=f"member-{n}", keys=keys,
                       partition=(n, 2), reconnect_max_s=0.5)
            for n in range(2)
        ]  # fmt: skip
        async with members[0], members[1]:
            for member in members:
                await member.wait_connected(timeout_s=WAIT_S)
            await until(lambda: all(len(m.floors) == 1 for m in members), timeout=WAIT_S)
            owners = {g: m for m in members for g in m.floors}
            assert set(owners) == {"demo-12", "demo-14"}
            assert owners["demo-12"] is not owners["demo-14"]
            for gateway, member in owners.items():
                floor = member.floors[gateway]
                assert floor.inventory is not None
                assert len(floor.inventory.rooms) == 6
                now = datetime.now(UTC)
                body = {
                    "room": "1201", "stay_id": f"S-{gateway}", "tokens": [TOKEN],
                    "valid_from": ts(now - timedelta(minutes=1)),
                    "valid_until": ts(now + timedelta(hours=2)),
                }  # fmt: skip
                await floor.command("checkin", body)
                await floor.wait_event(lambda e: e.type == "room.checked_in", timeout_s=WAIT_S)
                assert (await floor.resync()).ok
                assert in_order(floor)
                assert floor.missing == []

        # A new consumer told where an earlier one stopped (seq 0: nothing processed) gets
        # every stored event of demo-14 by replay, in seq order, before the live ones.
        root = "hotel/demo/demo-14"
        late = fc.Central(
            HOST, mosquitto.port, client_id="late", keys=keys, roots=[root], resume={root: 0}
        )
        async with late:
            floor = await late.floor("demo-14", timeout_s=WAIT_S)
            f14.sim.press("1203", "bed", ms=100)
            await floor.wait_event(lambda e: e.type == "alarm.raised", timeout_s=WAIT_S)
            assert floor.history[0].seq == 1
            assert in_order(floor)
            assert floor.history[0].type == "gateway.started"
            assert floor.missing == []
            assert floor.lost == []
