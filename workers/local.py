"""The local executor: worker threads in this process claim queued rows and run them.

Each thread runs one job at a time through `supervisor.run_job` (a spawned job process per
job), so `local_concurrency` threads run that many jobs at once. `submit` only wakes them:
the jobs table is the queue.
"""

from __future__ import annotations

import logging
from functools import partial
import threading

from service.db import jobs as jobs_db
from service.db.database import Database
from service.settings import Settings
from workers.checkpoints import discard_checkpoints
from workers.maintenance import expire_leases
from workers.supervisor import run_job, worker_name

log = logging.getLogger("compressor.worker")


class LocalExecutor:
    name = "local"

    def __init__(self, settings: Settings, db: Database):
        self.settings, self.db = settings, db
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def submit(self, job_id: str) -> None:
        self._wake.set()

    def start(self) -> None:
        for i in range(self.settings.local_concurrency):
            t = threading.Thread(target=self._loop, args=(i,), name=f"local-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop claiming; a running job process is killed and its job re-queued."""
        self._stop.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=timeout)

    def run_forever(self) -> None:
        self.start()
        try:
            while any(t.is_alive() for t in self._threads):
                for t in self._threads:
                    t.join(timeout=1.0)
        finally:
            self.stop()

    def _loop(self, index: int) -> None:
        worker = worker_name("local", index)
        while not self._stop.is_set():
            ran = False
            try:
                if index == 0:
                    expire_leases(self.db, ended=partial(discard_checkpoints, self.settings))
                with self.db.transaction() as s:
                    candidates = jobs_db.next_queued_ids(s, "local")
                for job_id in candidates:
                    if self._stop.is_set():
                        break
                    if run_job(job_id, self.settings, worker, db=self.db, stop=self._stop) is not None:
                        ran = True
                        break
            except Exception:  # noqa: BLE001 - keep the worker alive through database hiccups
                log.exception("local worker %s: pass failed", worker)
            if not ran:
                self._wake.wait(self.settings.poll_s)
                self._wake.clear()


class SeparateLocalWorkers:
    """The local executor when its workers run in other processes (`serve --no-workers` with
    `compressor worker --local`): the jobs table is the queue, so `submit` has nothing to do."""

    name = "local"

    def submit(self, job_id: str) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
