"""An in-process S3 server (moto) on 127.0.0.1 for tests, and fixtures pointing boto3 at it.

Fixtures: ``s3_endpoint`` (session: the server's URL), ``s3_env`` (boto3's AWS_* variables set to
reach it, through monkeypatch) and ``s3_bucket`` (a fresh bucket of the test's own, its name).
Register them with ``pytest_plugins = ["tests.s3server"]`` in conftest.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Keep a developer's own ~/.aws out of the tests.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def start_s3_server() -> tuple[ThreadedMotoServer, str]:
    """Start moto's threaded S3 server on a free loopback port; return it and its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, f"http://{host}:{port}"


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """The endpoint URL of an S3 server running in this test process for the whole session."""
    # werkzeug logs every request (404s of exists() included), drowning a failing test's output.
    werkzeug_log = logging.getLogger("werkzeug")
    level = werkzeug_log.level
    werkzeug_log.setLevel(logging.WARNING)
    server, url = start_s3_server()
    try:
        yield url
    finally:
        server.stop()
        werkzeug_log.setLevel(level)


@pytest.fixture
def s3_env(monkeypatch: pytest.MonkeyPatch, s3_endpoint: str) -> str:
    """Point boto3's standard environment (AWS_ENDPOINT_URL_S3, credentials) at the test server."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    for name, value in S3_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    return s3_endpoint


@pytest.fixture
def s3_bucket(s3_env: str) -> str:
    """A new, empty bucket of this test's own; its name."""
    name = f"test-{uuid.uuid4().hex}"
    boto3.client("s3").create_bucket(Bucket=name)
    return name
