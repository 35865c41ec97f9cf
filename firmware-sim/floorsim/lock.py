"""FG-LOCK-1: credential slots, matching at the door, the access-log ring, unlock pulse.

devices.md: "a presented token that is non-zero and equals some slot is granted (the
door releases for 5 s) unless the deadbolt is thrown; every presentation and every
remote unlock appends a log entry. [...] Writing a slot takes one FC16 write of 4
registers; a partially written slot is never matched."
"""

from __future__ import annotations

from typing import Any

import structlog

from drivers.codec import Value
from drivers.profile import Table
from floorsim.device import SimDevice
from floorsim.journal import Stamp
from floorsim.regmap import ILLEGAL_DATA_VALUE, Element, ModbusError

__all__ = ["Lock"]

log = structlog.get_logger("floorsim.lock")

# devices.md, FG-LOCK-1: "write 1: momentary unlock (door releases for 5 s)".
RELEASE_S = 5.0
# devices.md, FG-LOCK-1: "log_head ... wraps 65535 -> 1".
LOG_HEAD_MAX = 0xFFFF
# devices.md, FG-LOCK-1 access-log result codes, by the profile's enum names.
GRANTED, DENIED, DENIED_DEADBOLT, REMOTE_UNLOCK = (
    "granted",
    "denied",
    "denied_deadbolt",
    "remote_unlock",
)


class Lock(SimDevice):
    """FG-LOCK-1 behaviour: slots, matching, access log, deadbolt, unlock pulse."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        r = self.regs
        self.slot_total = r.point("slot").count if r.has("slot") else 0
        # "a partially written slot is never matched": False until one write covers it whole.
        self._whole = [True] * self.slot_total
        self._released_until = float("-inf")
        if r.has("slot_count"):
            r.put("slot_count", self.slot_total)
        if r.has("battery"):
            r.put("battery", 100)

    @property
    def released(self) -> bool:
        """True while the door is released (5 s after a grant or a remote unlock)."""
        return self.clock.now() < self._released_until

    def present(self, token: int) -> dict[str, Any]:
        """A token is presented at the door: the lock decides from its slots, and logs it."""
        slots = self.slots()
        match = token != 0 and any(
            t == token and self._whole[i] for i, t in enumerate(slots) if t is not None
        )
        if not match:
            result = DENIED
        elif self._bool("deadbolt"):
            result = DENIED_DEADBOLT
        else:
            result = GRANTED
            self._release()
        seq = self._log(result, token)
        ev = self._event("token", result=result, token=token, log_seq=seq)
        return {
            "result": result,
            "granted": result == GRANTED,
            "log_seq": seq,
            **ev.stamp.as_dict(),
        }

    def slots(self) -> list[int | None]:
        """The raw tokens in the slots (0 = empty)."""
        out: list[int | None] = []
        for i in range(self.slot_total):
            v = self.regs.get("slot", i)
            out.append(v if isinstance(v, int) else None)
        return out

    def slots_whole(self) -> list[bool]:
        """Per slot, whether its last write covered it whole (so it may match)."""
        return list(self._whole)

    def log_entries(self) -> list[dict[str, Any]]:
        """The access-log ring, newest first, as the gateway would read it."""
        if not self.regs.has("log_seq"):
            return []
        size = self.regs.point("log_seq").count
        entries = [
            {
                "seq": seq,
                "result": self.regs.get("log_result", k),
                "token": self.regs.get("log_token", k),
            }
            for k in range(size)
            if (seq := self._int("log_seq", k))
        ]
        head = self._int("log_head")
        return sorted(entries, key=lambda e: _ring_age(e["seq"], head))

    def on_write(self, el: Element, old: Value, *, whole: bool, stamp: Stamp) -> None:
        """Slots track whole writes; unlock pulses and reads back 0."""
        role = el.point.role
        if role == "slot":
            self._whole[el.index] = whole
        if role == "unlock":
            value = self.regs.get("unlock")
            self.regs.put("unlock", 0)
            if value == 1:
                self._release()
                seq = self._log(REMOTE_UNLOCK, 0)
                self.journal.record(
                    "remote_unlock", self.name, room=self.room, stamp=stamp, log_seq=seq
                )
            return
        super().on_write(el, old, whole=whole, stamp=stamp)
        if role == "slot" and not whole:
            log.debug("slot_partially_written", device=self.name, slot=el.index)

    def write(self, table: Table, address: int, values: list[int], *, multiple: bool) -> None:
        """As SimDevice.write; unlock accepts only 0 and 1 (exception 03 otherwise)."""
        if self.regs.has("unlock"):
            p = self.regs.point("unlock")
            covered = table is p.table and address <= p.address < address + len(values)
            if covered and values[p.address - address] not in (0, 1):
                raise ModbusError(ILLEGAL_DATA_VALUE, "unlock takes 0 or 1")
        super().write(table, address, values, multiple=multiple)

    def _release(self) -> None:
        self._released_until = self.clock.now() + RELEASE_S

    def _bool(self, role: str) -> bool:
        return self.regs.has(role) and bool(self.regs.get(role))

    def _log(self, result: str, token: int) -> int:
        r = self.regs
        if not r.has("log_head"):
            return 0
        head = self._int("log_head")
        seq = 1 if head >= LOG_HEAD_MAX else head + 1
        if r.has("log_seq"):
            k = seq % r.point("log_seq").count  # "entry with seq s sits at k = s mod 16"
            r.put("log_seq", seq, k)
            r.put("log_result", result, k)
            r.put("log_token", token, k)
        r.put("log_head", seq)
        return seq


def _ring_age(seq: int, head: int) -> int:
    """How many entries ago ``seq`` was logged, given the newest ``head`` (1..65535 cycle)."""
    return (head - seq) % LOG_HEAD_MAX
