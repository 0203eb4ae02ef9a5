"""The composition root's state: settings plus the adapters built from them, created lazily.

One ``App`` per process: one engine, one SMTP pool, one object store, one configured broker with
its actors declared once, and one ``Dispatcher`` through which both doors (CLI, HTTP API) hand
work to the workers.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from worker.runtime.broker import is_memory

# The adapters' modules are imported where each adapter is built: a command pays only for what it
# uses (the CLI's `campaigns show` needs the engine, not Dramatiq, Redis, SMTP or the templates).
if TYPE_CHECKING:
    import dramatiq
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from renderers.dkim import DkimSigner
    from storage.objectstore import ObjectStore
    from worker.channels.campaign_runtime import RuntimeCache
    from worker.channels.smtp import SmtpSender
    from worker.pipeline.actors import Actors
    from worker.pipeline.dispatcher import Dispatcher
    from worker.pipeline.leases import Leases
    from worker.pipeline.recorder import OutcomeWriter
    from worker.runtime.settings import Settings


@dataclass
class App:
    """Everything a command or an actor needs, wired from one Settings object.

    ``smtp_url`` overrides ``SMTP_URL`` (``run``/``demo`` point it at the local capturing server).
    ``consuming`` is set while a worker consumes this process's broker (``run``, ``demo``, tests):
    then even the in-process broker carries work, and the dispatcher enqueues instead of running inline.
    """

    settings: Settings
    smtp_url: str | None = None
    consuming: bool = False
    _closers: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _smtp: SmtpSender | None = None

    @cached_property
    def engine(self) -> Engine:
        from storage.db import make_engine

        # Connections kept open: enough for every thread of a worker or of the API at once, so none
        # is opened and closed per request (10 more may open for a burst).
        engine = make_engine(self.settings.database_url, pool_size=self.settings.db_pool_size, max_overflow=10)
        self._closers.append(engine.dispose)
        return engine

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        from storage.db import make_sessionmaker

        return make_sessionmaker(self.engine)

    @cached_property
    def autocommit(self) -> Engine:
        """The engine's pool in autocommit: each statement whole on its own, with no BEGIN and
        COMMIT/ROLLBACK round trips around it. For work of one statement (or of statements that
        need not see one snapshot): the API's token check and hot reads."""
        return self.engine.execution_options(isolation_level="AUTOCOMMIT")

    @cached_property
    def reads(self) -> sessionmaker[Session]:
        """Sessions on ``autocommit``, for a read of one statement (or of statements that need no
        snapshot in common); each statement sees its own snapshot: use ``sessions`` otherwise."""
        from storage.db import make_sessionmaker

        return make_sessionmaker(self.autocommit)

    @cached_property
    def runtimes(self) -> RuntimeCache:
        from worker.channels.campaign_runtime import RuntimeCache

        return RuntimeCache(dkim=self.dkim)

    @cached_property
    def dkim(self) -> DkimSigner | None:
        """DKIM_KEYS_DIR's keys, read once per process (Settings checked them at the start), or
        None when unset: every email whose From domain has a key is signed with it."""
        if not self.settings.dkim_keys_dir:
            return None
        import structlog

        from renderers.dkim import load_keys

        signer = load_keys(self.settings.dkim_keys_dir)
        structlog.get_logger().info("dkim.keys_loaded", keys=[f"{k.record_name} ({k.algorithm})" for k in signer.keys])
        return signer

    @cached_property
    def leases(self) -> Leases:
        """The heartbeat renewing the rows this process holds, every third of the lease."""
        from worker.pipeline.leases import Leases

        leases = Leases(self.sessions, every=self.settings.lease_seconds / 3)
        self._closers.append(leases.close)
        return leases

    @cached_property
    def recorder(self) -> OutcomeWriter:
        """Writes rounds' outcomes, group-committed, retrying through a database outage of up to
        two minutes: what was sent must be recorded, or it would be sent again."""
        from worker.pipeline.recorder import OutcomeWriter

        recorder = OutcomeWriter(self.sessions, retry_for=120.0)
        self._closers.append(recorder.close)
        return recorder

    @cached_property
    def send_rate(self):
        """SEND_RATE: one budget of emails per second for every worker (kept in Redis)."""
        from worker.channels.rate import send_rate

        return send_rate(self.settings.broker_url, self.settings.send_rate)

    @property
    def round_size(self) -> int:
        """Recipients per SMTP round of one thread: twice the pool, so the pool stays busy while a
        round's last replies come in. Each outcome is written as soon as it is known, so a crash
        repeats only what was on the wire, whatever the round's size."""
        return self.settings.smtp_pool_size * 2

    @cached_property
    def broker(self) -> dramatiq.Broker:
        """This process's one broker (Redis from BROKER_URL, or in-process for ``memory://``)."""
        from worker.runtime.broker import make_broker

        broker = make_broker(self.settings.broker_url)
        self._closers.append(broker.close)
        return broker

    @cached_property
    def actors(self) -> Actors:
        """The actors, declared once on this process's broker."""
        from worker.pipeline.actors import declare_actors

        return declare_actors(self.broker, self)

    @property
    def dispatcher(self) -> Dispatcher:
        """Queued when a worker consumes the broker (Redis, or ``memory://`` inside ``run``), else inline."""
        from worker.pipeline.dispatcher import InlineDispatcher, QueuedDispatcher

        if self.consuming or not is_memory(self.settings.broker_url):
            return QueuedDispatcher(self, self.actors)
        return InlineDispatcher(self)

    @property
    def smtp_configured(self) -> bool:
        return bool(self.smtp_url or self.settings.smtp_url)

    @property
    def smtp(self) -> SmtpSender:
        """One SMTP connection pool per process, shared by the worker threads."""
        from worker.channels.smtp import SmtpConfig, SmtpSender

        with self._lock:
            if self._smtp is None:
                url = self.smtp_url or self.settings.smtp_url
                if not url:
                    raise RuntimeError("no SMTP server is configured: set SMTP_URL")
                self._smtp = SmtpSender(SmtpConfig.from_url(url), pool_size=self.settings.smtp_pool_size)
                self._closers.append(self._smtp.close)
            return self._smtp

    @cached_property
    def store(self) -> ObjectStore:
        from storage.objectstore import open_store

        return open_store(self.settings.storage_url)

    def close(self) -> None:
        """Release pools, connections and the broker."""
        while self._closers:
            self._closers.pop()()
