"""Benchmark: enqueueing a campaign's delivery batches to Redis, one round trip per message against pipelined.

Times only the enqueue of N delivery batches (default 5,000: a campaign of a million recipients at
the default DELIVERY_BATCH_SIZE of 200) on the project's broker (``make_broker``: Dramatiq's
RedisBroker with the project's middleware, the actors declared by ``declare_actors``), two ways:

- one by one: ``deliver_batch.send_with_options`` per batch, as ``Actors.enqueue_batches`` did
  before: one call of Dramatiq's Lua script, one round trip, per message;
- pipelined: ``Actors.enqueue_batches`` as it is (``worker.runtime.pipelined_enqueue``: the same
  script calls, ``CHUNK`` to a round trip).

Each way runs once untimed (connection, script load), then ``--runs`` times each, alternating, the
Redis db flushed before each run; each run checks the queue then holds N messages with the batches'
arguments in order. Prints the median, minimum and maximum seconds of each way and messages/s.

With ``--contacts M`` it also fans out two real campaigns of M contacts (the email benchmark's
contacts and newsletter) in a fresh PostgreSQL database with ``worker.pipeline.fanout.dispatch``
(the ledger's INSERT ... SELECT, the batches read, then the enqueue), the first enqueued one by one,
the second pipelined: the seconds of each part (one run each; the second INSERT goes into a table
that already holds the first campaign's rows). ``insert_recipients`` and ``open_batches`` are timed
by wrapping fanout's names for them while it runs; the rest of the ledger part (locking and checking
the campaign, anything else dispatch does before the enqueue, the commit) is what remains.

    .venv/bin/python benchmarks/fanout_enqueue.py                       # 5,000 batches, 7 runs each
    .venv/bin/python benchmarks/fanout_enqueue.py --batches 20000 --runs 5
    .venv/bin/python benchmarks/fanout_enqueue.py --contacts 1000000    # + fan-out of two 1M campaigns

Env: BENCH_FANOUT_REDIS_URL (redis://127.0.0.1:6379/12): refused when it holds keys or another
client uses it, flushed between runs and at the end; BENCH_PG_ADMIN_URL for ``--contacts`` (the
database is dropped at the end). Exit status 0, or 1 when a run left the wrong messages. Other jobs
on the machine lengthen the times: the load average is recorded.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from benchmarks.harness import (  # noqa: E402
    RESULTS, cleanup, end_summary, git_describe, loadavg, log, recorded, redis_db_is_ours, reproduce_command,
    tuning_env)
from storage.ledger import Batch  # noqa: E402
from worker.pipeline.actors import DELIVERY_QUEUE, Actors, declare_actors  # noqa: E402
from worker.runtime.broker import NAMESPACE, make_broker  # noqa: E402
from worker.runtime.pipelined_enqueue import CHUNK  # noqa: E402

REDIS_URL = os.environ.get("BENCH_FANOUT_REDIS_URL", "redis://127.0.0.1:6379/12")
QUEUE_KEY = f"{NAMESPACE}:{DELIVERY_QUEUE}"


def one_by_one(actors: Actors, batches: list[Batch]) -> None:
    """``Actors.enqueue_batches`` as it was: one ``send_with_options``, one round trip, per batch."""
    for batch in batches:
        actors.deliver_batch.send_with_options(args=(batch.campaign_id, batch.first_id, batch.last_id), delay=None)


def pipelined(actors: Actors, batches: list[Batch]) -> None:
    actors.enqueue_batches(batches)


WAYS: dict[str, Callable[[Actors, list[Batch]], None]] = {"one_by_one": one_by_one, "pipelined": pipelined}


def queued_right(rds: redis.Redis, batches: list[Batch]) -> bool:
    """The delivery queue holds one message per batch, with its arguments, in order."""
    import dramatiq

    ids = rds.lrange(QUEUE_KEY, 0, -1)
    if len(ids) != len(batches):
        return False
    args = [tuple(dramatiq.Message.decode(data).args) for data in rds.hmget(f"{QUEUE_KEY}.msgs", ids)]
    return args == [(b.campaign_id, b.first_id, b.last_id) for b in batches]


def enqueue_runs(rds: redis.Redis, n: int, runs: int, result: dict) -> bool:
    """``runs`` timed enqueues of ``n`` batches each way, alternating; whether every run queued them right."""
    broker = make_broker(REDIS_URL)
    actors = declare_actors(broker, app=None)  # the app is only used when a message runs
    batches = [Batch("00000000-0000-0000-0000-000000000001", 1 + i * 200, (i + 1) * 200) for i in range(n)]
    seconds: dict[str, list[float]] = {name: [] for name in WAYS}
    ok = True
    try:
        for name, way in WAYS.items():  # untimed: the connection, the scripts loaded, Dramatiq's stack probe
            rds.flushdb()
            way(actors, batches[:10])
        for run in range(runs):
            for name, way in WAYS.items():
                rds.flushdb()
                started = time.perf_counter()
                way(actors, batches)
                seconds[name].append(time.perf_counter() - started)
                ok = queued_right(rds, batches) and ok
            log(f"run {run + 1}/{runs}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in seconds.items()))
    finally:
        broker.close()
        rds.flushdb()
    result["enqueue"] = {name: {"median_s": round(statistics.median(v), 4), "min_s": round(min(v), 4),
                                "max_s": round(max(v), 4), "messages_per_s": round(n / statistics.median(v)),
                                "runs_s": [round(x, 4) for x in v]} for name, v in seconds.items()}
    e = result["enqueue"]
    result["enqueue"]["speedup"] = round(e["one_by_one"]["median_s"] / e["pipelined"]["median_s"], 1)
    result["enqueue"]["queued_right"] = ok
    return ok


def fanout_runs(rds: redis.Redis, contacts: int, result: dict) -> bool:
    """Two campaigns of ``contacts`` fanned out by the service, enqueued one by one then pipelined."""
    from benchmarks.email_campaign import bundle, contact_line, payload
    from benchmarks.harness import BenchDatabase, load_contacts
    from storage.migrate import upgrade
    from worker.pipeline import campaign_service, fanout
    from worker.pipeline.app import App
    from worker.runtime.settings import Settings

    db, workdir, app = BenchDatabase("fanout"), Path(tempfile.mkdtemp(prefix="cd-bench-")), None
    ok, out = True, result.setdefault("fanout", {"contacts": contacts})
    try:
        # An SMTP URL only for the fan-out's check that email can be sent: nothing is sent.
        app = App(Settings(database_url=db.create(), broker_url=REDIS_URL, smtp_url="smtp://127.0.0.1:25",
                           log_level="WARNING", log_format="json"))
        upgrade(app.engine)
        out["load_s"] = round(load_contacts(app, contacts, workdir, contact_line, bundle), 1)
        out["delivery_batch_size"] = app.settings.delivery_batch_size
        log(f"{contacts} contacts loaded in {out['load_s']} s")
        for name, way in WAYS.items():
            rds.flushdb()
            with app.sessions.begin() as session:
                campaign_id = campaign_service.create(session, payload(), 1).id
            marks: dict[str, float] = {}

            def enqueue(batches: list[Batch], way=way, marks=marks) -> None:
                marks["enqueue_from"] = time.perf_counter()
                way(app.actors, batches)
                marks["enqueue_to"], marks["batches"] = time.perf_counter(), len(batches)

            with timed(fanout, ("insert_recipients", "open_batches"), marks):
                started = time.perf_counter()
                fanout.dispatch(app, campaign_id, enqueue)
                ended = time.perf_counter()
            queued = rds.llen(QUEUE_KEY)
            ok = ok and queued == marks.get("batches", -1)
            ledger = marks["enqueue_from"] - started
            out[name] = {"seconds": round(ended - started, 2), "ledger_and_batches_s": round(ledger, 2),
                         "insert_recipients_s": round(marks["insert_recipients"], 2),
                         # 0 when the batches came from the inserted ids alone (no open_batches query)
                         "open_batches_s": round(marks.get("open_batches", 0.0), 2),
                         "rest_of_ledger_part_s": round(ledger - marks["insert_recipients"]
                                                        - marks.get("open_batches", 0.0), 2),
                         "enqueue_s": round(marks["enqueue_to"] - marks["enqueue_from"], 3),
                         "batches": marks["batches"], "queued": queued}
            log(f"fan-out enqueued {name}: {out[name]}")
    finally:
        cleanup([lambda: app and app.close(), db.drop, rds.flushdb, lambda: shutil.rmtree(workdir, ignore_errors=True)])
    return ok


@contextmanager
def timed(module: ModuleType, names: tuple[str, ...], marks: dict[str, float]) -> Iterator[None]:
    """While the block runs, ``module``'s functions ``names`` add their seconds to ``marks[name]``
    (the functions themselves run: only a timer is put around them)."""
    originals = {name: getattr(module, name) for name in names}

    def timer(name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                marks[name] = marks.get(name, 0.0) + time.perf_counter() - started
        return run

    for name, fn in originals.items():
        setattr(module, name, timer(name, fn))
    try:
        yield
    finally:
        for name, fn in originals.items():
            setattr(module, name, fn)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=5000, help="delivery batches enqueued per run")
    parser.add_argument("--runs", type=int, default=7, help="timed runs of each way")
    parser.add_argument("--contacts", type=int, default=0, help="also fan out two campaigns of this many contacts")
    args = parser.parse_args()
    tuning = tuning_env()
    if "BENCH_FANOUT_REDIS_URL" in os.environ and "@" not in REDIS_URL:  # never print a password
        tuning["BENCH_FANOUT_REDIS_URL"] = REDIS_URL
    reproduce = reproduce_command("fanout_enqueue.py", [f"--batches {args.batches}", f"--runs {args.runs}",
                                                        *([f"--contacts {args.contacts}"] if args.contacts else [])],
                                  tuning)
    rds = redis.Redis.from_url(REDIS_URL)
    redis_db_is_ours(rds)
    if rds.dbsize():  # not ours to flush
        print(f"{REDIS_URL} holds {rds.dbsize()} keys this benchmark did not make: set BENCH_FANOUT_REDIS_URL "
              "to an empty db", file=sys.stderr)
        return 2
    from worker.runtime.logging import configure_logging

    configure_logging("json", "WARNING")
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    result: dict = {"benchmark": "fanout_enqueue", "batches": args.batches, "runs": args.runs, "chunk": CHUNK,
                    "redis": rds.info("server")["redis_version"], "loadavg_before": loadavg(), "cpus": os.cpu_count(),
                    "tuning_env": tuning, "reproduce": reproduce, "git": git_describe()}
    ok = False
    with recorded(result, RESULTS / f"fanout_enqueue-{stamp}.json", summary, reproduce, started=time.monotonic(),
                  print_json=False):
        try:
            ok = enqueue_runs(rds, args.batches, args.runs, result)
            if args.contacts:
                ok = fanout_runs(rds, args.contacts, result) and ok
        finally:
            rds.flushdb()
    return 0 if ok else 1


def summary(r: dict) -> str:
    lines = [f"\n== enqueue of {r['batches']} delivery batches to Redis {r['redis']} ({REDIS_URL}), {r['runs']} runs "
             f"of each way, alternating; load average before {' '.join(r['loadavg_before'])} on {r['cpus']} CPUs"]
    e = r.get("enqueue", {})
    for name, label in (("one_by_one", "one by one (send_with_options per batch)"),
                        ("pipelined", f"pipelined (enqueue_batches, {r['chunk']} a round trip)")):
        if name in e:
            x = e[name]
            lines.append(f"{label}: median {x['median_s']:.3f} s (min {x['min_s']:.3f}, max {x['max_s']:.3f}), "
                         f"{x['messages_per_s']:,} msg/s")
    if "speedup" in e:
        lines.append(f"pipelined is {e['speedup']}x as fast; every run queued the batches right: {e['queued_right']}")
    f = r.get("fanout", {})
    for name in ("one_by_one", "pipelined"):
        if name in f:
            x = f[name]
            lines.append(f"fan-out of {f['contacts']} contacts, enqueued {name.replace('_', ' ')}: {x['seconds']} s "
                         f"(ledger part {x['ledger_and_batches_s']} s: insert_recipients {x['insert_recipients_s']} s, "
                         f"open_batches {x['open_batches_s']} s, the rest {x['rest_of_ledger_part_s']} s; enqueue of "
                         f"{x['batches']} batches {x['enqueue_s']} s)")
    return end_summary(lines, r)


if __name__ == "__main__":
    sys.exit(main())
