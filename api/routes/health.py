"""/healthz and /metrics (no API key: probes and Prometheus scrape them)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from api.deps import DatabaseDep, ExecutorDep
from api.schemas import Health

router = APIRouter(tags=["health"])
VERSION = "1"


@router.get("/healthz", response_model=Health, operation_id="health-check", responses={503: {"model": Health}})
def healthz(db: DatabaseDep, executor: ExecutorDep) -> Response:
    try:
        db.ping()
        body = Health(status="ok", database="ok", executor=executor.name, version=VERSION)
        return JSONResponse(body.model_dump())
    except Exception as e:  # noqa: BLE001 - report, do not raise: this is the probe
        body = Health(status="degraded", database=f"unreachable: {type(e).__name__}", executor=executor.name, version=VERSION)
        return JSONResponse(body.model_dump(), status_code=503)


@router.get("/metrics", operation_id="metrics", response_class=Response,
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}})
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.metrics_registry), media_type=CONTENT_TYPE_LATEST)
