"""The spawned job process: calls the library and streams its progress into the database.

It starts a new session (so its process group can be killed as one), imports the library
only here, writes events at most every `event_flush_s`, answers `should_cancel` from the
database, kills itself if its supervisor dies, and leaves its outcome in `result.json`
for the supervisor, which alone moves the job to a terminal state.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from service.db import jobs as jobs_db
from service.db.database import Database
from service.records import JobProgress
from service.storage.checkpoints import checkpoint_mirror
from workers import import_job

CANCEL_POLL_S = 0.5
Runner = Literal["pipeline", "dry-run"]


@dataclass(frozen=True)
class JobProcessArgs:
    """Everything the spawned job process needs, pickled across the spawn boundary."""

    job_id: str
    lease_owner: str
    attempt: int
    database_url: str
    home: Path
    out_dir: Path
    result_path: Path
    runner: Runner
    event_flush_s: float
    spec: dict[str, Any]
    parent_pid: int
    resume_dir: Path | None = None  # the job's checkpoints (local; shared by its attempts unless mirrored)
    checkpoint_mirror_url: str = ""  # an s3:// artifact store: checkpoints restored from and mirrored to it
    device: str = "auto"  # the worker's COMPRESSOR_DEVICE: where the pipeline runs the job

    @property
    def lease(self) -> jobs_db.Lease:
        return jobs_db.Lease(self.job_id, self.lease_owner, self.attempt)


def run_pipeline(spec: Any, out_dir: Path, *, home: Path, progress: Callable, should_cancel: Callable,
                 resume_dir: Path | None = None, attempt: int | None = None, checkpoint_observer: Callable | None = None,
                 device: str = "auto") -> Any:
    """The library's job; it emits `running on <device>, <dtype>` as an event and records both in the report."""
    import compressor

    return compressor.run(spec, out_dir, progress=progress, should_cancel=should_cancel, home=home,
                          resume_dir=resume_dir, attempt=attempt, checkpoint_observer=checkpoint_observer, device=device)


def run_dry(spec: Any, out_dir: Path, *, home: Path, progress: Callable, should_cancel: Callable,
            resume_dir: Path | None = None, attempt: int | None = None, checkpoint_observer: Callable | None = None) -> Any:
    """The stand-in keeps no resume state (it has nothing worth resuming)."""
    from workers import dry_run

    return dry_run.run(spec, out_dir, progress=progress, should_cancel=should_cancel, home=home)


RUNNERS: dict[Runner, Callable[..., Any]] = {"pipeline": run_pipeline, "dry-run": run_dry}


class EventWriter:
    """Progress hook: buffers events, writes them with the job's progress at most every `flush_s`.

    A background thread writes what is pending once `flush_s` has passed, so the last events
    before a long silent step (loading, a slow layer) still show up promptly."""

    def __init__(self, db: Database, lease: jobs_db.Lease, flush_s: float):
        self.db, self.lease, self.flush_s = db, lease, flush_s
        self.stage: str | None = None
        self.lease_lost = False
        self._pending: list[dict[str, Any]] = []
        self._progress: JobProgress | None = None
        self._last_flush = 0.0
        self._stage_started = time.time()
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        threading.Thread(target=self._flush_loop, name="event-flush", daemon=True).start()

    def _flush_loop(self) -> None:
        while True:
            time.sleep(max(self.flush_s, 0.05))
            if self._pending and time.time() - self._last_flush >= self.flush_s:
                try:
                    self.flush()
                except Exception:  # noqa: BLE001 - retried on the next tick or the final flush
                    pass

    def __call__(self, event: Any) -> None:
        e = event.to_dict() if hasattr(event, "to_dict") else dict(event)
        t = e.get("time") or time.time()
        if e.get("stage") and e["stage"] != self.stage:
            self.stage, self._stage_started = e["stage"], t
        fraction = e.get("fraction")
        eta = None
        if fraction and 0 < fraction < 1:
            eta = (t - self._stage_started) * (1 - fraction) / fraction
        with self._lock:
            self._progress = JobProgress(stage=self.stage, layer=e.get("layer"), num_layers=e.get("num_layers"),
                                         fraction=fraction, eta_s=eta, message=e.get("message"))
            if e.get("kind") == "step" and self._pending and self._pending[-1]["kind"] == "step":
                self._pending[-1] = self._row(e, t)  # keep the newest step of a burst only
            else:
                self._pending.append(self._row(e, t))
        if time.time() - self._last_flush >= self.flush_s:
            self.flush()

    @staticmethod
    def _row(e: dict[str, Any], t: float) -> dict[str, Any]:
        data = {k: e[k] for k in ("stage", "layer", "num_layers", "fraction") if e.get(k) is not None}
        if e.get("data"):
            data["data"] = e["data"]
        return {"message": str(e.get("message", ""))[:2000], "kind": str(e.get("kind", "message"))[:16],
                "level": "info", "data": data or None, "created_at": t}

    def flush(self) -> None:
        with self._write_lock:
            self._flush()

    def _flush(self) -> None:
        with self._lock:
            pending, progress = self._pending, self._progress
            self._pending = []
            self._last_flush = time.time()
        if not pending and progress is None:
            return
        with self.db.transaction() as s:
            if not jobs_db.update_progress(s, self.lease, phase=self.stage, progress=progress):
                self.lease_lost = True
                return
            jobs_db.add_events(s, self.lease.job_id, pending)


class CancelCheck:
    """`should_cancel`: the job's status in the database, read at most every CANCEL_POLL_S."""

    def __init__(self, db: Database, lease: jobs_db.Lease, writer: EventWriter):
        self.db, self.lease, self.writer = db, lease, writer
        self._last = 0.0
        self._answer = False

    def __call__(self) -> bool:
        if self._answer or self.writer.lease_lost:
            return True
        if time.time() - self._last >= CANCEL_POLL_S:
            self._last = time.time()
            with self.db.transaction() as s:
                self._answer = jobs_db.should_stop(s, self.lease)
        return self._answer


def _watch_parent(parent_pid: int) -> None:
    """If the supervisor dies, take the whole process group down: nothing stays running."""
    while True:
        if os.getppid() != parent_pid:
            os.killpg(os.getpgid(0), signal.SIGKILL)
        time.sleep(0.5)


def _write_result(path: Path, result: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, default=str))
    os.replace(tmp, path)


def main(args: JobProcessArgs) -> None:
    """Entry point of the spawned process (see `supervisor.JobRun.start_process`)."""
    os.setsid()
    threading.Thread(target=_watch_parent, args=(args.parent_pid,), daemon=True).start()
    db = Database(args.database_url)
    writer = EventWriter(db, args.lease, args.event_flush_s)
    try:
        from compressor.progress import JobCancelled
    except Exception as e:  # noqa: BLE001
        _write_result(args.result_path, {"status": "failed", "error": {"type": type(e).__name__, "message": str(e), "stage": None}})
        return
    try:
        from compressor.spec import JobSpec

        if args.spec.get("kind") == import_job.KIND:  # POST /v1/models: imports keep no resume state
            spec, runner, mirror, resume_dir = import_job.ModelImportSpec.model_validate(args.spec), import_job.run, None, None
        else:
            spec, runner, resume_dir = JobSpec.model_validate(args.spec), RUNNERS[args.runner], args.resume_dir
            if runner is run_pipeline:
                runner = functools.partial(run_pipeline, device=args.device)
            mirror = checkpoint_mirror(args.checkpoint_mirror_url, args.job_id) if resume_dir else None
            if mirror is not None and (restored := mirror.restore(resume_dir)):
                writer(_message(f"restored {restored} checkpoint files from the artifact store", "starting"))
        writer(_message("loading the library and the model", "starting"))
        run_result = runner(spec, args.out_dir, home=args.home, progress=writer,
                            should_cancel=CancelCheck(db, args.lease, writer),
                            **({"resume_dir": resume_dir, "attempt": args.attempt, "checkpoint_observer": mirror}
                               if resume_dir is not None else {}))
        writer.flush()
        report = getattr(run_result, "report", None) or {}
        _write_result(args.result_path, {"status": "succeeded", "report": report})
    except JobCancelled as e:
        _flush_quietly(writer)
        _write_result(args.result_path, {"status": "cancelled", "message": str(e) or "cancelled"})
    except Exception as e:  # noqa: BLE001 - every failure is reported, none is fatal to the worker
        _flush_quietly(writer)
        _write_result(args.result_path, {
            "status": "failed",
            "error": {"type": type(e).__name__, "message": str(e)[:4000], "stage": writer.stage},
            "traceback": traceback.format_exc()[-8000:],
        })
    finally:
        db.dispose()


def _message(text: str, stage: str) -> dict[str, Any]:
    return {"kind": "message", "message": text, "stage": stage, "time": time.time()}


def _flush_quietly(writer: EventWriter) -> None:
    try:
        writer.flush()
    except Exception:  # noqa: BLE001 - the outcome file matters more than the last events
        pass
