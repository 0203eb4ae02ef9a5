"""Objects as files under a local directory (``STORAGE_URL=file:///absolute/path``)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from storage.objectstore.base import ObjectMissing, ObjectStore, StreamWriter, URL_SECONDS, check_expires, check_key


class LocalWriter(StreamWriter):
    """Write-only, non-seekable view of a temporary file (see StreamWriter for why it hides seeking)."""

    def __init__(self, file: BinaryIO) -> None:
        super().__init__()
        self._file = file

    def _store(self, view: memoryview) -> None:
        self._file.write(view)


class LocalStore(ObjectStore):
    """Keys map to files under ``root``; each write lands atomically through a rename."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """The file that holds ``key``; ValueError for a key that is not id-like or leaves the root."""
        path = (self.root / check_key(key)).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise ValueError(f"object key {key!r} resolves outside the store's directory")
        return path

    @contextmanager
    def _atomic(self, key: str) -> Iterator[BinaryIO]:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as file:
                yield file
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        with self._atomic(key) as file:
            file.write(data)
        return len(data)

    @contextmanager
    def open_writer(self, key: str, content_type: str) -> Iterator[BinaryIO]:
        with self._atomic(key) as file:
            writer = LocalWriter(file)
            yield writer  # type: ignore[misc]
            writer.close()

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectMissing(key) from None

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def size(self, key: str) -> int:
        path = self.path(key)
        if not path.is_file():
            raise ObjectMissing(key)
        return path.stat().st_size

    def url(self, key: str, expires: int = URL_SECONDS, filename: str | None = None) -> str:
        # A file URL neither expires nor names the download; both are still checked so that a bad
        # call fails on a developer's machine, not first in production.
        check_expires(expires)
        return self.path(key).as_uri()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_all(self, folder: str) -> int:
        path = self.path(folder)
        if not path.is_dir():
            return 0
        count = sum(1 for item in path.rglob("*") if item.is_file() and not item.name.startswith("."))
        shutil.rmtree(path)
        return count
