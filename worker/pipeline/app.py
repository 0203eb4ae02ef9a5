"""The composition root's state: settings plus the adapters built from them, created lazily."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from storage.db import make_engine, make_sessionmaker
from storage.objectstore import ObjectStore, open_store
from worker.channels.campaign_runtime import RuntimeCache
from worker.runtime.settings import Settings
from worker.channels.smtp import SmtpConfig, SmtpSender


@dataclass
class App:
    """Everything a command or an actor needs, wired from one Settings object.

    ``smtp_url`` overrides ``SMTP_URL`` (``run``/``demo`` point it at the local capturing server).
    """

    settings: Settings
    smtp_url: str | None = None
    _closers: list = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _smtp: SmtpSender | None = None

    @cached_property
    def engine(self) -> Engine:
        engine = make_engine(self.settings.database_url)
        self._closers.append(engine.dispose)
        return engine

    @cached_property
    def sessions(self) -> sessionmaker[Session]:
        return make_sessionmaker(self.engine)

    @cached_property
    def runtimes(self) -> RuntimeCache:
        return RuntimeCache()

    @property
    def smtp_configured(self) -> bool:
        return bool(self.smtp_url or self.settings.smtp_url)

    @property
    def smtp(self) -> SmtpSender:
        """One SMTP connection pool per process, shared by the worker threads."""
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
        return open_store(self.settings.storage_url)

    def close(self) -> None:
        """Release pools and connections."""
        while self._closers:
            self._closers.pop()()
