"""What the benchmark scripts share: a fresh PostgreSQL database, the worker processes (started,
awaited, stopped), the servers they deliver to (smtp-sink, moto's S3), driving a campaign with the
scheduler's jobs, CPU and RSS of processes (/proc), py-spy profiles, and the figures: the reproduce
command, the summary lines, the results saved as JSON in benchmarks/results/.

The scripts run as ``.venv/bin/python benchmarks/X.py``: each puts the repository root on sys.path
and imports this module as ``benchmarks.harness``.

Only the standard library is imported at module level: export_recipients.py runs its export in a
spawned child that imports the script (and so this module) again, and what is imported here would
count towards the export's RSS. The project's modules and other packages are imported where used.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import argparse

    import redis
    from sqlalchemy.orm import Session

    from storage.models import Campaign
    from worker.pipeline.app import App

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
ADMIN_URL = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
# Worker tuning variables: passed through to the workers, recorded, and part of the reproduce command.
TUNING = ("DELIVERY_BATCH_SIZE", "SMTP_POOL_SIZE", "LEASE_SECONDS", "STALL_SECONDS", "MAX_ATTEMPTS")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- database
class BenchDatabase:
    """A fresh PostgreSQL database of this run (UTF-8, C.UTF-8 collation), named after ``kind`` and
    the process id: ``create`` it, ``drop`` it at the end (which also disposes of the admin engine)."""

    def __init__(self, kind: str) -> None:
        from storage.db import make_engine, safe_identifier

        self.name = safe_identifier(f"cd_bench_{kind}_{os.getpid()}")
        self.admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")

    def create(self) -> str:
        """Create the database; its URL."""
        from sqlalchemy import text

        with self.admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {self.name} TEMPLATE template0 ENCODING 'UTF8' "
                              "LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"))
        return self.admin.url.set(database=self.name).render_as_string(hide_password=False)

    def drop(self) -> None:
        from sqlalchemy import text

        try:
            with self.admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)"))
        finally:
            self.admin.dispose()


def load_contacts(app: App, n: int, workdir: Path, line: Callable[[int], dict], make_bundle: Callable[[], dict]) -> float:
    """Write ``n`` contacts (``line(i)``) as JSON Lines, load the bundle and them; return seconds."""
    from storage.loader import load_bundle, load_jsonl

    path = workdir / "contacts.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps(line(i), ensure_ascii=False) + "\n")
    started = time.perf_counter()
    load_bundle(app.sessions, make_bundle())
    load_jsonl(app.sessions, path)
    path.unlink()
    return time.perf_counter() - started


# ----------------------------------------------------------------------------- processes: RSS, CPU
def spawned_children(pid: int) -> list[int]:
    """Worker processes of the supervisor (multiprocessing spawn children, not its resource tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if ppid == pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return sorted(found)


def proc_kib(pid: int | str, key: str) -> int | None:
    """A ``/proc/<pid>/status`` figure in KiB (VmRSS, VmHWM); ``pid`` may be ``"self"``."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


TICK = os.sysconf("SC_CLK_TCK")


def cpu_snapshot() -> tuple[int, dict[int, tuple[int, int, str]]]:
    """Machine busy jiffies (/proc/stat) and, per process, (user+system jiffies, parent, command)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                rest = stat.rsplit(")", 1)[1].split()
                procs[int(entry.name)] = (int(rest[11]) + int(rest[12]), int(rest[1]), stat.split("(", 1)[1].rsplit(")", 1)[0])
            except (OSError, IndexError, ValueError):
                continue
    return busy, procs


def reaped_cpu_s(pid: int) -> float:
    """CPU seconds of the children ``pid`` has waited for (/proc cutime + cstime): what processes that
    exited used, which no snapshot of /proc sees (PostgreSQL backends of closed connections: the
    postmaster's)."""
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(rest[13]) + int(rest[14])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def postmaster_pid(snapshot: tuple) -> int | None:
    """The PostgreSQL server's main process in a ``cpu_snapshot``: a postgres whose parent is not one."""
    procs = snapshot[1]
    return next((pid for pid, (_, ppid, comm) in procs.items()
                 if comm.startswith("postgres") and not procs.get(ppid, (0, 0, ""))[2].startswith("postgres")), None)


def cpu_by_role(before: tuple, after: tuple, seconds: float, supervisor: int, sink: int | None, *,
                supervisor_role: str = "workers", sink_role: str = "smtp-sink",
                self_role: str = "benchmark (scheduler, sampler)") -> dict:
    """CPU seconds each role used between two snapshots, and what the rest of the machine used:
    ``supervisor`` and its descendants, the ``sink`` process, this process, PostgreSQL, Redis."""
    (busy0, p0), (busy1, p1) = before, after

    def role(pid: int) -> str:
        seen = set()
        while pid not in seen and pid in p1:
            seen.add(pid)
            if pid == supervisor:
                return supervisor_role
            pid = p1[pid][1]
        return ""

    used: Counter[str] = Counter()
    others: Counter[str] = Counter()
    for pid, (jiffies, _, comm) in p1.items():
        delta = jiffies - p0.get(pid, (0,))[0]
        if delta <= 0:
            continue
        name = (role(pid) or (self_role if pid == os.getpid() else sink_role if pid == sink
                else "postgres" if comm.startswith("postgres") else "redis" if comm.startswith("redis") else ""))
        (used if name else others)[name or comm] += delta
    machine = (busy1 - busy0) / TICK
    out = {k: round(v / TICK, 1) for k, v in used.most_common()}
    out["everything else"] = round(machine - sum(used.values()) / TICK, 1)
    out["everything else, largest"] = {k: round(v / TICK, 1) for k, v in others.most_common(3)}
    out["machine busy"] = round(machine, 1)
    out["machine capacity"] = round(seconds * (os.cpu_count() or 1), 1)
    return out


def wait_quiet(limit: float) -> float:
    """Wait up to ``limit`` s for a second in which the machine is less than 25% busy; return the busy share."""
    until = time.monotonic() + limit
    while True:
        before = cpu_snapshot()[0]
        time.sleep(1.0)
        share = (cpu_snapshot()[0] - before) / TICK / (os.cpu_count() or 1)
        if share < 0.25 or time.monotonic() >= until:
            return round(share, 2)


def loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


def machine_before(result: dict, wait_quiet_s: float, deadline: float) -> None:
    """With ``--wait-quiet S``, first wait up to S s for a quiet machine; then record the load average."""
    if wait_quiet_s:
        log(f"waiting up to {wait_quiet_s:.0f} s for a quiet machine")
        result["machine_busy_share_before"] = wait_quiet(min(wait_quiet_s, deadline - time.monotonic()))
    result["loadavg_before"] = loadavg()


class WorkerSampler(threading.Thread):
    """Every 0.2 s: each worker process's peak RSS (VmHWM, the kernel's own peak: nothing between
    samples is missed) into ``hwm``, then whatever ``sample`` adds."""

    def __init__(self, supervisor: int) -> None:
        super().__init__(daemon=True, name="sampler")
        self.supervisor = supervisor
        self.hwm: dict[int, int] = {}
        self.stop = threading.Event()

    def sample(self) -> None:
        """More figures each round (subclasses)."""

    def run(self) -> None:
        while not self.stop.wait(0.2):
            for pid in spawned_children(self.supervisor):
                hwm = proc_kib(pid, "VmHWM")
                if hwm is not None:
                    self.hwm[pid] = max(self.hwm.get(pid, 0), hwm)
            self.sample()


# ----------------------------------------------------------------------------- workers
def redis_db_is_ours(rds: redis.Redis) -> None:
    """Refuse a Redis db that other clients use: flushing it would break them, and their workers
    would take this run's messages (or this run's workers theirs)."""
    db, me = rds.connection_pool.connection_kwargs.get("db", 0), rds.client_id()
    others = [c for c in rds.client_list() if int(c.get("db", -1)) == db and int(c["id"]) != me]
    if others:
        raise RuntimeError(f"Redis db {db} has {len(others)} other client(s) (another benchmark or worker?): "
                           "set BENCH_REDIS_URL to a free db, e.g. redis://127.0.0.1:6379/13")


def start_workers(args: argparse.Namespace, env: dict, log_path: Path) -> subprocess.Popen:
    """``campaign-dispatch worker --processes P --threads T`` in a session (process group) of its own."""
    exe = Path(sys.executable).with_name("campaign-dispatch")
    cmd = [str(exe), "worker", "--processes", str(args.processes), "--threads", str(args.threads)]
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=log_path.open("ab"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_workers(proc: subprocess.Popen, what: str = "workers") -> None:
    """SIGTERM to the supervisor (which stops its children); SIGKILL its process group after 45 s.
    Any supervisor started in a session of its own (``start_new_session``): ``what`` names it in the log."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(45)
        except subprocess.TimeoutExpired:
            log(f"{what} did not stop within 45 s: killing their process group")
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # leftovers of the group we started, if any
    except ProcessLookupError:
        pass
    proc.wait()


def wait_ready(rds: redis.Redis, proc: subprocess.Popen, processes: int, deadline: float) -> None:
    """Each worker process's consumer has fetched from Redis at least once (Dramatiq heartbeats)."""
    from worker.runtime.broker import NAMESPACE

    while rds.zcard(f"{NAMESPACE}:__heartbeats__") < processes:
        if proc.poll() is not None:
            raise RuntimeError(f"the worker supervisor exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise TimeoutError("workers not ready")
        time.sleep(0.1)


def cleanup(steps: Iterable[Callable[[], Any]]) -> None:
    """Run each cleanup step, logging (not raising) a failure, so that the others still run."""
    for step in steps:
        try:
            step()
        except Exception as exc:  # noqa: BLE001 - go on with the other cleanups
            log(f"cleanup failed: {type(exc).__name__}: {exc}")


# ----------------------------------------------------------------------------- servers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port: int, seconds: float, interval: float, proc: subprocess.Popen | None = None) -> bool:
    """Whether 127.0.0.1:``port`` accepts a connection within ``seconds`` (False as soon as ``proc`` exits)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            if proc is not None and proc.poll() is not None:
                return False
            time.sleep(interval)
    return False


def wait_http_ok(url: str, seconds: float, interval: float, proc: subprocess.Popen | None = None) -> bool:
    """Whether ``GET url`` answers 200 within ``seconds`` (False as soon as ``proc`` exits)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return True
        except (OSError, urllib.error.URLError):  # refused while starting, 503 while a dependency is down
            pass
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(interval)
    return False


def terminate(proc: subprocess.Popen, grace: float) -> None:
    """SIGTERM, and SIGKILL when it has not exited after ``grace`` s."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


SINK = "/usr/sbin/smtp-sink"
INSTALL = ("apt-get update && echo 'postfix postfix/main_mailer_type select No configuration' | "
           "debconf-set-selections && DEBIAN_FRONTEND=noninteractive apt-get install -y "
           "--no-install-recommends postfix")


def apt_command(package: str) -> str:
    """The command that installs one Debian package (no recommends, no questions)."""
    return f"apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {package}"


def ensure_installed(binary: str, install: str, note: str = "") -> bool:
    """Whether ``binary`` is there, after running ``install`` (as root, with apt-get) if it was not.
    Package scripts start no daemon meanwhile. Says why on stderr when it is still missing."""
    if os.access(binary, os.X_OK):
        return True
    name = Path(binary).name
    if os.geteuid() != 0 or not Path("/usr/bin/apt-get").exists():
        print(f"{name} is missing; install it with (as root):\n  {install}", file=sys.stderr)
        return False
    log(f"{name} is missing: installing it{note}")
    # policy-rc.d exit 101 keeps the package scripts from starting daemons (postfix's).
    policy = Path("/usr/sbin/policy-rc.d")
    created = not policy.exists()
    if created:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        subprocess.run(["bash", "-c", install], check=False, stdout=subprocess.DEVNULL)
    finally:
        if created:
            policy.unlink()
    if not os.access(binary, os.X_OK):
        print(f"could not install {name}; run:\n  {install}", file=sys.stderr)
        return False
    return True


def ensure_smtp_sink() -> str:
    """The smtp-sink binary, installing Debian's postfix (without starting its daemon) if needed."""
    if not ensure_installed(SINK, INSTALL, " (Debian's postfix; its daemon is not started)"):
        sys.exit(2)
    return SINK


class Sink:
    """smtp-sink on 127.0.0.1: accepts and discards. ``-c`` prints running counters, which it
    flushes only to a terminal: it writes to a pty that a thread reads. ``options``: more of
    smtp-sink's (``-p``: no PIPELINING)."""

    def __init__(self, binary: str, options: Sequence[str] = ()) -> None:
        self.port = free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        self.cmd = [binary, "-c", "-a", *user, *options, "-m", "512", f"127.0.0.1:{self.port}", "1000"]
        master, slave = os.openpty()
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave)
        os.close(slave)
        self._count, self._tail = 0, ""
        threading.Thread(target=self._read, args=(master,), daemon=True, name="sink-reader").start()
        if not wait_listening(self.port, 10, 0.05):
            raise RuntimeError(f"smtp-sink did not start: {self._tail}")

    def _read(self, fd: int) -> None:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            self._tail = (self._tail + chunk.decode(errors="replace"))[-400:]
            lines = [x for x in self._tail.split("\r")[:-1] if "mesg=" in x]  # complete lines only
            if lines:
                self._count = int(lines[-1].rsplit("mesg=", 1)[1].split()[0])
        os.close(fd)

    def count(self, settle: float = 0.0) -> int:
        """Messages received so far (``sess=.. quit=.. mesg=N``); ``settle``: wait until it stops moving."""
        value = self._count
        for _ in range(20 if settle else 0):
            time.sleep(settle)
            if self._count == value:
                break
            value = self._count
        return value

    def stop(self) -> None:
        terminate(self.proc, 5)


S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


def start_moto(log_path: Path) -> tuple[subprocess.Popen, str]:
    """moto's S3 server as a subprocess (its CPU and memory are then its own); its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log_path.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    if wait_listening(port, 20, 0.1, proc):
        return proc, f"http://127.0.0.1:{port}"
    proc.kill()
    raise RuntimeError(f"moto_server did not start (see {log_path})")


# ----------------------------------------------------------------------------- driving a campaign
def drive(app: App, campaign_id: str, t_create: float, deadline: float, jobs: Callable[[App], Callable[[], Any]],
          read: Callable[[Session, Campaign], Any] | None = None, note: Callable[[dict, float, Any], None] | None = None,
          digits: int | None = None) -> dict:
    """The scheduler's jobs every 0.5 s until the campaign is final; phase times in seconds from creation.

    ``jobs(app)`` gives what runs the jobs once. Each tick reads the campaign (and what
    ``read(session, campaign)`` reads in the same session), marks ``claimed_s`` and ``fanned_out_s``,
    lets ``note(marks, now, what_read)`` add its marks, and returns them with ``final_s`` and
    ``status`` once the campaign is final. ``digits``: the times rounded so.
    """
    from storage.models import Campaign

    run_jobs = jobs(app)
    marks: dict = {}
    # The App's own broker carries the scheduler's messages; app.close() closes it.
    while True:
        started = time.monotonic()
        if started > deadline:
            raise TimeoutError(f"campaign not final: {marks}")
        run_jobs()
        with app.sessions() as session:
            c = session.get(Campaign, campaign_id)
            status, dispatched = c.status, c.dispatched_at
            seen = read(session, c) if read else None
        now = time.monotonic() - t_create
        if digits is not None:
            now = round(now, digits)
        if status != "pending":
            marks.setdefault("claimed_s", now)
        if dispatched is not None:
            marks.setdefault("fanned_out_s", now)
        if note:
            note(marks, now, seen)
        if status in ("completed", "failed", "cancelled"):
            marks["final_s"], marks["status"] = now, status
            return marks
        time.sleep(max(0.0, 0.5 - (time.monotonic() - started)))


def phases(marks: dict, more: dict | None = None) -> dict[str, float]:
    """The ``*_s`` marks (and ``more``), rounded to 10 ms, in the order they happened."""
    found = {k: round(v, 2) for k, v in marks.items() if k.endswith("_s")} | (more or {})
    return dict(sorted(found.items(), key=lambda kv: kv[1]))


def steady_rate(series: list[tuple[float, int]], start: int, total: int, digits: int | None = None) -> float | None:
    """Items/s between 10% and 90% of the campaign (no fan-out, no tail), from (time, count so far)
    samples whose count stood at ``start`` before it."""
    lo, hi = start + total // 10, start + total * 9 // 10
    a = next((p for p in series if p[1] >= lo), None)
    b = next((p for p in series if p[1] >= hi), None)
    return round((b[1] - a[1]) / (b[0] - a[0]), digits) if a and b and b[0] > a[0] else None


# ----------------------------------------------------------------------------- profiles
def start_profilers(pids: list[int], prefix: str, rate: int, gil: bool = False) -> list[tuple[subprocess.Popen, Path]]:
    """py-spy on each worker process, raw collapsed stacks to results/<prefix>-pyspy-<pid>.txt; all
    threads (idle excluded), or with ``gil`` only the one holding the GIL, so that the shares are of
    the CPU the process's Python code gets (a worker process is GIL-bound)."""
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        log(f"--profile needs py-spy: {Path(sys.executable).with_name('pip')} install py-spy")
        return []
    out = []
    for pid in pids:
        path = RESULTS / f"{prefix}-pyspy-{pid}.txt"
        cmd = [str(spy), "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
               *(["--gil"] if gil else []), "--nonblocking", "--output", str(path)]
        out.append((subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), path))
    return out


def stop_profilers(profilers: list[tuple[subprocess.Popen, Path]]) -> None:
    for spy, _ in profilers:
        spy.send_signal(signal.SIGINT)


def collect_profiles(profilers: list[tuple[subprocess.Popen, Path]], result: dict, key: str,
                     summarize: Callable[[Path], dict]) -> None:
    """Wait for each py-spy to write its file; ``result[key][file name]``: ``summarize(file)``."""
    for spy, path in profilers:
        spy.wait(30)
        if path.exists():
            result.setdefault(key, {})[path.name] = summarize(path)


def summarize_profile(path: Path, labels: list[tuple[str, str]], nearest_leaf: bool = False,
                      set_aside: tuple[str, str] | None = None) -> dict:
    """Share (%) of the samples per label, from py-spy's raw (collapsed stack) output. A sample counts
    for the first label whose text is in its stack or, with ``nearest_leaf``, for the frame nearest
    the leaf that matches one (labels may repeat: their counts add up). ``set_aside`` = (label, key):
    that label's samples are left out of the shares and given as ``key``."""
    counts: Counter[str] = Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")[::-1] if nearest_leaf else [stack]
        name = next((label for frame in frames for label, needle in labels if needle in frame), "other")
        counts[name] += int(n)
    aside = {set_aside[1]: counts.pop(set_aside[0], 0)} if set_aside else {}
    total = sum(counts.values()) or 1
    return {k: round(100 * v / total, 1) for k, v in counts.most_common()} | {"samples": total} | aside


# ----------------------------------------------------------------------------- figures
def git_describe() -> str:
    return subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                          capture_output=True, text=True, check=False).stdout.strip()


def tuning_env() -> dict[str, str]:
    """The worker tuning variables set in this environment."""
    return {k: os.environ[k] for k in TUNING if k in os.environ}


def reproduce_command(script: str, options: Iterable[str], env: dict[str, str] | None = None) -> str:
    """``[VAR=value ...] .venv/bin/python benchmarks/<script> <options>``."""
    import shlex

    return " ".join([*(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()),
                     f".venv/bin/python benchmarks/{script}", *options])


def target_lines(met: dict[str, bool]) -> list[str]:
    return [f"target {name}: {'met' if ok else 'NOT met'}" for name, ok in met.items()]


def end_summary(lines: list[str], r: dict) -> str:
    """The summary's lines, with the error last when there was one."""
    if "error" in r:
        lines.append(f"error: {r['error']}")
    return "\n".join(lines)


@contextmanager
def recorded(result: dict, out: Path, summary: Callable[[dict], str], reproduce: str, *,
             watchdog: float | None = None, started: float | None = None, print_json: bool = True) -> Iterator[None]:
    """Whatever happens in the block, save ``result`` as JSON to ``out`` and print it (unless not
    ``print_json``), then ``summary(result)``, where it went and the reproduce command.

    An exception is recorded as ``error`` and raised again; with ``watchdog`` (the run's timeout), a
    TimeoutError is recorded as the watchdog's and not raised. With ``started`` (time.monotonic()),
    ``wall_s`` is recorded too.
    """
    try:
        yield
    except Exception as exc:
        if watchdog is not None and isinstance(exc, TimeoutError):
            result["error"] = f"watchdog: not done after {watchdog:.0f} s ({exc})"
        else:
            result["error"] = f"{type(exc).__name__}: {exc}"
            raise
    finally:
        if started is not None:
            result["wall_s"] = round(time.monotonic() - started, 1)
        out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        if print_json:
            print(json.dumps(result, indent=2, ensure_ascii=False))
        print(summary(result))
        print(f"saved: {out.relative_to(ROOT)}\nreproduce: {reproduce}")


def exit_status(ok: bool, result: dict) -> int:
    """0 when every check held, 3 when the watchdog stopped the run, 1 otherwise."""
    return 0 if ok else (3 if "watchdog" in result.get("error", "") else 1)
