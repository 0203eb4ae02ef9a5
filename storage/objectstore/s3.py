"""Objects in an S3 bucket (``STORAGE_URL=s3://bucket[/prefix]``), large ones streamed as multipart uploads."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, BinaryIO
from urllib.parse import quote

from botocore.exceptions import BotoCoreError, ClientError

from storage.objectstore.base import ObjectMissing, ObjectStore, StreamWriter, URL_SECONDS, check_expires, check_key

# S3 wants every part but the last to be at least 5 MiB; 8 MiB keeps the request count low while
# the writer holds at most one part in memory.
PART_SIZE = 8 * 1024 * 1024
MIN_PART_SIZE = 5 * 1024 * 1024

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}


def _is_missing(error: ClientError) -> bool:
    return str(error.response.get("Error", {}).get("Code")) in _MISSING_CODES


def content_disposition(filename: str) -> str:
    """``attachment`` with ``filename`` (RFC 6266): an ASCII fallback plus the exact UTF-8 name."""
    fallback = re.sub(r'[^\x20-\x7e]|["\\]', "_", filename).strip() or "download"
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class MultipartWriter(StreamWriter):
    """Write-only stream into one S3 object, holding at most ``part_size`` bytes in memory.

    Nothing is visible in the bucket until :meth:`commit`; :meth:`abort` discards the upload. An
    object smaller than one part is stored with a single PUT.
    """

    def __init__(self, client: Any, bucket: str, key: str, content_type: str, part_size: int = PART_SIZE) -> None:
        super().__init__()
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (an S3 limit)")
        self._client = client
        self._bucket = bucket
        self._key = key
        self._content_type = content_type
        self.part_size = part_size
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self.peak_buffered = 0

    @property
    def buffered(self) -> int:
        """Bytes held in memory, waiting to be uploaded."""
        return len(self._buffer)

    @property
    def parts_uploaded(self) -> int:
        """Parts sent so far (0 while the object still fits in one PUT)."""
        return len(self._parts)

    def _store(self, view: memoryview) -> None:
        offset = 0
        while offset < len(view):
            # Fill the buffer only up to one part, so a huge single write does not grow it past that.
            take = min(len(view) - offset, self.part_size - len(self._buffer))
            self._buffer += view[offset:offset + take]
            offset += take
            self.peak_buffered = max(self.peak_buffered, len(self._buffer))
            if len(self._buffer) >= self.part_size:
                self._upload_part()

    def _upload_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = self._client.create_multipart_upload(
                Bucket=self._bucket, Key=self._key, ContentType=self._content_type
            )["UploadId"]
        number = len(self._parts) + 1
        # Hand the full buffer over rather than copy it, so a part exists in memory once.
        body, self._buffer = self._buffer, bytearray()
        response = self._client.upload_part(
            Bucket=self._bucket, Key=self._key, UploadId=self._upload_id, PartNumber=number, Body=body
        )
        self._parts.append({"PartNumber": number, "ETag": response["ETag"]})

    def commit(self) -> None:
        """Upload what is buffered and make the object visible."""
        if self._upload_id is None:
            self._client.put_object(
                Bucket=self._bucket, Key=self._key, Body=self._buffer, ContentType=self._content_type
            )
        else:
            if self._buffer:
                self._upload_part()
            self._client.complete_multipart_upload(
                Bucket=self._bucket, Key=self._key, UploadId=self._upload_id,
                MultipartUpload={"Parts": self._parts},
            )
        self._buffer.clear()
        self.close()

    def abort(self) -> None:
        """Discard everything written; the bucket keeps no trace of it."""
        self._buffer.clear()
        self.close()
        if self._upload_id is not None:
            self._client.abort_multipart_upload(Bucket=self._bucket, Key=self._key, UploadId=self._upload_id)
            self._upload_id = None


class S3Store(ObjectStore):
    """Keys live under ``prefix`` in ``bucket``, reached through a boto3 S3 client."""

    def __init__(self, client: Any, bucket: str, prefix: str = "", part_size: int = PART_SIZE) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size

    def __repr__(self) -> str:
        return f"S3Store(bucket={self.bucket!r}, prefix={self.prefix!r})"

    def object_key(self, key: str) -> str:
        """The bucket's key for ``key`` (under the prefix); ValueError for a key that is not id-like."""
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_bytes(self, key: str, data: bytes, content_type: str) -> int:
        self.client.put_object(Bucket=self.bucket, Key=self.object_key(key), Body=data, ContentType=content_type)
        return len(data)

    @contextmanager
    def open_writer(self, key: str, content_type: str) -> Iterator[BinaryIO]:
        writer = MultipartWriter(self.client, self.bucket, self.object_key(key), content_type, self.part_size)
        try:
            yield writer  # type: ignore[misc]
            writer.commit()
        except BaseException as error:
            try:
                writer.abort()
            except (ClientError, BotoCoreError) as abort_error:
                # The first error is the one to report; a lifecycle rule can reap the orphaned parts.
                error.add_note(f"aborting the multipart upload of {key!r} failed too: {abort_error}")
            raise

    def get_bytes(self, key: str) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as error:
            if _is_missing(error):
                raise ObjectMissing(key) from None
            raise
        with response["Body"] as body:
            return body.read()

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as error:
            if _is_missing(error):
                return None
            raise

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise ObjectMissing(key)
        return int(head["ContentLength"])

    def url(self, key: str, expires: int = URL_SECONDS, filename: str | None = None) -> str:
        params: dict[str, str] = {"Bucket": self.bucket, "Key": self.object_key(key)}
        if filename is not None:
            params["ResponseContentDisposition"] = content_disposition(filename)
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=check_expires(expires))

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def check(self) -> None:
        self.client.head_bucket(Bucket=self.bucket)  # a missing bucket or refused key pair raises

    def delete_all(self, folder: str) -> int:
        count = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.object_key(folder) + "/")
        for page in pages:  # at most 1,000 keys a page: what one delete_objects call takes
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys, "Quiet": True})
                if response.get("Errors"):
                    error = response["Errors"][0]
                    raise RuntimeError(f"S3 refused to delete {error.get('Key')!r}: {error.get('Message')}")
                count += len(keys)
        return count
