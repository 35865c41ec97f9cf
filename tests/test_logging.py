"""configure_logging renders JSON lines (or console) and never leaks a secret."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import pytest
import structlog

from gateway.logging import REDACTED, configure_logging, redact_secrets


@pytest.fixture(autouse=True)
def _reset_structlog() -> Iterator[None]:
    yield
    structlog.reset_defaults()


class TtyBuffer(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_have_event_level_and_utc_ts() -> None:
    buf = io.StringIO()
    configure_logging(stream=buf)  # not a TTY: JSON by default
    log = structlog.get_logger()
    log.info("bus_opened", bus="rs485-a")
    log.warning("device_silent", unit=3)

    first, second = lines(buf)
    assert first["event"] == "bus_opened"
    assert first["level"] == "info"
    assert first["bus"] == "rs485-a"
    assert second["level"] == "warning"
    ts = datetime.fromisoformat(first["ts"])
    assert ts.utcoffset() == timedelta(0)
    assert abs(datetime.now(ts.tzinfo) - ts) < timedelta(minutes=1)


def test_bound_and_context_variables_appear() -> None:
    buf = io.StringIO()
    configure_logging(stream=buf, json=True)
    with structlog.contextvars.bound_contextvars(bus="rs485-a"):
        structlog.get_logger().bind(unit=7, room="0412").info("lock_written")
    (line,) = lines(buf)
    assert (line["bus"], line["unit"], line["room"]) == ("rs485-a", 7, "0412")


def test_level_filtering_and_idempotent_reconfiguration() -> None:
    first = io.StringIO()
    configure_logging(stream=first, level="warning", json=True)
    configure_logging(stream=first, level="warning", json=True)
    log = structlog.get_logger()
    log.info("hidden")
    log.error("shown")
    assert [line["event"] for line in lines(first)] == ["shown"]

    second = io.StringIO()
    configure_logging(stream=second, level="debug", json=True)
    log.debug("now_visible")  # a logger made before reconfiguration follows it
    assert [line["event"] for line in lines(second)] == ["now_visible"]
    assert len(lines(first)) == 1


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging(level="loud", stream=io.StringIO())


def test_secrets_redacted_at_any_depth() -> None:
    buf = io.StringIO()
    configure_logging(stream=buf, json=True)
    payload = {"room": "0412", "stay": {"tokens": ["a1b2"], "guest_token": "c3d4"}}
    structlog.get_logger().info(
        "stay_loaded",
        token="abcdef",
        command_key="k" * 64,
        Password="hunter2",
        payload=payload,
        items=[{"hmac_sig": "ff00", "unit": 3}, ({"apiKey": "zz"},)],
    )
    (line,) = lines(buf)
    assert line["token"] == REDACTED
    assert line["command_key"] == REDACTED
    assert line["Password"] == REDACTED
    assert line["payload"] == {
        "room": "0412",
        "stay": {"tokens": REDACTED, "guest_token": REDACTED},
    }
    assert line["items"] == [{"hmac_sig": REDACTED, "unit": 3}, [{"apiKey": REDACTED}]]
    for secret in ("abcdef", "k" * 64, "hunter2", "a1b2", "c3d4", "ff00", "zz"):
        assert secret not in buf.getvalue()
    # The caller's objects are not modified.
    assert payload["stay"] == {"tokens": ["a1b2"], "guest_token": "c3d4"}


def test_secrets_in_bound_context_are_redacted() -> None:
    buf = io.StringIO()
    configure_logging(stream=buf, json=True)
    with structlog.contextvars.bound_contextvars(session_secret="s3cr3t"):
        structlog.get_logger().info("hello")
    assert "s3cr3t" not in buf.getvalue()


def test_redact_secrets_processor_directly() -> None:
    class Grant(NamedTuple):
        room: str
        token: str

    out = redact_secrets(None, "info", {"event": "grant", "grant": Grant("0412", "beef"), "n": 1})
    assert out == {"event": "grant", "grant": {"room": "0412", "token": REDACTED}, "n": 1}


def test_exceptions_rendered_as_text_in_json() -> None:
    buf = io.StringIO()
    configure_logging(stream=buf, json=True)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        structlog.get_logger().exception("service_crashed", service="bus[rs485-a]")
    (line,) = lines(buf)
    assert line["level"] == "error"
    assert "RuntimeError: boom" in line["exception"]
    assert "Traceback" in line["exception"]


def test_console_rendering_when_not_json() -> None:
    buf = io.StringIO()
    configure_logging(stream=buf, json=False)
    structlog.get_logger().info("bus_opened", bus="rs485-a", token="abc")
    out = buf.getvalue()
    assert "bus_opened" in out
    assert "bus=rs485-a" in out
    assert "abc" not in out
    assert not out.lstrip().startswith("{")
    assert "\x1b[" not in out  # no colours on a non-terminal


def test_console_is_the_default_on_a_tty() -> None:
    buf = TtyBuffer()
    configure_logging(stream=buf)
    structlog.get_logger().info("bus_opened")
    assert "bus_opened" in buf.getvalue()
    assert not buf.getvalue().lstrip().startswith("{")


class DeadTerminal(io.StringIO):
    """A terminal that was closed: every write fails as a pty's does (EIO)."""

    def write(self, s: str) -> int:
        raise OSError(5, "Input/output error")


def test_a_line_that_cannot_be_written_is_dropped_not_raised() -> None:
    # The daemon's terminal closed under it: logging must not break what was logging
    # (a signal handler's stop among them).
    configure_logging(stream=DeadTerminal(), json=True)
    structlog.get_logger().error("shutdown_forced", signal="SIGTERM")
    closed = io.StringIO()
    configure_logging(stream=closed, json=True)
    closed.close()
    structlog.get_logger().info("after_close")
