"""The heartbeat: a live worker renews the lease of the ledger rows it holds.

A row a worker claimed is ``sending``; reconcile takes back rows whose last change is older than
``LEASE_SECONDS`` (their worker died). Renewing them every third of the lease lets the lease be
short, so a killed worker's recipients go on within seconds, however long a live worker's sends
take.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import structlog
from sqlalchemy.orm import Session, sessionmaker

from storage.ledger import renew
from storage.timefmt import now as utcnow

log = structlog.get_logger()


class Leases:
    """The rows this process holds, renewed by one daemon thread every ``every`` seconds."""

    def __init__(self, sessions: sessionmaker[Session], every: float) -> None:
        self._sessions, self._every = sessions, every
        self._held: dict[int, set[int]] = {}
        self._tokens = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def holding(self, ids: Iterable[int]) -> Iterator[set[int]]:
        """Keep these rows' lease while the block runs; the yielded set may shrink as rows finish."""
        held = set(ids)
        token = next(self._tokens)
        with self._lock:
            self._held[token] = held
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lease-heartbeat", daemon=True)
                self._thread.start()
        try:
            yield held
        finally:
            with self._lock:
                del self._held[token]

    def renew_now(self) -> int:
        """Renew every held row's lease now; how many rows were renewed."""
        with self._lock:
            ids = set().union(*self._held.values()) if self._held else set()
        if not ids:
            return 0
        with self._sessions.begin() as session:
            return renew(session, ids, utcnow())

    def close(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.renew_now()
            except Exception as exc:  # noqa: BLE001 - the database may be down; the next beat tries again
                log.warning("lease.renew_failed", error=str(exc))
