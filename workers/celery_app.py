"""The Celery executor: Redis broker, one job per worker at a time, the job in a spawned child.

Start a worker with `compressor worker` (it runs `-P solo -c 1`: one GPU, one job; the
supervisor spawns the job process itself, which a prefork pool's daemonic children could
not). The broker only carries job ids; the jobs table decides who runs what.
"""

from __future__ import annotations

import logging
from functools import partial
import threading

from celery.signals import worker_ready, worker_shutdown

from service.db.database import Database
from service.settings import Settings
from workers.celery_config import TASK_NAME, make_celery
from workers.checkpoints import discard_checkpoints
from workers.maintenance import LeaseReaper
from workers.supervisor import run_job, worker_name

log = logging.getLogger("compressor.worker")


settings = Settings()
app = make_celery(settings)
_state: dict[str, object] = {}


def _db() -> Database:
    if "db" not in _state:
        _state["db"] = Database(settings.database_url)
    return _state["db"]  # type: ignore[return-value]


def dispatch(job_id: str) -> None:
    app.send_task(TASK_NAME, args=[job_id], queue=settings.celery_queue)


@app.task(name=TASK_NAME, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job_task(job_id: str) -> str | None:
    """Claim and run one job; a duplicate or stale message finds it not queued and does nothing."""
    return run_job(job_id, settings, worker_name("celery"), db=_db(), stop=_stop)


_stop = threading.Event()


@worker_ready.connect
def _start_reaper(**_kw) -> None:  # noqa: ANN003
    db = _db()
    db.migrate()
    reaper = LeaseReaper(db, settings.poll_s, dispatch, ended=partial(discard_checkpoints, settings))
    reaper.start()
    _state["reaper"] = reaper


@worker_shutdown.connect
def _stop_reaper(**_kw) -> None:  # noqa: ANN003
    _stop.set()
    reaper = _state.get("reaper")
    if reaper is not None:
        reaper.stop()  # type: ignore[attr-defined]
