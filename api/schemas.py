"""Response bodies of the REST API (the request body of POST /v1/jobs is in `api/job_request.py`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Row

from service.db.models import Job, JobEvent
from compressor.eval.report import EngineRow
from compressor.models.compatibility import ModelSupport, Support
from service.records import MODEL_NAME_PATTERN, JobError, JobKind, JobProgress, JobStatus


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
    kind: JobKind = Field(JobKind.compression, description="compression (POST /v1/jobs) or model-import (POST /v1/models)")
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
        "id": job.id, "kind": job.kind, "status": job.status, "phase": job.phase, "model": job.model, "recipe_name": job.recipe_name,
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


class ModelImportRequest(BaseModel):
    """The body of POST /v1/models: a store name and where to import the model from."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"name": "qwen2.5-1.5b", "source": "/data/models/Qwen2.5-1.5B"},
        {"name": "llama-3.1-8b", "source": "hf://meta-llama/Llama-3.1-8B", "revision": "main"},
        {"source": "s3://team-models/llm/mistral-7b"}]})

    name: str | None = Field(None, pattern=MODEL_NAME_PATTERN,
                             description="store name (default: the source's last path part, lower-cased)")
    source: str = Field(min_length=1, max_length=2048, description=(
        "a HF folder or .gguf file under an allowed local root, hf://org/model[@revision] of an allowed organisation, "
        "or s3://bucket/prefix in an allowed bucket (COMPRESSOR_MODEL_SOURCES)"))
    revision: str | None = Field(None, max_length=128, description="hf:// only: branch, tag or commit")


Importer = Literal["you", "another key", "cli"]


class ModelInfo(BaseModel):
    """A model as a list shows it. Models are shared: every key sees and uses every model."""

    name: str
    status: Literal["ready", "importing"] = "ready"
    architecture: str | None = None
    model_type: str | None = None
    params: int | None = None
    num_layers: int | None = None
    hidden_size: int | None = None
    dtype: str | None = None
    total_bytes: int | None = None
    source: str | None = None
    revision: str | None = None
    imported_by: Importer = Field("cli", description="you / another key (over REST: only that key may delete it) / "
                                                     "cli (bundled or `compressor models import`: not deletable over REST)")
    import_job_id: str | None = Field(None, description="the import job (GET /v1/jobs/{id} while yours)")


class ModelFile(BaseModel):
    name: str
    size: int
    sha256: str


class RecipeFit(BaseModel):
    """A ready-made recipe on one model: whether it applies, and which engines serve the checkpoint it writes."""

    applies: bool
    reason: str | None = Field(None, description="why it does not apply to this model (the submit-time check's message)")
    engines: dict[str, EngineRow] = Field({}, description="engine (transformers, vllm-ampere/-hopper/-blackwell) -> serves?")


class ModelDetail(ModelInfo):
    """One model in full: its files with sha256s, its shape, and which methods and formats apply (and why not)."""

    files: list[ModelFile] = []
    support: ModelSupport | None = None
    formats: dict[str, Support] = {}
    recipes: dict[str, RecipeFit] = Field({}, description="each ready-made recipe on this model and who serves its checkpoint")


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


class RecipeInfo(BaseModel):
    name: str = Field(description="pass as `recipe` (or as `recipe.base` with overrides) in POST /v1/jobs")
    stages: list[str] = Field(description="the stage names, in order")
    recipe: dict[str, Any] = Field(description="the recipe in full, to submit as it is or edited")
    engines: dict[str, EngineRow] = Field({}, description="which engines serve the checkpoint it writes, by which path, "
                                                          "and why not (compressor/export/engines.py, measured by exporting it)")


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
