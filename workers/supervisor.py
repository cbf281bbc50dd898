"""`run_job`: the one task function of both executors.

Claim the job (guarded UPDATE), start the job process (multiprocessing *spawn*, its own
process group), renew the lease while it runs, enforce cancel grace and the time limit by
killing the group, then record the outcome (publish artifacts, guarded terminal UPDATE).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from service.db import jobs as jobs_db
from service.db.database import Database
from service.db.models import Job
from service.records import JobProgress, JobStatus
from service.settings import Settings
from workers import job_process
from service.storage import open_store
from service.storage.checkpoints import checkpoint_mirror
from workers.checkpoints import discard_checkpoints, shared_checkpoints_dir

log = logging.getLogger("compressor.worker")


def worker_name(kind: str, index: int = 0) -> str:
    return f"{kind}@{socket.gethostname()}:{os.getpid()}:{index}"


def describe_exit(exitcode: int | None) -> str:
    if exitcode is None:
        return "no exit code"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (killed from outside, e.g. by the out-of-memory killer)" if -exitcode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with code {exitcode} without a result"


def kill_group(proc: multiprocessing.process.BaseProcess) -> None:
    """SIGKILL the job process and everything it started (its own process group)."""
    if proc.pid is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        try:  # the child may not have called setsid() yet
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


class JobRun:
    """One attempt of one job, owned by one supervisor thread."""

    def __init__(self, db: Database, settings: Settings, lease: jobs_db.Lease, spec: dict[str, Any],
                 stop: threading.Event | None):
        self.db, self.settings, self.lease, self.spec, self.stop = db, settings, lease, spec, stop
        self.staging = Path(settings.work_dir) / f"{lease.job_id}-{lease.attempt}"
        self.out_dir = self.staging / "out"
        self.result_path = self.staging / "result.json"
        # the job's checkpoints outlive the attempt: in the shared checkpoints folder, or (S3 artifact store)
        # mirrored to the bucket and restored into this attempt's staging folder
        self.mirror = checkpoint_mirror(settings.artifacts_url, lease.job_id)
        self.resume_dir = self.staging / "resume" if self.mirror else shared_checkpoints_dir(settings, lease.job_id)

    def event(self, message: str, level: str = "info", **data: Any) -> None:
        with self.db.transaction() as s:
            jobs_db.add_event(s, self.lease.job_id, message, level=level, data=data or None)

    def start_process(self) -> multiprocessing.process.BaseProcess:
        shutil.rmtree(self.staging, ignore_errors=True)
        self.out_dir.mkdir(parents=True)
        args = job_process.JobProcessArgs(
            job_id=self.lease.job_id, lease_owner=self.lease.owner, attempt=self.lease.attempt,
            database_url=self.settings.database_url, home=Path(self.settings.home), out_dir=self.out_dir,
            result_path=self.result_path, runner=self.settings.job_runner, event_flush_s=self.settings.event_flush_s,
            spec=self.spec, parent_pid=os.getpid(), resume_dir=self.resume_dir,
            checkpoint_mirror_url=self.settings.artifacts_url if self.mirror else "", device=self.settings.device)
        proc = multiprocessing.get_context("spawn").Process(
            target=job_process.main, args=(args,), name=f"compressor-{self.lease.job_id}", daemon=False)
        proc.start()
        return proc

    def supervise(self, proc: multiprocessing.process.BaseProcess) -> str | None:
        """Wait for the process, renewing the lease; returns why we killed it, if we did."""
        s_ = self.settings
        started = time.monotonic()
        cancel_seen: float | None = None
        while True:
            proc.join(timeout=min(s_.heartbeat_s, 1.0) if cancel_seen else s_.heartbeat_s)
            if not proc.is_alive():
                return None
            with self.db.transaction() as s:
                status = jobs_db.renew_lease(s, self.lease, s_.lease_s)
            reason = None
            if status is None:
                reason = "lease_lost"
            elif status == JobStatus.cancelling:
                cancel_seen = cancel_seen or time.monotonic()
                if time.monotonic() - cancel_seen >= s_.cancel_grace_s:
                    reason = "cancel"
            if time.monotonic() - started > s_.job_time_limit_s:
                reason = "time_limit"
            if self.stop is not None and self.stop.is_set():
                reason = "shutdown"
            if reason:
                kill_group(proc)
                proc.join()
                return reason

    def record_outcome(self, proc: multiprocessing.process.BaseProcess, killed: str | None) -> str | None:
        lease, s_ = self.lease, self.settings
        result = json.loads(self.result_path.read_text()) if self.result_path.exists() else None
        with self.db.transaction() as s:
            cancelling = jobs_db.get_job(s, lease.job_id).status == JobStatus.cancelling
        if killed == "lease_lost":
            log.warning("job %s: lease lost, result discarded", lease.job_id)
            return None
        if result is not None and result["status"] == JobStatus.succeeded:
            try:
                artifacts = open_store(s_.artifacts_url, s_.artifacts_dir).publish(lease.job_id, self.out_dir)
            except OSError as e:
                return self._finish(JobStatus.failed, f"storing the artifacts failed: {e}", level="error",
                                    error={"type": "ArtifactStoreError", "message": str(e), "stage": "export"})
            return self._finish(JobStatus.succeeded, f"succeeded; {len(artifacts)} artifacts stored",
                                report=result.get("report") or {}, artifacts=artifacts, phase="done",
                                progress=JobProgress.done().model_dump(mode="json"))
        if result is not None and result["status"] == JobStatus.cancelled:
            return self._finish(JobStatus.cancelled, f"cancelled: {result.get('message', '')}")
        if result is not None and result["status"] == JobStatus.failed:
            err = result["error"]
            self.event("traceback of the failure", level="error", traceback=result.get("traceback"))
            return self._finish(JobStatus.failed, f"failed: {err['type']}: {err['message']}", level="error", error=err)
        if killed == "cancel" or cancelling:
            why = (f"the job process was killed after the {s_.cancel_grace_s:g}s grace period" if killed == "cancel"
                   else "the job process stopped while cancelling")
            return self._finish(JobStatus.cancelled, f"cancelled: {why}")
        if killed == "time_limit":
            msg = f"exceeded the time limit of {s_.job_time_limit_s:g}s"
            return self._finish(JobStatus.failed, msg, level="error",
                                error={"type": "TimeLimitExceeded", "message": msg, "stage": None})
        reason = "the worker shut down" if killed == "shutdown" else f"the job process {describe_exit(proc.exitcode)}"
        with self.db.transaction() as s:
            return jobs_db.release_for_retry(s, lease, reason=reason)

    def _finish(self, status: JobStatus, message: str, level: str = "info", **values: Any) -> str | None:
        with self.db.transaction() as s:
            ok = jobs_db.finish(s, self.lease, status, message=message, level=level, **values)
        return status if ok else None


def run_job(job_id: str, settings: Settings, worker: str, *, db: Database | None = None,
            stop: threading.Event | None = None) -> str | None:
    """Run one queued job to an outcome. Returns the job's new status, None if it was not ours."""
    own_db = db is None
    db = db or Database(settings.database_url)
    try:
        with db.transaction() as s:
            lease = jobs_db.claim(s, job_id, worker, settings.lease_s)
            spec = s.get(Job, job_id).spec if lease else None
        if lease is None:
            return None
        run = JobRun(db, settings, lease, spec, stop)
        try:
            proc = run.start_process()
        except Exception as e:  # noqa: BLE001
            with db.transaction() as s:
                jobs_db.finish(s, lease, JobStatus.failed, message=f"could not start the job process: {e}", level="error",
                               error={"type": type(e).__name__, "message": str(e), "stage": None})
            return JobStatus.failed
        try:
            run.event(f"job process {proc.pid} started", pid=proc.pid)
            killed = run.supervise(proc)
            outcome = run.record_outcome(proc, killed)
        except BaseException:
            kill_group(proc)  # never leave an unsupervised job process behind
            raise
        shutil.rmtree(run.staging, ignore_errors=True)
        if outcome in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled):
            discard_checkpoints(settings, job_id)  # terminal: nothing will resume it
        log.info("job %s attempt %d: %s", job_id, lease.attempt, outcome)
        return outcome
    finally:
        if own_db:
            db.dispose()
