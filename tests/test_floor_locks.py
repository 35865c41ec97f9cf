"""The floor's lock keeper: what it reports as drift."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import structlog.testing

from gateway.adapters.store import Store
from gateway.config.load import load_floor
from gateway.core.effects import Emit
from gateway.core.observations import DeviceOnline, PointObserved
from gateway.core.roles import DeviceRole
from gateway.floor import Floor
from gateway.handlers import register_handlers
from gateway.messages import CheckinBody
from tests.waiting import until

TOKEN = 0x00C0FFEE00C0FFEE


class Handlers:
    """Stands in for the command processor: keeps the handlers it is given."""

    def __init__(self) -> None:
        self.fns: dict[str, Callable[..., Any]] = {}

    def register(self, type_: str, model: object, fn: Callable[..., Any]) -> None:
        self.fns[type_] = fn


async def test_a_verification_while_a_checkin_commits_is_not_drift(
    write_floor: Callable[..., Path], tmp_path: Path
) -> None:
    config, _ = load_floor(write_floor())
    async with await Store.open(tmp_path / "floor.db", synchronous="NORMAL") as store:
        floor = await Floor.open(config, store)
        lock, bus = "1203/lock", floor.device_bus["1203/lock"]
        at = time.monotonic()
        floor.observe(DeviceOnline(lock, "1203", DeviceRole.LOCK, at))
        for i in range(32):  # the lock is heard, every slot empty
            floor.observe(PointObserved(lock, "1203", DeviceRole.LOCK, "slot", i, 0, at))
        writes: list[tuple[int, object]] = []

        async def write(device: str, point: str, value: object, *, index: int, **_: Any) -> None:
            writes.append((index, value))

        async def read(device: str, wants: object, **_: Any) -> dict[Any, Any]:
            return {}  # (what it reads arrives as observations: nothing changed)

        floor.writers[bus], floor.readers[bus] = write, read
        submitted: list[object] = []
        submit = floor.submit

        def recording(effects: Any, *, done: Any = None) -> None:
            submitted.extend(effects)
            submit(effects, done=done)

        floor.submit = recording  # type: ignore[method-assign]
        handlers = Handlers()
        register_handlers(handlers, floor, uplink=None)  # type: ignore[arg-type]
        reconciler = asyncio.create_task(floor.locks.reconciler())
        try:
            now = datetime.now(UTC)
            body = CheckinBody.model_validate(
                {
                    "room": "1203",
                    "stay_id": "S-1",
                    "valid_from": now - timedelta(minutes=1),
                    "valid_until": now + timedelta(hours=1),
                    "tokens": [f"{TOKEN:016x}"],
                }
            )
            decision = handlers.fns["checkin"](body, now)
            assert decision.ok
            # Its commit is in flight (persist and apply not run yet) when the periodic
            # verification comes: it writes the new key, which is the check-in's own work.
            with structlog.testing.capture_logs() as logs:
                floor.locks.want("1203", "verify")
                await until(lambda: [e for e in logs if e["event"] == "lock_reconciled"])
            assert writes  # the key went in
            emitted = [e.type for e in submitted if isinstance(e, Emit)]
            assert "lock.drift_repaired" not in emitted
        finally:
            reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconciler
