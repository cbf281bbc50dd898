"""The worker's COMPRESSOR_DEVICE reaches the job process: the real pipeline on a tiny model says where it ran."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.db import jobs as jobs_db
from service.db.database import Database
from service.db.models import Job
from workers.local import LocalExecutor

from tests.service_setup import create_api_key, service_settings, wait_for

pytestmark = pytest.mark.model

RECIPE = {"name": "tiny-rtn", "stages": [{"quantize": {"weights": {"bits": 4, "strategy": "group", "group_size": 16}}}],
          "eval": {"datasets": ["wiki"], "max_tokens": 256, "window": 64}, "execution": {"dtype": "bfloat16"}}


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_job_records_the_workers_device_and_dtype(db_url: str, tiny_store: Path, tmp_path: Path) -> None:
    settings = service_settings(tmp_path, database_url=db_url, job_runner="pipeline", device="cpu", home=tiny_store,
                                lease_s=60.0, heartbeat_s=1.0)
    db = Database(db_url)
    db.migrate()
    from service.db import keys

    with db.transaction() as s:
        owner = keys.find_key(s, create_api_key(db)).id
        job_id = jobs_db.create_job(s, owner=owner, spec={"model": "tiny-llama", "recipe": RECIPE}, model="tiny-llama",
                                    recipe_name="tiny-rtn", executor="local", max_attempts=1).id
    executor = LocalExecutor(settings, db)
    executor.start()
    try:
        def finished() -> Job | None:
            with db.transaction() as s:
                job = s.get(Job, job_id)
                return job if job.status in ("succeeded", "failed") else None

        job = wait_for(finished, 240, "the job to finish")
        assert job.status == "succeeded", job.error
        assert job.report["execution"]["device"] == "cpu" and job.report["execution"]["dtype"] == "bfloat16"
        with db.transaction() as s:
            messages = [e.message for e in jobs_db.list_events(s, job_id, limit=1000)[0]]
        assert "running on cpu, bfloat16" in messages
    finally:
        executor.stop()
        db.dispose()
