"""Celery configuration shared by the API (which only sends) and the workers (which run)."""

from __future__ import annotations

from celery import Celery

from service.settings import Settings

TASK_NAME = "compressor.run_job"


def make_celery(settings: Settings) -> Celery:
    app = Celery("compressor", broker=settings.broker_url)
    app.conf.update(
        task_default_queue=settings.celery_queue,
        task_acks_late=True,  # a message is acked only after the job ended
        task_reject_on_worker_lost=True,  # a pool child lost mid-task: the message goes back
        worker_prefetch_multiplier=1,  # do not reserve jobs that another worker could run
        worker_concurrency=1,
        task_ignore_result=True,  # outcomes live in the jobs table
        broker_connection_retry_on_startup=True,
        # Redis re-delivers an unacked message after this; it must outlive the longest job
        broker_transport_options={"visibility_timeout": int(settings.job_time_limit_s + 3600)},
        worker_hijack_root_logger=False,
    )
    return app
