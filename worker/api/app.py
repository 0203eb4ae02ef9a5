"""The FastAPI application over one App (engine, broker, store), and the factory uvicorn workers use."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI

from worker.api import routes_actions, routes_campaigns, routes_ops
from worker.api.auth import caller, reading_caller
from worker.api.errors import BodyLimit, install_error_handlers
from worker.api.responses import JSON
from worker.pipeline.app import App

# Where endpoints run: cheap, bounded reads (show a campaign, a page of the list, one message, the
# settings, a file URL, an export's state) are ``async def`` and query on the event loop, a few ms
# of blocking that costs less than a thread hand-off each way (benchmarks/api_load.py: show 286 ->
# 481 req/s, p99 263 -> 138 ms). Everything that can take long (validation with template checks,
# rendering previews, searching recipients, exports, long task lists, health probes with timeouts)
# stays ``def`` and runs in the thread pool, so it never holds up the other requests.

DESCRIPTION = """The Campaigns API: email, letter and telephone campaigns with a recipient filter, a
template and a `send_at`, sent exactly once by the workers this API hands them to.

Every request but `GET /healthz` and `GET /metrics` carries `Authorization: Bearer <token>`
(`campaign-dispatch tokens create --user ID`). Times are `Y-m-d H:i:s`, UTC."""


def create_api(app: App, *, close_app: bool = False) -> FastAPI:
    """The HTTP API over ``app``; with ``close_app`` the App is closed when the server stops."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # The endpoints run in threads; no more of them at once than the database pool has connections.
        anyio.to_thread.current_default_thread_limiter().total_tokens = app.settings.db_pool_size
        try:
            yield
        finally:
            if close_app:
                app.close()

    api = FastAPI(title="campaign-dispatch", version="1", description=DESCRIPTION, lifespan=lifespan,
                  # FastAPI's own /openapi.json and /docs would answer without a token: routes_ops has
                  # authenticated ones.
                  default_response_class=JSON, openapi_url=None, docs_url=None, redoc_url=None)
    api.state.service = app
    install_error_handlers(api)
    api.add_middleware(BodyLimit)
    authenticated = [Depends(caller)]
    # /campaigns/settings before /campaigns/{campaign_id}: the first route that matches answers.
    api.include_router(routes_actions.settings_router, dependencies=authenticated)
    api.include_router(routes_actions.router, dependencies=authenticated)
    api.include_router(routes_campaigns.reads, dependencies=[Depends(reading_caller)])
    api.include_router(routes_campaigns.router, dependencies=authenticated)
    api.include_router(routes_ops.router)
    api.include_router(routes_ops.open_router)
    return api


def create_app() -> FastAPI:
    """Factory for ``uvicorn --factory`` and ``api --workers N``: each worker process is an entry
    point, so it reads the settings and configures logging itself."""
    from worker.runtime.logging import configure_logging
    from worker.runtime.settings import Settings

    settings = Settings()
    configure_logging(settings.log_format, settings.log_level)
    return create_api(App(settings), close_app=True)
