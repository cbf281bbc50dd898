"""Prometheus metrics, read from the jobs table at scrape time (workers live in other processes)."""

from __future__ import annotations

import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select

from service.db import jobs as jobs_db
from service.db.database import Database
from service.db.models import Job
from service.records import ACTIVE_STATUSES, TERMINAL_STATUSES, JobStatus

DURATION_BUCKETS = (10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 4 * 3600.0, 12 * 3600.0, 24 * 3600.0)


class JobsCollector(Collector):
    def __init__(self, db: Database):
        self.db = db

    def describe(self) -> list:
        return []  # collected at scrape time only (the tables may not exist at registration)

    def collect(self) -> Iterator[GaugeMetricFamily | HistogramMetricFamily]:
        with self.db.read() as s:
            counts = jobs_db.count_by_status(s)
            oldest = s.execute(select(func.min(Job.created_at)).where(Job.status == JobStatus.queued)).scalar()
            expired = s.execute(select(func.count()).where(
                Job.status.in_(ACTIVE_STATUSES), Job.lease_expires_at < time.time())).scalar()
            bucket_cols = [func.sum(case((Job.duration_s <= b, 1), else_=0)) for b in DURATION_BUCKETS]
            durations = s.execute(
                select(Job.status, func.count(), func.sum(Job.duration_s), *bucket_cols)
                .where(Job.status.in_(TERMINAL_STATUSES), Job.duration_s.is_not(None)).group_by(Job.status)
            ).all()
        jobs = GaugeMetricFamily("compressor_jobs", "jobs by state", labels=["status"])
        for status, n in counts.items():
            jobs.add_metric([status.value], n)
        yield jobs
        yield GaugeMetricFamily("compressor_queue_depth", "jobs waiting to start", value=counts[JobStatus.queued])
        yield GaugeMetricFamily("compressor_oldest_queued_age_seconds", "age of the oldest queued job",
                                value=time.time() - oldest if oldest else 0.0)
        yield GaugeMetricFamily("compressor_expired_leases", "running jobs whose worker stopped heartbeating", value=expired or 0)
        hist = HistogramMetricFamily("compressor_job_duration_seconds", "start-to-end time of finished jobs", labels=["status"])
        for status, count, total, *buckets in durations:
            cumulative = [(str(b), float(n or 0)) for b, n in zip(DURATION_BUCKETS, buckets, strict=True)]
            cumulative.append(("+Inf", float(count)))
            hist.add_metric([status], cumulative, sum_value=float(total or 0.0))
        yield hist
