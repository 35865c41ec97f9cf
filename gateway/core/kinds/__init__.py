"""The device-kind registry: every module of this package defines one ``KIND``.

Adding a device kind is a profile (data) and one module here; nothing else in the gateway
names it. The registry is built at import from the package's modules, in name order; the
floor file, the profile checks, the engine and the room state all look kinds up here.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping

from drivers.profile import DataType, Point, Profile
from gateway.core.kinds.base import DeviceKind, RoleSpec, ValueKind

__all__ = ["ARRAYS", "KINDS", "ROLES", "ROOM_KINDS", "kind", "role_problems"]


def _discover() -> dict[str, DeviceKind]:
    found: dict[str, DeviceKind] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        k = getattr(module, "KIND", None)
        if not isinstance(k, DeviceKind):
            raise TypeError(f"{module.__name__} defines no KIND")
        if k.role in found:
            raise ValueError(f"two kinds claim role {k.role!r}")
        found[k.role] = k
    return dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))


KINDS: Mapping[str, DeviceKind] = _discover()
"""Every kind by role, in the order of the room state's ``devices`` map."""
ROOM_KINDS: tuple[str, ...] = tuple(r for r, k in KINDS.items() if k.room_level)
"""The roles a room's device may have (``[[room]] devices = [{role = …}]``)."""
ROLES: Mapping[str, Mapping[str, RoleSpec]] = {r: k.points for r, k in KINDS.items()}
"""The point vocabulary of every kind."""
ARRAYS: frozenset[str] = frozenset(
    n for k in KINDS.values() for n, s in k.points.items() if s.array
)
"""Point roles that are arrays (``slot[3]``)."""


def kind(role: str) -> DeviceKind:
    """The kind of this role (KeyError for a role no kind claims)."""
    return KINDS[role]


def role_problems(prof: Profile) -> list[tuple[str, str]]:
    """Whether a profile's roles fit its device kind, as (location, message)."""
    k = KINDS.get(prof.device)
    if k is None:
        known = ", ".join(KINDS)
        return [("profile.device", f"unknown device kind {prof.device!r}; known: {known}")]
    vocabulary = k.points
    out: list[tuple[str, str]] = []
    for i, p in enumerate(prof.point):
        loc = f"point[{i}]"
        if p.role is not None:
            spec = vocabulary.get(p.role)
            if spec is None:
                known = ", ".join(sorted(vocabulary))
                out.append(
                    (f"{loc}.role", f"unknown role {p.role!r} for a {prof.device}; known: {known}")
                )
            else:
                out.extend((f"{loc}.{key}", msg) for key, msg in _role_fit(p, spec))
        for bit_name in p.bits or {}:
            spec = vocabulary.get(bit_name)
            if spec is not None and spec.kind is not ValueKind.BOOL:
                out.append((f"{loc}.bits.{bit_name}", f"role {bit_name!r} is not a bit"))
    provided = prof.roles(vocabulary)
    for alternatives in k.required:
        if not provided.intersection(alternatives):
            want = " or ".join(repr(a) for a in alternatives)
            out.append(("point", f"a {prof.device} profile needs a point with role {want}"))
    return out


def _role_fit(p: Point, spec: RoleSpec) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if not spec.array and p.count > 1:
        out.append(("count", f"role {p.role!r} is a single value, not an array"))
    if spec.writable and "w" not in p.access:
        out.append(("access", f"role {p.role!r} is written by the gateway: access must allow 'w'"))
    value_kind = spec.kind
    if value_kind is ValueKind.BOOL and p.type not in (DataType.BIT, DataType.U16):
        out.append(("type", f"role {p.role!r} is a bit, or a u16 register holding 0 or 1"))
    elif value_kind is ValueKind.COUNT and (
        p.type not in (DataType.U16, DataType.U32) or p.scale != 1
    ):
        out.append(("type", f"role {p.role!r} is an unscaled unsigned count (u16 or u32)"))
    elif value_kind is ValueKind.TOKEN and p.type is not DataType.U64:
        out.append(("type", f"role {p.role!r} is a 64-bit token (u64)"))
    elif value_kind is ValueKind.NUMBER and p.type in (DataType.BIT, DataType.BITFIELD):
        out.append(("type", f"role {p.role!r} is a number, not {p.type}"))
    elif value_kind is ValueKind.ENUM:
        if not p.enum:
            out.append(("enum", f"role {p.role!r} needs an enum naming its raw values"))
        else:
            foreign = sorted(set(p.enum.values()) - set(spec.choices))
            if foreign:
                out.append(
                    ("enum", f"names {foreign} are not among {list(spec.choices)} for {p.role!r}")
                )
    return out
