"""The one typed settings object, read from the environment at the entry point (CONTRACT section 2)."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


DEFAULT_DATABASE_URL = "sqlite:///var/campaign-dispatch.db"  # var/ relative to the current directory


def _default_log_format() -> str:
    return "console" if sys.stderr.isatty() else "json"


class Settings(BaseSettings):
    """Service configuration. Built once by the CLI and passed down as plain values."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore")

    database_url: str = Field(default=DEFAULT_DATABASE_URL)
    broker_url: str = Field(default="memory://")
    # None means: `run`/`demo` start a local capturing SMTP server writing a Maildir under var/mail.
    smtp_url: str | None = Field(default=None)
    storage_url: str = Field(default_factory=lambda: "file://" + str(Path("var/objects").resolve()))
    campaign_domain_suffix: str = Field(default="easircampaigns.com")
    scheduler_interval: float = Field(default=5.0, gt=0)
    send_rate: int = Field(default=0, ge=0)  # emails per second, all workers together; 0 = no limit
    max_send_errors: int = Field(default=1000, ge=0)  # failed recipients that pause a campaign; 0 = never
    # Port of the Prometheus /metrics (and /healthz) endpoint of `worker` and `scheduler`; 0 = off.
    metrics_port: int = Field(default=0, ge=0, le=65535)
    # Operational tuning (not in the contract; documented in the README).
    delivery_batch_size: int = Field(default=200, ge=1, le=5000)
    smtp_pool_size: int = Field(default=20, ge=1, le=100)
    db_pool_size: int = Field(default=20, ge=1, le=500)
    # A row `sending` this long without its worker's heartbeat (every third of it) is taken back.
    lease_seconds: float = Field(default=15.0, gt=0)
    stall_seconds: float = Field(default=30.0, gt=0)
    max_attempts: int = Field(default=8, ge=1)
    retry_base_seconds: float = Field(default=10.0, gt=0)
    # WeasyPrint internals hooked for speed (renderers/pdf_hooks.py); off lays letters out as shipped.
    weasyprint_hooks: bool = Field(default=True)
    # Directory of DKIM private keys, <selector>.<domain>.pem or .ed25519; None (unset) = no signing.
    dkim_keys_dir: str | None = Field(default=None)
    log_format: Literal["json", "console"] = Field(default_factory=_default_log_format)
    log_level: str = Field(default="INFO")

    @field_validator("log_level")
    @classmethod
    def _upper_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_format(cls, value: str) -> str:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _driver(cls, value: str) -> str:
        # Plain postgresql:// URLs would pick psycopg2, which is not installed: use psycopg 3.
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            value = "postgresql+psycopg://" + value.split("://", 1)[1]
        scheme = value.split("://", 1)[0] if "://" in value else ""
        if scheme not in ("sqlite", "postgresql+psycopg"):
            raise ValueError("must be postgresql+psycopg://user@host:port/database or sqlite:///path/to/file.db")
        if scheme == "sqlite":
            path = value.split("://", 1)[1].removeprefix("/")
            # A folder the user named must exist: nothing is created but the default's var/.
            if (value != DEFAULT_DATABASE_URL and path and path != ":memory:"
                    and not Path(path.split("?", 1)[0]).parent.is_dir()):
                raise ValueError(f"the folder of {path.split('?', 1)[0]} does not exist: create it first")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker(cls, value: str) -> str:
        if value != "memory://" and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be redis://host:port/db (rediss:// for TLS), or memory:// for run and demo")
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp(cls, value: str | None) -> str | None:
        if value and not value.startswith(("smtp://", "smtps://")):
            raise ValueError("must be smtp://[user:password@]host:port (?starttls=true) or smtps://...")
        if value:  # the rest (options) is read where the pool is made: worker.channels.smtp_config
            parts = urlsplit(value)
            try:
                port = parts.port
            except ValueError:
                port = 0
            if not parts.hostname or port == 0:
                raise ValueError("needs a host and a port from 1 to 65535: smtp://[user:password@]host:port")
        return value or None

    @field_validator("storage_url")
    @classmethod
    def _storage(cls, value: str) -> str:
        if value.startswith("s3://"):
            if not value[len("s3://"):].split("/", 1)[0]:
                raise ValueError("s3:// needs a bucket: s3://bucket[/prefix]")
        elif value.startswith("file://"):
            if not value[len("file://"):].startswith("/"):
                raise ValueError("file:// needs an absolute path: file:///srv/objects")
        else:
            raise ValueError("must be s3://bucket[/prefix] or file:///absolute/path")
        return value

    @field_validator("dkim_keys_dir")
    @classmethod
    def _dkim_keys(cls, value: str | None) -> str | None:
        if not value:  # set but empty, as in an .env file's `DKIM_KEYS_DIR=`: unset
            return None
        # Read and check every key now, so a bad one stops the start naming its file instead of
        # failing each email. The App loads them again for use (renderers.dkim.load_keys).
        from renderers.dkim import DkimKeyError, load_keys

        try:
            load_keys(value)
        except DkimKeyError as exc:
            raise ValueError(str(exc)) from None
        return value
