"""Rows of the models table: a name reserved by an import job, and who may delete the model.

A row is written with its import job, in one transaction, so two imports of one name cannot
both start (the name is the primary key). A row whose job failed or was cancelled no longer
holds the name: the next import of it replaces the row.
"""

from __future__ import annotations

from sqlalchemy import Row, delete, select
from sqlalchemy.orm import Session

from service.db.jobs import now
from service.db.models import Job, Model
from service.records import TERMINAL_STATUSES, JobKind, JobStatus

LIVE_STATUSES = (JobStatus.queued, JobStatus.running, JobStatus.cancelling)


def find(session: Session, name: str) -> Row | None:
    """(name, owner, import_job_id, source, created_at, job_status) of the model's row, if any."""
    stmt = (select(Model.name, Model.owner, Model.import_job_id, Model.source, Model.created_at,
                   Job.status.label("job_status"))
            .join(Job, Job.id == Model.import_job_id).where(Model.name == name))
    return session.execute(stmt).first()


def rows(session: Session) -> list[Row]:
    stmt = (select(Model.name, Model.owner, Model.import_job_id, Model.source, Model.created_at,
                   Job.status.label("job_status"), Job.progress)
            .join(Job, Job.id == Model.import_job_id).order_by(Model.name))
    return list(session.execute(stmt))


def reserve(session: Session, name: str, owner: str, job_id: str, source: str) -> None:
    """Take the name for `job_id`, replacing a row whose import ended without the model."""
    session.execute(delete(Model).where(Model.name == name))
    session.add(Model(name=name, owner=owner, import_job_id=job_id, source=source, created_at=now()))
    session.flush()


def release(session: Session, name: str) -> None:
    session.execute(delete(Model).where(Model.name == name))


def jobs_using(session: Session, name: str) -> list[str]:
    """Compression jobs not yet finished that name the model (they would fail if it went)."""
    stmt = select(Job.id).where(Job.model == name, Job.kind == JobKind.compression.value,
                                Job.status.not_in([s.value for s in TERMINAL_STATUSES])).order_by(Job.id)
    return list(session.scalars(stmt))
