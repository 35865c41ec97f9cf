"""Modbus RTU rate on floorsim's paced pty lines vs. the physical limit.

Reads 10 holding registers (a lock's slots 100..109) back to back through the gateway's
own RTU transport (drivers.modbus over drivers.rtuline, which keeps the 3.5-character
silence after every answer), and compares the rate with theory:

    period = (Q + R) x bits_per_char / baud + 2 x t3.5 + turnaround
    Q = 8 request bytes, R = 5 + 2 x 10 = 25 response bytes, turnaround = 5 ms,
    t3.5 = 3.5 x bits_per_char / baud (1.75 ms above 19200 baud),
    bits_per_char = 10 for 8N1, 11 with parity.

    19200 8N1: 33 x 10 / 19200 + 2 x 1.823 ms + 5 ms = 25.83 ms -> 38.71 transactions/s

The simulator never delivers a byte before its physical time, so the achieved rate can
reach but never exceed theory (the acceptance band is 95-100 %). floorsim counts the
requests that began inside the silence after an answer (never, if the transport is right).
Usage: ``python bench/rtu_rate.py [--seconds 5] [--line 19200 ...]``.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from pathlib import Path

from drivers.lines import RtuBus
from drivers.modbus import ModbusTransport
from drivers.profile import Table
from floorsim.sim import FloorSim
from gateway.config.load import load_floor
from gateway.logging import configure_logging

REGISTERS = 10
REQUEST_BYTES = 8
RESPONSE_BYTES = 5 + 2 * REGISTERS

FLOOR = """
[gateway]
id = "rtu-rate"
state_dir = "{d}/state"
socket = "{d}/floorctl.sock"

[mqtt]
host = "127.0.0.1"
root = "bench/rtu"
command_key_file = "{d}/command.key"

[[escalation]]
after_s = 0
notify = "floor-staff"

[[bus]]
name = "line"
kind = "modbus-rtu"
port = "{d}/tty-line"
baud = {baud}
parity = "{parity}"

[[room]]
id = "1201"
devices = [
  {{ role = "lock", profile = "fg-lock-1", bus = "line", unit = 2 }},
  {{ role = "rio", profile = "fg-rio-1", bus = "line", unit = 3 }},
]
"""


async def measure(baud: int, parity: str, seconds: float) -> dict[str, float]:
    """Achieved vs theoretical transactions/s on one line."""
    with tempfile.TemporaryDirectory(prefix="rtu-rate-") as tmp:
        d = Path(tmp)
        (d / "command.key").write_text(secrets.token_hex(32))
        floor = d / "floor.toml"
        floor.write_text(FLOOR.format(d=d, baud=baud, parity=parity))
        config, _ = load_floor(floor)
        async with FloorSim(config) as sim:
            line = sim.lines["line"]
            period = line.period(REQUEST_BYTES, RESPONSE_BYTES)
            bus = config.bus("line")
            assert isinstance(bus, RtuBus)
            transport = ModbusTransport.rtu(bus.model_copy(update={"port": sim.port("line")}))
            try:
                for _ in range(5):  # warm up
                    await transport.read(2, Table.HOLDING, 100, REGISTERS)
                inside0 = line.counters.get("request_inside_silence", 0)
                n = 0
                t0 = time.perf_counter()
                deadline = t0 + seconds
                while time.perf_counter() < deadline:
                    if len(await transport.read(2, Table.HOLDING, 100, REGISTERS)) != REGISTERS:
                        raise RuntimeError("short answer")
                    n += 1
                elapsed = time.perf_counter() - t0
                inside = line.counters.get("request_inside_silence", 0) - inside0
            finally:
                await transport.close()
    return {
        "char_ms": line.char_s * 1e3,
        "t35_ms": line.gap_s * 1e3,
        "period_ms": period * 1e3,
        "theory": 1 / period,
        "achieved": n / elapsed,
        "n": n,
        "inside": inside,
    }


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per line")
    p.add_argument(
        "--line",
        action="append",
        help="BAUD[:PARITY], repeatable (default: 9600, 19200, 19200:E, 38400)",
    )
    args = p.parse_args()
    configure_logging(level="warning")
    lines = args.line or ["9600", "19200", "19200:E", "38400"]
    print(
        f"reading {REGISTERS} holding registers: request {REQUEST_BYTES} B + response "
        f"{RESPONSE_BYTES} B, turnaround 5 ms"
    )
    print("period = (Q + R) x bits/baud + 2 x t3.5 + 5 ms")
    print()
    header = (
        f"{'line':>10} {'char':>7} {'t3.5':>7} {'period':>8} {'theory':>8} {'achieved':>9} {'%':>7}"
    )
    print(header)
    print("-" * len(header))
    for spec in lines:
        baud_text, _, parity = spec.partition(":")
        parity = parity or "N"
        m = await measure(int(baud_text), parity, args.seconds)
        pct = 100 * m["achieved"] / m["theory"]
        print(
            f"{baud_text + ' 8' + parity + '1':>10} {m['char_ms']:6.3f}m {m['t35_ms']:6.3f}m "
            f"{m['period_ms']:7.2f}m {m['theory']:7.2f}/s {m['achieved']:8.2f}/s {pct:6.2f}%"
            f"  (n={m['n']}, {m['inside']} inside the silence)"
        )


if __name__ == "__main__":
    asyncio.run(main())
