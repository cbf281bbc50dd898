"""Response bodies of the REST API (the request body is `compressor.spec.JobSpec` itself)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from service.db.models import Job, JobEvent

JobStatus = Literal["queued", "running", "cancelling", "succeeded", "failed", "cancelled"]


class Progress(BaseModel):
    stage: str | None = None
    layer: int | None = None
    num_layers: int | None = None
    fraction: float | None = Field(None, description="of the current stage, 0..1")
    eta_s: float | None = Field(None, description="estimated seconds left in the current stage")
    message: str | None = None


class JobError(BaseModel):
    type: str
    message: str
    stage: str | None = None


class Artifact(BaseModel):
    name: str
    size: int
    sha256: str
    url: str


class JobPublic(BaseModel):
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
    progress: Progress | None
    error: JobError | None
    metrics: dict[str, Any] | None = Field(description="the job's report.json once it succeeded")
    artifacts: list[Artifact]
    spec: dict[str, Any]

    @classmethod
    def of(cls, job: Job) -> JobPublic:
        return cls(
            id=job.id, status=job.status, phase=job.phase, model=job.model, recipe_name=job.recipe_name,  # type: ignore[arg-type]
            created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
            duration_s=job.duration_s, attempt=job.attempt, max_attempts=job.max_attempts,
            cancel_requested=job.cancel_requested, progress=job.progress, error=job.error,  # type: ignore[arg-type]
            metrics=job.report, spec=job.spec,
            artifacts=[Artifact(**a, url=f"/v1/jobs/{job.id}/artifacts/{a['name']}") for a in job.artifacts or []],
        )


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[JobPublic]
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
    name: str
    recipe: dict[str, Any]


class RecipeList(BaseModel):
    object: Literal["list"] = "list"
    data: list[RecipeInfo]


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
