"""Request dependencies: settings, database, executor, the caller's API key, and a job the caller owns."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Path, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.key_cache import KeyCache

from service.db import jobs as jobs_db
from service.db import keys
from service.db.database import Database
from service.db.models import Job
from service.settings import Settings
from service.storage import ArtifactStore
from workers.executor import Executor

T = TypeVar("T")

_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer cmp_…` (from `compressor keys create`)")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="the same key in a header of its own")


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_executor(request: Request) -> Executor:
    return request.app.state.executor


async def get_artifact_store(request: Request) -> ArtifactStore:
    return request.app.state.artifact_store


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_db)]
ExecutorDep = Annotated[Executor, Depends(get_executor)]
ArtifactStoreDep = Annotated[ArtifactStore, Depends(get_artifact_store)]


async def current_owner(
    request: Request,
    db: DatabaseDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header_key: Annotated[str | None, Security(_header)],
) -> str:
    """The id of the caller's API key; 401 without a valid one. Recently seen keys skip the database
    (`api/key_cache.py`), so this runs on the event loop and a lookup only when it must."""
    plaintext = bearer.credentials if bearer is not None else header_key
    if not plaintext:
        raise HTTPException(
            401, "an API key is required: send `Authorization: Bearer <key>` (create one with `compressor keys create`)",
            headers={"WWW-Authenticate": "Bearer"})
    cache: KeyCache = request.app.state.key_cache
    owner = cache.get(plaintext)
    if owner is None:
        owner = await read_quickly(db, _find_owner, db, plaintext)
        if owner is None:
            raise HTTPException(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        cache.put(plaintext, owner)
    return owner


def _find_owner(db: Database, plaintext: str) -> str | None:
    with db.read() as s:
        row = keys.find_key(s, plaintext)
        return None if row is None else row.id


OwnerDep = Annotated[str, Depends(current_owner)]


JobId = Annotated[str, Path(pattern=jobs_db.JOB_ID_PATTERN, description="a job id, `job_` + 24 hex digits")]


def owned_job(job_id: JobId, owner: OwnerDep, db: DatabaseDep) -> Job:
    """The job `job_id` if the caller's key owns it; 404 otherwise (another key's job does not exist for you)."""
    with db.read() as s:
        job = jobs_db.get_job(s, job_id, owner=owner)
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


OwnedJobDep = Annotated[Job, Depends(owned_job)]


@dataclass(frozen=True)
class JobVersion:
    """An owned job's id and what changes with every write to it: enough for its ETag."""

    id: str
    updated_at: float
    attempt: int

    @property
    def etag(self) -> str:
        return self.etag_of("job")

    def etag_of(self, part: str) -> str:
        """The ETag of one representation of the job (`job`, `report`)."""
        return f'"{part}-{self.id}-{self.updated_at!r}-{self.attempt}"'


async def owned_job_version(job_id: JobId, owner: OwnerDep, db: DatabaseDep) -> JobVersion:
    """Like `owned_job`, reading two small columns instead of the row (polling clients mostly get 304)."""
    version = await read_quickly(db, _job_version, db, job_id, owner)
    if version is None:
        raise HTTPException(404, f"no job {job_id}")
    return JobVersion(job_id, *version)


def _job_version(db: Database, job_id: str, owner: str) -> tuple[float, int] | None:
    with db.read_connection() as s:
        return jobs_db.get_job_version(s, job_id, owner)


async def read_quickly(db: Database, read: Callable[..., T], *args: Any) -> T:
    """Run a short indexed read: on the event loop for SQLite (a WAL read of a local file takes
    microseconds and never waits for a writer, less than the hop to a worker thread), in the
    thread pool for a database across the network."""
    if db.is_sqlite:
        return read(*args)
    return await run_in_threadpool(read, *args)


OwnedJobVersionDep = Annotated[JobVersion, Depends(owned_job_version)]
