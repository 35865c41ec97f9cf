"""floorgate_central against a real Mosquitto, floorgated and floorsim (tests/e2e.py).

The library is what docs/central-client.md shows an integrator: it discovers the floor,
keeps its rooms and alarms, follows its events, and commands it; over MQTT 5 when the
broker speaks it, and over 3.1.1 through a broker that does not.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

import floorgate_central as fc
from tests.conftest import REPO
from tests.e2e import (  # noqa: F401 (fixtures)
    HOST,
    ROOT,
    TOKEN,
    WAIT_S,
    free_port,
    mosquitto_fixture,
    mqtt_certs,
    running,
    ts,
)
from tests.mosquitto import Mosquitto
from tests.waiting import until

pytestmark = pytest.mark.integration


async def test_the_client_follows_and_commands_a_floor(run_dir: Path, mosquitto: Mosquitto) -> None:
    async with running(run_dir, mosquitto) as f:
        floor, hotel = f.central, f.hotel
        assert hotel.protocol == "5"  # Mosquitto 2 speaks MQTT 5
        assert floor.online
        assert floor.gateway == "demo-12"
        assert floor.root == ROOT
        await until(lambda: len(floor.rooms) == 6, timeout=WAIT_S)
        assert all(isinstance(r, fc.RoomState) for r in floor.rooms.values())

        now = datetime.now(UTC)
        body = {
            "room": "1201", "stay_id": "S-1", "valid_from": ts(now - timedelta(minutes=1)),
            "valid_until": ts(now + timedelta(hours=2)), "tokens": [TOKEN],
        }  # fmt: skip
        reply = await floor.command("checkin", body, command_id="checkin-1")
        assert (reply.ok, reply.duplicate, reply.id) == (True, False, "checkin-1")
        await until(lambda: floor.rooms["1201"].occupancy == "occupied", timeout=WAIT_S)
        # The same id again is not executed again: the original reply, marked duplicate.
        again = await floor.command("checkin", body, command_id="checkin-1")
        assert (again.ok, again.duplicate) == (True, True)
        assert len(f.typed("room.checked_in")) == 1

        with pytest.raises(fc.CommandRefused) as refused:
            await floor.command("checkout", {"room": "1202", "stay_id": "nobody"})
        assert refused.value.code == "conflict"
        rejected = await floor.wait_event(lambda e: e.type == "command.rejected", timeout_s=WAIT_S)
        assert rejected.data["id"] == refused.value.command_id

        with floor.changes() as changes:
            f.sim.press("1203", "bed", ms=100)
            alarm = await floor.wait_event(lambda e: e.type == "alarm.raised", timeout_s=WAIT_S)
            alarm_id = alarm.data["alarm_id"]
            await until(lambda: alarm_id in floor.alarms, timeout=WAIT_S)
            assert (floor.alarms[alarm_id].point, floor.alarms[alarm_id].state) == ("bed", "active")
            await floor.command("resolve_alarm", {"alarm_id": alarm_id, "by": "desk"})
            async with asyncio.timeout(WAIT_S):
                async for change in changes:
                    if change == fc.AlarmCleared(alarm_id):
                        break
        assert alarm_id not in floor.alarms

        seqs = [e.seq for e in floor.history]
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # in order, no gap, no double
        assert floor.missing == []


async def test_a_broker_without_mqtt5_is_spoken_to_in_3_1_1(
    run_dir: Path, mosquitto: Mosquitto
) -> None:
    async with running(run_dir, mosquitto) as f, only_3_1_1(mosquitto.port) as port:
        keys = {"demo-12": f.key}
        async with fc.Central(
            HOST, port, client_id="old-broker", keys=keys, roots=["hotel/+/+"],
            connect_timeout_s=2,
        ) as hotel:  # fmt: skip
            floor = await hotel.floor("demo-12", timeout_s=WAIT_S)
            assert hotel.protocol == "3.1.1"
            reply = await floor.command("resync", {})
            assert reply.ok
            await until(lambda: len(floor.rooms) == 6, timeout=WAIT_S)


async def test_the_documented_minimal_client_works(
    run_dir: Path, mosquitto: Mosquitto, capsys: pytest.CaptureFixture[str]
) -> None:
    text = (REPO / "docs" / "central-client.md").read_text()
    section = text.split("## A complete minimal client", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    example: dict[str, Any] = {"__name__": "example"}
    exec(compile(code, "central-client.md", "exec"), example)
    printed: list[str] = []

    def output() -> str:
        printed.append(capsys.readouterr().out)
        return "".join(printed)

    async with running(run_dir, mosquitto) as f:
        key_file = str(run_dir / "command.key")
        client = asyncio.create_task(example["main"](HOST, mosquitto.port, "demo-12", key_file))
        try:
            await until(lambda: "checked in; devices to update" in output(), timeout=WAIT_S)
            assert "demo-12 at hotel/demo/demo-12: online" in output()
            assert "  1203 vacant call=idle" in output()
            f.sim.press("1201", "bath", ms=100)
            await until(lambda: "tell level-0: bath call" in output(), timeout=WAIT_S)
            assert "event 1 gateway.started" not in output()  # only events from now on
        finally:
            client.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await client


@contextlib.asynccontextmanager
async def only_3_1_1(broker_port: int) -> AsyncIterator[int]:
    """A port in front of the broker that drops MQTT 5 CONNECTs (as a 3.1.1-only broker)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readexactly(2)
            length, shift, more = head[1] & 0x7F, 7, head[1] & 0x80
            packet = head
            while more:
                byte = await reader.readexactly(1)
                packet += byte
                length |= (byte[0] & 0x7F) << shift
                shift, more = shift + 7, byte[0] & 0x80
            body = await reader.readexactly(length)
            if body[6] == 5:  # CONNECT: protocol name "MQTT" (2 + 4 bytes), then the level
                return
            up_reader, up_writer = await asyncio.open_connection(HOST, broker_port)
            up_writer.write(packet + body)
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        finally:
            dst.close()

    port = free_port()
    server = await asyncio.start_server(serve, HOST, port)
    try:
        yield port
    finally:
        server.close()
        await server.wait_closed()
