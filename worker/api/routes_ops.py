"""Files, status, health, metrics and the API's own description."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from starlette.responses import Response

from worker.api import schemas as s
from worker.api.auth import caller, service
from worker.api.responses import JSON
from worker.pipeline import queries
from worker.pipeline.app import App

router = APIRouter(dependencies=[Depends(caller)])
open_router = APIRouter(tags=["operations"])  # no token: probes and scrapers


@router.get("/files/{file_id}", tags=["files"], response_model=s.FileUrl,
            responses={401: {"model": s.Message}, 404: {"model": s.Message}})
async def file_url(file_id: str, app: App = Depends(service)) -> JSON:
    """A download URL of a stored file (an export, a letters ZIP, a preview), valid for 300 seconds."""
    return JSON(queries.file_url(app, file_id))


@router.get("/status", tags=["operations"], response_model=None, responses={401: {"model": s.Message}})
def status(app: App = Depends(service)) -> JSON:
    """Queue depths and the campaigns in flight with their progress (as `campaign-dispatch status --json`)."""
    return JSON(queries.status(app))


@open_router.get("/healthz", response_model=s.Health,
                 responses={503: {"model": s.Health}})
def healthz(app: App = Depends(service)) -> JSON:
    """200 when the database (with its schema) and the broker answer, else 503 saying what to fix."""
    from worker.pipeline.health import check, healthy

    checks = check(app, ("database", "broker"))
    return JSON(checks, status_code=200 if healthy(checks) else 503)


@open_router.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
def metrics(request: Request, app: App = Depends(service)) -> Response:
    """Prometheus text format: this process's metrics (every process's when PROMETHEUS_MULTIPROC_DIR
    is set), the queues' depths and the campaigns per status, read now."""
    from worker.pipeline.status import queue_depths
    from worker.runtime.metrics import StateCollector, exposition, registry_factory_for

    state = StateCollector.for_service(app.engine, app.settings.broker_url, queue_depths)
    body, content_type = exposition(registry_factory_for(state)(), request.headers.get("accept"))
    return Response(body, media_type=content_type)


@router.get("/openapi.json", include_in_schema=False)
async def openapi(request: Request) -> JSON:
    """This API's OpenAPI description."""
    return JSON(request.app.openapi())


@router.get("/docs", include_in_schema=False, response_class=HTMLResponse)
def docs(request: Request) -> HTMLResponse:
    """Swagger UI with the description inlined (fetching it would need the token again)."""
    spec = json.dumps(request.app.openapi()).replace("</", "<\\/")
    return HTMLResponse(f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>campaign-dispatch API</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{spec: {spec}, dom_id: "#ui"}});</script>
</body></html>""")
