"""Load and check a floor file and the profiles it uses; report every problem, located.

``load_floor(path)`` returns a validated FloorConfig or raises ConfigError whose
``problems`` are lines such as
``room[3].devices[1].unit: unit 2 on bus rs485-a is already room 1201's lock``.
Indexes count ``[[bus]]``, ``[[room]]``, ``[[escalation]]`` tables and list items from 0,
in file order. Nothing is fixed silently: a problem is reported, never patched.

String values may use ``${NAME}`` or ``${NAME:-default}`` (environment variables), so
one floor file serves an installed gateway and an unprivileged demo. Relative paths are
taken from the floor file's directory.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import os
import re
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from drivers.lines import BUS_KINDS, Bus, CallPanelBus, TcpBus
from drivers.profile import Profile, structure_problems
from gateway.config.floor import (
    EnergySection,
    EscalationLevel,
    FloorConfig,
    FloorPanelSection,
    GatewaySection,
    HealthSection,
    LocksSection,
    MetricsSection,
    MqttSection,
    OperatorSection,
    PolicySection,
    PollSection,
    RemoteConfigSection,
    Room,
    SceneSection,
    StaffKeySection,
)
from gateway.config.toml_lines import line_index, line_of
from gateway.core.kinds import role_problems
from gateway.core.staff import FLOOR_ZONE
from gateway.core.state import UNSOLD_COOL_CODE_C, UNSOLD_HEAT_CODE_C
from gateway.model.errors import ConfigError

SECTIONS = (
    "gateway",
    "mqtt",
    "policy",
    "energy",
    "scene",
    "escalation",
    "bus",
    "floorpanel",
    "room",
    "poll",
    "metrics",
    "health",
    "remote_config",
    "locks",
    "staff_key",
    "operator",
)
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
KEY_MIN_HEX_DIGITS = 32
M = TypeVar("M", bound=BaseModel)


def load_floor(
    path: Path, *, environ: Mapping[str, str] | None = None
) -> tuple[FloorConfig, list[str]]:
    """Load, validate and cross-check a floor file; return it with its warnings."""
    checker = _FloorChecker(Path(path), os.environ if environ is None else environ)
    return checker.run()


def load_floor_text(
    text: str, path: Path, *, environ: Mapping[str, str] | None = None
) -> tuple[FloorConfig, list[str]]:
    """``load_floor`` of ``text`` as if it were the file at ``path`` (relative paths, lines).

    The check of a floor file sent remotely (``apply_config``): everything but reading
    ``path`` itself is as ``--check`` does it (profiles, the key file, cross-checks).
    """
    checker = _FloorChecker(Path(path), os.environ if environ is None else environ, text=text)
    return checker.run()


def load_gateway_section(path: Path, *, environ: Mapping[str, str] | None = None) -> GatewaySection:
    """Only the [gateway] table, expanded and resolved: enough for clients to find sockets.

    Unlike load_floor it reads no profile and no key file, so an unprivileged client can use
    it; ConfigError if the table itself is unusable.
    """
    checker = _FloorChecker(Path(path), os.environ if environ is None else environ)
    raw = checker.read()
    section = checker._section(raw, "gateway", GatewaySection, required=True)
    if section is None or checker.problems:
        raise ConfigError(checker.problems)
    return checker._resolve_gateway(section)


def shipped_profiles_dir() -> Path:
    """The directory of the profiles that ship with floorgate."""
    return Path(str(resources.files("floorgate_config") / "profiles"))


def shipped_floors_dir() -> Path:
    """The directory of the example floor files that ship with floorgate."""
    return Path(str(resources.files("floorgate_config") / "floors"))


def load_profile(path: Path) -> Profile:
    """Load and validate one profile file; ConfigError with located problems if bad."""
    where = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError([f"{where}: cannot read: {exc.strerror or exc}"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{where}: TOML syntax error: {exc}"]) from exc
    try:
        prof = Profile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError([f"{where}: {p}" for p in pydantic_problems("", exc, Profile)]) from exc
    problems = [
        f"{where}: {loc}: {msg}" for loc, msg in [*structure_problems(prof), *role_problems(prof)]
    ]
    if prof.name != path.stem:
        problems.append(f"{where}: profile.name: {prof.name!r} differs from the file name")
    if problems:
        raise ConfigError(problems)
    return prof


def read_command_key(path: Path) -> bytes:
    """Read the MQTT command HMAC key (hex text, >= 32 digits); ConfigError if unusable."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read {path}: {exc}"]) from exc
    if len(text) < KEY_MIN_HEX_DIGITS or len(text) % 2 or not re.fullmatch(r"[0-9a-fA-F]+", text):
        raise ConfigError([f"{path} must hold the key as an even number of at least 32 hex digits"])
    return bytes.fromhex(text)


def pydantic_problems(prefix: str, exc: ValidationError, model: type[BaseModel]) -> list[str]:
    """Turn a pydantic error into located, human problem lines."""
    out = []
    for err in exc.errors(include_url=False):
        loc = list(err["loc"])
        where = prefix + "".join(f"[{x}]" if isinstance(x, int) else f".{x}" for x in loc)
        where = where.lstrip(".") or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            allowed = _fields_at(model, loc[:-1])
            msg = "unknown key" + (f" (allowed: {', '.join(allowed)})" if allowed else "")
        elif kind == "missing":
            msg = "missing (required)"
        else:
            msg = str(err["msg"]).removeprefix("Value error, ")
            if kind != "value_error" and not isinstance(err.get("input"), dict | list):
                msg += f" (got {err.get('input')!r})"
        out.append(f"{where}: {msg}")
    return out


def _fields_at(model: type[BaseModel], loc: list[int | str]) -> list[str]:
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        info = current.model_fields.get(part)
        if info is None:
            return []
        current = _inner_model(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _inner_model(arg)
            if found is not None:
                return found
    return None


class _FloorChecker:
    """Validates one floor file, gathering every problem before deciding."""

    def __init__(self, path: Path, environ: Mapping[str, str], text: str | None = None) -> None:
        self.path = path
        self.base = path.parent
        self.environ = environ
        self.text = text
        self.problems: list[str] = []
        self.warnings: list[str] = []
        self.sha256 = ""

    def problem(self, where: str, msg: str) -> None:
        self.problems.append(f"{where}: {msg}")

    def read(self) -> dict[str, Any]:
        """The file's TOML with environment references expanded."""
        try:
            data = self.path.read_bytes() if self.text is None else self.text.encode("utf-8")
            self.sha256 = hashlib.sha256(data).hexdigest()
            raw = tomllib.loads(data.decode("utf-8"))
        except OSError as exc:
            raise ConfigError([f"{self.path}: cannot read: {exc.strerror or exc}"]) from exc
        except UnicodeDecodeError as exc:
            raise ConfigError([f"{self.path}: not UTF-8: {exc}"]) from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{self.path}: TOML syntax error: {exc}"]) from exc
        expanded: dict[str, Any] = self._expand(raw, "")
        return expanded

    def run(self) -> tuple[FloorConfig, list[str]]:
        raw = self.read()
        for key in raw:
            if key not in SECTIONS:
                self.problem(key, f"unknown section (known: {', '.join(SECTIONS)})")

        gateway = self._section(raw, "gateway", GatewaySection, required=True)
        mqtt = self._section(raw, "mqtt", MqttSection, required=True)
        policy = self._section(raw, "policy", PolicySection) or PolicySection()
        poll = self._section(raw, "poll", PollSection) or PollSection()
        metrics = self._section(raw, "metrics", MetricsSection) or MetricsSection()
        health = self._section(raw, "health", HealthSection) or HealthSection()
        remote = self._section(raw, "remote_config", RemoteConfigSection) or RemoteConfigSection()
        energy = self._section(raw, "energy", EnergySection) or EnergySection()
        scenes = self._scenes(raw)
        floorpanel = self._section(raw, "floorpanel", FloorPanelSection)
        levels = self._list(raw, "escalation", EscalationLevel)
        self.broken_buses: set[str] = set()
        buses = self._buses(raw)
        rooms = self._list(raw, "room", Room)
        locks = self._section(raw, "locks", LocksSection) or LocksSection()
        staff_keys = self._list(raw, "staff_key", StaffKeySection)
        operators = self._list(raw, "operator", OperatorSection)

        if gateway is not None:
            gateway = self._resolve_gateway(gateway)
        if mqtt is not None:
            mqtt = self._resolve_mqtt(mqtt)
        buses = {i: self._resolve_bus(b) for i, b in buses.items()}
        self._check_escalation(raw, levels)
        self._check_buses(buses)
        profiles = self._load_profiles(gateway, rooms, floorpanel)
        self._check_rooms(rooms, buses, profiles, floorpanel)
        self._check_staff_keys(staff_keys, {r.id for r in rooms.values()})
        self._check_operators(operators)

        if self.problems or gateway is None or mqtt is None:
            raise ConfigError(self.problems)
        used = {d.profile for r in rooms.values() for d in r.devices}
        if floorpanel is not None:
            used.add(floorpanel.profile)
        config = FloorConfig(
            path=self.path,
            gateway=gateway,
            mqtt=mqtt,
            policy=policy,
            escalation=tuple(levels[i] for i in sorted(levels)),
            buses=tuple(buses[i] for i in sorted(buses)),
            rooms=tuple(rooms[i] for i in sorted(rooms)),
            floorpanel=floorpanel,
            poll=poll,
            profiles={n: p for n, p in profiles.items() if n in used and p is not None},
            metrics=self._resolve_metrics(metrics),
            health=health,
            remote_config=remote,
            energy=energy,
            scenes=scenes,
            sha256=self.sha256,
            locks=locks,
            staff_keys=tuple(staff_keys[i] for i in sorted(staff_keys)),
            operators=tuple(operators[i] for i in sorted(operators)),
        )
        self._energy_warnings(config)
        return config, self.warnings

    # -- parsing -------------------------------------------------------------------------

    def _scenes(self, raw: dict[str, Any]) -> dict[str, SceneSection]:
        data = raw.get("scene", {})
        if not isinstance(data, dict):
            self.problem("scene", "must be tables [scene.NAME]")
            return {}
        out: dict[str, SceneSection] = {}
        for name, table in data.items():
            where = f"scene.{name}"
            scene = self._section({where: table}, where, SceneSection)
            if scene is not None:
                out[name] = scene
        return out

    def _energy_warnings(self, config: FloorConfig) -> None:
        settings = config.energy_settings()
        if settings.unsold_cool_c < UNSOLD_COOL_CODE_C:
            self.warnings.append(
                f"energy: unsold rooms cool to {settings.unsold_cool_c} °C, below the energy "
                f"code's {UNSOLD_COOL_CODE_C} °C (80 °F): set [energy] unsold_cool_c"
            )
        if settings.unsold_heat_c > UNSOLD_HEAT_CODE_C:
            self.warnings.append(
                f"energy: unsold rooms heat to {settings.unsold_heat_c} °C, above the energy "
                f"code's {UNSOLD_HEAT_CODE_C} °C (60 °F)"
            )

    def _expand(self, value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {k: self._expand(v, f"{where}.{k}".lstrip(".")) for k, v in value.items()}
        if isinstance(value, list):
            return [self._expand(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str) and "${" in value:

            def sub(m: re.Match[str]) -> str:
                name, default = m.group(1), m.group(2)
                if name in self.environ:
                    return self.environ[name]
                if default is not None:
                    return default
                self.problem(where, f"environment variable {name} is not set (and no default)")
                return m.group(0)

            return _ENV_RE.sub(sub, value)
        return value

    def _section(
        self, raw: dict[str, Any], name: str, model: type[M], *, required: bool = False
    ) -> M | None:
        data = raw.get(name)
        if data is None:
            if required:
                self.problem(name, "missing section (required)")
            return None
        if not isinstance(data, dict):
            self.problem(name, "must be a table")
            return None
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            self.problems.extend(pydantic_problems(name, exc, model))
            return None

    def _list(self, raw: dict[str, Any], name: str, model: type[M]) -> dict[int, M]:
        items = raw.get(name, [])
        if not isinstance(items, list):
            self.problem(name, f"must be an array of tables ([[{name}]])")
            return {}
        out: dict[int, M] = {}
        for i, data in enumerate(items):
            where = f"{name}[{i}]"
            if not isinstance(data, dict):
                self.problem(where, "must be a table")
                continue
            try:
                out[i] = model.model_validate(data)
            except ValidationError as exc:
                self.problems.extend(pydantic_problems(where, exc, model))
        return out

    def _buses(self, raw: dict[str, Any]) -> dict[int, Bus]:
        items = raw.get("bus", [])
        if not isinstance(items, list):
            self.problem("bus", "must be an array of tables ([[bus]])")
            return {}
        out: dict[int, Bus] = {}
        kinds = ", ".join(BUS_KINDS)
        for i, data in enumerate(items):
            where = f"bus[{i}]"
            if not isinstance(data, dict):
                self.problem(where, "must be a table")
                continue
            kind = data.get("kind")
            model = BUS_KINDS.get(kind) if isinstance(kind, str) else None
            if model is None:
                got = "missing" if kind is None else f"unknown kind {kind!r}"
                self.problem(f"{where}.kind", f"{got} (one of {kinds})")
                continue
            try:
                out[i] = model.model_validate(data)
            except ValidationError as exc:
                self.problems.extend(pydantic_problems(where, exc, model))
                if isinstance(data.get("name"), str):
                    self.broken_buses.add(data["name"])
        return out

    def _path(self, p: Path) -> Path:
        return p if p.is_absolute() else self.base / p

    def _resolve_gateway(self, g: GatewaySection) -> GatewaySection:
        return g.model_copy(
            update={
                "state_dir": self._path(g.state_dir),
                "socket": self._path(g.socket),
                "profile_dirs": [self._path(d) for d in g.profile_dirs],
            }
        )

    def _resolve_mqtt(self, m: MqttSection) -> MqttSection:
        files = ("command_key_file", "tls_ca_file", "tls_cert_file", "tls_key_file")
        names = (*files, "password_file")
        m = m.model_copy(
            update={f: self._path(getattr(m, f)) for f in names if getattr(m, f) is not None}
        )
        try:
            read_command_key(m.command_key_file)
        except ConfigError as exc:
            self.problem("mqtt.command_key_file", exc.problems[0])
        for f in (*files[1:], "password_file"):
            p = getattr(m, f)
            if p is not None and not os.access(p, os.R_OK):
                self.problem(f"mqtt.{f}", f"cannot read {p}")
        return m

    def _resolve_metrics(self, m: MetricsSection) -> MetricsSection:
        address = m.address
        if address is not None and not _loopback(address[0]):
            self.warnings.append(
                f"metrics.listen: {m.listen} is reachable from the network; the metrics tell"
                " occupancy and alarms: keep the listener on 127.0.0.1 and let node_exporter's"
                " textfile collector or a proxy expose them"
            )
        if m.textfile is None:
            return m
        return m.model_copy(update={"textfile": self._path(m.textfile)})

    def _resolve_bus(self, b: Bus) -> Bus:
        if isinstance(b, TcpBus):
            return b
        return b.model_copy(update={"port": self._path(b.port)})

    # -- cross-checks --------------------------------------------------------------------

    def _check_escalation(self, raw: dict[str, Any], levels: dict[int, EscalationLevel]) -> None:
        if not raw.get("escalation"):
            self.problem("escalation", "at least one [[escalation]] level is required")
            return
        if 0 in levels and levels[0].after_s != 0:
            self.problem("escalation[0].after_s", "the first level must have after_s = 0")
        previous: tuple[int, EscalationLevel] | None = None
        for i in sorted(levels):
            if previous is not None and levels[i].after_s <= previous[1].after_s:
                self.problem(
                    f"escalation[{i}].after_s",
                    f"{levels[i].after_s} must be later than escalation[{previous[0]}]'s "
                    f"{previous[1].after_s}",
                )
            previous = (i, levels[i])

    def _check_buses(self, buses: dict[int, Bus]) -> None:
        names: dict[str, int] = {}
        endpoints: dict[str, str] = {}
        for i, b in buses.items():
            if b.name in names:
                self.problem(f"bus[{i}].name", f"bus {b.name!r} is already bus[{names[b.name]}]")
            names.setdefault(b.name, i)
            endpoint = f"{b.host}:{b.port}" if isinstance(b, TcpBus) else str(b.port)
            if endpoint in endpoints:
                self.problem(f"bus[{i}].port", f"{endpoint} is already bus {endpoints[endpoint]}'s")
            endpoints.setdefault(endpoint, b.name)

    def _load_profiles(
        self,
        gateway: GatewaySection | None,
        rooms: dict[int, Room],
        floorpanel: FloorPanelSection | None,
    ) -> dict[str, Profile | None]:
        dirs = [*(gateway.profile_dirs if gateway else []), shipped_profiles_dir()]
        if gateway is not None:
            for i, d in enumerate(gateway.profile_dirs):
                if not d.is_dir():
                    self.problem(f"gateway.profile_dirs[{i}]", f"{d} is not a directory")
        self.known_profiles = sorted(
            {p.stem for d in dirs if d.is_dir() for p in d.glob("*.toml") if p.is_file()}
        )
        wanted = {d.profile for r in rooms.values() for d in r.devices}
        if floorpanel is not None:
            wanted.add(floorpanel.profile)
        out: dict[str, Profile | None] = {}
        for name in sorted(wanted):
            found = [d / f"{name}.toml" for d in dirs if (d / f"{name}.toml").is_file()]
            if not found:
                continue  # reported where it is referenced
            if len(found) > 1:
                self.problem(
                    f"profile {name}", f"defined twice: {found[0]} and {found[1]}; keep one"
                )
            try:
                out[name] = load_profile(found[0])
            except ConfigError as exc:
                self.problems.extend(f"profile {name}: {p}" for p in exc.problems)
                out[name] = None
        return out

    def _known(self, name: str) -> str:
        """`` (known: a, b; did you mean 'a'?)`` for an unknown profile ``name``."""
        if not self.known_profiles:
            return ""
        close = difflib.get_close_matches(name, self.known_profiles, n=1)
        guess = f"; did you mean {close[0]!r}?" if close else ""
        return f" (known: {', '.join(self.known_profiles)}{guess})"

    def _check_rooms(
        self,
        rooms: dict[int, Room],
        buses: dict[int, Bus],
        profiles: dict[str, Profile | None],
        floorpanel: FloorPanelSection | None,
    ) -> None:
        by_name = {b.name: b for b in buses.values()}
        bus_list = ", ".join(by_name) or "none"
        units: dict[tuple[str, int], str] = {}
        ids: dict[str, int] = {}

        def check_modbus_ref(where: str, bus: str) -> Bus | None:
            b = by_name.get(bus)
            if b is None and bus not in self.broken_buses:
                self.problem(f"{where}.bus", f"no bus named {bus!r} (buses: {bus_list})")
            elif isinstance(b, CallPanelBus):
                self.problem(f"{where}.bus", f"bus {bus!r} is a call panel line, not a Modbus bus")
                return None
            return b

        def check_profile(where: str, name: str, role: str) -> Profile | None:
            if name not in profiles:
                self.problem(f"{where}.profile", f"no profile named {name!r}{self._known(name)}")
                return None
            prof = profiles[name]
            if prof is not None and prof.device != role:
                self.problem(
                    f"{where}.profile", f"{name!r} is a {prof.device} profile, not a {role}"
                )
            return prof

        def claim(where: str, bus: str, unit: int, owner: str) -> None:
            holder = units.setdefault((bus, unit), owner)
            if holder != owner:
                self.problem(f"{where}.unit", f"unit {unit} on bus {bus} is already {holder}")

        if floorpanel is not None:
            check_modbus_ref("floorpanel", floorpanel.bus)
            check_profile("floorpanel", floorpanel.profile, "floorpanel")
            claim("floorpanel", floorpanel.bus, floorpanel.unit, "the floor panel")

        for i, room in rooms.items():
            where = f"room[{i}]"
            if room.id in ids:
                self.problem(f"{where}.id", f"room {room.id} is already room[{ids[room.id]}]")
            ids.setdefault(room.id, i)
            roles: dict[str, int] = {}
            for j, dev in enumerate(room.devices):
                dwhere = f"{where}.devices[{j}]"
                if dev.role in roles:
                    self.problem(
                        f"{dwhere}.role",
                        f"room {room.id} already has a {dev.role} (devices[{roles[dev.role]}])",
                    )
                roles.setdefault(dev.role, j)
                bus = check_modbus_ref(dwhere, dev.bus)
                prof = check_profile(dwhere, dev.profile, dev.role)
                claim(dwhere, dev.bus, dev.unit, f"room {room.id}'s {dev.role}")
                if isinstance(bus, CallPanelBus | TcpBus) or bus is None or prof is None:
                    continue
                if (bus.baud, bus.parity) != (prof.serial.baud, prof.serial.parity):
                    self.warnings.append(
                        f"{dwhere}: {dev.profile} ships at {prof.serial.baud} "
                        f"{prof.serial.parity}; bus {bus.name} runs {bus.baud} {bus.parity}: "
                        "set the device to the bus's settings at commissioning"
                    )
            self._check_call_points(where, room, "rio" in roles, by_name)
        used = {b for b, _ in units} | {r.callpanel for r in rooms.values() if r.callpanel}
        self.warnings.extend(f"bus {n}: no device uses it" for n in by_name if n not in used)

    def _check_staff_keys(self, keys: dict[int, StaffKeySection], rooms: set[str]) -> None:
        ids: dict[str, int] = {}
        tokens: dict[str, int] = {}
        for i, k in keys.items():
            where = f"staff_key[{i}]"
            if k.key_id in ids:
                self.problem(
                    f"{where}.key_id", f"{k.key_id!r} is already staff_key[{ids[k.key_id]}]"
                )
            ids.setdefault(k.key_id, i)
            if k.token in tokens:
                self.problem(f"{where}.token", f"the same token as staff_key[{tokens[k.token]}]")
            tokens.setdefault(k.token, i)
            for j, zone in enumerate(k.zones):
                if zone != FLOOR_ZONE and zone not in rooms:
                    self.problem(
                        f"{where}.zones[{j}]",
                        f"no room {zone!r} on this floor (a zone is a room id or {FLOOR_ZONE!r})",
                    )

    def _check_operators(self, operators: dict[int, OperatorSection]) -> None:
        # An id may appear twice while its key is rotated: the same roles, another key.
        ids: dict[str, int] = {}
        keys: set[str] = set()
        for i, o in operators.items():
            where = f"operator[{i}]"
            first = ids.setdefault(o.id, i)
            if first != i and set(operators[first].roles) != set(o.roles):
                self.problem(
                    f"{where}.roles",
                    f"operator {o.id!r} is also operator[{first}] with other roles"
                    " (an id appears twice only while its key is rotated)",
                )
            if o.public_key.lower() in keys:
                self.problem(f"{where}.public_key", "the same public key is listed twice")
            keys.add(o.public_key.lower())
            try:
                o.operator()
            except ValueError as exc:
                self.problem(f"{where}.public_key", f"not an Ed25519 public key: {exc}")

    def _check_call_points(
        self, where: str, room: Room, has_rio: bool, by_name: Mapping[str, Bus]
    ) -> None:
        if room.callpanel is not None:
            b = by_name.get(room.callpanel)
            if b is None and room.callpanel in self.broken_buses:
                pass
            elif b is None:
                self.problem(f"{where}.callpanel", f"no bus named {room.callpanel!r}")
            elif not isinstance(b, CallPanelBus):
                self.problem(f"{where}.callpanel", f"bus {room.callpanel!r} is not a callpanel")
            if has_rio:
                self.problem(
                    f"{where}.callpanel",
                    f"room {room.id} has a rio and a call panel; its call points are one or "
                    "the other",
                )
        elif not has_rio:
            self.problem(
                where,
                f"room {room.id} has no call points: give it a rio device or callpanel = BUS",
            )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def format_report(problems: Iterable[str], path: Path) -> str:
    """The text --check prints for an invalid floor: a count, then each problem.

    A problem whose place is found in ``path`` starts with its line there
    (``  line 42: room[1].devices[1].unit: ...``); the others (a profile's, an unreadable
    file's) are printed as they are.
    """
    lines = list(problems)
    head = f"{path}: {len(lines)} problem{'s' if len(lines) != 1 else ''}"
    return "\n".join([head, *(f"  {p}" for p in with_lines(lines, path))])


def with_lines(problems: Iterable[str], path: Path) -> list[str]:
    """Each problem, prefixed ``line N: `` where its place (``where: ...``) is in ``path``."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        text = ""
    return with_lines_of(problems, text)


def with_lines_of(problems: Iterable[str], text: str) -> list[str]:
    """Each problem, prefixed ``line N: `` where its place is in the floor file ``text``."""
    index = line_index(text)
    out = []
    for problem in problems:
        place, sep, _ = problem.partition(": ")
        line = line_of(index, place) if sep else None
        out.append(problem if line is None else f"line {line}: {problem}")
    return out
