"""Operators' logs: one JSON line per event, without libraries' routine steps at INFO."""

from __future__ import annotations

import json
import logging

import pytest

from renderers.pdf import render_pdfs
from worker.runtime.logging import _CHATTY, configure_logging


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    chatty = {name: logging.getLogger(name).level for name in _CHATTY}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, chatty_level in chatty.items():
        logging.getLogger(name).setLevel(chatty_level)


def _lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.strip()]


def test_rendering_letters_logs_no_weasyprint_progress_at_info(restored_logging, capsys):
    configure_logging("json", "INFO")
    render_pdfs(["<p>one</p>", "<p>two</p>"])
    logging.getLogger("weasyprint").warning("a CSS warning")  # WeasyPrint's warnings still show
    assert [line["event"] for line in _lines(capsys)] == ["a CSS warning"]
    configure_logging("json", "DEBUG")
    render_pdfs(["<p>three</p>"])
    assert any(line["event"].startswith("Step 5 - Creating layout") for line in _lines(capsys))


def test_a_library_failure_logs_its_traceback_in_json(restored_logging, capsys):
    # Dramatiq reports a failing actor through stdlib logging with exc_info: the line must say where.
    configure_logging("json", "INFO")

    def failing_actor() -> None:
        raise ValueError("template missing")

    try:
        failing_actor()
    except ValueError:
        logging.getLogger("dramatiq.worker.WorkerThread").error("Failed to process message", exc_info=True)
    (line,) = _lines(capsys)
    assert line["event"] == "Failed to process message" and line["level"] == "error"
    assert "Traceback" in line["exception"] and "in failing_actor" in line["exception"]
    assert "ValueError: template missing" in line["exception"]


def test_every_line_carries_the_host_and_the_pid(restored_logging, capsys):
    # Workers and schedulers on several machines log to one place: each line says where it came from.
    import os
    import socket

    import structlog

    configure_logging("json", "INFO")
    structlog.get_logger().info("probe.structlog")
    logging.getLogger("dramatiq.worker").warning("probe.stdlib")
    structlog.get_logger().info("probe.own_host", host="0.0.0.0")
    lines = {line["event"]: line for line in _lines(capsys)}
    for event in ("probe.structlog", "probe.stdlib"):
        assert (lines[event]["host"], lines[event]["pid"]) == (socket.gethostname(), os.getpid()), lines[event]
    assert lines["probe.own_host"]["host"] == "0.0.0.0"  # an event's own field is not overwritten
