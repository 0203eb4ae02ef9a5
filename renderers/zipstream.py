"""The letters ZIP: safe entry names, and a writer that streams one entry at a time.

``write_zip`` writes to any binary file object, seekable or not (an S3 multipart upload, a pipe):
on a non-seekable target ``zipfile`` puts each entry's sizes in a data descriptor after its data,
so only the entry being written is in memory. The central directory's records wait in a temporary
file, not in memory as zipfile keeps them (760 bytes per entry: ~725 MiB for a million letters);
names already used are remembered as 16-byte digests, in one set.

Entries are DEFLATED at level 1: WeasyPrint compresses a PDF's streams already, but deflating the
rest still saves ~5% for ~0.2 ms a letter, under 1% of rendering it; level 6 saves no more
(``benchmarks/letter_render.py`` measures both).
"""

from __future__ import annotations

import hashlib
import pickle
import re
import tempfile
import time
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator
from typing import BinaryIO

COMPRESSION, LEVEL = zipfile.ZIP_DEFLATED, 1
MAX_NAME = 100
"""Longest entry name, ``.pdf`` included: well under every file system's limit."""
_ID_MAX = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")  # "." too: dots only appear in ".pdf"
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
# Letters NFKD does not split into a base letter and an accent.
_SPELLED = str.maketrans({
    "Ø": "O", "ø": "o", "Æ": "AE", "æ": "ae", "Œ": "OE", "œ": "oe", "ß": "ss", "Đ": "D",
    "đ": "d", "Ð": "D", "ð": "d", "Ł": "L", "ł": "l", "Þ": "Th", "þ": "th", "ı": "i",
})


def _ascii(text: str) -> str:
    """``text`` in ``[A-Za-z0-9_-]``: accents dropped (Ø -> O, é -> e), the rest a dash."""
    decomposed = unicodedata.normalize("NFKD", text.translate(_SPELLED))
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _UNSAFE.sub("-", plain).strip("-_")


def _name_key(name: str) -> bytes:
    # Archives get unpacked on case-insensitive file systems: names that differ in case collide.
    return hashlib.blake2b(name.casefold().encode("utf-8", "surrogatepass"), digest_size=16).digest()


def safe_entry_name(contact_id: str, name_hint: str | None, used: set[bytes], *, register: bool = True) -> str:
    """A ZIP entry name for a contact's letter: ``<hint>-<contact id>.pdf``.

    Only ``[A-Za-z0-9._-]``, never starting with ``.`` or ``-``, no ``..`` or ``/``, at most
    ``MAX_NAME`` characters, and unique in the archive, case aside (archives get unpacked on
    case-insensitive file systems): ``used`` holds digests of the names given so far and is updated,
    unless ``register`` is False: then ``used`` is the ``seen`` set ``write_zip`` fills as it writes,
    and the entries are made one at a time as it asks for them (one set for a million names, not two).
    A contact named ``../../etc`` gives ``etc-<contact id>.pdf``. Raises ValueError for an
    empty contact id.
    """
    cid = _ascii(contact_id)
    if not cid:
        raise ValueError("contact_id: a letter's entry name needs the contact's id")
    if cid != contact_id or len(cid) > _ID_MAX:  # keep unlike ids apart once simplified
        digest = hashlib.sha256(contact_id.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        cid = f"{cid[:_ID_MAX - 9]}-{digest}"
    room = MAX_NAME - len(".pdf") - len("-99999")  # space for a counter that keeps it unique
    hint = _ascii(name_hint or "")[: max(0, room - len(cid) - 1)].strip("-_")
    stem = f"{hint}-{cid}" if hint else cid
    name, n = f"{stem}.pdf", 1
    key = _name_key(name)
    while key in used:
        n += 1
        name = f"{stem}-{n}.pdf"
        key = _name_key(name)
    if register:
        used.add(key)
    return name


def write_zip(
    target: BinaryIO, entries: Iterable[tuple[str, Callable[[], bytes] | bytes]],
    seen: set[bytes] | None = None,
) -> int:
    """Stream a ZIP of ``entries`` (name, bytes or a function returning them) into ``target``.

    Each function is called when its entry is written, so a generator of entries keeps one
    document in memory at a time. Names must be safe (see ``safe_entry_name``) and unique;
    otherwise ValueError, before that entry is written. ``seen`` (new if not given) receives the
    digest of each name written. Returns the number of entries written.
    After any error the target holds an archive of the entries before it: discard it.
    """
    written = 0
    seen = set() if seen is None else seen
    stamp = time.gmtime()[:6]
    records = _SpooledRecords()
    try:
        with zipfile.ZipFile(target, "w") as archive:
            archive.filelist = records  # type: ignore[assignment]  # see _SpooledRecords
            archive.NameToInfo = _NoIndex()
            for name, data in entries:
                if not _SAFE_NAME.fullmatch(name) or ".." in name or len(name) > MAX_NAME:
                    raise ValueError(f"entries[{written}]: unsafe ZIP entry name {name[:120]!r}")
                key = _name_key(name)
                if key in seen:
                    raise ValueError(f"entries[{written}]: duplicate ZIP entry name {name!r}")
                seen.add(key)
                payload = data() if callable(data) else data
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.external_attr = 0o644 << 16  # -rw-r--r-- when unpacked
                info.compress_type = COMPRESSION
                archive.writestr(info, payload, compresslevel=LEVEL)
                written += 1
    finally:
        records.close()
    return written


_SLOTS = tuple(zipfile.ZipInfo.__slots__)


class _SpooledRecords:
    """Stands in for ``ZipFile.filelist`` while writing: zipfile appends each entry's ZipInfo to it
    and reads them all back once, to write the central directory at close (``len`` and iteration:
    zipfile's own use, read on CPython 3.11; tests/test_zipstream.py reads archives back, so a
    Python that used it differently would fail there). They wait pickled in a temporary file."""

    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile()
        self._count = 0

    def append(self, info: zipfile.ZipInfo) -> None:
        pickle.dump(tuple(getattr(info, slot, None) for slot in _SLOTS), self._file, pickle.HIGHEST_PROTOCOL)
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def __iter__(self) -> Iterator[zipfile.ZipInfo]:
        self._file.seek(0)
        for _ in range(self._count):
            info = zipfile.ZipInfo.__new__(zipfile.ZipInfo)
            for slot, value in zip(_SLOTS, pickle.load(self._file)):
                setattr(info, slot, value)
            yield info
        self._file.seek(0, 2)  # back to the end, should anything be appended after

    def close(self) -> None:
        self._file.close()


class _NoIndex(dict):
    """Stands in for ``ZipFile.NameToInfo``, zipfile's name -> ZipInfo index: it keeps nothing
    (``write_zip`` refuses duplicate names itself, so zipfile's own warning is never needed)."""

    def __setitem__(self, key: str, value: zipfile.ZipInfo) -> None:
        pass
