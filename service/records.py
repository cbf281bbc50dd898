"""The job records that cross the service's boundaries: its status and its progress.

One definition each, used by the database layer, the job process, the supervisor, the API's
response models, its client and its metrics.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

MODEL_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"  # as compressor.spec.MODEL_NAME_PATTERN


class JobStatus(str, Enum):
    """A job's state; see the diagram in `service/db/jobs.py`.

    Member names equal their values, so a driver that writes an Enum by name (psycopg does)
    stores the same string as one that writes it by value."""

    queued = "queued"
    running = "running"
    cancelling = "cancelling"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class JobKind(str, Enum):
    """What a job does: compress a model (its spec is a `JobSpec`), or import one (a `ModelImportSpec`)."""

    compression = "compression"
    model_import = "model-import"


ACTIVE_STATUSES = (JobStatus.running, JobStatus.cancelling)  # a worker holds a lease
TERMINAL_STATUSES = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class JobProgress(BaseModel):
    """Where a running job is: written by the job process, shown by the API and the dashboard."""

    model_config = ConfigDict(extra="ignore")

    stage: str | None = Field(None, description="the current stage (load, quantize, export, eval:wiki, …)")
    layer: int | None = Field(None, description="the last decoder layer done in this stage, 0-based")
    num_layers: int | None = None
    fraction: float | None = Field(None, description="of the current stage, 0..1")
    eta_s: float | None = Field(None, description="estimated seconds left in the current stage")
    message: str | None = None

    @classmethod
    def done(cls) -> JobProgress:
        return cls(stage="done", fraction=1.0, eta_s=0.0)


class JobError(BaseModel):
    """Why a job failed: the exception type, its message, and the stage it was in."""

    type: str
    message: str
    stage: str | None = None


class ModelImportSpec(BaseModel):
    """What an import job runs: written by `POST /v1/models`, read by `workers/import_job.py`.

    It carries the allow-list and size limit in force when the request was admitted, so the job
    checks the source again under the same rules (the job process has no settings of its own)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["model-import"] = "model-import"
    name: str = Field(pattern=MODEL_NAME_PATTERN)
    source: str
    revision: str | None = None
    allowed_sources: str = Field(description="COMPRESSOR_MODEL_SOURCES when the import was requested")
    max_bytes: int | None = None
