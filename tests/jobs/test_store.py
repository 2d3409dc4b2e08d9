"""The SQL job queue on SQLite and PostgreSQL: states, claims, cancel, requeue, logs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import update

from modelplane.db import make_engine, upgrade, utcnow
from modelplane.errors import BadRequest, Conflict, NotFound
from modelplane.jobs.store import JobStore
from modelplane.jobs.tables import JobRow


@pytest.fixture
def jobs(db_url: str) -> Iterator[JobStore]:
    engine = make_engine(db_url)
    upgrade(engine)
    yield JobStore(engine)
    engine.dispose()


def _submit(jobs: JobStore, n: int = 1, tenant: str = "t") -> list[str]:
    return [jobs.submit(tenant, "train", f"job{i}", {"i": i}, "me").id for i in range(n)]


def _age_heartbeat(jobs: JobStore, job_id: str, seconds: float) -> None:
    with jobs.engine.begin() as c:
        c.execute(
            update(JobRow)
            .where(JobRow.id == job_id)
            .values(heartbeat_at=utcnow() - timedelta(seconds=seconds))
        )


def test_submit_get_and_list_newest_first_with_pages(jobs: JobStore) -> None:
    ids = _submit(jobs, 5)
    job = jobs.get("t", ids[0])
    assert (job.state, job.kind, job.name, job.spec, job.created_by) == (
        "queued", "train", "job0", {"i": 0}, "me",
    )  # fmt: skip
    seen, token = [], None
    while True:
        page, token = jobs.list_jobs("t", limit=2, page_token=token)
        seen += [j.id for j in page]
        if token is None:
            break
    assert seen == ids[::-1]
    assert [j.id for j in jobs.list_jobs("t", state="queued")[0]] == ids[::-1]
    assert jobs.list_jobs("t", kind="batch_predict")[0] == []
    with pytest.raises(BadRequest):
        jobs.list_jobs("t", page_token="bm90LWEtbGlzdA")


def test_other_tenants_and_unknown_ids_are_not_found(jobs: JobStore) -> None:
    (job_id,) = _submit(jobs)
    for tenant, jid in [("other", job_id), ("t", "0" * 32), ("t", "../etc/passwd")]:
        with pytest.raises(NotFound):
            jobs.get(tenant, jid)
    with pytest.raises(NotFound):
        jobs.request_cancel("other", job_id)
    assert jobs.list_jobs("other")[0] == []


def test_claim_takes_the_oldest_once_and_counts_attempts(jobs: JobStore) -> None:
    first, second = _submit(jobs, 2)
    a = jobs.claim("runner-a")
    b = jobs.claim("runner-b")
    assert a is not None and b is not None
    assert (a.id, b.id) == (first, second)
    assert (a.state, a.attempts) == ("running", 1)
    assert jobs.claim("runner-c") is None


def test_concurrent_claimers_never_take_the_same_job(jobs: JobStore) -> None:
    ids = set(_submit(jobs, 40))
    taken: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while (job := jobs.claim(name)) is not None:
            with lock:
                taken.append(job.id)

    threads = [threading.Thread(target=claimer, args=(f"r{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(taken) == sorted(ids)  # every job once, none twice


def test_cancel_a_queued_job_at_once_and_a_running_one_through_its_runner(jobs: JobStore) -> None:
    queued, running = _submit(jobs, 2)
    assert jobs.claim("r") is not None  # takes `queued` (the oldest)
    assert jobs.request_cancel("t", running).state == "cancelled"
    job = jobs.request_cancel("t", queued)
    assert job.state == "running"
    assert jobs.heartbeat(queued, "r") is True  # the runner learns of it
    assert jobs.finish(queued, "r", "cancelled")
    with pytest.raises(Conflict):
        jobs.request_cancel("t", queued)


def test_finish_is_refused_to_a_runner_that_lost_the_job(jobs: JobStore) -> None:
    (job_id,) = _submit(jobs)
    jobs.claim("old")
    _age_heartbeat(jobs, job_id, 120)
    assert jobs.requeue_stale(30) == [job_id]
    assert jobs.get("t", job_id).state == "queued"
    again = jobs.claim("new")
    assert again is not None and again.attempts == 2
    assert jobs.finish(job_id, "old", "succeeded") is False
    assert jobs.finish(job_id, "new", "succeeded", result={"version": 1}) is True
    done = jobs.get("t", job_id)
    assert (done.state, done.progress, done.result) == ("succeeded", 1.0, {"version": 1})


def test_a_job_whose_runners_keep_dying_fails_after_max_attempts(jobs: JobStore) -> None:
    (job_id,) = _submit(jobs)
    for attempt in range(3):
        assert jobs.claim(f"r{attempt}") is not None
        _age_heartbeat(jobs, job_id, 120)
        jobs.requeue_stale(30)
    job = jobs.get("t", job_id)
    assert job.state == "failed" and "stopped answering" in job.error


def test_fresh_heartbeats_are_not_requeued(jobs: JobStore) -> None:
    (job_id,) = _submit(jobs)
    jobs.claim("r")
    assert jobs.requeue_stale(30) == []
    assert jobs.get("t", job_id).state == "running"


def test_progress_metrics_checkpoint_and_logs(jobs: JobStore) -> None:
    (job_id,) = _submit(jobs)
    jobs.claim("r")
    jobs.report(job_id, progress=0.5, message="epoch 1/2", metrics={"epoch": 1, "loss": 0.7})
    jobs.report(job_id, metrics={"epoch": 2, "loss": 0.4}, checkpoint="a" * 64)
    job = jobs.get("t", job_id)
    assert (job.progress, job.message) == (0.5, "epoch 1/2")
    assert [m["loss"] for m in job.metrics] == [0.7, 0.4]
    assert jobs.checkpoint_of(job_id) == "a" * 64
    jobs.reset_metrics(job_id, keep=1)
    assert len(jobs.get("t", job_id).metrics) == 1
    jobs.log(job_id, ["one", "two"])
    jobs.log(job_id, ["three"])
    lines = jobs.logs("t", job_id)
    assert [line.line for line in lines] == ["one", "two", "three"]
    assert [line.line for line in jobs.logs("t", job_id, after=lines[1].seq)] == ["three"]
    with pytest.raises(NotFound):
        jobs.logs("other", job_id)


def test_stopping_a_runner_requeues_its_jobs(jobs: JobStore) -> None:
    a, b = _submit(jobs, 2)
    jobs.claim("r")
    jobs.claim("r")
    jobs.fail_running_of("r", "requeued: its runner stopped")
    assert {jobs.get("t", a).state, jobs.get("t", b).state} == {"queued"}
