"""`SMTP_URL`: where and how to connect to the relay; malformed URLs are errors naming the variable."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit


@dataclass(frozen=True)
class SmtpConfig:
    """Where and how to connect: `smtp://[user:pass@]host:port[?starttls=true]` or `smtps://…`."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    use_tls: bool = False  # implicit TLS (smtps)
    start_tls: bool = False
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str) -> SmtpConfig:
        """Parse an SMTP_URL; a malformed one raises ValueError naming SMTP_URL (never its password)."""
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        if scheme not in ("smtp", "smtps"):
            raise ValueError(f"SMTP_URL: scheme must be smtp or smtps, not {parts.scheme or 'missing'!r}")
        if not parts.hostname:
            raise ValueError("SMTP_URL: a host is required, e.g. smtp://mail.example.com:25")
        try:
            port = parts.port
        except ValueError:
            raise ValueError("SMTP_URL: port must be a number between 1 and 65535") from None
        if port == 0:
            raise ValueError("SMTP_URL: port must be a number between 1 and 65535")
        if parts.path not in ("", "/") or parts.fragment:
            raise ValueError("SMTP_URL: must not have a path or fragment")
        username = unquote(parts.username) if parts.username is not None else None
        password = unquote(parts.password) if parts.password is not None else None
        if username is not None and password is None or not username and password:
            raise ValueError("SMTP_URL: credentials need both a user name and a password (user:pass@)")
        start_tls, timeout = False, 30.0
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "starttls" and value.lower() in ("true", "1", "yes", "false", "0", "no"):
                start_tls = value.lower() in ("true", "1", "yes")
            elif key == "timeout" and _positive_float(value):
                timeout = float(value)
            else:
                raise ValueError(f"SMTP_URL: unsupported option {key}={value!r} (known: starttls=true|false)")
        if start_tls and scheme == "smtps":
            raise ValueError("SMTP_URL: starttls does not apply to smtps:// (already TLS)")
        return cls(
            host=parts.hostname, port=port or (465 if scheme == "smtps" else 25),
            username=username or None, password=password if username else None,
            use_tls=scheme == "smtps", start_tls=start_tls, timeout=timeout,
        )

    @property
    def safe_url(self) -> str:
        """The URL for logs, password hidden."""
        auth = f"{self.username}:***@" if self.username else ""
        host = f"[{self.host}]" if ":" in self.host else self.host
        query = "?starttls=true" if self.start_tls else ""
        return f"{'smtps' if self.use_tls else 'smtp'}://{auth}{host}:{self.port}{query}"


def _positive_float(value: str) -> bool:
    try:
        return float(value) > 0
    except ValueError:
        return False
