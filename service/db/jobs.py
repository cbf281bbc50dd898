"""Job rows and their state machine. Every state change is a guarded UPDATE.

    queued ──claim──▶ running ──▶ succeeded | failed | cancelled
      │                  │  ▲ (lease expired, attempts left: back to queued)
      │                  ▼  │
      └──cancel──▶ cancelled ◀── cancelling (cancel asked while running)

A guarded UPDATE names the status it expects (`WHERE status = …`) and, for a worker, the
lease it holds (`lease_owner`, `attempt`): a rowcount of 0 means someone else moved the job
first, and the caller must not act as if it had.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, select, update
from sqlalchemy.orm import Session

from service.db.models import Job, JobEvent
from service.records import ACTIVE_STATUSES, TERMINAL_STATUSES, JobKind, JobProgress, JobStatus

JOB_ID_PATTERN = r"^job_[0-9a-f]{24}$"


def now() -> float:
    return time.time()


_last_id = [0, 0]  # (milliseconds, random part) of the newest id this process made
_id_lock = threading.Lock()


def new_job_id() -> str:
    """Time-ordered ids (`job_` + 12 hex of milliseconds + 12 random hex): newest sorts last.

    Monotonic within a process (as ULIDs are): a second id in the same millisecond takes the
    previous random part plus one, so jobs submitted back to back still page in order.
    """
    with _id_lock:
        ms, rand = int(time.time() * 1000), int.from_bytes(secrets.token_bytes(6), "big") >> 1
        if ms <= _last_id[0]:
            ms, rand = _last_id[0], _last_id[1] + 1
        _last_id[:] = [ms, rand]
    return f"job_{ms:012x}{rand:012x}"


@dataclass(frozen=True)
class Lease:
    """What a worker holds while it runs a job; every write it makes is fenced by it."""

    job_id: str
    owner: str
    attempt: int


class InvalidTransition(Exception):
    def __init__(self, job_id: str, status: str, wanted: str):
        super().__init__(f"job {job_id} is {status}; cannot {wanted}")
        self.status = status


# --------------------------------------------------------------------------- reads


def get_job(session: Session, job_id: str, owner: str | None = None) -> Job | None:
    stmt = select(Job).where(Job.id == job_id)
    if owner is not None:
        stmt = stmt.where(Job.owner == owner)
    return session.scalars(stmt).first()


# built once: the query every poll of a job runs (building and keying a statement costs more than running it)
_JOB_VERSION = select(Job.updated_at, Job.attempt).where(Job.id == bindparam("job_id"), Job.owner == bindparam("owner"))


def get_job_version(session: Session | Connection, job_id: str, owner: str) -> tuple[float, int] | None:
    """(updated_at, attempt) of the owner's job: what its ETag is made of, without its JSON columns."""
    row = session.execute(_JOB_VERSION, {"job_id": job_id, "owner": owner}).first()
    return None if row is None else (row.updated_at, row.attempt)


SUMMARY_COLUMNS = (Job.id, Job.kind, Job.status, Job.phase, Job.model, Job.recipe_name, Job.created_at, Job.started_at,
                   Job.finished_at, Job.duration_s, Job.attempt, Job.max_attempts, Job.cancel_requested, Job.progress,
                   Job.error)


def list_jobs(
    session: Session | Connection, owner: str, *, statuses: Sequence[str] = (), limit: int = 20, before: str | None = None
) -> tuple[list[Row], bool]:
    """Newest first; `before` is the id of the last job of the previous page. Rows of the summary
    columns only: a list shows no spec, report or artifacts, and decoding them is most of the cost."""
    stmt = select(*SUMMARY_COLUMNS).where(Job.owner == owner)
    if statuses:
        stmt = stmt.where(Job.status.in_(statuses))
    if before:
        stmt = stmt.where(Job.id < before)
    rows = list(session.execute(stmt.order_by(Job.id.desc()).limit(limit + 1)))
    return rows[:limit], len(rows) > limit


def list_events(session: Session, job_id: str, *, after: int = 0, limit: int = 100) -> tuple[list[JobEvent], bool]:
    stmt = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after).order_by(JobEvent.id).limit(limit + 1)
    rows = list(session.scalars(stmt))
    return rows[:limit], len(rows) > limit


def next_queued_ids(session: Session, executor: str, limit: int = 8) -> list[str]:
    stmt = select(Job.id).where(Job.status == JobStatus.queued, Job.executor == executor).order_by(Job.id).limit(limit)
    return list(session.scalars(stmt))


def count_by_status(session: Session) -> dict[JobStatus, int]:
    """Jobs per status, every status present (0 for none)."""
    counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
    return {status: counts.get(status.value, 0) for status in JobStatus}


# --------------------------------------------------------------------------- writes


def create_job(
    session: Session,
    *,
    owner: str,
    spec: dict[str, Any],
    model: str,
    recipe_name: str | None,
    executor: str,
    max_attempts: int,
    kind: JobKind = JobKind.compression,
) -> Job:
    t = now()
    job = Job(
        id=new_job_id(), owner=owner, kind=kind.value, status=JobStatus.queued, executor=executor, model=model,
        recipe_name=recipe_name,
        spec=spec, attempt=0, max_attempts=max_attempts, cancel_requested=False, created_at=t, updated_at=t,
    )
    session.add(job)
    session.flush()
    add_event(session, job.id, f"queued on the {executor} executor", kind="status", data={"status": JobStatus.queued})
    return job


def add_event(
    session: Session, job_id: str, message: str, *, level: str = "info", kind: str = "status",
    data: dict[str, Any] | None = None, created_at: float | None = None,
) -> None:
    session.add(JobEvent(job_id=job_id, created_at=created_at or now(), level=level, kind=kind, message=message, data=data))


def add_events(session: Session, job_id: str, events: Iterable[dict[str, Any]]) -> None:
    for e in events:
        add_event(session, job_id, e["message"], level=e.get("level", "info"), kind=e.get("kind", "message"),
                  data=e.get("data"), created_at=e.get("created_at"))


def transition(
    session: Session, job_id: str, expected: JobStatus | Sequence[JobStatus], new: JobStatus, **values: Any
) -> bool:
    """`UPDATE jobs SET status=new, … WHERE id=job_id AND status IN expected`; True if it moved."""
    expected = (expected,) if isinstance(expected, str) else tuple(expected)
    stmt = (
        update(Job).where(Job.id == job_id, Job.status.in_(expected))
        .values(status=new, updated_at=now(), **values).execution_options(synchronize_session=False)
    )
    return session.execute(stmt).rowcount == 1


def _leased(lease: Lease, expired_before: float | None = None):  # noqa: ANN202
    """The fence of a worker's writes; with `expired_before`, only a lease that has run out."""
    cond = [Job.id == lease.job_id, Job.status.in_(ACTIVE_STATUSES), Job.lease_owner == lease.owner,
            Job.attempt == lease.attempt]
    if expired_before is not None:
        cond.append(Job.lease_expires_at < expired_before)
    return tuple(cond)


def claim(session: Session, job_id: str, worker: str, lease_s: float) -> Lease | None:
    """queued → running for `worker`, attempt + 1. None if the job was not queued any more."""
    t = now()
    stmt = (
        update(Job).where(Job.id == job_id, Job.status == JobStatus.queued)
        .values(status=JobStatus.running, attempt=Job.attempt + 1, lease_owner=worker, lease_expires_at=t + lease_s,
                started_at=func.coalesce(Job.started_at, t), updated_at=t, phase="starting", progress=None, error=None)
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount != 1:
        return None
    attempt, max_attempts = session.execute(select(Job.attempt, Job.max_attempts).where(Job.id == job_id)).one()
    add_event(session, job_id, f"started by {worker} (attempt {attempt} of {max_attempts})",
              data={"status": JobStatus.running, "worker": worker, "attempt": attempt})
    return Lease(job_id, worker, attempt)


def renew_lease(session: Session, lease: Lease, lease_s: float) -> JobStatus | None:
    """Extend the lease; returns the job's status (running/cancelling), None if the lease is lost."""
    t = now()
    stmt = update(Job).where(*_leased(lease)).values(lease_expires_at=t + lease_s).execution_options(synchronize_session=False)
    if session.execute(stmt).rowcount != 1:
        return None
    return JobStatus(session.execute(select(Job.status).where(Job.id == lease.job_id)).scalar_one())


def update_progress(session: Session, lease: Lease, *, phase: str | None, progress: JobProgress | None) -> bool:
    values: dict[str, Any] = {"updated_at": now()}
    if phase is not None:
        values["phase"] = phase
    if progress is not None:
        values["progress"] = progress.model_dump(mode="json")
    stmt = update(Job).where(*_leased(lease)).values(**values).execution_options(synchronize_session=False)
    return session.execute(stmt).rowcount == 1


def should_stop(session: Session, lease: Lease) -> bool:
    """True when the job process should stop: cancel asked, or the lease is no longer ours."""
    row = session.execute(select(Job.status, Job.lease_owner, Job.attempt).where(Job.id == lease.job_id)).first()
    return row is None or row.status != JobStatus.running or row.lease_owner != lease.owner or row.attempt != lease.attempt


def finish(
    session: Session, lease: Lease, status: JobStatus, *, message: str, level: str = "info",
    expired_before: float | None = None, **values: Any,
) -> bool:
    """running|cancelling → a terminal status, fenced by the lease."""
    assert status in TERMINAL_STATUSES
    t = now()
    started = session.execute(select(Job.started_at).where(Job.id == lease.job_id)).scalar_one_or_none()
    stmt = (
        update(Job).where(*_leased(lease, expired_before))
        .values(status=status, finished_at=t, updated_at=t, duration_s=(t - started) if started else None,
                lease_owner=None, lease_expires_at=None, **values)
        .execution_options(synchronize_session=False)
    )
    if session.execute(stmt).rowcount != 1:
        return False
    add_event(session, lease.job_id, message, level=level, data={"status": status})
    return True


def release_for_retry(
    session: Session, lease: Lease, *, reason: str, expired_before: float | None = None
) -> str | None:
    """The job process died: queued again if attempts are left, else failed. Returns the new status."""
    job = session.execute(select(Job.attempt, Job.max_attempts).where(Job.id == lease.job_id)).first()
    if job is None:
        return None
    if job.attempt < job.max_attempts:
        stmt = (
            update(Job).where(*_leased(lease, expired_before))
            .values(status=JobStatus.queued, lease_owner=None, lease_expires_at=None, phase=None, updated_at=now())
            .execution_options(synchronize_session=False)
        )
        if session.execute(stmt).rowcount != 1:
            return None
        add_event(session, lease.job_id, f"{reason}; re-queued (attempt {job.attempt} of {job.max_attempts} used)",
                  level="warning", data={"status": JobStatus.queued, "attempt": job.attempt})
        return JobStatus.queued
    error = {"type": "WorkerLost", "message": f"{reason}; gave up after {job.attempt} attempts", "stage": None}
    ok = finish(session, lease, JobStatus.failed, message=error["message"], level="error", error=error,
                expired_before=expired_before)
    return JobStatus.failed if ok else None


def request_cancel(session: Session, job_id: str) -> str:
    """queued → cancelled at once; running → cancelling (the worker stops it). Returns the new status."""
    t = now()
    if transition(session, job_id, JobStatus.queued, JobStatus.cancelled, cancel_requested=True, finished_at=t):
        add_event(session, job_id, "cancelled before it started", data={"status": JobStatus.cancelled})
        return JobStatus.cancelled
    if transition(session, job_id, JobStatus.running, JobStatus.cancelling, cancel_requested=True):
        add_event(session, job_id, "cancel requested; stopping at the next layer boundary", data={"status": JobStatus.cancelling})
        return JobStatus.cancelling
    status = session.execute(select(Job.status).where(Job.id == job_id)).scalar_one()
    if status == JobStatus.cancelling:
        return status
    raise InvalidTransition(job_id, status, "cancel")


def expire_leases(session: Session) -> list[tuple[str, str]]:
    """Jobs whose worker stopped heartbeating: re-queued (attempts left), failed, or cancelled.

    Returns (job_id, new status) for each job moved."""
    t = now()
    stale = session.execute(
        select(Job.id, Job.status, Job.lease_owner, Job.attempt)
        .where(Job.status.in_(ACTIVE_STATUSES), Job.lease_expires_at < t)
    ).all()
    moved: list[tuple[str, str]] = []
    for row in stale:
        lease = Lease(row.id, row.lease_owner, row.attempt)
        reason = f"worker {row.lease_owner} stopped heartbeating (lease expired)"
        if row.status == JobStatus.cancelling:
            if finish(session, lease, JobStatus.cancelled, message=f"{reason} while cancelling; cancelled", level="warning",
                      expired_before=t):
                moved.append((row.id, JobStatus.cancelled))
            continue
        new = release_for_retry(session, lease, reason=reason, expired_before=t)
        if new:
            moved.append((row.id, new))
    return moved
