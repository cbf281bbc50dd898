"""The executor interface the API talks to, and the two implementations' factory."""

from __future__ import annotations

from typing import Protocol

from service.db.database import Database
from service.settings import Settings


class Executor(Protocol):
    name: str

    def submit(self, job_id: str) -> None: ...
    def start(self) -> None: ...
    def stop(self) -> None: ...


class CeleryExecutor:
    """Sends job ids to the Celery queue; the workers do the rest."""

    name = "celery"

    def __init__(self, settings: Settings):
        from workers.celery_config import make_celery

        self.settings = settings
        self.app = make_celery(settings)

    def submit(self, job_id: str) -> None:
        from workers.celery_config import TASK_NAME

        self.app.send_task(TASK_NAME, args=[job_id], queue=self.settings.celery_queue)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


class NoWorkers:
    """Local executor whose workers run elsewhere (`compressor worker --local`): submit does nothing."""

    name = "local"

    def submit(self, job_id: str) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass


def make_executor(settings: Settings, db: Database, *, embedded_workers: bool) -> Executor:
    if settings.executor == "celery":
        return CeleryExecutor(settings)
    if not embedded_workers:
        return NoWorkers()
    from workers.local import LocalExecutor

    return LocalExecutor(settings, db)
