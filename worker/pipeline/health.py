"""Does each dependency answer? One sentence per dependency, saying what to do when it does not.

Used by ``campaign-dispatch health`` (exec probes), by ``worker``, ``scheduler``, ``run`` and ``api``
before they start, and by the ``/healthz`` endpoints. Every check gives up within a few seconds.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

from worker.pipeline.app import App
from worker.runtime.broker import is_memory

OK = "ok"
TIMEOUT = 5.0  # seconds a check waits for an answer
CHECKS = ("database", "broker", "smtp", "storage")


def _host(url: str) -> str:
    parsed = make_url(url) if "://" in url else None
    if parsed is None or not parsed.host:
        return url.split("://", 1)[-1].rsplit("@", 1)[-1]
    return f"{parsed.host}:{parsed.port}" if parsed.port else parsed.host


def check_database(app: App) -> str:
    """The database answers and its schema is at the newest revision this version ships."""
    try:
        with app.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
            try:
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            except Exception:  # noqa: BLE001 - no such table: never migrated
                revision = None
    except Exception as exc:  # noqa: BLE001 - reported as a sentence
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:200]
        return (f"cannot reach the database at {_host(app.settings.database_url)} ({first}): "
                "start it, or correct DATABASE_URL")
    head = newest_revision()
    if revision is None:
        return "the database has no schema: run `campaign-dispatch db upgrade`"
    if revision != head:
        return (f"the database's schema is at revision {revision}, this version needs {head}: "
                "run `campaign-dispatch db upgrade`")
    return OK


def newest_revision() -> str:
    """The newest migration this version ships (Alembic's head)."""
    from alembic.script import ScriptDirectory

    from storage.migrate import MIGRATIONS

    return ScriptDirectory(str(MIGRATIONS)).get_current_head()


def check_broker(app: App) -> str:
    """Redis answers a PING (the in-process broker always does)."""
    url = app.settings.broker_url
    if is_memory(url):
        return OK
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"cannot reach Redis at {_host(url)} ({exc}): start it, or correct BROKER_URL"
    finally:
        client.close()
    return OK


def check_smtp(app: App) -> str:
    """The relay answers, takes EHLO and (with credentials in SMTP_URL) our login: the connection a
    send would open, with the sentence a brake would give when it cannot."""
    url = app.smtp_url or app.settings.smtp_url
    if not url:
        return "not configured (SMTP_URL unset: `run` and `demo` capture mail locally)"
    from worker.channels.smtp import CampaignWideSmtpError, SmtpConfig, SmtpPool

    config = replace(SmtpConfig.from_url(url), timeout=TIMEOUT)

    async def probe() -> None:
        pool = SmtpPool(config, size=1)
        try:
            await pool.probe()
        finally:
            await pool.close()

    try:
        asyncio.run(asyncio.wait_for(probe(), TIMEOUT * 2))
    except CampaignWideSmtpError as exc:
        return str(exc)
    except asyncio.TimeoutError:
        return f"the SMTP server at {config.safe_url} did not answer within {TIMEOUT * 2:g} s: check SMTP_URL"
    return OK


def check_storage(app: App) -> str:
    """Files can be stored: the folder of file:// is writable, the S3 bucket answers."""
    url = app.settings.storage_url
    if url.startswith("file://"):
        root = Path(url[len("file://"):])
        probe_in = root
        while not probe_in.is_dir() and probe_in != probe_in.parent:  # created on first use
            probe_in = probe_in.parent
        if not os.access(probe_in, os.W_OK):
            return f"cannot write to {root}: create it (writable by this user), or correct STORAGE_URL"
        try:
            with tempfile.TemporaryFile(dir=probe_in):
                pass
        except OSError as exc:
            return f"cannot write to {root} ({exc}): correct its permissions, or STORAGE_URL"
        return OK
    try:
        app.store.check()
    except Exception as exc:  # noqa: BLE001 - reported as a sentence
        first = str(exc).strip().splitlines()[0][:200] if str(exc) else type(exc).__name__
        return f"cannot reach the bucket of {url} ({first}): check STORAGE_URL and the AWS_* credentials"
    return OK


_RUN = {"database": check_database, "broker": check_broker, "smtp": check_smtp, "storage": check_storage}


def check(app: App, which: Iterable[str] = CHECKS) -> dict[str, str]:
    """``{dependency: "ok" or what to do}`` for each of ``which``."""
    return {name: _RUN[name](app) for name in which}


def healthy(results: dict[str, str]) -> bool:
    """True when every dependency answered (an SMTP server that is not configured is not a failure)."""
    return all(result == OK or result.startswith("not configured") for result in results.values())
