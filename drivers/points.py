"""One polled device as its bus scheduler sees it: which points, in which groups, how read.

From a device's profile (and the floor's interval overrides, and its bus kind's caps): the
points that are polled
(those with a role, and bit fields whose named bits are roles of the device; never those of
class ``never`` or write-only ones), grouped by (class, interval) so that one group is one
planned set of requests; its read planner (which remembers where the device refused
merged reads); the last value of every observed (role, index); and its health.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from drivers.codec import Value
from drivers.health import DeviceHealth
from drivers.ids import DeviceRef
from drivers.lines import DeviceSpec
from drivers.planner import ReadPlanner, ReadRequest, Want
from drivers.profile import Point, PollClass

__all__ = ["KIND_INTERVAL_CAPS_MS", "PolledDevice", "slowest_poll_ms"]

# A class's interval never longer than this on a bus of this kind, unless the floor says
# otherwise. The profiles size the emergency class for an RS-485 line shared by a dozen
# rooms (300 ms); a Modbus TCP endpoint has no line to share, and a guest's call sampled
# every 100 ms reaches the central system within 150 ms.
KIND_INTERVAL_CAPS_MS: dict[str, dict[PollClass, int]] = {
    "modbus-tcp": {PollClass.EMERGENCY: 100},
}


def slowest_poll_ms(
    spec: DeviceSpec,
    overrides: Mapping[PollClass, int],
    caps: Mapping[PollClass, int] | None = None,
) -> int | None:
    """The longest target interval among the device's polled points (None: none polled)."""
    device = PolledDevice(spec, DeviceHealth(), overrides, dict(caps or {}))
    return max((interval for _, interval in device.group_class.values()), default=None)


@dataclass(slots=True, eq=False)
class PolledDevice:
    """One device as its scheduler sees it: polled groups, planner, last values, health."""

    spec: DeviceSpec
    health: DeviceHealth
    overrides: Mapping[PollClass, int]
    caps: Mapping[PollClass, int] = field(default_factory=dict)  # see KIND_INTERVAL_CAPS_MS
    groups: dict[str, list[Want]] = field(default_factory=dict)
    group_class: dict[str, tuple[PollClass, int]] = field(default_factory=dict)
    planner: ReadPlanner = field(default_factory=ReadPlanner)
    values: dict[tuple[str, int], Value] = field(default_factory=dict)  # by (role, index)
    # by (point name, index): the raw words last decoded and the (role, value) pairs they gave
    decoded: dict[tuple[str, int], tuple[tuple[int, ...], list[tuple[str, Value]]]] = field(
        default_factory=dict
    )
    bad: set[tuple[str, int]] = field(default_factory=set)
    fault: str | None = None
    polls: int = 0
    ref: DeviceRef = field(init=False)
    name: str = field(init=False)  # "1203/lock"
    unit: int = field(init=False)  # its Modbus unit id
    probe_key: str = field(init=False)  # its probe's schedule key
    _plans: dict[str, tuple[int, list[ReadRequest]]] = field(default_factory=dict)
    _roles: dict[str, Point] = field(default_factory=dict)
    _bit_roles: dict[str, list[str]] = field(default_factory=dict)  # point name -> roles

    def __post_init__(self) -> None:
        self.ref = self.spec.ref
        self.name = self.spec.name
        self.unit = self.spec.unit
        self.probe_key = f"probe:{self.name}"
        vocabulary = self.spec.roles
        for p in self.spec.profile.point:
            bit_roles = [b for b in (p.bits or {}) if b in vocabulary]
            if p.role is not None:
                self._roles[p.role] = p
            if bit_roles:
                self._bit_roles[p.name] = bit_roles
            polled = p.role is not None or bit_roles
            interval = self.interval_ms(p)
            if not polled or interval is None or "r" not in p.access:
                continue
            group = f"{p.poll}@{interval}"
            self.groups.setdefault(group, []).extend(Want(p, i) for i in range(p.count))
            self.group_class[group] = (p.poll, interval)

    @property
    def probe(self) -> Want:
        """The cheapest read that shows the device answers: its highest-class polled point."""
        order = list(PollClass)
        groups = sorted(self.groups.values(), key=lambda ws: order.index(ws[0].point.poll))
        if groups:
            return min(groups[0], key=lambda w: w.point.type.width)
        readable = [p for p in self.spec.profile.point if "r" in p.access]
        return Want(readable[0] if readable else self.spec.profile.point[0])

    def forget(self) -> None:
        """Drop the last values: the next read of every point is observed again."""
        self.values.clear()
        self.decoded.clear()

    def interval_ms(self, p: Point) -> int | None:
        """A point's poll interval: its own, else the floor's for its class, else the
        profile's (for its class at most the bus kind's cap)."""
        if p.poll is PollClass.NEVER:
            return None
        if p.interval_ms is not None:
            return p.interval_ms
        if p.poll in self.overrides:
            return self.overrides[p.poll]
        profile = self.spec.profile.interval_ms(p)
        cap = self.caps.get(p.poll)
        return profile if cap is None or profile is None else min(profile, cap)

    def plan(self, wants: Sequence[Want], group: str | None) -> list[ReadRequest]:
        """The planned requests for these wants (cached per poll group)."""
        if group is None:
            return self.planner.plan(wants)
        version = len(self.planner.barriers)
        cached = self._plans.get(group)
        if cached is None or cached[0] != version:
            cached = (version, self.planner.plan(wants))
            self._plans[group] = cached
        return cached[1]

    def want(self, role: str, index: int) -> Want:
        """The element to read for ``role[index]`` (ValueError if there is none)."""
        p = self._roles.get(role)
        if p is None:
            p = next(
                (q for q in self.spec.profile.point if role in self._bit_roles.get(q.name, ())),
                None,
            )
        if p is None:
            raise ValueError(f"{self.name} ({self.spec.profile.name}) has no point {role!r}")
        if not 0 <= index < p.count:
            raise ValueError(f"{self.name} {role}: element {index} outside 0..{p.count - 1}")
        if "r" not in p.access:
            raise ValueError(f"{self.name} {role} is write-only")
        return Want(p, index)

    def writable(self, role: str) -> Point:
        """The point playing ``role`` if the gateway may write it (ValueError if not)."""
        p = self._roles.get(role)
        if p is None:
            raise ValueError(f"{self.name} ({self.spec.profile.name}) has no point {role!r}")
        if "w" not in p.access:
            raise ValueError(f"{self.name} {role} is not writable")
        return p

    def observables(self, p: Point, value: Value) -> list[tuple[str, Value]]:
        """The (role, value) pairs one decoded point shows."""
        out: list[tuple[str, Value]] = []
        if p.role is not None:
            out.append((p.role, value))
        bits = self._bit_roles.get(p.name)
        if bits and isinstance(value, dict):
            out.extend((b, value.get(b, False)) for b in bits)
        return out
