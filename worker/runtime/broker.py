"""Dramatiq broker wiring, in one place: Redis from BROKER_URL, or an in-process broker (``memory://``).

Dramatiq (and with it the Redis client) is imported when a broker is made, not with this module:
``NAMESPACE`` and ``is_memory`` serve commands that never make one (the CLI's short commands).
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import dramatiq

NAMESPACE = "dramatiq"


@cache
def _log_context() -> type:
    """The ``LogContext`` middleware class, defined on Dramatiq's ``Middleware`` the first time it is needed."""
    import structlog
    from dramatiq.middleware import Middleware

    class LogContext(Middleware):
        """Binds ``actor`` and ``message_id`` to every log line an actor writes, cleared after each message."""

        def before_process_message(self, broker, message) -> None:
            structlog.contextvars.clear_contextvars()
            structlog.contextvars.bind_contextvars(actor=message.actor_name, message_id=message.message_id)

        def after_process_message(self, broker, message, *, result=None, exception=None) -> None:
            structlog.contextvars.clear_contextvars()

        after_skip_message = after_process_message

    LogContext.__module__ = __name__
    return LogContext


def make_broker(url: str) -> dramatiq.Broker:
    """A Redis broker for ``redis://`` / ``rediss://`` URLs, an in-process one for ``memory://``."""
    if url == "memory://":
        from dramatiq.brokers.stub import StubBroker

        broker: dramatiq.Broker = StubBroker()
    elif url.startswith(("redis://", "rediss://", "unix://")):
        from dramatiq.brokers.redis import RedisBroker

        broker = RedisBroker(url=url, namespace=NAMESPACE)
    else:
        raise ValueError(f"BROKER_URL must be redis://host:port/db or memory://, not {url!r}")
    broker.add_middleware(_log_context()())
    return broker


def is_memory(url: str) -> bool:
    """True for the in-process broker, which only ``run`` and ``demo`` can use."""
    return url == "memory://"
