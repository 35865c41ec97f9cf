"""``bench/outbox`` (issue 5): the outbox and uplink figures, measured by bench/mqtt.py.

    .venv/bin/python bench/outbox.py [--events 100000] [--rooms 40] [--window 32]

Runs bench/mqtt.py unchanged (same arguments, same output): 100 000 events produced while
the broker is down, then broker restart -> current state at a subscriber, drain rate,
lost/out-of-order events and event-loop lag while draining; steady 200 events/s latency;
signed ``set_lights`` command -> reply. Issue 5's targets: current state <= 1 s, drain
>= 5 000 events/s, nothing lost, steady p99 <= 20 ms, command -> reply p99 <= 30 ms plus
one bus transaction. One difference from the issue: the command round trip here uses an
in-memory handler (no device, no bus transaction), so it is the MQTT + signature +
store part of that figure only.
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    sys.argv[0] = str(Path(__file__).with_name("mqtt.py"))
    runpy.run_path(sys.argv[0], run_name="__main__")
