"""Response bodies of the REST API (the request body of POST /v1/jobs is in `api/job_request.py`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field
from sqlalchemy import Row

from service.db.models import Job, JobEvent
from service.records import JobError, JobProgress, JobStatus


class Artifact(BaseModel):
    name: str
    size: int
    sha256: str
    url: str


def artifacts_of(job: Job) -> list[Artifact]:
    return [Artifact(**a, url=f"/v1/jobs/{job.id}/artifacts/{a['name']}") for a in job.artifacts or []]


class JobSummary(BaseModel):
    """A job without its spec, report and artifacts: what a list of jobs shows."""

    id: str
    object: Literal["compression.job"] = "compression.job"
    status: JobStatus
    phase: str | None
    model: str
    recipe_name: str | None
    created_at: float = Field(description="unix seconds")
    started_at: float | None
    finished_at: float | None
    duration_s: float | None
    attempt: int = Field(description="runs started so far (a lost worker's job runs again)")
    max_attempts: int
    cancel_requested: bool
    progress: JobProgress | None
    error: JobError | None

    @classmethod
    def of(cls, job: Job | Row) -> JobSummary:
        return cls(**_summary_fields(job))


def _summary_fields(job: Job | Row) -> dict[str, Any]:
    return {
        "id": job.id, "status": job.status, "phase": job.phase, "model": job.model, "recipe_name": job.recipe_name,
        "created_at": job.created_at, "started_at": job.started_at, "finished_at": job.finished_at,
        "duration_s": job.duration_s, "attempt": job.attempt, "max_attempts": job.max_attempts,
        "cancel_requested": job.cancel_requested, "progress": job.progress, "error": job.error,
    }


class JobPublic(JobSummary):
    """One job in full: the summary plus the validated spec, the artifacts and the report."""

    spec: dict[str, Any] = Field(description="the JobSpec the worker runs (a ready-made recipe resolved in full)")
    artifacts: list[Artifact]
    report: dict[str, Any] | None = Field(description="the job's report.json once it succeeded (also at /v1/jobs/{id}/report)")

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        return cls(**_summary_fields(job), spec=job.spec, artifacts=artifacts_of(job), report=job.report)


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobSummary] = Field(description="newest first; the full job (spec, report) is at /v1/jobs/{id}")
    has_more: bool
    next_cursor: str | None = Field(description="pass as `cursor` to get the next (older) page")


class Event(BaseModel):
    id: int
    created_at: float
    level: str
    kind: str
    message: str
    data: dict[str, Any] | None

    @classmethod
    def of(cls, e: JobEvent) -> Event:
        return cls(id=e.id, created_at=e.created_at, level=e.level, kind=e.kind, message=e.message, data=e.data)


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Event]
    has_more: bool
    last_id: int = Field(description="pass as `after` to get the events that follow")


class ArtifactList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Artifact]


class ModelInfo(BaseModel):
    name: str
    architecture: str | None = None
    params: int | None = None
    num_layers: int | None = None
    hidden_size: int | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class RecipeInfo(BaseModel):
    name: str = Field(description="pass as `recipe` (or as `recipe.base` with overrides) in POST /v1/jobs")
    stages: list[str] = Field(description="the stage names, in order")
    recipe: dict[str, Any] = Field(description="the recipe in full, to submit as it is or edited")


class RecipeList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RecipeInfo]
    recipe_schema: dict[str, Any] = Field(description="the JSON schema every recipe follows (a job's `recipe` object)")


class Health(BaseModel):
    status: Literal["ok", "degraded"]
    database: str
    executor: str
    version: str


class ErrorDetail(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    detail: str | list[ErrorDetail]


# the error answers every job route documents
ERRORS: dict[int | str, dict[str, Any]] = {401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 422: {"model": ErrorBody}}
