"""Bearer-token authentication: every route but ``/healthz`` and ``/metrics`` depends on it.

The dependencies are ``async`` and the token lookup (one indexed query) runs on the event loop:
a sync dependency would cost a hand-off to the thread pool and back on every request, which
measured more than the query itself. Each API process serves requests concurrently in its thread
pool for the endpoints that can take long (see ``worker.api.app``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Connection

from storage.timefmt import now as utcnow
from storage.tokens import authenticate
from worker.api.errors import Unauthenticated
from worker.pipeline.app import App

bearer = HTTPBearer(auto_error=False, description="A token made with `campaign-dispatch tokens create --user ID`.")


@dataclass(frozen=True)
class Caller:
    """The user a request's token belongs to: the owner of what it creates."""

    user_id: int
    email: str | None


async def service(request: Request) -> App:
    """The process's App (engine, broker, store), made once at start."""
    return request.app.state.service


async def caller(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> Caller:
    """The authenticated caller; 401 for a missing, unknown or revoked token."""
    # A connection, not an ORM session: cheaper, and the check needs no ORM objects. Autocommit:
    # a lookup and, now and then, a conditional write of last_used_at, each whole on its own, so
    # no BEGIN and COMMIT round trips around them. Returned at once: the endpoint, maybe on a
    # thread for long, takes its own.
    with request.app.state.service.autocommit.connect() as conn:
        return _check(conn, credentials)


async def connection(request: Request) -> AsyncIterator[Connection]:
    """One autocommit connection for a request read on the event loop, returned when it is answered."""
    with request.app.state.service.autocommit.connect() as conn:
        yield conn


async def reading_caller(credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
                         conn: Connection = Depends(connection)) -> Caller:
    """``caller`` on the request's ``connection``: the token check and the read share one checkout
    (the hottest read, GET /campaigns/:id, costs one less pool round)."""
    return _check(conn, credentials)


def _check(conn: Connection, credentials: HTTPAuthorizationCredentials | None) -> Caller:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated()
    owner = authenticate(conn, credentials.credentials, utcnow())
    if owner is None:
        raise Unauthenticated()
    return Caller(owner.id, owner.email)
