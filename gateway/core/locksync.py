"""Locks kept equal to what is authorised: tokens, the slot plan, the access-log follower.

devices.md, FG-LOCK-1: 32 credential slots of one u64 token each (0 = empty), written with
one FC16 write per slot; an access-log ring of the 16 newest entries ``[seq, result,
token]`` where "entry with seq s sits at k = s mod 16", and ``log_head`` is the newest seq
("0 = none yet; wraps 65535 -> 1"). mqtt.md: events carry ``token_hash``, "the first 8 hex
digits of the SHA-256 of the token written as 16 lowercase hex digits, never the token".

Pure: the engine reads and writes the lock and feeds the values in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gateway.core.effects import Emit

__all__ = [
    "LOG_SEQ_MAX",
    "RING_SIZE",
    "SLOT_COUNT",
    "Desired",
    "LogEntry",
    "LogFollower",
    "LogRead",
    "SlotPlan",
    "access_event",
    "int_to_token",
    "normalize_token",
    "plan_lock",
    "plan_slots",
    "token_hash",
    "token_to_int",
]

SLOT_COUNT = 32  # devices.md, FG-LOCK-1: 32 credential slots
LOG_SEQ_MAX = 0xFFFF  # devices.md: log_head "wraps 65535 -> 1"
RING_SIZE = 16  # devices.md: "ring of the 16 newest entries"
TOKEN_MAX = 2**64 - 1
_HEX = frozenset("0123456789abcdef")
# A head that moved "forward" by more than half the cycle went back: the lock's log was
# reset (a replaced or factory-reset lock), not 32 768 presentations since the last read.
_RESET_DISTANCE = LOG_SEQ_MAX // 2

_ACCESS_EVENTS: dict[str, tuple[str, str | None]] = {
    "granted": ("access.granted", None),
    "denied": ("access.denied", "not_authorised"),
    "denied_deadbolt": ("access.denied", "deadbolt"),
    "remote_unlock": ("access.remote_unlock", None),
}


def normalize_token(token: str) -> str:
    """Return the token as 16 lowercase hex digits; ValueError if malformed or all zeros."""
    t = token.strip().lower() if isinstance(token, str) else ""
    if len(t) != 16 or not set(t) <= _HEX:
        raise ValueError("a token is 16 hex digits")
    if int(t, 16) == 0:
        raise ValueError("a token of all zeros is not a key")
    return t


def token_to_int(token: str) -> int:
    """The slot value (u64) of a token."""
    return int(normalize_token(token), 16)


def int_to_token(v: int) -> str:
    """The token (16 lowercase hex digits) of a non-zero slot or log value."""
    if not 0 < v <= TOKEN_MAX:
        raise ValueError(f"slot value {v} is not a token (1..2**64-1)")
    return f"{v:016x}"


def token_hash(token: str) -> str:
    """mqtt.md ``token_hash``: first 8 hex digits of SHA-256 of the lowercase token."""
    return hashlib.sha256(normalize_token(token).encode("ascii")).hexdigest()[:8]


# -- slots ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SlotPlan:
    """Slot writes that make a lock hold exactly the desired tokens (revocations first)."""

    writes: tuple[tuple[int, int], ...]  # (slot index, value); value 0 clears the slot
    added: int  # desired tokens written that the lock did not hold anywhere
    removed: int  # unwanted tokens overwritten or cleared (unknown slots not counted)
    unplaced: int = 0  # desired tokens that found no slot (the lock has too few)
    moved: int = 0  # desired tokens found in the other region, written into their own


@dataclass(frozen=True, slots=True)
class Desired:
    """What one lock must hold now: guest tokens in the first slots, staff tokens in the
    last ``staff_slots`` (operations.md: indices 32 - staff_slots to 31)."""

    guest: frozenset[str]
    staff: frozenset[str] = frozenset()
    staff_slots: int = 0

    @property
    def tokens(self) -> frozenset[str]:
        """Every token the lock must hold."""
        return self.guest | self.staff


def plan_slots(desired: frozenset[str], slots: Sequence[int | None]) -> SlotPlan:
    """Plan the fewest writes from ``slots`` to exactly ``desired`` (no reserved region)."""
    return plan_lock(Desired(desired), slots)


def plan_lock(desired: Desired, slots: Sequence[int | None]) -> SlotPlan:
    """Plan the fewest writes from ``slots`` (None = not read yet) to exactly ``desired``.

    Each region (guest slots, then the last ``staff_slots``) holds its own tokens. A slot
    already holding a token of its region is kept (a duplicate of it is unwanted); a
    missing token goes first into a slot of its region that must be rewritten anyway (an
    unwanted token, an unknown slot), then into an empty one; what is left unwanted or
    unknown is cleared. Writes that take a token out of the lock come first, then writes
    into empty slots, and last the slots whose token was moved to its own region, so a
    token that is kept is never out of the lock meanwhile (unless both regions are full of
    each other's tokens: a swap with no slot to spare).
    """
    count = len(slots)
    split = count - min(max(desired.staff_slots, 0), count)
    regions = (
        (range(split), {token_to_int(t) for t in desired.guest}),
        (range(split, count), {token_to_int(t) for t in desired.staff}),
    )
    kept: list[set[int]] = [set(), set()]
    for r, (indices, want) in enumerate(regions):
        for i in indices:
            v = slots[i]
            if v is not None and v in want and v not in kept[r]:
                kept[r].add(v)
    first: list[tuple[int, int]] = []
    fill: list[tuple[int, int]] = []
    last: list[tuple[int, int]] = []
    added = removed = unplaced = moved = 0
    held = {v for v in slots if v}
    for r, (indices, want) in enumerate(regions):
        other = regions[1 - r][1] - kept[1 - r]
        dirty: list[int] = []
        unknown: list[int] = []
        empty: list[int] = []
        misplaced: list[int] = []
        seen: set[int] = set()
        for i in indices:
            v = slots[i]
            if v is None:
                unknown.append(i)
            elif v in kept[r] and v not in seen:
                seen.add(v)
            elif v == 0:
                empty.append(i)
            elif v in other:
                misplaced.append(i)
            else:
                dirty.append(i)
        missing = sorted(want - kept[r])
        placed = dict(zip(dirty + unknown + empty + misplaced, missing, strict=False))
        first += [(i, placed.get(i, 0)) for i in dirty + unknown]
        fill += [(i, placed[i]) for i in empty if i in placed]
        last += [(i, placed.get(i, 0)) for i in misplaced]
        removed += len(dirty)
        moved += sum(1 for v in placed.values() if v in held)
        added += sum(1 for v in placed.values() if v not in held)
        unplaced += len(missing) - len(placed)
    # A moved token is written into its own region before its old slot is cleared.
    last.sort(key=lambda w: w[1] == 0)
    return SlotPlan(
        writes=tuple(first + fill + last),
        added=added,
        removed=removed,
        unplaced=unplaced,
        moved=moved,
    )


# -- access log -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One access-log entry (result: the profile's enum name; token 0 for a remote unlock)."""

    seq: int
    result: str
    token: int = field(repr=False)  # never in logs


@dataclass(frozen=True, slots=True)
class LogRead:
    """Which ring entries to read after ``log_head`` moved to ``head``, oldest first."""

    head: int
    seqs: tuple[int, ...]  # the seq expected at each index
    indices: tuple[int, ...]  # ring index k of each (k = seq mod ring size)
    gap: int  # entries that arrived since the last read but are no longer in the ring
    reset: bool = False  # the head went back: the lock's log restarted, counted from 0


class LogFollower:
    """Follows one lock's access log from ``log_head``: each entry is reported once.

    ``last_seen`` is the newest seq already reported (persist it). With no stored value
    (first contact with this lock) the current head is taken as the baseline and no history
    is reported: entries from before the gateway knew the lock are not news. With a stored
    value, the entries newer than it are read, as many as the ring still holds.

    ``on_head`` plans a read and leaves ``last_seen`` alone, so a failed read is planned
    again by the next ``on_head`` (``pending`` is the read still owed); ``on_entries`` takes
    what was read and advances to the planned head. An expected seq missing from what was
    read (overwritten in between) is lost: ``len(read.seqs) - len(entries)``.
    """

    def __init__(self, last_seen: int | None, *, ring_size: int = RING_SIZE) -> None:
        """Follow from ``last_seen`` (None: first contact)."""
        if last_seen is not None:
            _check_seq(last_seen)
        if ring_size < 1:
            raise ValueError(f"ring_size must be >= 1, got {ring_size}")
        self._last_seen = last_seen
        self._ring = ring_size
        self._pending: LogRead | None = None

    @property
    def last_seen(self) -> int | None:
        """The newest seq already handled (None before first contact)."""
        return self._last_seen

    @property
    def pending(self) -> LogRead | None:
        """The read planned by the last ``on_head`` and not yet answered."""
        return self._pending

    def on_head(self, head: int) -> LogRead | None:
        """``log_head`` shows ``head``: the entries to read, or None if nothing is new.

        A returned read with no indices (a log reset to 0) needs no read: it is already
        applied, and is returned so the caller can audit it.
        """
        _check_seq(head)
        base = self._last_seen
        if base is None or head == base:
            self._last_seen = head
            self._pending = None
            return None
        reset = head == 0 or (base != 0 and _distance(base, head) > _RESET_DISTANCE)
        if reset:
            base = 0
        count = head if base == 0 else _distance(base, head)
        seqs: list[int] = []
        taken: set[int] = set()
        s = head
        # Newest first; each ring index holds the newest seq that maps to it. Across the
        # wrap two seqs can share an index (65535 sits at 15, then 1 at 1, so 65521 and 1
        # collide): the older one was overwritten. At most one wrap lies in the window, so
        # 2 * ring steps visit every index.
        for _ in range(min(count, 2 * self._ring)):
            k = s % self._ring
            if k not in taken:
                taken.add(k)
                seqs.append(s)
                if len(seqs) == self._ring:
                    break
            s = LOG_SEQ_MAX if s == 1 else s - 1
        seqs.reverse()
        read = LogRead(
            head=head,
            seqs=tuple(seqs),
            indices=tuple(x % self._ring for x in seqs),
            gap=count - len(seqs),
            reset=reset,
        )
        if seqs:
            self._pending = read
        else:
            self._last_seen = head
            self._pending = None
        return read

    def on_entries(self, entries: Iterable[tuple[int, str, int]]) -> list[LogEntry]:
        """What was read for the pending read, as ``(seq, result, token)``: the new entries.

        Entries are matched to the seqs expected (a ring slot whose seq is not the expected
        one is stale or already overwritten, and skipped); the result is in seq order and
        ``last_seen`` moves to the planned head.
        """
        read = self._pending
        if read is None:
            return []
        by_seq = {seq: (result, token) for seq, result, token in entries}
        out = [LogEntry(s, *by_seq[s]) for s in read.seqs if s in by_seq]
        self._last_seen = read.head
        self._pending = None
        return out


def access_event(
    entry: LogEntry, room: str, stay_id: str | None, key_id: str | None = None
) -> Emit:
    """The mqtt.md ``access.*`` event of a log entry: ``token_hash`` and, for a staff key,
    its ``key_id``; never the token."""
    try:
        type_, reason = _ACCESS_EVENTS[entry.result]
    except KeyError:
        raise ValueError(f"unknown access-log result {entry.result!r}") from None
    data: dict[str, object] = {"stay_id": stay_id, "log_seq": entry.seq}
    if key_id is not None:
        data["key_id"] = key_id
    if reason is not None:
        data["reason"] = reason
    if entry.token:
        data["token_hash"] = token_hash(int_to_token(entry.token))
    return Emit(type_, room, data)


def _distance(a: int, b: int) -> int:
    """How many seqs after ``a`` (1..65535) ``b`` is, on the 65535-long cycle."""
    return (b - a) % LOG_SEQ_MAX


def _check_seq(seq: int) -> None:
    if not 0 <= seq <= LOG_SEQ_MAX:
        raise ValueError(f"log seq {seq} outside 0..{LOG_SEQ_MAX}")
