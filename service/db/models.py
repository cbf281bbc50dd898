"""The five tables: jobs, job_events, api_keys, idempotency_keys, models.

Timestamps are float seconds since the epoch (portable between SQLite and PostgreSQL, no
time-zone surprises). JSON columns hold the validated spec, progress, error, report and the
artifact list.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


# an auto-increment 64-bit key on PostgreSQL; SQLite only auto-increments INTEGER PRIMARY KEY
EventId = BigInteger().with_variant(Integer, "sqlite")


class Base(DeclarativeBase):
    pass


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner: Mapped[str] = mapped_column(String(40), ForeignKey("api_keys.id"))
    kind: Mapped[str] = mapped_column(String(16), server_default="compression")  # JobKind
    status: Mapped[str] = mapped_column(String(16), index=True)
    executor: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(String(64))
    recipe_name: Mapped[str | None] = mapped_column(String(128))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    phase: Mapped[str | None] = mapped_column(String(64))
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    artifacts: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    duration_s: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (Index("ix_jobs_owner_id", "owner", "id"), Index("ix_jobs_status_lease", "status", "lease_expires_at"))


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(EventId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[float] = mapped_column(Float)
    level: Mapped[str] = mapped_column(String(8))
    kind: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)

    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)


class IdempotencyKey(Base):
    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(40), ForeignKey("api_keys.id"), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"))
    created_at: Mapped[float] = mapped_column(Float)


class Model(Base):
    """A model imported over REST: who imported it (only that key may delete it) and by which job.

    The files live in the model store; this row reserves the name while the import runs. Models
    imported with the CLI (or bundled) have no row: every key may use them, none may delete them."""

    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    owner: Mapped[str] = mapped_column(String(40), ForeignKey("api_keys.id"))
    import_job_id: Mapped[str] = mapped_column(String(40), ForeignKey("jobs.id", ondelete="CASCADE"))
    source: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float)
