"""The jobs table's guarded state machine, paging, events and idempotency records, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
import time

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError

from service.db import idempotency, keys
from service.db import jobs as jobs_db
from service.db.database import Database
from service.db.models import Job
from service.records import JobProgress

SPEC = {"version": 1, "model": "smollm2-135m", "recipe": {"name": "w4a16-rtn"}}


def _key(db: Database, name: str = "alice") -> str:
    with db.transaction() as s:
        row, _ = keys.create_key(s, name)
        return row.id


def _job(db: Database, owner: str, executor: str = "local", max_attempts: int = 2) -> str:
    with db.transaction() as s:
        return jobs_db.create_job(s, owner=owner, spec=SPEC, model="smollm2-135m", recipe_name="w4a16-rtn",
                                  executor=executor, max_attempts=max_attempts).id


def _status(db: Database, job_id: str) -> str:
    with db.transaction() as s:
        return s.get(Job, job_id).status


def test_claim_is_guarded_and_fenced(db: Database) -> None:
    job_id = _job(db, _key(db))
    with db.transaction() as s:
        lease = jobs_db.claim(s, job_id, "w1", lease_s=30)
    assert lease == jobs_db.Lease(job_id, "w1", 1)
    with db.transaction() as s:
        assert jobs_db.claim(s, job_id, "w2", lease_s=30) is None  # already running
        assert jobs_db.renew_lease(s, lease, 30) == "running"
        stale = jobs_db.Lease(job_id, "w1", 0)
        assert jobs_db.renew_lease(s, stale, 30) is None
        assert not jobs_db.update_progress(s, stale, phase="x", progress=JobProgress())
        assert jobs_db.update_progress(s, lease, phase="quantize", progress=JobProgress(fraction=0.5))
        assert not jobs_db.should_stop(s, lease)
        assert jobs_db.should_stop(s, stale)
    with db.transaction() as s:
        assert jobs_db.finish(s, lease, "succeeded", message="done", report={"kl": {"wiki": 0.1}})
    with db.transaction() as s:
        assert not jobs_db.finish(s, lease, "failed", message="again")  # terminal: nothing moves
        job = s.get(Job, job_id)
        assert (job.status, job.phase, job.lease_owner, job.report) == ("succeeded", "quantize", None, {"kl": {"wiki": 0.1}})
        assert job.duration_s is not None and job.finished_at >= job.started_at


def test_only_one_of_many_concurrent_claims_wins(db: Database) -> None:
    job_id = _job(db, _key(db))
    wins: list[jobs_db.Lease] = []
    barrier = threading.Barrier(6)

    def claim(i: int) -> None:
        barrier.wait()
        with db.transaction() as s:
            lease = jobs_db.claim(s, job_id, f"w{i}", lease_s=30)
        if lease:
            wins.append(lease)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1 and wins[0].attempt == 1


def test_cancel_transitions(db: Database) -> None:
    owner = _key(db)
    queued, running = _job(db, owner), _job(db, owner)
    with db.transaction() as s:
        lease = jobs_db.claim(s, running, "w1", 30)
        assert jobs_db.request_cancel(s, queued) == "cancelled"
        assert jobs_db.request_cancel(s, running) == "cancelling"
        assert jobs_db.request_cancel(s, running) == "cancelling"  # idempotent
        assert jobs_db.should_stop(s, lease)
        assert jobs_db.renew_lease(s, lease, 30) == "cancelling"
    with pytest.raises(jobs_db.InvalidTransition, match="is cancelled"):
        with db.transaction() as s:
            jobs_db.request_cancel(s, queued)
    with db.transaction() as s:
        assert jobs_db.finish(s, lease, "cancelled", message="stopped")
    assert _status(db, running) == "cancelled"


def _expire(db: Database, job_id: str) -> None:
    with db.transaction() as s:
        s.execute(update(Job).where(Job.id == job_id).values(lease_expires_at=time.time() - 1))


def test_expired_leases_requeue_then_fail_with_reason(db: Database) -> None:
    owner = _key(db)
    job_id, fresh = _job(db, owner, max_attempts=2), _job(db, owner)
    with db.transaction() as s:
        jobs_db.claim(s, job_id, "w1", 30)
        jobs_db.claim(s, fresh, "w1", 30)
    _expire(db, job_id)
    with db.transaction() as s:
        assert jobs_db.expire_leases(s) == [(job_id, "queued")]
    with db.transaction() as s:
        job = s.get(Job, job_id)
        assert (job.status, job.attempt, job.lease_owner) == ("queued", 1, None)
        assert s.get(Job, fresh).status == "running"  # its lease is still good
        assert jobs_db.claim(s, job_id, "w2", 30).attempt == 2
    _expire(db, job_id)
    with db.transaction() as s:
        assert jobs_db.expire_leases(s) == [(job_id, "failed")]
    with db.transaction() as s:
        job = s.get(Job, job_id)
        assert job.status == "failed" and job.error["type"] == "WorkerLost"
        assert "w2 stopped heartbeating" in job.error["message"] and "2 attempts" in job.error["message"]
        events, _ = jobs_db.list_events(s, job_id)
        assert any("re-queued" in e.message for e in events)


def test_expired_lease_while_cancelling_ends_cancelled(db: Database) -> None:
    job_id = _job(db, _key(db))
    with db.transaction() as s:
        jobs_db.claim(s, job_id, "w1", 30)
        jobs_db.request_cancel(s, job_id)
    _expire(db, job_id)
    with db.transaction() as s:
        assert jobs_db.expire_leases(s) == [(job_id, "cancelled")]


def test_paging_filters_and_events(db: Database) -> None:
    alice, bob = _key(db, "alice"), _key(db, "bob")
    ids = [_job(db, alice) for _ in range(5)]
    _job(db, bob)
    with db.transaction() as s:
        jobs_db.request_cancel(s, ids[0])
        page1, more = jobs_db.list_jobs(s, alice, limit=2)
        assert [j.id for j in page1] == ids[::-1][:2] and more
        page2, _ = jobs_db.list_jobs(s, alice, limit=2, before=page1[-1].id)
        page3, more3 = jobs_db.list_jobs(s, alice, limit=2, before=page2[-1].id)
        assert [j.id for j in page1 + page2 + page3] == ids[::-1] and not more3
        cancelled, _ = jobs_db.list_jobs(s, alice, statuses=["cancelled"])
        assert [j.id for j in cancelled] == [ids[0]]
        assert jobs_db.get_job(s, ids[0], owner=bob) is None
        jobs_db.add_events(s, ids[1], [{"message": f"e{i}", "kind": "layer"} for i in range(4)])
    with db.transaction() as s:
        first, more = jobs_db.list_events(s, ids[1], limit=3)
        rest, more2 = jobs_db.list_events(s, ids[1], after=first[-1].id)
        assert [e.message for e in first + rest][1:] == ["e0", "e1", "e2", "e3"] and more and not more2
        assert jobs_db.count_by_status(s) == {"queued": 5, "running": 0, "cancelling": 0, "succeeded": 0, "failed": 0, "cancelled": 1}


def test_idempotency_key_is_unique_per_owner(db: Database) -> None:
    alice, bob = _key(db, "alice"), _key(db, "bob")
    job_a, job_b = _job(db, alice), _job(db, bob)
    with db.transaction() as s:
        idempotency.record(s, alice, "k1", "h1", job_a)
        idempotency.record(s, bob, "k1", "h2", job_b)  # same key, other owner: fine
    with pytest.raises(IntegrityError):
        with db.transaction() as s:
            idempotency.record(s, alice, "k1", "h3", job_b)
    with db.transaction() as s:
        assert idempotency.find(s, alice, "k1").job_id == job_a


def test_reads_do_not_wait_for_a_writer(db: Database) -> None:
    """API reads (`Database.read`) run while a worker holds a write transaction open: on
    SQLite they begin deferred (WAL readers take no lock), on PostgreSQL MVCC does the same."""
    owner = _key(db)
    job_id = _job(db, owner)
    writing, release = threading.Event(), threading.Event()

    def slow_writer() -> None:
        with db.transaction() as s:
            s.execute(update(Job).where(Job.id == job_id).values(phase="loading"))
            writing.set()
            release.wait(10)

    writer = threading.Thread(target=slow_writer)
    writer.start()
    try:
        assert writing.wait(10)
        with db.read() as s:
            assert s.get(Job, job_id).phase is None  # the last committed state
        # the read returned while the writer still holds its transaction open: no clock involved
        assert writer.is_alive() and not release.is_set()
    finally:
        release.set()
        writer.join()
    with db.read() as s:
        assert s.get(Job, job_id).phase == "loading"


def test_job_ids_made_back_to_back_sort_in_order() -> None:
    """Paging is by id, newest first: ids made within one millisecond must still sort in creation order."""
    ids = [jobs_db.new_job_id() for _ in range(2000)]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(re.match(jobs_db.JOB_ID_PATTERN, i) for i in ids)
