"""The object store on both backends: a local directory and S3 (moto's server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import io
import random
import urllib.request
import zipfile
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from storage.errors import NotFound
from storage.objectstore import LocalStore, ObjectMissing, S3Store, make_key, open_store

MiB = 1024 * 1024


def _data(size: int, seed: int = 0) -> bytes:
    """Incompressible bytes, the same for the same seed."""
    return random.Random(seed).randbytes(size)


@pytest.fixture(params=["local", "s3"])
def make_store(request, tmp_path):
    """Build a store of the parametrised backend: ``make_store(**open_store_kwargs)``."""

    def make(**kwargs):
        if request.param == "local":
            return open_store((tmp_path / "objects").as_uri(), **kwargs)
        bucket = request.getfixturevalue("s3_bucket")
        return open_store(f"s3://{bucket}/campaign-dispatch", **kwargs)

    return make


@pytest.fixture
def store(make_store):
    return make_store()


@pytest.fixture
def s3_store(s3_bucket):
    return open_store(f"s3://{s3_bucket}")


def _stored_keys(store) -> list[str]:
    """Every object (and, locally, every stray file) the backend holds."""
    if isinstance(store, LocalStore):
        if not store.root.exists():
            return []
        return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())
    listing = store.client.list_objects_v2(Bucket=store.bucket)
    return sorted(item["Key"] for item in listing.get("Contents", []))


def _stored_name(store, key: str) -> str:
    """How ``_stored_keys`` lists ``key``."""
    return store.object_key(key) if isinstance(store, S3Store) else key


def _open_uploads(store: S3Store) -> list:
    return store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", [])


# -- bytes in, bytes out ---------------------------------------------------------------------------------

def test_put_get_exists_size_delete(store):
    key = make_key("letters", "42", "7.pdf")
    assert not store.exists(key)
    assert store.put_bytes(key, b"%PDF-1.7 first", "application/pdf") == 14
    assert store.exists(key)
    assert store.get_bytes(key) == b"%PDF-1.7 first"
    assert store.size(key) == 14

    assert store.put_bytes(key, b"second", "application/pdf") == 6  # replaces
    assert store.get_bytes(key) == b"second"
    assert store.size(key) == 6
    assert not store.exists(make_key("letters", "42", "8.pdf"))

    store.delete(key)
    assert not store.exists(key)
    store.delete(key)  # deleting what is gone is not an error


def test_missing_object(store):
    key = make_key("nothing", "here")
    with pytest.raises(ObjectMissing) as caught:
        store.get_bytes(key)
    assert isinstance(caught.value, NotFound)
    assert "nothing/here" in str(caught.value)
    with pytest.raises(ObjectMissing):
        store.size(key)


def test_empty_object(store):
    key = make_key("empty")
    assert store.put_bytes(key, b"", "text/plain") == 0
    assert store.exists(key) and store.size(key) == 0 and store.get_bytes(key) == b""


def test_url_downloads_the_object(store):
    key = make_key("exports", "3.xlsx")
    data = _data(70_000)
    store.put_bytes(key, data, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    with urllib.request.urlopen(store.url(key)) as response:
        assert response.read() == data


def test_local_url_is_the_file(tmp_path):
    store = open_store(tmp_path.as_uri())
    store.put_bytes(make_key("a", "b.txt"), b"x", "text/plain")
    assert store.url(make_key("a", "b.txt")) == (tmp_path.resolve() / "a" / "b.txt").as_uri()


def test_presigned_url_is_signed_for_five_minutes_and_names_the_download(s3_store):
    key = make_key("letters", "9", "letters.zip")
    s3_store.put_bytes(key, b"PK zip bytes", "application/zip")

    url = s3_store.url(key)
    query = parse_qs(urlsplit(url).query)
    assert query["X-Amz-Expires"] == ["300"]  # moto does not enforce expiry; the signed value is what counts
    assert "X-Amz-Signature" in query
    assert parse_qs(urlsplit(s3_store.url(key, expires=60)).query)["X-Amz-Expires"] == ["60"]

    with urllib.request.urlopen(s3_store.url(key, filename='Campaign "Été" letters.zip')) as response:
        assert response.read() == b"PK zip bytes"
        assert response.headers["Content-Type"] == "application/zip"
        disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment; ")
    assert 'filename="Campaign __t__ letters.zip"' in disposition
    assert "filename*=UTF-8''Campaign%20%22%C3%89t%C3%A9%22%20letters.zip" in disposition


@pytest.mark.parametrize("expires", [0, -1, 7 * 24 * 3600 + 1, 1.5])
def test_url_refuses_expiry_s3_cannot_sign(store, expires):
    key = make_key("x")
    store.put_bytes(key, b"x", "text/plain")
    with pytest.raises(ValueError, match="expires"):
        store.url(key, expires=expires)


# -- streaming writes ------------------------------------------------------------------------------------

def test_twenty_mib_streams_to_s3_as_multipart_in_bounded_memory(s3_store):
    key = make_key("letters", "1", "letters.zip")
    total = 20 * MiB
    expected = hashlib.sha256()
    parts_seen_during_write = []
    with s3_store.open_writer(key, "application/zip") as writer:
        assert writer.part_size == 8 * MiB
        for index in range(total // MiB - 10):
            chunk = _data(MiB, seed=index)
            writer.write(chunk)
            expected.update(chunk)
            assert writer.buffered < writer.part_size
            parts_seen_during_write.append(writer.parts_uploaded)
        big = _data(10 * MiB, seed=99)  # one write larger than a part is sliced, not buffered whole
        writer.write(big)
        expected.update(big)
        assert writer.buffered < writer.part_size
        assert writer.tell() == total
        assert not s3_store.exists(key)  # nothing visible before the block ends
        peak = writer.peak_buffered

    assert peak <= writer.part_size  # one part in memory at a time (S3 needs parts of >= 5 MiB)
    assert parts_seen_during_write[-1] == 1  # bytes left while writing, not all at the end
    assert s3_store.size(key) == total
    assert hashlib.sha256(s3_store.get_bytes(key)).hexdigest() == expected.hexdigest()
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=key)
    assert head["ETag"].strip('"').endswith("-3")  # 8 + 8 + 4 MiB
    assert head["ContentType"] == "application/zip"
    assert _open_uploads(s3_store) == []


def test_small_stream_is_a_single_put(s3_store):
    key = make_key("small.bin")
    with s3_store.open_writer(key, "application/octet-stream") as writer:
        writer.write(b"a" * 1000)
        assert not s3_store.exists(key)
    assert writer.parts_uploaded == 0
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=key)
    assert "-" not in head["ETag"] and head["ContentLength"] == 1000
    assert head["ContentType"] == "application/octet-stream"


def test_writer_is_a_non_seekable_stream_that_tells(store):
    with store.open_writer(make_key("w.bin"), "application/octet-stream") as writer:
        assert writer.writable() and not writer.seekable()
        assert writer.tell() == 0
        writer.write(b"abc")
        writer.write(memoryview(b"defg"))
        assert writer.tell() == 7
        with pytest.raises(OSError):
            writer.seek(0)
    assert store.get_bytes(make_key("w.bin")) == b"abcdefg"


def test_zip_streamed_through_the_writer_reads_back(make_store):
    store = make_store(part_size=5 * MiB)  # so the archive spans several parts on S3
    key = make_key("letters", "5", "letters.zip")
    documents = {f"letter-{n:04d}.pdf": _data(120_000 + n, seed=n) for n in range(100)}  # ~12 MiB
    with store.open_writer(key, "application/zip") as writer:
        with zipfile.ZipFile(writer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, content in documents.items():
                with archive.open(name, "w") as member:
                    member.write(content)
            archive.writestr("manifest.txt", "\n".join(documents))
        assert not store.exists(key)

    with zipfile.ZipFile(io.BytesIO(store.get_bytes(key))) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == [*documents, "manifest.txt"]
        for name, content in documents.items():
            assert archive.read(name) == content
    assert store.size(key) > 11 * MiB
    if isinstance(store, S3Store):
        head = store.client.head_object(Bucket=store.bucket, Key=store.object_key(key))
        assert head["ETag"].strip('"').endswith("-3")  # 5 + 5 + the rest


@pytest.mark.parametrize("written", [1000, 9 * MiB], ids=["small", "past-one-part"])
def test_error_inside_the_writer_leaves_nothing_behind(store, written):
    key = make_key("letters", "6", "letters.zip")
    other = make_key("letters", "6", "kept.pdf")
    store.put_bytes(other, b"kept", "application/pdf")

    with pytest.raises(RuntimeError, match="renderer failed"):
        with store.open_writer(key, "application/zip") as writer:
            writer.write(_data(written))
            raise RuntimeError("renderer failed")

    assert not store.exists(key)
    assert _stored_keys(store) == [_stored_name(store, other)]
    if isinstance(store, S3Store):
        assert _open_uploads(store) == []  # the multipart upload was aborted, no parts linger


def test_delete_all_removes_one_folder_and_nothing_beside_it(store):
    for n in range(3):
        store.put_bytes(make_key("letters", "6", "parts", f"{n}.zip"), b"part", "application/zip")
    store.put_bytes(make_key("letters", "6", "letters.zip"), b"zip", "application/zip")
    store.put_bytes(make_key("letters", "60", "parts", "0.zip"), b"other campaign", "application/zip")

    assert store.delete_all(make_key("letters", "6", "parts")) == 3
    assert _stored_keys(store) == sorted(_stored_name(store, key) for key in (
        make_key("letters", "6", "letters.zip"), make_key("letters", "60", "parts", "0.zip")))
    assert store.delete_all(make_key("letters", "6", "parts")) == 0  # nothing left: not an error
    with pytest.raises(ValueError):
        store.delete_all("letters/../..")


def test_failed_rewrite_keeps_the_previous_object(store):
    key = make_key("exports", "2.xlsx")
    store.put_bytes(key, b"version one", "application/octet-stream")
    with pytest.raises(ValueError):
        with store.open_writer(key, "application/octet-stream") as writer:
            writer.write(b"half of version two")
            raise ValueError("bad row")
    assert store.get_bytes(key) == b"version one"


# -- keys ------------------------------------------------------------------------------------------------

def test_make_key_joins_id_like_parts():
    assert make_key("letters", "42", "7.pdf") == "letters/42/7.pdf"
    assert make_key("exports", "c-1_2.v3.xlsx") == "exports/c-1_2.v3.xlsx"


@pytest.mark.parametrize("parts", [
    (), ("",), ("..",), (".",), ("a", ".."), ("a..b",), ("a/b",), ("a b",), ("ünïcode",),
    ("name\n",), ("a\\b",), (42,), ("%2e%2e",),
])
def test_make_key_refuses_anything_but_ids(parts):
    with pytest.raises(ValueError, match="key"):
        make_key(*parts)


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/", "../x", "a/../../x", "a/./b", "sp ace", "q?x=1"])
def test_store_refuses_bad_keys(store, key):
    for call in (
        lambda: store.put_bytes(key, b"x", "text/plain"),
        lambda: store.get_bytes(key),
        lambda: store.exists(key),
        lambda: store.size(key),
        lambda: store.url(key),
        lambda: store.delete(key),
        lambda: store.open_writer(key, "text/plain").__enter__(),
    ):
        with pytest.raises(ValueError, match="key"):
            call()
    assert _stored_keys(store) == []


def test_local_store_refuses_keys_resolving_outside_its_root(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "objects"
    root.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    store = open_store(root.as_uri())
    with pytest.raises(ValueError, match="outside"):
        store.put_bytes(make_key("link", "x"), b"escaped", "text/plain")
    with pytest.raises(ValueError, match="outside"):
        with store.open_writer(make_key("link", "y"), "text/plain") as writer:
            writer.write(b"escaped")
    assert list(outside.iterdir()) == []


# -- STORAGE_URL -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "", "   ", "var/objects", "/var/objects", "http://bucket/x", "gs://bucket", "s3://", "s3:///prefix",
    "s3://user:pw@bucket", "s3://bucket:9000", "s3://b", "s3://bad_bucket!", "s3://bucket?x=1",
    "s3://bucket/a/../b", "file://relative/path", "file:relative", "file:///", "file:///var/x#frag",
])
def test_bad_storage_url_is_a_clear_error(url):
    with pytest.raises(ValueError, match="STORAGE_URL") as caught:
        open_store(url, s3_client_factory=lambda: pytest.fail("no client for a bad URL"))
    assert "s3://bucket[/prefix] or file:///absolute/path" in str(caught.value)


def test_file_url_variants(tmp_path):
    plain = open_store(tmp_path.as_uri())
    assert isinstance(plain, LocalStore) and plain.root == tmp_path.resolve()
    assert open_store(f"file://localhost{tmp_path}").root == tmp_path.resolve()
    spaced = tmp_path / "with space"
    store = open_store(spaced.as_uri())  # percent-encoded in the URL
    store.put_bytes(make_key("k"), b"v", "text/plain")
    assert (spaced / "k").read_bytes() == b"v"


def test_s3_url_prefix_and_client_factory(s3_bucket):
    made = []

    def factory():
        made.append(boto3.client("s3"))
        return made[-1]

    store = open_store(f"s3://{s3_bucket}/tenant-1/objects/", s3_client_factory=factory)
    assert isinstance(store, S3Store) and store.client is made[0] and len(made) == 1
    store.put_bytes(make_key("a", "b.pdf"), b"x", "application/pdf")
    listing = boto3.client("s3").list_objects_v2(Bucket=s3_bucket)
    assert [item["Key"] for item in listing["Contents"]] == ["tenant-1/objects/a/b.pdf"]
    assert "/tenant-1/objects/a/b.pdf?" in store.url(make_key("a", "b.pdf"))
