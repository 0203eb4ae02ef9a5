"""The object store interface, object keys and the error for a missing object."""

from __future__ import annotations

import io

import re
from abc import ABC, abstractmethod
from contextlib import AbstractContextManager
from typing import BinaryIO

from storage.errors import NotFound

_PART = re.compile(r"[A-Za-z0-9._-]+")

# S3 caps a presigned URL's life at seven days; asking for more fails only when the URL is used.
MAX_URL_EXPIRES = 7 * 24 * 3600


# How long a download URL is valid: the seed says "The URL is valid for 5 minutes!".
URL_SECONDS = 300

class ObjectMissing(NotFound):
    """No object is stored under the key."""

    def __init__(self, key: str) -> None:
        super().__init__(f"no object stored under key {key!r}")
        self.key = key


def _check_part(part: object) -> str:
    if not isinstance(part, str) or not _PART.fullmatch(part) or ".." in part or part == ".":
        raise ValueError(
            f"invalid object key part {part!r}: expected an id-like name of [A-Za-z0-9._-], without '..'"
        )
    return part


def make_key(*parts: str) -> str:
    """Join id-like parts into an object key (``make_key("letters", "42", "7.pdf")`` -> ``letters/42/7.pdf``).

    Keys are built from ids only, never from user text: a part outside ``[A-Za-z0-9._-]+``, a ``..``
    or an empty list raises ValueError.
    """
    if not parts:
        raise ValueError("an object key needs at least one part")
    return "/".join(_check_part(part) for part in parts)


def check_key(key: str) -> str:
    """Return ``key`` if every ``/``-separated part of it is one :func:`make_key` accepts, else raise ValueError."""
    if not isinstance(key, str) or not key:
        raise ValueError(f"invalid object key {key!r}")
    for part in key.split("/"):
        _check_part(part)
    return key


def check_expires(expires: int) -> int:
    """Return ``expires`` if it is a whole number of seconds S3 can sign for, else raise ValueError."""
    if isinstance(expires, bool) or not isinstance(expires, int) or not 1 <= expires <= MAX_URL_EXPIRES:
        raise ValueError(f"expires must be a whole number of seconds from 1 to {MAX_URL_EXPIRES}, got {expires!r}")
    return expires


class ObjectStore(ABC):
    """Bytes under keys made by :func:`make_key`: an S3 bucket or a local directory."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        """Store ``data`` under ``key`` (replacing any object there); return its size in bytes."""

    @abstractmethod
    def open_writer(self, key: str, content_type: str) -> AbstractContextManager[BinaryIO]:
        """A context manager yielding a write-only, non-seekable binary file for streaming a large object.

        The object appears under ``key`` only when the block exits cleanly; if the block raises, nothing
        is left behind. ``tell()`` works, so the file can be the target of ``zipfile.ZipFile(f, "w")``.
        """

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The object's content; ObjectMissing if there is none."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under ``key``."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes; ObjectMissing if there is none."""

    @abstractmethod
    def url(self, key: str, expires: int = URL_SECONDS, filename: str | None = None) -> str:
        """A URL to download the object: presigned for ``expires`` seconds on S3, ``file://`` locally.

        ``filename`` asks the browser to save the download under that name (S3 only).
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing object is not an error."""

    @abstractmethod
    def delete_all(self, folder: str) -> int:
        """Remove every object whose key starts with ``folder + "/"``; return how many there were."""

    def check(self) -> None:
        """Raise when the store cannot be reached (health checks); returns quietly when it can."""


class StreamWriter(io.RawIOBase):
    """A write-only, non-seekable binary stream that counts what it was given (``tell()``).

    Subclasses store the bytes in ``_store``. Both backends hide seeking, so what a caller writes
    (a ZIP with data descriptors, say) is byte-for-byte the same on each: local runs prove S3 ones.
    """

    def __init__(self) -> None:
        super().__init__()
        self._written = 0

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        self._checkClosed()
        return self._written

    def write(self, data) -> int:  # type: ignore[override]
        self._checkClosed()
        view = memoryview(data).cast("B")
        self._store(view)
        self._written += len(view)
        return len(view)

    def _store(self, view: memoryview) -> None:
        raise NotImplementedError

