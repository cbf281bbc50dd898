"""The Celery settings the issue asks for, read back from the app the workers and the API build."""

from __future__ import annotations

from pathlib import Path

from workers.celery_config import make_celery

from tests.service_setup import service_settings


def test_celery_runs_one_job_at_a_time_and_never_loses_one(tmp_path: Path) -> None:
    settings = service_settings(tmp_path, job_time_limit_s=7200.0)
    conf = make_celery(settings).conf
    assert conf.broker_url == "redis://127.0.0.1:6379/0"  # the default broker
    assert conf.task_acks_late is True  # acked after the job, so a lost worker's job comes back
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1 and conf.worker_concurrency == 1
    # Redis re-delivers an unacked message after the visibility timeout: it must outlive a job
    assert conf.broker_transport_options["visibility_timeout"] > settings.job_time_limit_s
    assert conf.task_default_queue == settings.celery_queue
