"""/v1/jobs: submit (idempotent), list (summaries), get (with ETag), report, events, cancel."""

from __future__ import annotations

import hashlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from sqlalchemy.exc import IntegrityError

from api.catalog import check_model, check_recipe_fits_model
from api.deps import (
    DatabaseDep, ExecutorDep, JobVersion, OwnedJobDep, OwnedJobVersionDep, OwnerDep, SettingsDep, read_quickly,
)
from api.job_request import JobCreate
from api.rendered_jobs import RenderedJobs
from api.submission import hand_to_executor, replayed_job
from api.schemas import ERRORS, ErrorBody, Event, EventList, JobList, JobPublic, JobSummary
from service.db import idempotency
from service.db import jobs as jobs_db
from service.db.models import Job
from service.records import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

NOT_MODIFIED = {304: {"description": "not modified since the `ETag` sent in `If-None-Match`"}}


@router.post("", status_code=202, response_model=JobPublic, operation_id="jobs-create",
             responses={**ERRORS, 200: {"model": JobPublic, "description": "replay of an Idempotency-Key"},
                        413: {"model": ErrorBody}, 503: {"model": ErrorBody}})
def create_job(
    body: JobCreate, owner: OwnerDep, db: DatabaseDep, settings: SettingsDep, executor: ExecutorDep, response: Response,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255,
                                                  pattern=r"^[\x21-\x7e]+$")] = None,
) -> JobPublic:
    """Queue a compression job. A retry with the same `Idempotency-Key` returns the same job."""
    spec = body.job_spec()
    check_model(spec.model, settings)
    check_recipe_fits_model(spec, settings)  # refused now, not hours into calibration
    spec_json = spec.model_dump(mode="json")
    request_hash = hashlib.sha256(json.dumps(spec_json, sort_keys=True).encode()).hexdigest()
    if idempotency_key is not None:
        replay = replayed_job(db, owner, idempotency_key, request_hash, response)
        if replay is not None:
            return replay
    recipe_name = (spec.recipe.name or "").replace("\x00", "")[:128] or None
    try:
        with db.transaction() as s:
            job = jobs_db.create_job(s, owner=owner, spec=spec_json, model=spec.model, recipe_name=recipe_name,
                                     executor=executor.name, max_attempts=settings.max_attempts)
            if idempotency_key is not None:
                idempotency.record(s, owner, idempotency_key, request_hash, job.id)
    except IntegrityError:  # a concurrent request with the same key won the race
        replay = replayed_job(db, owner, idempotency_key or "", request_hash, response)
        if replay is None:
            raise
        return replay
    return hand_to_executor(db, executor, job)


@router.get("", response_model=JobList, operation_id="jobs-list", responses=ERRORS)
async def list_jobs(
    owner: OwnerDep, db: DatabaseDep,
    status: Annotated[list[JobStatus] | None, Query(description="only jobs in these states")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(pattern=jobs_db.JOB_ID_PATTERN, description="`next_cursor` of the previous page")] = None,
) -> Response:
    """Your jobs, newest first, as summaries (no spec, report or artifacts: those are on `GET /v1/jobs/{id}`)."""
    return _json(await read_quickly(db, _job_page, db, owner, status or (), limit, cursor))


def _job_page(db: DatabaseDep, owner: str, statuses: tuple[JobStatus, ...], limit: int, cursor: str | None) -> bytes:
    with db.read_connection() as s:
        rows, more = jobs_db.list_jobs(s, owner, statuses=statuses, limit=limit, before=cursor)
    page = JobList(data=[JobSummary.of(j) for j in rows], has_more=more, next_cursor=rows[-1].id if more else None)
    return page.model_dump_json().encode()


def _not_modified(request: Request, etag: str) -> Response | None:
    """304 when `If-None-Match` names `etag` (or `*`)."""
    sent = request.headers.get("if-none-match")
    if not sent or not ({t.strip().removeprefix("W/") for t in sent.split(",")} & {etag, "*"}):
        return None
    return Response(status_code=304, headers={"ETag": etag, "Cache-Control": "private, no-cache"})


@router.get("/{job_id}", response_model=JobPublic, operation_id="jobs-get", responses={**ERRORS, **NOT_MODIFIED})
async def get_job(version: OwnedJobVersionDep, request: Request, db: DatabaseDep) -> Response:
    """The job in full. Send its `ETag` back in `If-None-Match` to get 304 while nothing changed (cheap polling)."""
    etag = version.etag
    if (not_modified := _not_modified(request, etag)) is not None:
        return not_modified
    rendered: RenderedJobs = request.app.state.rendered_jobs
    body = rendered.get(etag)
    if body is None:
        job = await read_quickly(db, _read_job, db, version.id)
        etag = JobVersion(job.id, job.updated_at, job.attempt).etag  # the row may have moved on since
        body = JobPublic.of(job).model_dump_json().encode()
        rendered.put(etag, body)
    return _json(body, etag)


def _read_job(db: DatabaseDep, job_id: str) -> Job:
    with db.read() as s:
        job = jobs_db.get_job(s, job_id)
    if job is None:  # deleted between the two reads
        raise HTTPException(404, f"no job {job_id}")
    return job


@router.get("/{job_id}/report", operation_id="jobs-report", response_model=dict[str, Any],
            responses={**ERRORS, **NOT_MODIFIED, 409: {"model": ErrorBody}})
async def get_report(job: OwnedJobDep, request: Request) -> Response:
    """The job's report.json (perplexity, KL, size, per-stage cost, per-layer error) once it succeeded."""
    if job.report is None:
        raise HTTPException(409, f"job {job.id} has no report: it is {job.status} (a report exists once it succeeded)")
    etag = JobVersion(job.id, job.updated_at, job.attempt).etag_of("report")
    if (not_modified := _not_modified(request, etag)) is not None:
        return not_modified
    return _json(json.dumps(job.report).encode(), etag)


def _json(body: str | bytes, etag: str | None = None) -> Response:
    """A body already serialised once (FastAPI would validate and serialise the model a second time)."""
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"} if etag else None
    return Response(body, media_type="application/json", headers=headers)


@router.get("/{job_id}/events", response_model=EventList, operation_id="jobs-events", responses=ERRORS)
def list_events(
    job: OwnedJobDep, db: DatabaseDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="return events with a larger id")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventList:
    """The job's event log (status changes, stages, layers, metrics), oldest first."""
    with db.read() as s:
        rows, more = jobs_db.list_events(s, job.id, after=after, limit=limit)
    return EventList(data=[Event.of(e) for e in rows], has_more=more, last_id=rows[-1].id if rows else after)


@router.post("/{job_id}/cancel", response_model=JobPublic, operation_id="jobs-cancel",
             responses={**ERRORS, 409: {"model": ErrorBody}})
def cancel_job(job: OwnedJobDep, db: DatabaseDep) -> JobPublic:
    """A queued job is cancelled at once; a running one moves to `cancelling` and stops at the next layer."""
    try:
        with db.transaction() as s:
            jobs_db.request_cancel(s, job.id)
            job = jobs_db.get_job(s, job.id)
    except jobs_db.InvalidTransition as e:
        raise HTTPException(409, f"job {job.id} already {e.status}; only queued or running jobs can be cancelled") from None
    return JobPublic.of(job)
