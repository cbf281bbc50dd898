"""Lease expiry from the workers' side: a job that ends because its worker vanished loses its checkpoints; a re-queued one keeps them."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest
from sqlalchemy import update

from service.db import jobs as jobs_db
from service.db.database import Database
from service.db.models import Job
from workers.checkpoints import discard_checkpoints, shared_checkpoints_dir
from workers.maintenance import expire_leases

from tests.service_setup import create_api_key, service_settings


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_expired_job_keeps_its_checkpoints_while_queued_and_loses_them_when_failed(db_url: str, tmp_path: Path) -> None:
    settings = service_settings(tmp_path, database_url=db_url)
    db = Database(db_url)
    db.migrate()
    from service.db import keys

    with db.transaction() as s:
        owner = keys.find_key(s, create_api_key(db)).id
        job_id = jobs_db.create_job(s, owner=owner, spec={"model": "m", "recipe": {}}, model="m", recipe_name="r",
                                    executor="local", max_attempts=2).id
    folder = shared_checkpoints_dir(settings, job_id)
    folder.mkdir(parents=True)
    (folder / "journal.json").write_text("{}")
    ended = partial(discard_checkpoints, settings)
    try:
        for attempt, outcome in ((1, "queued"), (2, "failed")):
            with db.transaction() as s:
                jobs_db.claim(s, job_id, f"w{attempt}", 30)
                s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=time.time() - 1))
            assert expire_leases(db, ended=ended) == [(job_id, outcome)]
            assert folder.exists() == (outcome == "queued")
    finally:
        db.dispose()
