"""Many messages of one actor enqueued in a few Redis round trips instead of one each.

``RedisBroker.enqueue`` runs the broker's ``dispatch`` Lua script once per message: one round trip
each. Fanning out a campaign of a million recipients sends ~5,000 delivery messages: one at a time,
0.8-1 s on a quiet local Redis and more over a network or on a busy machine. ``send_many`` queues the
same script calls on a Redis pipeline and sends them ``CHUNK`` at a time: 5 round trips, ~0.2 s,
which is then the client's CPU (redis-py packing the commands, Dramatiq building the messages).
Figures: benchmarks/fanout_enqueue.py.

It stays a thin layer over Dramatiq: each message is built by ``actor.message_with_options`` and
given what ``RedisBroker.enqueue`` gives it (its own ``redis_message_id``; when delayed, the delay
queue ``<queue>.DQ`` and its ``eta``), the middleware's ``before_enqueue`` and ``after_enqueue`` hooks
run for each message, and the script run is the one the broker registered, with the arguments its
``_dispatch`` passes. Any other broker (the StubBroker of ``memory://`` and the unit tests, or a
RedisBroker subclass with an ``enqueue`` of its own) gets ``send_with_options`` per message.

Dramatiq is imported where it is used, as in ``worker.runtime.broker``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import uuid4

if TYPE_CHECKING:
    import dramatiq
    from dramatiq.brokers.redis import RedisBroker

# Messages per round trip. Each is ~550 bytes on the wire (a ~280-byte message and the script's
# arguments): a round trip carries ~0.5 MB, and Redis spends ~6 ms on its 1,000 script calls before
# it serves another client (a worker fetching, the API). 5,000 messages are 5 round trips.
CHUNK = 1000


def pipelines(broker: dramatiq.Broker) -> bool:
    """Whether ``send_many`` pipelines on ``broker``: a RedisBroker that enqueues as Dramatiq's own does."""
    from dramatiq.brokers.redis import RedisBroker

    # A subclass that overrides enqueue does something of its own there, which a pipeline would skip.
    return isinstance(broker, RedisBroker) and type(broker).enqueue is RedisBroker.enqueue


def send_many(actor: dramatiq.Actor, calls: Iterable[Sequence[Any]], *, delay: int | timedelta | None = None,
              chunk: int = CHUNK, **options: Any) -> list[dramatiq.Message]:
    """Enqueue one message to ``actor`` per positional-argument tuple of ``calls``, in order, each what
    ``actor.send_with_options(args=args, delay=delay, **options)`` would enqueue; the messages enqueued.

    On a RedisBroker (``pipelines``) they go ``chunk`` to a round trip. An error (Redis down) leaves
    the earlier chunks enqueued and raises, as a loop of ``send_with_options`` leaves the earlier
    messages: the ledger's reconcile re-enqueues what was lost.
    """
    if isinstance(delay, timedelta):  # as send_with_options converts it
        delay = int(delay.total_seconds() * 1000)
    todo = list(calls)
    broker = actor.broker
    # One message gains nothing from a pipeline (which also checks the script is loaded: a round trip).
    if len(todo) < 2 or not pipelines(broker):
        return [broker.enqueue(actor.message_with_options(args=tuple(args), **options), delay=delay) for args in todo]
    enqueued: list[dramatiq.Message] = []
    # Built a chunk at a time: each message's timestamp is then within a round trip of its enqueue.
    for start in range(0, len(todo), chunk):
        messages = [actor.message_with_options(args=tuple(args), **options) for args in todo[start:start + chunk]]
        enqueued += _enqueue_chunk(broker, messages, delay)
    return enqueued


def _enqueue_chunk(broker: RedisBroker, messages: list[dramatiq.Message], delay: int | None) -> list[dramatiq.Message]:
    """``RedisBroker.enqueue`` of each message, with the script calls sent in one pipeline."""
    from dramatiq.common import current_millis, dq_name

    script = broker.scripts["dispatch"]
    ready = []
    # No MULTI/EXEC: a loop of enqueues is not atomic either, and a transaction would only hold
    # Redis longer. The Script, called with the pipeline, has the pipeline load it if Redis lost it.
    with broker.client.pipeline(transaction=False) as pipe:
        for message in messages:
            # What RedisBroker.enqueue does before its do_enqueue: an id of its own in Redis for each
            # enqueue (a retried message is enqueued again), and a delayed one goes to the delay queue.
            queue_name = message.queue_name
            message = message.copy(options={"redis_message_id": str(uuid4())})
            if delay is not None:
                queue_name = dq_name(queue_name)
                message = message.copy(queue_name=queue_name, options={"eta": current_millis() + delay})
            broker.logger.debug("Enqueueing message %r on queue %r.", message.message_id, queue_name)
            broker.emit_before("enqueue", message, delay)
            # RedisBroker._dispatch's arguments for dispatch.lua's "enqueue". The tests compare what both
            # paths leave in Redis: a Dramatiq that changes these arguments fails them.
            script(keys=[broker.namespace], client=pipe, args=[
                "enqueue", current_millis(), queue_name, broker.broker_id, broker.heartbeat_timeout,
                broker.dead_message_ttl, broker._should_do_maintenance("enqueue"), broker._max_unpack_size(),
                message.options["redis_message_id"], message.encode()])
            ready.append(message)
        pipe.execute()
    for message in ready:  # after: the messages are in Redis, as after each do_enqueue
        broker.emit_after("enqueue", message, delay)
    return ready
