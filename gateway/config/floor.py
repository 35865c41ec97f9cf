"""Pydantic models of the floor file's sections (operations.md, "The floor file").

Every model forbids unknown keys. Cross-section rules (references, uniqueness, call
points) live in gateway.config.load, which validates each section separately so that
one bad room does not hide the problems of the next.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from drivers.ids import DeviceRef, RoomId
from drivers.lines import Bus, DeviceSpec, TcpPort
from drivers.points import KIND_INTERVAL_CAPS_MS, slowest_poll_ms
from drivers.profile import PollClass, Profile
from gateway.core.alarms import AlarmLayout
from gateway.core.commands import ROLES, Credentials, Operator
from gateway.core.kinds import KINDS, ROOM_KINDS
from gateway.core.locksync import SLOT_COUNT
from gateway.core.staff import Schedule, StaffKey, StaffRules
from gateway.core.state import (
    CODE_LIMITS,
    UNSOLD_COOL_CODE_C,
    UNSOLD_HEAT_CODE_C,
    DeviceInfo,
    EnergySettings,
    Layout,
    Policy,
    RoomLayout,
    Scene,
)
from gateway.model.messages import StaffSchedule, Token

GATEWAY_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
# Room ids appear in MQTT topics: no '/', '+', '#', no spaces.
ROOM_ID_RE = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$"
STALE_MIN_S = 15.0  # mqtt.md v2: the stale limit is never below this
UnitId = Annotated[int, Field(ge=1, le=247)]
Circuit = Literal["entry", "main", "bedside", "bath"]
WELCOME_LIGHTS: tuple[Circuit, ...] = ("entry", "main")
Role = Literal["front_desk", "housekeeping", "engineering", "security", "nurse", "admin"]
assert set(Role.__args__) == set(ROLES)  # type: ignore[attr-defined]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GatewaySection(_Section):
    """[gateway]: identity, where state and the control socket live."""

    id: Annotated[str, Field(pattern=GATEWAY_ID_RE)]
    state_dir: Path
    socket: Path = Path("/run/floorgate/floorctl.sock")
    profile_dirs: list[Path] = Field(default_factory=list)
    control_group: str = "floorgate"
    admin_group: str = "floorgate-admin"
    # The floor's local time zone (IANA name): ledger days end at its midnight, staff
    # schedules run on its clock.
    timezone: str = "UTC"

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, name: str) -> str:
        zone_of(name)
        return name


class MqttSection(_Section):
    """[mqtt]: the hotel broker and the command key."""

    host: str
    port: TcpPort = 1883
    root: str
    command_key_file: Path
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    username: str | None = None
    password_file: Path | None = None
    keepalive_s: Annotated[int, Field(ge=5, le=600)] = 30
    # The outbox: publishes awaiting PUBACK at once; how long delivered events
    # stay for `floorctl events`; the disk cap beyond which low-value events are shed.
    max_in_flight: Annotated[int, Field(ge=1, le=1000)] = 32
    events_keep_days: Annotated[float, Field(gt=0, le=3650)] = 7.0
    outbox_max_mib: Annotated[int, Field(ge=1, le=65536)] = 256
    # MQTT 5 by default; "3.1.1" for old brokers (a publish refused by ACL then looks
    # delivered). The broker keeps the session this long after the link drops.
    protocol: Literal["5", "3.1.1"] = "5"
    session_expiry_s: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 3600
    # After a broker loss the first reconnect waits a random 0..reconnect_jitter_s (a
    # thousand floors must not arrive in the same second); later attempts back off, full
    # jitter, capped at reconnect_max_s (a broker that returns is found within that cap).
    reconnect_jitter_s: Annotated[float, Field(ge=0, le=300)] = 5.0
    reconnect_max_s: Annotated[float, Field(ge=0.1, le=600)] = 5.0
    # false: only operator-signed (Ed25519) commands are accepted
    allow_hmac: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = []
        levels = self.root.split("/")
        if any(c in self.root for c in "+#\0") or any(not lv for lv in levels):
            problems.append(
                f"root {self.root!r} must be '/'-separated non-empty levels without '+' or '#'"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append("tls_cert_file and tls_key_file go together")
        if self.password_file is not None and self.username is None:
            problems.append("password_file needs a username")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class PolicySection(_Section):
    """[policy]: room behaviour the hotel chooses."""

    vacant_setpoint_c: Annotated[float, Field(ge=5, le=35)] = 26.0
    # Setpoint when a stay begins and the guest gave no preference.
    occupied_setpoint_c: Annotated[float, Field(ge=5, le=35)] = 22.0
    # door.held_open after this long when a guest key or someone inside opened it ...
    door_held_open_s: Annotated[int, Field(ge=1, le=86400)] = 60
    # ... and after this long when a staff key did
    door_held_open_staff_s: Annotated[int, Field(ge=1, le=86400)] = 120
    # Alarms: re-notify after the last escalation level every repeat_s; an
    # acknowledged alarm not resolved within ack_timeout_s becomes active again.
    alarm_repeat_s: Annotated[int, Field(ge=5, le=86400)] = 60
    alarm_ack_timeout_s: Annotated[int, Field(ge=10, le=86400)] = 300
    # Locks: read every slot of every lock this often, and repair drift.
    slot_verify_s: Annotated[float, Field(ge=1, le=86400)] = 60


class EnergySection(_Section):
    """[energy]: the guest-room energy policy (operations.md, Presence and Energy)."""

    presence_check_s: Annotated[int, Field(ge=1, le=3600)] = 300
    away_setback_c: Annotated[float, Field(ge=0, le=10)] = 2.0
    lights_off_absent_s: Annotated[int, Field(ge=0, le=86400)] = 600
    unsold_after_s: Annotated[int, Field(ge=0, le=86400)] = 600
    unsold_cool_c: Annotated[float, Field(ge=5, le=35)] | None = None  # default 26.7
    unsold_heat_c: Annotated[float, Field(ge=5, le=35)] = UNSOLD_HEAT_CODE_C
    precondition_min: Annotated[int, Field(ge=0, le=1440)] = 60
    window_delay_s: Annotated[int, Field(ge=0, le=3600)] = 60
    code_limits: bool = True  # refuse settings that break the energy codes

    @model_validator(mode="after")
    def _code(self) -> Self:
        if not self.code_limits:
            return self
        problems = []
        if self.precondition_min > CODE_LIMITS["precondition_min"]:
            problems.append("precondition_min above 60 breaks the energy code")
        if self.unsold_after_s > CODE_LIMITS["unsold_after_s"]:
            problems.append("unsold_after_s above 1200 breaks the energy code")
        if self.away_setback_c < CODE_LIMITS["away_setback_c"]:
            problems.append("away_setback_c below 2.0 breaks the energy code")
        if problems:
            raise ValueError("; ".join(problems) + " (code_limits = false lifts the limits)")
        return self


class SceneSection(_Section):
    """[scene.NAME]: a welcome scene (the light circuits it turns on, a comfort setpoint)."""

    lights: list[Circuit] = Field(default_factory=lambda: list(WELCOME_LIGHTS))
    setpoint_c: Annotated[float, Field(ge=5, le=35)] | None = None


class LocksSection(_Section):
    """[locks]: how each lock's 32 slots are shared."""

    # The last staff_slots slots (indices 32 - staff_slots to 31) hold staff keys.
    staff_slots: Annotated[int, Field(ge=0, le=SLOT_COUNT - 1)] = 8


class StaffKeySection(_Section):
    """One [[staff_key]]: a staff credential, written into its zones' locks when due."""

    key_id: Annotated[str, Field(min_length=1, max_length=64)]
    token: Token
    zones: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1)
    schedule: StaffSchedule | None = None
    security: bool = False

    def key(self, order: int) -> StaffKey:
        """The core's value (``order``: its place in the file, for "the oldest")."""
        sched = self.schedule
        return StaffKey(
            key_id=self.key_id,
            token=self.token,
            zones=frozenset(self.zones),
            schedule=None
            if sched is None
            else Schedule.parse(sched.days, sched.from_, sched.until),
            security=self.security,
            source="file",
            order=order,
        )


class OperatorSection(_Section):
    """One [[operator]]: who may sign commands, with which Ed25519 public key and roles."""

    id: Annotated[str, Field(min_length=1, max_length=64)]
    public_key: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")]
    roles: list[Role] = Field(min_length=1)

    def operator(self) -> Operator:
        """The core's value (one key; ``FloorConfig.credentials`` joins an id's keys)."""
        return Operator(self.id, (bytes.fromhex(self.public_key),), frozenset(self.roles))


class EscalationLevel(_Section):
    """One [[escalation]] level: after how long, who is notified."""

    after_s: Annotated[int, Field(ge=0)]
    notify: Annotated[str, Field(min_length=1)]


class FloorPanelSection(_Section):
    """[floorpanel]: the service-station annunciator."""

    bus: str
    unit: UnitId
    profile: str = "fg-floorpanel-1"


class RoomDevice(_Section):
    """A device of a room."""

    role: str
    profile: str
    bus: str
    unit: UnitId

    @field_validator("role")
    @classmethod
    def _known_kind(cls, role: str) -> str:
        if role not in ROOM_KINDS:
            raise ValueError(f"unknown role {role!r}; a room's devices are {', '.join(ROOM_KINDS)}")
        return role


class Room(_Section):
    """One [[room]]."""

    id: Annotated[str, Field(pattern=ROOM_ID_RE)]
    devices: list[RoomDevice] = Field(default_factory=list)
    callpanel: str | None = None


class PollSection(_Section):
    """[poll]: per-floor override of the profiles' target intervals, in milliseconds."""

    intervals_ms: dict[PollClass, Annotated[int, Field(ge=20)]] = Field(default_factory=dict)
    # Device health: consecutive failed transactions before a device is offline; the
    # cap of the jittered exponential backoff between probes of an offline device.
    offline_after: Annotated[int, Field(ge=1, le=100)] = 3
    probe_max_s: Annotated[float, Field(ge=1, le=3600)] = 60.0


class MetricsSection(_Section):
    """[metrics]: Prometheus metrics, to a node_exporter textfile and/or a local listener."""

    textfile: Path | None = None
    listen: str | None = None  # "127.0.0.1:9464", "[::1]:9464", "localhost:9464"
    textfile_every_s: Annotated[float, Field(ge=0.1, le=3600)] = 15.0

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            listen_address(value)  # ValueError names the problem
        return value

    @property
    def address(self) -> tuple[str, int] | None:
        """The listener's (host, port), or None without one."""
        return None if self.listen is None else listen_address(self.listen)


class HealthSection(_Section):
    """[health]: when a passing condition makes the floor degraded (gateway.core.health)."""

    broker_down_s: Annotated[float, Field(ge=1, le=86400)] = 60.0
    clock_jump_hold_s: Annotated[float, Field(ge=1, le=86400)] = 600.0


class RemoteConfigSection(_Section):
    """[remote_config]: apply_config's bounds on this floor."""

    # The shortest confirmation window a command may ask for (operations.md: 30..900);
    # lower only on a lab or test floor.
    confirm_min_s: Annotated[int, Field(ge=1, le=900)] = 30


def listen_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as (host, port); ValueError if it is not one."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (e.g. 127.0.0.1:9464)")
    return host, int(port)


@dataclass(frozen=True, slots=True)
class FloorConfig:
    """A validated floor: its sections, buses, rooms and the profiles they use."""

    path: Path
    gateway: GatewaySection
    mqtt: MqttSection
    policy: PolicySection
    escalation: tuple[EscalationLevel, ...]
    buses: tuple[Bus, ...]
    rooms: tuple[Room, ...]
    floorpanel: FloorPanelSection | None
    poll: PollSection
    profiles: dict[str, Profile] = field(default_factory=dict)
    metrics: MetricsSection = field(default_factory=MetricsSection)
    health: HealthSection = field(default_factory=HealthSection)
    remote_config: RemoteConfigSection = field(default_factory=RemoteConfigSection)
    energy: EnergySection = field(default_factory=EnergySection)
    scenes: dict[str, SceneSection] = field(default_factory=dict)
    sha256: str = ""  # of the floor file's bytes as loaded ("" when not loaded from a file)
    locks: LocksSection = field(default_factory=LocksSection)
    staff_keys: tuple[StaffKeySection, ...] = ()
    operators: tuple[OperatorSection, ...] = ()

    def bus(self, name: str) -> Bus:
        """The bus with this name (KeyError if none)."""
        for b in self.buses:
            if b.name == name:
                return b
        raise KeyError(name)

    def room(self, room_id: str) -> Room:
        """The room with this id (KeyError if none)."""
        for r in self.rooms:
            if r.id == room_id:
                return r
        raise KeyError(room_id)

    def devices(self, bus: str | None = None) -> list[DeviceSpec]:
        """Every Modbus device (rooms in file order, then the floor panel), or one bus's."""
        out = [
            _spec(r.id, d.role, d.bus, d.unit, self.profiles[d.profile])
            for r in self.rooms
            for d in r.devices
        ]
        if self.floorpanel is not None:
            fp = self.floorpanel
            out.append(_spec(None, "floorpanel", fp.bus, fp.unit, self.profiles[fp.profile]))
        return [d for d in out if bus is None or d.bus == bus]

    def stale_after_s(self, spec: DeviceSpec) -> float:
        """mqtt.md: a device's values are stale after 3 x its slowest polled interval (the
        intervals in force on its bus), at least 15 s."""
        bus = self.bus(spec.bus)
        overrides = {**self.poll.intervals_ms, **getattr(bus, "intervals_ms", {})}
        caps = KIND_INTERVAL_CAPS_MS.get(bus.kind, {})
        slowest = slowest_poll_ms(spec, overrides, caps) or 0
        return max(STALE_MIN_S, 3 * slowest / 1000)

    def layout(self) -> Layout:
        """The floor as the core sees it: rooms, devices, policy, escalation."""
        devices = {}
        for spec in self.devices():
            by_role = spec.profile.by_role()
            ranges = {
                role: (
                    float("-inf") if p.min is None else p.min,
                    float("inf") if p.max is None else p.max,
                )
                for role, p in by_role.items()
            }
            points = frozenset(spec.profile.roles(spec.roles))
            steps = {role: p.scale for role, p in by_role.items() if not p.type.is_float}
            devices[spec.ref] = DeviceInfo(
                spec.ref, spec.bus, points, ranges, steps, self.stale_after_s(spec)
            )
        rooms = tuple(
            RoomLayout(
                RoomId(r.id),
                tuple(sorted((DeviceRef.of(r.id, d.role) for d in r.devices), key=_kind_order)),
                r.callpanel,
            )
            for r in self.rooms
        )
        policy = Policy(
            vacant_setpoint_c=self.policy.vacant_setpoint_c,
            occupied_setpoint_c=self.policy.occupied_setpoint_c,
            door_held_open_s=self.policy.door_held_open_s,
            door_held_open_staff_s=self.policy.door_held_open_staff_s,
        )
        staff = StaffRules(
            rooms=tuple(r.id for r in self.rooms),
            staff_slots=self.locks.staff_slots,
            tz=zone_of(self.gateway.timezone),
            file_keys=tuple(k.key(i) for i, k in enumerate(self.staff_keys)),
        )
        alarms = AlarmLayout(
            rio_rooms=frozenset(
                r.id for r in self.rooms if any(d.role == "rio" for d in r.devices)
            ),
            panel_rooms={r.id: r.callpanel for r in self.rooms if r.callpanel is not None},
            has_floorpanel=self.floorpanel is not None,
            escalation=tuple((lv.after_s, lv.notify) for lv in self.escalation),
            repeat_s=self.policy.alarm_repeat_s,
            ack_timeout_s=self.policy.alarm_ack_timeout_s,
        )
        scenes = {"welcome": Scene()}
        scenes.update({n: Scene(tuple(sc.lights), sc.setpoint_c) for n, sc in self.scenes.items()})
        return Layout(
            rooms,
            devices,
            policy,
            alarms,
            energy=self.energy_settings(),
            timezone=zone_of(self.gateway.timezone),
            scenes=scenes,
            staff=staff,
        )

    def energy_settings(self) -> EnergySettings:
        """[energy] as the core uses it; unsold_cool_c from [policy] vacant_setpoint_c (v1)
        when [energy] does not set it."""
        e = self.energy
        cool = e.unsold_cool_c
        if cool is None:
            explicit = "vacant_setpoint_c" in self.policy.model_fields_set
            cool = self.policy.vacant_setpoint_c if explicit else UNSOLD_COOL_CODE_C
        return EnergySettings(
            presence_check_s=e.presence_check_s,
            away_setback_c=e.away_setback_c,
            lights_off_absent_s=e.lights_off_absent_s,
            unsold_after_s=e.unsold_after_s,
            unsold_cool_c=cool,
            unsold_heat_c=e.unsold_heat_c,
            precondition_min=e.precondition_min,
            window_delay_s=e.window_delay_s,
            occupied_setpoint_c=self.policy.occupied_setpoint_c,
        )

    def credentials(self, hmac_key: bytes) -> Credentials:
        """Who may sign commands: the floor's HMAC key (unless refused) and the operators."""
        keys: dict[str, list[bytes]] = {}
        roles: dict[str, frozenset[str]] = {}
        for o in self.operators:  # an id twice: its key being rotated (same roles)
            keys.setdefault(o.id, []).append(bytes.fromhex(o.public_key))
            roles[o.id] = frozenset(o.roles)
        operators = {i: Operator(i, tuple(k), roles[i]) for i, k in keys.items()}
        return Credentials(hmac_key, operators, allow_hmac=self.mqtt.allow_hmac)

    @property
    def database_path(self) -> Path:
        """Where the SQLite database lives."""
        return self.gateway.state_dir / "floorgate.db"

    def summary(self) -> str:
        """One line describing the floor, printed by --check."""
        kinds: dict[str, int] = {}
        for b in self.buses:
            kinds[b.kind] = kinds.get(b.kind, 0) + 1
        bus_text = ", ".join(f"{n} {k}" for k, n in kinds.items())
        devices = sum(len(r.devices) for r in self.rooms) + (1 if self.floorpanel else 0)
        panel = "a floor panel" if self.floorpanel else "no floor panel"
        return (
            f"floor {self.gateway.id}: {len(self.rooms)} rooms, {devices} devices on "
            f"{len(self.buses)} buses ({bus_text}), {panel}, "
            f"{len(self.escalation)} escalation levels, {len(self.profiles)} profiles"
        )


def zone_of(name: str) -> tzinfo:
    """The IANA time zone ``name`` (ValueError if the system does not know it)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        msg = f"unknown time zone {name!r} (an IANA name such as Asia/Shanghai)"
        raise ValueError(msg) from exc


def _kind_order(device: DeviceRef) -> int:
    return KINDS[device.role].order


def _spec(room: str | None, role: str, bus: str, unit: int, profile: Profile) -> DeviceSpec:
    return DeviceSpec(room, role, bus, unit, profile, frozenset(KINDS[role].points))
