"""The service's errors as the contract's status codes, bounded request bodies, and no traceback out.

ValidationFailed -> 422 with ``errors`` by dotted field (the CLI's exit 2), NotFound -> 404,
Conflict -> 409, malformed JSON -> 400, a body over ``MAX_BODY`` -> 413, a missing or bad token ->
401, anything else -> 500 ``{"message"}`` with the details only in the log.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from storage.errors import Conflict, NotFound, ValidationFailed
from worker.api.responses import JSON

log = structlog.get_logger()

MAX_BODY = 1024 * 1024
INVALID = "The given data was invalid."


class Unauthenticated(Exception):
    """No bearer token, or one that is unknown or revoked."""


def _field(loc: tuple[Any, ...]) -> str:
    # FastAPI says ("body", "message", "subject") or ("query", "page"): the dotted field is the rest.
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path", "header") else [str(p) for p in loc]
    return ".".join(parts) or (str(loc[0]) if loc else "body")


async def _request_invalid(request: Request, exc: RequestValidationError) -> JSON:
    errors: dict[str, list[str]] = {}
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            return JSON({"message": f"Malformed JSON in the request body: {err.get('msg', 'invalid JSON')}."},
                        status_code=400)
        loc = tuple(err.get("loc", ()))
        if loc == ("body",):  # not an object: a list, a string, or JSON sent without its content type
            errors.setdefault("body", []).append(
                "The request body must be a JSON object, sent with Content-Type: application/json.")
            continue
        errors.setdefault(_field(loc), []).append(str(err.get("msg", "invalid")))
    return JSON({"message": INVALID, "errors": errors}, status_code=422)


async def _invalid(request: Request, exc: ValidationFailed) -> JSON:
    return JSON(exc.as_dict(), status_code=422)


async def _not_found(request: Request, exc: NotFound) -> JSON:
    return JSON({"message": str(exc)}, status_code=404)


async def _conflict(request: Request, exc: Conflict) -> JSON:
    return JSON({"message": str(exc)}, status_code=409)


async def _unauthenticated(request: Request, exc: Unauthenticated) -> JSON:
    return JSON({"message": "Unauthenticated."}, status_code=401, headers={"WWW-Authenticate": "Bearer"})


async def _http(request: Request, exc: StarletteHTTPException) -> JSON:
    # Starlette's own: an unknown path (404) or method (405).
    message = {404: "Not found.", 405: "Method not allowed."}.get(exc.status_code, str(exc.detail))
    return JSON({"message": message}, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _unexpected(request: Request, exc: Exception) -> JSON:
    log.exception("api.error", method=request.method, path=request.url.path)
    return JSON({"message": "The server failed to answer this request; the error is in its log."}, status_code=500)


def install_error_handlers(api: FastAPI) -> None:
    """Map every error the service raises to the contract's status and shape."""
    api.add_exception_handler(RequestValidationError, _request_invalid)
    api.add_exception_handler(ValidationFailed, _invalid)
    api.add_exception_handler(NotFound, _not_found)
    api.add_exception_handler(Conflict, _conflict)
    api.add_exception_handler(Unauthenticated, _unauthenticated)
    api.add_exception_handler(StarletteHTTPException, _http)
    api.add_exception_handler(Exception, _unexpected)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413: at once by Content-Length, or, for a
    chunked body, once more than ``limit`` bytes came."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    too_large = int(value) > self.limit
                except ValueError:
                    too_large = False
                if too_large:
                    await JSON({"message": f"The request body is larger than {self.limit} bytes."},
                               status_code=413)(scope, receive, send)
                    return
        if not any(name == b"transfer-encoding" for name, _ in scope.get("headers", ())):
            await self.app(scope, receive, send)  # no body, or one whose announced length was checked
            return
        # Chunked: read it here, up to the limit, and hand it on whole (FastAPI would turn an error
        # raised while it reads the body into a 400).
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            more = message.get("more_body", False)
            if seen > self.limit:
                await JSON({"message": f"The request body is larger than {self.limit} bytes."},
                           status_code=413)(scope, receive, send)
                return
        whole: Message | None = {"type": "http.request", "body": b"".join(chunks), "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()

        await self.app(scope, replay, send)
