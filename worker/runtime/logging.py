"""structlog configuration, applied once at each entry point.

structlog is configured when it is imported, not before: importing it imports rich too (its
``structlog.dev``), ~0.05 s that a short CLI command logging nothing (``campaigns show``) would pay
for nothing. ``configure_logging`` configures it at once when it is imported already, else right
after its first import (``_ConfigureOnImport``), before any module can log through it: a module
logs through structlog only after importing it. Stdlib records (libraries') are formatted by
structlog's ``ProcessorFormatter``, built on the first record (``_LazyFormatter``).

Every line, structlog's and stdlib's, carries ``host`` (the machine's hostname) and ``pid``: with
workers and schedulers on several machines writing to one log store, they tell the lines apart.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import structlog


def configure_logging(log_format: str, level: str) -> None:
    """Route structlog and stdlib logging to stderr as JSON (off a TTY) or console lines."""
    numeric = logging.getLevelName(level)
    colors = sys.stderr.isatty()  # the stderr of now, as when structlog was configured at once
    # Libraries (dramatiq, apscheduler, alembic) log through stdlib: send them to stderr too.
    handler = _StderrHandler()
    handler.setFormatter(_LazyFormatter(log_format, colors))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in _CHATTY:  # shown at DEBUG only
        logging.getLogger(name).setLevel(numeric if numeric == logging.DEBUG else logging.WARNING)
    _ConfigureOnImport.install(lambda: _configure_structlog(log_format, colors, numeric))


def _shared() -> list[Any]:
    import structlog

    return [
        structlog.contextvars.merge_contextvars,
        _origin(),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def _origin() -> Callable[[Any, str, dict], dict]:
    """The processor adding ``host`` and ``pid`` to each line. The hostname is read once, when the
    processor chain is built (it does not change under a running process); the pid on each line,
    as a forked child writes lines of its own. An event's own ``host`` or ``pid`` (the bind address
    of ``metrics.serving``, the dead child of ``worker.process_died``) is left as it is."""
    import socket

    host = socket.gethostname()

    def add_origin(_logger: Any, _method: str, event_dict: dict) -> dict:
        event_dict.setdefault("host", host)
        event_dict.setdefault("pid", os.getpid())
        return event_dict

    return add_origin


def _renderer(log_format: str, colors: bool) -> Any:
    import structlog

    if log_format == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=colors)


def _configure_structlog(log_format: str, colors: bool, numeric: int) -> None:
    import structlog

    renderer = _renderer(log_format, colors)
    structlog.configure(
        processors=[*_shared(), structlog.processors.format_exc_info, renderer]
        if log_format == "json"
        else [*_shared(), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )


def _processor_formatter(log_format: str, colors: bool) -> logging.Formatter:
    """The stdlib records' formatter: the same renderer as structlog's own lines."""
    import structlog

    return structlog.stdlib.ProcessorFormatter(processors=[
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        # A library's failure (Dramatiq's "Failed to process message") carries exc_info: as
        # a traceback string in JSON, or the console renderer prints it itself.
        *([structlog.processors.format_exc_info] if log_format == "json" else []),
        _renderer(log_format, colors)],
        foreign_pre_chain=_shared(),
    )


# Libraries that log routine steps at INFO: WeasyPrint's progress (six lines per document and one
# per page: millions for a large letter campaign), aiosmtpd's session log (the demo's local mail
# catcher: a line per SMTP command), APScheduler's two lines per scheduler tick and Alembic's
# "setup plugin" lines when it is imported. Their warnings still show.
_CHATTY = ("weasyprint.progress", "mail.log", "apscheduler", "alembic.runtime.plugins")


def _stderr_logger(*_args) -> structlog.PrintLogger:
    import structlog

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


class _LazyFormatter(logging.Formatter):
    """structlog's ``ProcessorFormatter`` for ``log_format``, built on the first record: a command
    whose libraries log nothing does not import structlog for it."""

    def __init__(self, log_format: str, colors: bool) -> None:
        super().__init__()
        self._log_format, self._colors = log_format, colors
        self._formatter: logging.Formatter | None = None

    def format(self, record: logging.LogRecord) -> str:
        if self._formatter is None:  # two threads may both build it: the same formatter, harmless
            self._formatter = _processor_formatter(self._log_format, self._colors)
        return self._formatter.format(record)


class _ConfigureOnImport(importlib.abc.MetaPathFinder):
    """Calls ``configure`` now if structlog is imported, else right after its first import.

    Installed first on ``sys.meta_path``, it finds nothing itself: when ``structlog`` is looked up
    it removes itself and hands back the spec the other finders give, with a loader that runs the
    module and then ``configure``. The module keeps its own loader."""

    _installed: _ConfigureOnImport | None = None
    _lock = threading.Lock()

    def __init__(self, configure: Callable[[], None]) -> None:
        self._configure = configure

    @classmethod
    def install(cls, configure: Callable[[], None]) -> None:
        with cls._lock:
            cls._remove()
            if "structlog" not in sys.modules:
                cls._installed = cls(configure)
                sys.meta_path.insert(0, cls._installed)
                return
        configure()

    @classmethod
    def _remove(cls) -> None:
        if cls._installed is not None:
            if cls._installed in sys.meta_path:
                sys.meta_path.remove(cls._installed)
            cls._installed = None

    def find_spec(self, fullname: str, path: Any = None, target: ModuleType | None = None) -> Any:
        if fullname != "structlog":
            return None
        with self._lock:
            if type(self)._installed is not self:
                return None
            type(self)._remove()
        spec = importlib.util.find_spec(fullname)  # the other finders' (this one is gone)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenLoader(spec.loader, self._configure)
        return spec


class _ThenLoader(importlib.abc.Loader):
    """``loader``, then ``then()`` once the module ran."""

    def __init__(self, loader: importlib.abc.Loader, then: Callable[[], None]) -> None:
        self._loader, self._then = loader, then

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader  # the module keeps its own loader (resources, reloads)
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        self._then()
