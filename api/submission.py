"""What every submitting route shares: Idempotency-Key replays, and handing a new job to the executor.

Jobs and model imports both create a queued row, then give its id to the executor; a replayed
key returns the job it made (200, `Idempotent-Replayed: true`), a key reused with another body
is a 422, and a queue that refuses the id fails the job at once (503) so nothing is left queued
that no worker will ever see.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import HTTPException, Response
from sqlalchemy.orm import Session

from api.deps import DatabaseDep, ExecutorDep
from api.schemas import JobPublic
from service.db import idempotency
from service.db import jobs as jobs_db
from service.db.models import Job
from service.records import JobStatus

log = logging.getLogger("compressor.api")


def replayed_job(db: DatabaseDep, owner: str, key: str, request_hash: str, response: Response) -> JobPublic | None:
    """The job an earlier request with this key made, or None; 422 when the key came with another body."""
    with db.transaction() as s:
        record = idempotency.find(s, owner, key)
        if record is None:
            return None
        if record.request_hash != request_hash:
            raise HTTPException(422, [{
                "loc": ["header", "Idempotency-Key"], "type": "idempotency_key_reused",
                "msg": f"Idempotency-Key {key!r} was already used with a different request body (job {record.job_id})",
            }])
        job = jobs_db.get_job(s, record.job_id)
    response.status_code = 200
    response.headers["Idempotent-Replayed"] = "true"
    return JobPublic.of(job)


def hand_to_executor(db: DatabaseDep, executor: ExecutorDep, job: Job, what: str = "job",
                     on_failure: Callable[[Session], None] | None = None) -> JobPublic:
    """Queue `job`; when the queue is down, fail it (and run `on_failure` in the same transaction) and answer 503."""
    try:
        executor.submit(job.id)
    except Exception as e:  # noqa: BLE001 - the queue is down: say so, leave no job behind
        log.exception("could not hand %s %s to the %s executor", what, job.id, executor.name)
        with db.transaction() as s:
            jobs_db.transition(s, job.id, JobStatus.queued, JobStatus.failed, finished_at=jobs_db.now(),
                               error={"type": "QueueUnavailable", "message": str(e), "stage": None})
            if on_failure is not None:
                on_failure(s)
        raise HTTPException(503, f"the job queue is unavailable ({type(e).__name__}); try again later") from None
    return JobPublic.of(job)
