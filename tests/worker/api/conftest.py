"""The HTTP API served by uvicorn on a free port of this test process, over real PostgreSQL and Redis."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from storage.timefmt import now
from storage.tokens import create_token
from tests.e2e import bundle, contact, load, make_app
from worker.api.server import BackgroundServer
from worker.pipeline.app import App


@dataclass
class Served:
    """A running API: its App, base URL, and a client holding user 1's token."""

    app: App
    url: str
    token: str
    client: httpx.Client

    def token_for(self, user_id: int) -> str:
        with self.app.sessions.begin() as session:
            return create_token(session, user_id, "test", now())[1]

    def anonymous(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30)


def serve(app: App) -> Iterator[Served]:
    """Serve ``app`` on a free port with user 1's token; closed after."""
    with BackgroundServer(app, "127.0.0.1", 0) as server:
        host, port = server.address
        url = f"http://{host}:{port}"
        with app.sessions.begin() as session:
            token = create_token(session, 1, "test", now())[1]
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as client:
            yield Served(app, url, token, client)


@pytest.fixture
def api(pg_db, redis_url) -> Iterator[Served]:
    """The API on PostgreSQL and Redis (no worker: what it enqueues stays in Redis), with the test bundle."""
    app = make_app(pg_db, redis_url, None)
    load(app, bundle([contact(i) for i in range(6)]))
    try:
        yield from serve(app)
    finally:
        app.close()


@pytest.fixture
def sqlite_api(sqlite_url, tmp_path) -> Iterator[Served]:
    """The API on the embedded default's SQLite, with the in-process broker and no worker."""
    app = make_app(sqlite_url, "memory://", None, storage_url=f"file://{tmp_path / 'objects'}")
    load(app, bundle([contact(i) for i in range(6)]))
    try:
        yield from serve(app)
    finally:
        app.close()
