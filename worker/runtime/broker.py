"""Dramatiq broker wiring, in one place: Redis from BROKER_URL, or an in-process broker (``memory://``)."""

from __future__ import annotations

import dramatiq
import structlog
from dramatiq.brokers.redis import RedisBroker
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import Middleware

NAMESPACE = "dramatiq"


class LogContext(Middleware):
    """Binds ``actor`` and ``message_id`` to every log line an actor writes, cleared after each message."""

    def before_process_message(self, broker, message) -> None:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(actor=message.actor_name, message_id=message.message_id)

    def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
        structlog.contextvars.clear_contextvars()

    after_skip_message = after_process_message


def make_broker(url: str) -> dramatiq.Broker:
    """A Redis broker for ``redis://`` / ``rediss://`` URLs, an in-process one for ``memory://``."""
    if url == "memory://":
        broker: dramatiq.Broker = StubBroker()
    elif url.startswith(("redis://", "rediss://", "unix://")):
        broker = RedisBroker(url=url, namespace=NAMESPACE)
    else:
        raise ValueError(f"BROKER_URL must be redis://host:port/db or memory://, not {url!r}")
    broker.add_middleware(LogContext())
    return broker


def is_memory(url: str) -> bool:
    """True for the in-process broker, which only ``run`` and ``demo`` can use."""
    return url == "memory://"
