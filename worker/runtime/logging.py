"""structlog configuration, applied once at each entry point."""

from __future__ import annotations

import logging
import sys

import structlog


def configure_logging(log_format: str, level: str) -> None:
    """Route structlog and stdlib logging to stderr as JSON (off a TTY) or console lines."""
    numeric = logging.getLevelName(level)
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer]
        if log_format == "json"
        else [*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
    # Libraries (dramatiq, apscheduler, alembic) log through stdlib: send them to stderr too.
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # A library's failure (Dramatiq's "Failed to process message") carries exc_info: as
            # a traceback string in JSON, or the console renderer prints it itself.
            *([structlog.processors.format_exc_info] if log_format == "json" else []),
            renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in _CHATTY:  # shown at DEBUG only
        logging.getLogger(name).setLevel(numeric if numeric == logging.DEBUG else logging.WARNING)


# Libraries that log routine steps at INFO: WeasyPrint's progress (six lines per document and one
# per page: millions for a large letter campaign), aiosmtpd's session log (the demo's local mail
# catcher: a line per SMTP command), APScheduler's two lines per scheduler tick and Alembic's
# "setup plugin" lines when it is imported. Their warnings still show.
_CHATTY = ("weasyprint.progress", "mail.log", "apscheduler", "alembic.runtime.plugins")


def _stderr_logger(*_args) -> structlog.PrintLogger:
    # Looked up on each use, so a replaced sys.stderr (tests, daemons) is honoured.
    return structlog.PrintLogger(sys.stderr)


class _StderrHandler(logging.StreamHandler):
    """A StreamHandler that always writes to the current ``sys.stderr``."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass
