"""Workers alive: each worker process keeps a key in Redis while it runs, so ``status`` can count them.

The key (``dramatiq:workers:<host>:<pid>``) is refreshed every ``EVERY`` seconds and expires after
``TTL``: a killed process disappears from ``status`` within ``TTL`` seconds. The in-process broker
(``memory://``) has no workers outside the process: nothing is kept.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Any

import structlog

from worker.runtime.broker import NAMESPACE, is_memory

log = structlog.get_logger()

EVERY, TTL = 10.0, 30
PREFIX = f"{NAMESPACE}:workers:"


class Presence:
    """This process's key, refreshed by a daemon thread until ``close``."""

    def __init__(self, broker_url: str, threads: int) -> None:
        self._url = broker_url
        self._key = f"{PREFIX}{socket.gethostname()}:{os.getpid()}"
        self._value = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "threads": threads,
                                  "since": round(time.time())})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="worker-presence", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import redis

        client = redis.Redis.from_url(self._url, socket_connect_timeout=5, socket_timeout=5)
        try:
            while True:
                try:
                    client.set(self._key, self._value, ex=TTL)
                except redis.RedisError as exc:  # Redis away: the next beat tries again
                    log.warning("worker.presence_failed", error=str(exc))
                if self._stop.wait(EVERY):
                    break
            try:
                client.delete(self._key)
            except redis.RedisError:
                pass
        finally:
            client.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def announce(broker_url: str, threads: int) -> Presence | None:
    """Start keeping this worker process's key (None on the in-process broker)."""
    return None if is_memory(broker_url) else Presence(broker_url, threads)


def workers_alive(broker_url: str) -> list[dict[str, Any]] | None:
    """The worker processes whose key is alive (None on the in-process broker: not visible from here)."""
    if is_memory(broker_url):
        return None
    import redis

    client = redis.Redis.from_url(broker_url, socket_connect_timeout=5, socket_timeout=5)
    try:
        keys = sorted(client.scan_iter(match=PREFIX + "*", count=500))
        values = client.mget(keys) if keys else []
    finally:
        client.close()
    return [json.loads(v) for v in values if v]
