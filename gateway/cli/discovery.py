"""Where floorctl finds the daemon's control socket, and how it says why it looked there.

The first that applies:

1. ``--socket PATH``;
2. ``--config FLOOR.toml``: that floor file's ``[gateway] socket``;
3. the environment variable ``FLOORGATE_CONFIG`` (a floor file path): its
   ``[gateway] socket``;
4. ``/run/floorgate/floorctl.sock``, where an installed daemon listens.

A floor file is read as the daemon reads it (``${VAR}`` and ``${VAR:-default}`` expanded
from the environment, a relative ``socket`` taken from the file's directory), but only
its ``[gateway]`` table: no profile, no key file, so any technician who may read the file
finds the socket. There is no variable naming the socket itself: the floor file is where
the daemon learns its socket, so following the same file cannot disagree with it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.config.load import load_gateway_section
from gateway.model.errors import ConfigError

__all__ = [
    "DEFAULT_SOCKET",
    "ENV_CONFIG",
    "FloorFileError",
    "SocketChoice",
    "SocketSource",
    "find_socket",
]

DEFAULT_SOCKET = Path("/run/floorgate/floorctl.sock")
ENV_CONFIG = "FLOORGATE_CONFIG"

SocketSource = Literal["--socket", "--config", "FLOORGATE_CONFIG", "default"]


@dataclass(frozen=True, slots=True)
class SocketChoice:
    """The socket floorctl talks to, how it was chosen and, if so, from which floor file."""

    path: Path
    source: SocketSource
    floor_file: Path | None = None

    @property
    def how(self) -> str:
        """How this socket was chosen, for people ("the default: no --socket, ...")."""
        match self.source:
            case "--socket":
                return "the one given with --socket"
            case "--config" | "FLOORGATE_CONFIG":
                return f"the [gateway] socket of {self.floor_file} (from {self.source})"
            case "default":
                return f"the default: no --socket, no --config and {ENV_CONFIG} is not set"


class FloorFileError(Exception):
    """The floor file that should name the socket cannot be read; the message says which."""


def find_socket(
    socket: Path | None,
    config: Path | None,
    environ: Mapping[str, str] | None = None,
) -> SocketChoice:
    """The control socket by the order above; FloorFileError if a floor file is unusable."""
    env = os.environ if environ is None else environ
    if socket is not None:
        return SocketChoice(socket, "--socket")
    if config is not None:
        return _from_floor_file(config, "--config", env)
    from_env = env.get(ENV_CONFIG, "")
    if from_env:
        return _from_floor_file(Path(from_env), "FLOORGATE_CONFIG", env)
    return SocketChoice(DEFAULT_SOCKET, "default")


def _from_floor_file(path: Path, source: SocketSource, env: Mapping[str, str]) -> SocketChoice:
    try:
        gateway = load_gateway_section(path, environ=env)
    except ConfigError as exc:
        named = "--config" if source == "--config" else f"{ENV_CONFIG}={path}"
        raise FloorFileError(
            f"cannot find the socket in the floor file of {named}: {exc.problems[0]}"
        ) from exc
    return SocketChoice(gateway.socket, source, path)
