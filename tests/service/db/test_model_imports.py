"""The models table on SQLite and PostgreSQL: one live import per name, a failed one frees it,
and which unfinished compression jobs still name a model."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from service.db import jobs as jobs_db
from service.db import keys, model_imports
from service.db.database import Database
from service.records import JobKind, JobStatus


def _job(db: Database, owner: str, model: str, kind: JobKind) -> str:
    with db.transaction() as s:
        return jobs_db.create_job(s, owner=owner, spec={}, model=model, recipe_name=None, executor="local",
                                  max_attempts=1, kind=kind).id


def test_one_import_per_name_and_the_jobs_that_use_a_model(db: Database) -> None:
    with db.transaction() as s:
        owner = keys.create_key(s, "alice")[0].id
    first = _job(db, owner, "m", JobKind.model_import)
    with db.transaction() as s:
        model_imports.reserve(s, "m", owner, first, "/data/m")
    with db.read() as s:
        row = model_imports.find(s, "m")
        assert (row.owner, row.import_job_id, row.job_status) == (owner, first, JobStatus.queued)
    second = _job(db, owner, "m", JobKind.model_import)
    with pytest.raises(IntegrityError), db.transaction() as s:  # two sessions racing for the name
        from service.db.models import Model

        s.add(Model(name="m", owner=owner, import_job_id=second, source="/data/m", created_at=0.0))
        s.flush()
    with db.transaction() as s:
        assert jobs_db.request_cancel(s, first) == JobStatus.cancelled
        model_imports.reserve(s, "m", owner, second, "/data/m")  # a cancelled import no longer holds it
    with db.read() as s:
        assert [r.import_job_id for r in model_imports.rows(s)] == [second]

    running = _job(db, owner, "m", JobKind.compression)
    done = _job(db, owner, "m", JobKind.compression)
    _job(db, owner, "other", JobKind.compression)
    with db.transaction() as s:
        jobs_db.request_cancel(s, done)
        assert model_imports.jobs_using(s, "m") == [running]  # not the import jobs, not finished ones
        model_imports.release(s, "m")
        assert model_imports.find(s, "m") is None
        assert jobs_db.get_job(s, second).kind == "model-import" and jobs_db.get_job(s, running).kind == "compression"
