"""Prometheus metrics: what the pipeline counts and times, what is read at scrape time, and the
``/metrics`` + ``/healthz`` endpoint of the ``worker`` and ``scheduler`` processes (METRICS_PORT).

Counted where it happens, cheaply (one ``inc``/``observe`` on a label child bound once, no Redis call):

- ``campaign_dispatch_recipients_total{channel,outcome}``: outcomes once written to the ledger
  (``pipeline.recorder``), plus the recipients skipped at fan-out (``pipeline.fanout``); ``retried``
  counts transient failures put back to pending.
- ``campaign_dispatch_smtp_send_seconds``: each SMTP transaction (the ``sendmail`` call, not the
  wait for a pool slot or a connection), whatever the relay answered.
- ``campaign_dispatch_render_seconds{channel}``: one recipient's content. Email: each message
  (template, text part, MIME). Letters are laid out a batch at a time, so each letter of a batch is
  observed as the batch's rendering time (HTML and PDF layout) divided by its letters.

Read at scrape time by ``StateCollector``: ``campaign_dispatch_queue_messages{queue,state}``
(ready, delayed, dead; ``pipeline.status.queue_depths``, handed in) and
``campaign_dispatch_campaigns{status}`` (one GROUP BY).

Several processes (``worker --processes N``): the supervisor calls ``prepare_multiprocess`` before
its children start; they inherit PROMETHEUS_MULTIPROC_DIR, so prometheus_client keeps their values
in files there, which the supervisor's endpoint sums (``MultiProcessCollector``). Files of processes
that exited stay (their counts are part of the totals); their live gauges are dropped
(``mark_process_dead``) at the next scrape.

This module imports prometheus_client: the CLI imports it only in the commands that serve metrics,
and the channels and the pipeline only once they start sending, so starting the CLI does not pay
for it.
"""

from __future__ import annotations

import atexit
import errno
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import structlog
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

log = structlog.get_logger()

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CHANNELS = ("email", "letter", "telephone")
OUTCOMES = ("sent", "failed", "skipped", "retried")
QUEUE_STATES = ("ready", "delayed", "dead")

Health = Callable[[], tuple[bool, list[str]]]
RegistryFactory = Callable[[], CollectorRegistry]

# ----------------------------------------------------------------------------- the metric objects
if os.environ.get(MULTIPROC_ENV):  # prometheus_client writes there as the metrics are made: a missing
    os.makedirs(os.environ[MULTIPROC_ENV], exist_ok=True)  # folder would break sending, not just metrics
RECIPIENTS = Counter(
    "campaign_dispatch_recipients", "Recipients whose outcome was written to the ledger, by channel and "
    "outcome (skipped includes those skipped at fan-out; retried: a transient failure put back to pending)",
    ["channel", "outcome"])
SMTP_SEND_SECONDS = Histogram(
    "campaign_dispatch_smtp_send_seconds", "Duration of one SMTP transaction (MAIL, RCPT, DATA), "
    "whatever the reply; not the wait for a connection",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
RENDER_SECONDS = Histogram(
    "campaign_dispatch_render_seconds", "Rendering one recipient's content (letters: their batch's "
    "rendering, HTML and PDF layout, divided by its letters)", ["channel"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5))

# Label children bound once: every series is exposed (at 0) from the start, and the hot paths skip
# the lookup (and its lock) of ``labels()``.
_RECIPIENTS = {(channel, outcome): RECIPIENTS.labels(channel, outcome) for channel in CHANNELS for outcome in OUTCOMES}
RENDER_EMAIL = RENDER_SECONDS.labels("email")
RENDER_LETTER = RENDER_SECONDS.labels("letter")


def count_recipients(counts: Mapping[tuple[str, str], int]) -> None:
    """Add ``{(channel, outcome): n}`` to ``campaign_dispatch_recipients_total``."""
    for key, n in counts.items():
        if n:
            child = _RECIPIENTS.get(key)
            (child if child is not None else RECIPIENTS.labels(*key)).inc(n)


# ----------------------------------------------------------------------------- scrape time
class StateCollector:
    """Queue depths and campaigns per status, read when scraped (the callables are handed in:
    ``queue_depths()`` as ``pipeline.status.queue_depths`` gives them, ``campaign_counts()`` as
    ``{status: n}``). A part that cannot be read (Redis or the database down) is left out of that
    scrape, logged, rather than failing the whole scrape."""

    def __init__(self, queue_depths: Callable[[], Iterable[Mapping[str, Any]]],
                 campaign_counts: Callable[[], Mapping[str, int]]) -> None:
        self._queue_depths, self._campaign_counts = queue_depths, campaign_counts

    @classmethod
    def for_service(cls, engine: Any, broker_url: str,
                    queue_depths: Callable[[str], Iterable[Mapping[str, Any]]]) -> StateCollector:
        """Reading the service's broker (with ``queue_depths(broker_url)``) and database (``engine``)."""
        return cls(lambda: queue_depths(broker_url), lambda: campaigns_by_status(engine))

    def describe(self) -> list[Metric]:
        return []  # nothing to check at registration; read only when scraped

    def collect(self) -> Iterator[Metric]:
        queues = GaugeMetricFamily("campaign_dispatch_queue_messages",
                                   "Messages per queue: ready, delayed (retries, eta) and dead-lettered",
                                   labels=["queue", "state"])
        try:
            for depth in self._queue_depths():
                for state in QUEUE_STATES:
                    if depth.get(state) is not None:  # None: the in-process broker, not countable
                        queues.add_metric([depth["queue"], state], depth[state])
        except Exception as exc:  # noqa: BLE001 - a scrape without this part, not a failed scrape
            log.warning("metrics.queues_unreadable", error=_first_line(exc))
        else:
            yield queues
        campaigns = GaugeMetricFamily("campaign_dispatch_campaigns", "Campaigns per status", labels=["status"])
        try:
            counts = dict(self._campaign_counts())
        except Exception as exc:  # noqa: BLE001
            log.warning("metrics.campaigns_unreadable", error=_first_line(exc))
            return
        from storage.statuses import CampaignStatus

        for status in [*CampaignStatus, *sorted(set(counts) - set(CampaignStatus))]:
            campaigns.add_metric([str(status)], counts.get(status, 0))
        yield campaigns


def campaigns_by_status(engine: Any) -> dict[str, int]:
    """``{status: campaigns}``, in one GROUP BY query."""
    from sqlalchemy import func, select

    from storage.models import Campaign

    with engine.connect() as conn:
        return {status: n for status, n in conn.execute(
            select(Campaign.status, func.count()).group_by(Campaign.status)).all()}


class _ThisProcess:
    """The default registry (this process's metrics, process_*, python_*), as one collector."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        return REGISTRY.collect()


def registry_factory_for(*collectors: Any, multiproc_dir: str | None = None) -> RegistryFactory:
    """A fresh registry per scrape: every process's metrics when PROMETHEUS_MULTIPROC_DIR (or
    ``multiproc_dir``) is set at scrape time, else this process's; plus ``collectors``."""

    def build() -> CollectorRegistry:
        registry = CollectorRegistry()
        path = multiproc_dir or os.environ.get(MULTIPROC_ENV)
        if path:
            reap_dead_processes(path)
            multiprocess.MultiProcessCollector(registry, path)
        else:
            registry.register(_ThisProcess())
        for collector in collectors:
            registry.register(collector)
        return registry

    return build


def exposition(registry: CollectorRegistry, accept: str | None = None) -> tuple[bytes, str]:
    """The registry in the text format the ``Accept`` header asks for, and its content type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


# ----------------------------------------------------------------------------- several processes
def prepare_multiprocess() -> str:
    """For a supervisor, before its worker processes start: a fresh directory in
    PROMETHEUS_MULTIPROC_DIR, which the children inherit (they must import prometheus_client after
    it is set: spawned children do), removed when this process exits. Returns it."""
    path = tempfile.mkdtemp(prefix="campaign-dispatch-metrics-")
    os.environ[MULTIPROC_ENV] = path
    atexit.register(shutil.rmtree, path, True)
    log.info("metrics.multiprocess", directory=path)
    return path


_LIVE_FILE = re.compile(r"^gauge_live\w*_(\d+)\.db$")


def mark_dead(pid: int, path: str | None = None) -> None:
    """A worker process exited: drop its live gauges (its counters and histograms stay counted)."""
    multiprocess.mark_process_dead(pid, path or os.environ.get(MULTIPROC_ENV))


def reap_dead_processes(path: str) -> list[int]:
    """``mark_dead`` for each process with live-gauge files in ``path`` that no longer exists
    (however it ended, SIGKILL included); run at each scrape. Returns their ids."""
    dead = []
    for name in os.listdir(path):
        match = _LIVE_FILE.match(name)
        if match and not _alive(pid := int(match.group(1))):
            mark_dead(pid, path)
            dead.append(pid)
    return dead


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc  # SQLAlchemy's DBAPIError: the driver's message
    lines = str(orig).strip().splitlines()
    return lines[0][:200] if lines else ""


# ----------------------------------------------------------------------------- the endpoint
class MetricsServer:
    """The endpoint's HTTP server, serving in a daemon thread; ``close`` stops it."""

    def __init__(self, httpd: ThreadingHTTPServer, thread: threading.Thread) -> None:
        self._httpd, self._thread = httpd, thread

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Handler(BaseHTTPRequestHandler):
    registry_factory: RegistryFactory
    health: Health | None

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = urlsplit(self.path).path
        if path == "/metrics":
            try:
                body, content_type = exposition(type(self).registry_factory(), self.headers.get("Accept"))
            except Exception as exc:  # noqa: BLE001 - a failed scrape, not a dead endpoint
                log.error("metrics.scrape_failed", error=_first_line(exc), exc_info=True)
                self._reply(500, f"scrape failed: {type(exc).__name__}\n".encode())
                return
            self._reply(200, body, content_type)
        elif path == "/healthz":
            health = type(self).health
            try:
                ok, lines = (True, ["ok"]) if health is None else health()
            except Exception as exc:  # noqa: BLE001 - a check that broke is not healthy
                ok, lines = False, [f"health check failed: {type(exc).__name__}: {_first_line(exc)}"]
            self._reply(200 if ok else 503, ("\n".join(lines) + "\n").encode())
        else:
            self._reply(404, b"not found: /metrics or /healthz\n")

    def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - scrapes are not logged
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True


def start_metrics_server(port: int, *, health: Health | None = None,
                         registry_factory: RegistryFactory | None = None, host: str = "0.0.0.0") -> MetricsServer:
    """Serve GET /metrics (Prometheus text, or OpenMetrics when asked) and GET /healthz (200 and the
    ``health()`` lines, or 503 and the lines naming what fails; 200 "ok" without ``health``) on
    ``host:port``, in a daemon thread. ``registry_factory`` builds the registry of each scrape
    (default: ``registry_factory_for()``, this process's or every process's metrics).

    METRICS_PORT is the port of both the worker and the scheduler: a scheduler on the same machine
    as a worker takes the next port. So when ``port`` is taken, ``port + 1`` is tried once (an
    OSError if both are). Port 0: any free port (tests)."""
    handler = type("MetricsHandler", (_Handler,), {
        "registry_factory": staticmethod(registry_factory or registry_factory_for()),
        "health": staticmethod(health) if health is not None else None})
    try:
        httpd = _Server((host, port), handler)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE or port in (0, 65535):
            raise
        log.warning("metrics.port_in_use", port=port, trying=port + 1)
        httpd = _Server((host, port + 1), handler)
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-server", daemon=True)
    thread.start()
    served = MetricsServer(httpd, thread)
    log.info("metrics.serving", host=host, port=served.port, requested_port=port)
    return served
