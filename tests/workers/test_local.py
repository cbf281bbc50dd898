"""The local executor with the dry-run runner: success, failure, cancel, kills, lost workers.

The job process is real (spawned, own process group) and writes to a real database; only the
compression itself is the torch-free stand-in `workers.dry_run`, so each case takes seconds.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from api.metrics import JobsCollector
from service.db import jobs as jobs_db
from service.db.database import Database
from service.db.models import Job
from service.settings import Settings
from workers.local import LocalExecutor

from tests.service_setup import REPO, create_api_key, pid_alive, service_settings, wait_for


def spec(name: str = "dry") -> dict:
    return {"model": "smollm2-135m", "recipe": {"name": name, "eval": {"max_tokens": 1024, "kl": False}}}


class Harness:
    def __init__(self, settings: Settings, db: Database):
        self.settings, self.db = settings, db
        self.owner_key = create_api_key(db)
        from service.db import keys

        with db.transaction() as s:
            self.owner = keys.find_key(s, self.owner_key).id

    def submit(self, name: str = "dry", max_attempts: int | None = None) -> str:
        with self.db.transaction() as s:
            return jobs_db.create_job(s, owner=self.owner, spec=spec(name), model="smollm2-135m", recipe_name=name,
                                      executor="local", max_attempts=max_attempts or self.settings.max_attempts).id

    def job(self, job_id: str) -> Job:
        with self.db.transaction() as s:
            return s.get(Job, job_id)

    def events(self, job_id: str) -> list:
        with self.db.transaction() as s:
            return jobs_db.list_events(s, job_id, limit=1000)[0]

    def wait_status(self, job_id: str, statuses: tuple[str, ...], timeout: float = 30) -> Job:
        return wait_for(lambda: (j := self.job(job_id)).status in statuses and j, timeout, f"{job_id} in {statuses}")  # type: ignore[return-value]

    def job_pid(self, job_id: str, attempt_events: int = 1) -> int:
        def pids() -> list[int]:
            return [e.data["pid"] for e in self.events(job_id) if e.data and "pid" in e.data]
        return wait_for(lambda: len(pids()) >= attempt_events and pids()[-1], 30, "the job process")  # type: ignore[return-value]

    def wait_layer(self, job_id: str, layer: int = 0) -> None:
        wait_for(lambda: ((self.job(job_id).progress or {}).get("layer") or -1) >= layer, 30, f"layer {layer}")


@pytest.fixture
def harness(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    monkeypatch.setenv("COMPRESSOR_DRY_RUN_LAYER_S", "0.3")
    settings = service_settings(tmp_path, database_url=db_url)
    db = Database(db_url)
    db.migrate()
    executor = LocalExecutor(settings, db)
    executor.start()
    yield Harness(settings, db)
    executor.stop()
    db.dispose()


def test_job_runs_to_success_with_events_and_artifacts(harness: Harness) -> None:
    job_id = harness.submit()
    job = harness.wait_status(job_id, ("succeeded", "failed"))
    assert job.status == "succeeded", job.error
    assert (job.attempt, job.phase, job.progress["fraction"]) == (1, "done", 1.0)
    assert job.report["perplexity"]["compressed"]["wiki"] == 20.5 and job.duration_s > 0
    names = {a["name"]: a for a in job.artifacts}
    assert set(names) == {"checkpoint/model.safetensors", "checkpoint/config.json", "checkpoint/manifest.json", "report.json"}
    for name, art in names.items():
        path = Path(harness.settings.artifacts_dir) / job_id / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == art["sha256"] and path.stat().st_size == art["size"]
    events = harness.events(job_id)
    kinds = [e.kind for e in events]
    assert kinds.count("layer") == 6 and "stage_start" in kinds
    assert [e.data["status"] for e in events if e.kind == "status" and e.data and "status" in e.data] == \
        ["queued", "running", "succeeded"]
    assert not list(Path(harness.settings.work_dir).iterdir())  # staging cleaned up
    registry = CollectorRegistry()
    registry.register(JobsCollector(harness.db))
    text = generate_latest(registry).decode()
    assert 'compressor_jobs{status="succeeded"} 1.0' in text and "compressor_queue_depth 0.0" in text
    assert 'compressor_job_duration_seconds_count{status="succeeded"} 1.0' in text


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_runner_error_fails_the_job_with_type_message_and_stage(harness: Harness) -> None:
    job = harness.wait_status(harness.submit("please-fail"), ("succeeded", "failed"))
    assert job.status == "failed" and job.attempt == 1  # a deterministic error is not retried
    assert job.error == {"type": "ValueError", "message": "dry run asked to fail (recipe name contains 'fail')",
                         "stage": "quantize"}
    assert any(e.data and "Traceback" in (e.data.get("traceback") or "") for e in harness.events(job.id))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cancel_is_cooperative_between_layers(harness: Harness) -> None:
    job_id = harness.submit()
    harness.wait_layer(job_id, 0)
    with harness.db.transaction() as s:
        assert jobs_db.request_cancel(s, job_id) == "cancelling"
    job = harness.wait_status(job_id, ("cancelled", "succeeded", "failed"), timeout=10)
    assert job.status == "cancelled"
    # cooperative: the job process stopped itself between layers (a kill after the grace period says otherwise)
    assert any("cancelled during stage quantize" in e.message for e in harness.events(job_id))
    assert not any("killed after" in e.message for e in harness.events(job_id))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_cancelled_jobs_checkpoints_are_removed(harness: Harness) -> None:
    job_id = harness.submit()
    harness.wait_layer(job_id, 0)
    resume_dir = Path(harness.settings.checkpoints_dir) / job_id
    resume_dir.mkdir(parents=True)  # what a pipeline attempt leaves (the dry-run runner keeps none)
    (resume_dir / "journal.json").write_text("{}")
    with harness.db.transaction() as s:
        jobs_db.request_cancel(s, job_id)
    assert harness.wait_status(job_id, ("cancelled", "succeeded", "failed"), timeout=10).status == "cancelled"
    wait_for(lambda: not resume_dir.exists(), 10, "the checkpoints to be removed")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_cancel_kills_the_process_group_after_the_grace_period(harness: Harness) -> None:
    job_id = harness.submit("slow")  # 15 s per layer: no layer boundary comes soon
    pid = harness.job_pid(job_id)
    wait_for(lambda: harness.job(job_id).phase == "quantize", 30, "the quantize stage")
    with harness.db.transaction() as s:
        jobs_db.request_cancel(s, job_id)
    job = harness.wait_status(job_id, ("cancelled", "failed", "succeeded"), timeout=15)
    assert job.status == "cancelled"
    assert any("killed after the 2s grace period" in e.message for e in harness.events(job_id))
    wait_for(lambda: not pid_alive(pid), 5, "the job process to be gone")


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_killed_job_process_is_requeued_and_finishes(harness: Harness) -> None:
    job_id = harness.submit()
    pid = harness.job_pid(job_id)
    harness.wait_layer(job_id, 0)
    os.kill(pid, signal.SIGKILL)
    job = harness.wait_status(job_id, ("succeeded", "failed"), timeout=30)
    assert job.status == "succeeded" and job.attempt == 2
    assert any("was killed by SIGKILL" in e.message and "re-queued" in e.message for e in harness.events(job_id))


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_process_that_always_dies_fails_with_the_reason(harness: Harness) -> None:
    job = harness.wait_status(harness.submit("crash"), ("succeeded", "failed"), timeout=30)
    assert job.status == "failed" and job.attempt == 2 == job.max_attempts
    assert job.error["type"] == "WorkerLost" and "killed by SIGKILL" in job.error["message"]
    assert "gave up after 2 attempts" in job.error["message"]


def _local_worker(settings: Settings, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "COMPRESSOR_HOME": str(settings.home),
           "COMPRESSOR_DATABASE_URL": settings.database_url, "COMPRESSOR_LEASE_S": "3", "COMPRESSOR_HEARTBEAT_S": "0.5",
           "COMPRESSOR_POLL_S": "0.2", "COMPRESSOR_JOB_RUNNER": "dry-run", "COMPRESSOR_MAX_ATTEMPTS": "2",
           "COMPRESSOR_EVENT_FLUSH_S": "0.2"}
    return subprocess.Popen([sys.executable, "-m", "api.cli", "worker", "--local"], cwd=REPO, env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def test_dead_worker_job_is_requeued_after_its_lease_and_nothing_stays_running(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COMPRESSOR_DRY_RUN_LAYER_S", "0.4")
    settings = service_settings(tmp_path, database_url=db_url)
    db = Database(db_url)
    db.migrate()
    h = Harness(settings, db)
    first = _local_worker(settings, tmp_path / "worker1.log")
    second = None
    try:
        job_id = h.submit()
        pid = h.job_pid(job_id)
        h.wait_layer(job_id, 0)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        wait_for(lambda: not pid_alive(pid), 5, "the orphaned job process to kill itself")
        assert h.job(job_id).status == "running"  # until the lease runs out
        second = _local_worker(settings, tmp_path / "worker2.log")
        job = h.wait_status(job_id, ("succeeded", "failed"), timeout=40)
        assert job.status == "succeeded" and job.attempt == 2, (tmp_path / "worker2.log").read_text()[-3000:]
        assert any("stopped heartbeating" in e.message and "re-queued" in e.message for e in h.events(job_id))
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(20)
        db.dispose()
