"""The object store (CONTRACT section 2, ``STORAGE_URL``): an S3 bucket or a local directory.

``open_store(url)`` picks the backend; keys come from :func:`make_key` so they are always id-like.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from storage.objectstore.base import URL_SECONDS, ObjectMissing, ObjectStore, check_key, make_key
from storage.objectstore.local import LocalStore

if TYPE_CHECKING:
    from storage.objectstore.s3 import S3Store

__all__ = ["URL_SECONDS", "ObjectMissing", "ObjectStore", "LocalStore", "S3Store", "check_key", "make_key", "open_store"]


def __getattr__(name: str) -> Any:
    """``S3Store`` (and ``PART_SIZE``) come from ``s3``, which imports botocore: imported when asked for,
    so that a process on a local store (the CLI) never loads boto."""
    if name in ("S3Store", "PART_SIZE"):
        from storage.objectstore import s3

        return getattr(s3, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# Generous on purpose: S3-compatible servers and old AWS buckets allow more than today's AWS rules.
_BUCKET = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}")

_EXPECTED = "expected s3://bucket[/prefix] or file:///absolute/path"


def _default_s3_client() -> Any:
    import boto3
    from botocore.config import Config

    # boto3 finds the endpoint, region and credentials itself (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID,
    # ...); SigV4 is pinned so presigned URLs carry X-Amz-Expires and work in every region.
    return boto3.client("s3", config=Config(signature_version="s3v4"))


def _invalid(url: str, reason: str) -> ValueError:
    return ValueError(f"invalid STORAGE_URL {url!r}: {reason}; {_EXPECTED}")


def open_store(
    url: str, *, s3_client_factory: Callable[[], Any] | None = None, part_size: int | None = None
) -> ObjectStore:
    """The store that ``url`` (a ``STORAGE_URL``) names.

    ``s3://bucket[/prefix]`` gives an :class:`S3Store` whose client comes from ``s3_client_factory``
    (default: ``boto3.client("s3")`` configured by boto3's own environment); ``file:///absolute/path``
    gives a :class:`LocalStore`. Anything else raises ValueError naming STORAGE_URL. ``part_size``:
    the S3 multipart part size (default ``s3.PART_SIZE``, 8 MiB).
    """
    if not isinstance(url, str) or not url.strip():
        raise _invalid(str(url), "it is empty")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as error:
        raise _invalid(url, str(error)) from None
    if parts.query or parts.fragment:
        raise _invalid(url, "a query string or fragment is not allowed")
    scheme = parts.scheme.lower()
    if scheme == "s3":
        if parts.username or parts.password or parts.port or not parts.hostname:
            raise _invalid(url, "the bucket name is missing or malformed")
        bucket = parts.netloc
        if not _BUCKET.fullmatch(bucket):
            raise _invalid(url, f"{bucket!r} is not a valid bucket name")
        segments = [segment for segment in unquote(parts.path).split("/") if segment]
        if any(segment in (".", "..") for segment in segments):
            raise _invalid(url, "the prefix may not contain '.' or '..'")
        from storage.objectstore.s3 import PART_SIZE, S3Store

        client = (s3_client_factory or _default_s3_client)()
        return S3Store(client, bucket, "/".join(segments), part_size=PART_SIZE if part_size is None else part_size)
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise _invalid(url, f"host {parts.netloc!r} given; a file URL names an absolute path (three slashes)")
        path = unquote(parts.path)
        if not path.startswith("/") or path.strip("/") == "":
            raise _invalid(url, "the path must be absolute and not the filesystem root")
        return LocalStore(path)
    raise _invalid(url, f"unsupported scheme {parts.scheme!r}" if parts.scheme else "no scheme")
