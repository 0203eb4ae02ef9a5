"""The letters ZIP: entry names that are safe to unpack anywhere, written as a stream."""

from __future__ import annotations

import io
import re
import tracemalloc
import zipfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from renderers.zipstream import MAX_NAME, safe_entry_name, write_zip

CID = "7b1c0d4e-5f60-4a7b-8c9d-000000000001"
SAFE = re.compile(r"[A-Za-z0-9._-]+")
HOSTILE = ["../../etc", "..", ".hidden", "a/b\\c", "x" * 500, "", None, "Ørjan Brontë-é",
           "Ørjan Brontë-é", "ØRJAN BRONTË-É", "CON", "-rf", "..\\..\\windows", "日本語", " . ",
           "\x00\n\r", "name.pdf", "💌", "a" * 95]


class Unseekable(io.RawIOBase):
    """A write-only stream that cannot seek or tell, like a pipe or an upload."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self.buffer.write(data)


class Sink(io.RawIOBase):
    """Counts what is written and keeps none of it."""

    size = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        self.size += len(data)
        return len(data)


def assert_safe(name: str, contact_id: str) -> None:
    assert SAFE.fullmatch(name), name
    assert name.endswith(".pdf") and len(name) <= MAX_NAME
    assert not name.startswith((".", "-")) and ".." not in name and "/" not in name


# --- names ---------------------------------------------------------------------------------------

def test_hostile_names_become_safe_unique_names_with_the_contact_id():
    used: set[bytes] = set()
    names = [safe_entry_name(CID, hint, used) for hint in HOSTILE]
    for name in names:
        assert_safe(name, CID)
        assert CID in name
    assert len({name.casefold() for name in names}) == len(names)
    assert names[0] == f"etc-{CID}.pdf"
    assert names[7] == f"Orjan-Bronte-e-{CID}.pdf"
    assert names[8] == f"Orjan-Bronte-e-{CID}-2.pdf"  # the same name twice
    assert names[9] == f"ORJAN-BRONTE-E-{CID}-3.pdf"  # differs only in case: same on Windows
    assert names[1] == f"{CID}.pdf" and names[2] == f"hidden-{CID}.pdf"
    assert names[3] == f"a-b-c-{CID}.pdf"


def test_an_unsafe_contact_id_is_simplified_and_kept_apart():
    used: set[bytes] = set()
    first = safe_entry_name("../a b", "Zoë", used)
    second = safe_entry_name("../a/b", "Zoë", used)
    assert first.startswith("Zoe-a-b-") and second.startswith("Zoe-a-b-") and first != second
    assert_safe(first, "")
    assert len(safe_entry_name("9" * 500, "x" * 500, used)) <= MAX_NAME
    with pytest.raises(ValueError, match="contact_id"):
        safe_entry_name("", "Zoë", used)
    with pytest.raises(ValueError, match="contact_id"):
        safe_entry_name("/..", "Zoë", used)


@given(ids=st.lists(st.text(min_size=1).filter(lambda s: any(c.isalnum() for c in s)), max_size=6),
       hints=st.lists(st.one_of(st.none(), st.text()), min_size=1, max_size=6))
def test_names_are_always_safe_and_unique(ids, hints):
    used: set[bytes] = set()
    names = []
    for contact_id in ids or ["c1"]:
        for hint in hints:
            try:
                names.append(safe_entry_name(contact_id, hint, used))
            except ValueError:  # an id with nothing ASCII left, e.g. "日本"
                continue
            assert_safe(names[-1], contact_id)
    assert len({name.casefold() for name in names}) == len(names)


# --- the writer ----------------------------------------------------------------------------------

def test_a_zip_streamed_to_a_non_seekable_target_reads_back():
    target = Unseekable()
    used: set[bytes] = set()
    documents = {safe_entry_name(CID, hint, used): f"%PDF-{hint}".encode() * 300
                 for hint in ("Zoë", "Zoë", "../../etc")}
    entries = [(name, data) if i % 2 else (name, lambda data=data: data)
               for i, (name, data) in enumerate(documents.items())]
    assert write_zip(target, entries) == 3
    with zipfile.ZipFile(io.BytesIO(target.buffer.getvalue())) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == list(documents)
        for info in archive.infolist():
            assert archive.read(info) == documents[info.filename]
            assert info.flag_bits & 0x08  # sizes after the data: written without seeking


def test_names_made_as_the_writer_asks_share_its_one_set():
    written: set[bytes] = set()
    hints = ["Zoë", "zoë", "ZOË", "../../etc", "Zoë"]
    entries = ((safe_entry_name(CID, hint, written, register=False), f"%PDF-{n}".encode())
               for n, hint in enumerate(hints))  # made one at a time, as build_archive does
    target = Unseekable()
    assert write_zip(target, entries, seen=written) == 5
    with zipfile.ZipFile(io.BytesIO(target.buffer.getvalue())) as archive:
        names = archive.namelist()
    assert len({name.casefold() for name in names}) == 5 and len(written) == 5
    assert names[:3] == [f"Zoe-{CID}.pdf", f"zoe-{CID}-2.pdf", f"ZOE-{CID}-3.pdf"]
    with pytest.raises(ValueError, match="duplicate"):  # a name made but not asked for in order
        write_zip(io.BytesIO(), [(names[0], b"%PDF")], seen=set(written))


def test_more_entries_than_a_plain_zip_holds_read_back_in_order():
    # Past 65,535 entries the central directory needs ZIP64 records; the writer keeps the entries'
    # records in a temporary file, not in memory, until it writes that directory.
    count = 70_000
    target = Unseekable()
    used: set[bytes] = set()
    names = [safe_entry_name(f"c{n}", "Zoë" if n % 2 else "zoë", used) for n in range(count)]
    assert write_zip(target, ((name, f"%PDF-{n}".encode()) for n, name in enumerate(names))) == count
    with zipfile.ZipFile(io.BytesIO(target.buffer.getvalue())) as archive:
        infos = archive.infolist()
        assert [info.filename for info in infos] == names
        assert archive.read(infos[0]) == b"%PDF-0" and archive.read(infos[-1]) == f"%PDF-{count - 1}".encode()
        assert archive.testzip() is None  # every entry's CRC checks


def test_a_seekable_target_works_too():
    target = io.BytesIO()
    assert write_zip(target, iter([("a.pdf", b"%PDF-1"), ("b.pdf", lambda: b"%PDF-2")])) == 2
    with zipfile.ZipFile(target) as archive:
        assert archive.read("b.pdf") == b"%PDF-2"


@pytest.mark.parametrize("name", ["../x.pdf", ".x.pdf", "a/b.pdf", "a\\b.pdf", "", "-x.pdf",
                                  "x..pdf", "é.pdf", "x" * (MAX_NAME + 1)])
def test_unsafe_entry_names_are_refused(name):
    with pytest.raises(ValueError, match=r"entries\[1\]: unsafe"):
        write_zip(io.BytesIO(), [("ok.pdf", b"1"), (name, b"2")])


def test_duplicate_entry_names_are_refused():
    with pytest.raises(ValueError, match=r"entries\[1\]: duplicate"):
        write_zip(io.BytesIO(), [("Zoe-1.pdf", b"1"), ("zoe-1.pdf", b"2")])


def test_writing_holds_one_entry_at_a_time():
    megabyte = 1 << 20
    made = []

    def entries():
        for i in range(200):
            made.append(i)
            yield f"letter-{i}.pdf", (lambda i=i: bytes([i % 251]) * megabyte)

    sink = Sink()
    tracemalloc.start()
    try:
        assert write_zip(sink, entries()) == 200
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(made) == 200 and sink.size > 0
    assert peak < 20 * megabyte, f"peak {peak / megabyte:.1f} MB for 200 entries of 1 MB"
