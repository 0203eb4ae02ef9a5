"""The object store on both backends: a local directory and S3 (moto's server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import io
import random
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest

from storage.errors import NotFound
from storage.objectstore import LocalStore, ObjectMissing, S3Store, make_key, open_store
from tests.s3server import s3_bucket, s3_endpoint, s3_env  # noqa: F401  (fixtures, until conftest has them)

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


def test_presigned_url_is_refused_unsigned(s3_store):
    key = make_key("private")
    s3_store.put_bytes(key, b"secret", "text/plain")
    bare = s3_store.url(key).split("?", 1)[0]
    # moto's server allows anonymous reads unless told otherwise; what we can check is that the URL
    # we hand out is the signed one, not that S3 enforces signatures.
    assert bare != s3_store.url(key)


@pytest.mark.parametrize("expires", [0, -1, 7 * 24 * 3600 + 1, 1.5])
def test_url_refuses_expiry_s3_cannot_sign(store, expires):
    key = make_key("x")
    store.put_bytes(key, b"x", "text/plain")
    with pytest.raises(ValueError, match="expires"):
        store.url(key, expires=expires)
