"""Who may ask the control socket what: the caller's credentials and group membership.

The caller's uid and gid come from the kernel (SO_PEERCRED), never from the request.
Read-only requests need membership of the control group (or of the admin group) or
root; changing requests need the admin group or root. The daemon's own user may do
everything too: a process of that user can read the daemon's database and key and signal
it anyway, so refusing it would protect nothing (it is how a floor run by hand in a
terminal is read; under systemd it is the service user, which nobody logs in as).
Membership is the primary group of the calling process or of the user's passwd entry, or
the group's member list (grp/pwd): SO_PEERCRED carries no supplementary groups, and the
configured membership is what an administrator manages (``usermod -aG``).
"""

from __future__ import annotations

import enum
import grp
import pwd
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Access", "Peer", "authorize", "is_member"]


class Access(enum.Enum):
    """What a request needs."""

    READ = "read"
    CHANGE = "change"


@dataclass(frozen=True, slots=True)
class Peer:
    """The process at the other end of a connection, as the kernel reports it."""

    pid: int
    uid: int
    gid: int
    user: str  # passwd name, or "uid:N" without a passwd entry

    @classmethod
    def of(cls, sock: Any) -> Peer:
        """The peer of a connected Unix socket (SO_PEERCRED: pid, uid, gid)."""
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, gid = struct.unpack("3i", raw)
        try:
            user = pwd.getpwuid(uid).pw_name
        except KeyError:
            user = f"uid:{uid}"
        return cls(pid, uid, gid, user)


def is_member(peer: Peer, group: str) -> bool:
    """True if the peer belongs to ``group`` (primary gid, passwd gid or member list)."""
    try:
        entry = grp.getgrnam(group)
    except KeyError:
        return False
    if peer.gid == entry.gr_gid or peer.user in entry.gr_mem:
        return True
    try:
        return pwd.getpwuid(peer.uid).pw_gid == entry.gr_gid
    except KeyError:
        return False


def authorize(
    peer: Peer,
    access: Access,
    *,
    control_group: str,
    admin_group: str,
    owner_uid: int | None = None,
    member: Callable[[Peer, str], bool] = is_member,
) -> str | None:
    """None if ``peer`` may make a request needing ``access``, else why not (for people).

    ``owner_uid``: the daemon's own uid, which may make any request.
    """
    if peer.uid in (0, owner_uid) or member(peer, admin_group):
        return None
    if access is Access.READ and member(peer, control_group):
        return None
    who = f"user {peer.user} (uid {peer.uid})"
    if access is Access.CHANGE:
        return (
            f"permission denied: {who} is not in group {admin_group!r}{_missing(admin_group)}, "
            "which acknowledging, resolving and scanning need"
        )
    return (
        f"permission denied: {who} is in neither group {control_group!r}"
        f"{_missing(control_group)} nor {admin_group!r}{_missing(admin_group)}"
    )


def _missing(group: str) -> str:
    try:
        grp.getgrnam(group)
    except KeyError:
        return " (no such group on this system)"
    return ""
