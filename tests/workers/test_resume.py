"""Through the service: a job process SIGKILLed mid-GPTQ, mid-OSTQuant or mid-ProSparse is re-queued and resumes.

The local executor runs the real pipeline on a 4-layer tiny Llama; `COMPRESSOR_FAILPOINT`
kills the first attempt's job process (once, guarded by a marker file) right after a given
layer or training step is checkpointed. The second attempt must say where it resumed and store an artifact with the
sha256 of an uninterrupted run; a terminal job's checkpoints are gone.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compressor.checkpoints import failpoint
from compressor.checkpoints.store import INTERVAL_ENV
from compressor.export.format import sha256_file
from compressor.pipeline import run
from compressor.spec import JobSpec
from service.db import jobs as jobs_db
from service.db.database import Database
from service.db.models import Job
from service.storage.checkpoints import checkpoint_mirror
from workers.local import LocalExecutor

from tests.resume_jobs import KILLS, SMALL

from tests.service_setup import create_api_key, service_settings, wait_for


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("job", "artifacts"), [
    ("gptq", "local"), ("gptq", "s3"),
    # the training states' resume is covered through the CLI in the default run; through the service it is slow
    pytest.param("ostquant", "local", marks=pytest.mark.heavy), pytest.param("prosparse", "local", marks=pytest.mark.heavy),
])
def test_killed_job_resumes_through_the_service_with_the_same_bytes(tiny4_store, db_url, tmp_path, monkeypatch,
                                                                    job, artifacts, request):
    """Local store: the checkpoints folder is shared by the attempts. S3: each attempt starts with an empty local
    folder (its own staging) and must restore the checkpoints from the bucket, as another host would."""
    stages, key, where = KILLS[job]
    spec = {"model": "tiny4", "recipe": {"stages": stages, **SMALL}}
    run(JobSpec.model_validate(spec), tmp_path / "whole", home=tiny4_store)
    whole_sha = sha256_file(tmp_path / "whole" / "checkpoint" / "model.safetensors")

    monkeypatch.setenv(failpoint.ENV, key)
    monkeypatch.setenv(failpoint.ONCE_ENV, str(tmp_path / "killed-once"))
    monkeypatch.setenv(INTERVAL_ENV, "0")
    extra = {"artifacts_url": request.getfixturevalue("s3_url")} if artifacts == "s3" else {}
    settings = service_settings(tmp_path, database_url=db_url, home=tiny4_store, job_runner="pipeline", lease_s=30.0, **extra)
    db = Database(db_url)
    db.migrate()
    owner_key = create_api_key(db)
    from service.db import keys

    with db.transaction() as s:
        owner = keys.find_key(s, owner_key).id
        job_id = jobs_db.create_job(s, owner=owner, spec=spec, model="tiny4", recipe_name=job, executor="local",
                                    max_attempts=2).id
    executor = LocalExecutor(settings, db)
    executor.start()
    try:
        def current() -> Job:
            with db.transaction() as s:
                return s.get(Job, job_id)
        done = wait_for(lambda: (j := current()).status in ("succeeded", "failed") and j, 300, "the job to finish")
        with db.transaction() as s:
            messages = [e.message for e in jobs_db.list_events(s, job_id, limit=1000)[0]]
    finally:
        executor.stop()
        db.dispose()
    assert done.status == "succeeded" and done.attempt == 2, messages
    assert (tmp_path / "killed-once").read_text() == key
    assert any("killed by SIGKILL" in m and "re-queued" in m for m in messages)
    assert f"resumed at {where} (attempt 2)" in messages
    assert done.report["resume"]["attempt"] == 2 and done.report["resume"]["units_reused"] >= 1
    (weights,) = [a for a in done.artifacts if a["name"].endswith("model.safetensors")]
    assert weights["sha256"] == whole_sha
    assert not (Path(settings.checkpoints_dir) / job_id).exists()
    if artifacts == "s3":
        # the journal, the original's scores measured before the stages, layers 0 and 1, and the activations entering layer 1
        assert "restored 5 checkpoint files from the artifact store" in messages
        mirror = checkpoint_mirror(settings.artifacts_url, job_id)
        assert mirror is not None and mirror._keys() == []
