"""Lease expiry: a job whose supervisor stopped heartbeating is re-queued or failed.

Any number of processes may run this at once (the API, local workers, Celery workers): the
updates are guarded, so each stale job moves once. Re-queued Celery jobs are sent again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from service.db import jobs as jobs_db
from service.db.database import Database
from service.db.models import Job

log = logging.getLogger("compressor.maintenance")


def expire_leases(db: Database, dispatch: Callable[[str], None] | None = None,
                  ended: Callable[[str], None] | None = None) -> list[tuple[str, str]]:
    """Move the stale jobs; `dispatch` re-sends re-queued Celery jobs, `ended` hears of each job that ended (its checkpoints go)."""
    with db.transaction() as s:
        moved = jobs_db.expire_leases(s)
        executors = {job_id: s.get(Job, job_id).executor for job_id, _ in moved}
    for job_id, status in moved:
        log.warning("job %s: lease expired, now %s", job_id, status)
        if status == "queued" and executors[job_id] == "celery" and dispatch is not None:
            dispatch(job_id)
        elif status != "queued" and ended is not None:
            ended(job_id)
    return moved


class LeaseReaper:
    """A daemon thread calling `expire_leases` every `interval_s`."""

    def __init__(self, db: Database, interval_s: float, dispatch: Callable[[str], None] | None = None,
                 ended: Callable[[str], None] | None = None):
        self.db, self.interval_s, self.dispatch, self.ended = db, interval_s, dispatch, ended
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                expire_leases(self.db, self.dispatch, self.ended)
            except Exception:  # noqa: BLE001 - a database hiccup must not end the reaper
                log.exception("lease reaper pass failed")
