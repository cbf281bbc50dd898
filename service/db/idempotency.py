"""Idempotency-Key records: (owner, key) → the job it created and a hash of the request."""

from __future__ import annotations

import time

from sqlalchemy import select
from sqlalchemy.orm import Session

from service.db.models import IdempotencyKey


def find(session: Session, owner: str, key: str) -> IdempotencyKey | None:
    return session.scalars(select(IdempotencyKey).where(IdempotencyKey.owner == owner, IdempotencyKey.key == key)).first()


def record(session: Session, owner: str, key: str, request_hash: str, job_id: str) -> None:
    session.add(IdempotencyKey(owner=owner, key=key, request_hash=request_hash, job_id=job_id, created_at=time.time()))
    session.flush()
