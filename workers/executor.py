"""The executor interface the API talks to, and the factory that picks one from the settings.

Implementations: `LocalExecutor` and `SeparateLocalWorkers` (workers/local.py), and
`CeleryExecutor` (workers/celery_executor.py).
"""

from __future__ import annotations

from typing import Protocol

from service.db.database import Database
from service.settings import Settings


class Executor(Protocol):
    name: str

    def submit(self, job_id: str) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


def make_executor(settings: Settings, db: Database, *, embedded_workers: bool) -> Executor:
    if settings.executor == "celery":
        from workers.celery_executor import CeleryExecutor

        return CeleryExecutor(settings)
    from workers.local import LocalExecutor, SeparateLocalWorkers

    return LocalExecutor(settings, db) if embedded_workers else SeparateLocalWorkers()
