"""The API's side of the Celery executor: it only sends job ids (workers/celery_app.py runs them)."""

from __future__ import annotations

from service.settings import Settings
from workers.celery_config import TASK_NAME, make_celery


class CeleryExecutor:
    """Sends job ids to the Celery queue; the workers do the rest."""

    name = "celery"

    def __init__(self, settings: Settings):
        self.settings = settings
        self.app = make_celery(settings)

    def submit(self, job_id: str) -> None:
        self.app.send_task(TASK_NAME, args=[job_id], queue=self.settings.celery_queue)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass
