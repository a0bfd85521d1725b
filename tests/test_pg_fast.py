"""PostgreSQL's schema 4 (queue_postgres.PG_MIGRATIONS[3]): the counts' trigger moves a task
between two buckets in one statement, the completion's budget checks run only for a task in a job,
and the completion returns a named type. The counts stay exact through fast completions and every
general-path move (as SQLite's), and a version-3 database with tasks in it upgrades with its counts
intact."""

import pytest
from test_pg_schema3 import _rows, twin_queues

import claude_queue
import config
import flags
import queue_postgres


@pytest.fixture
def cfg(postgres_url, tmp_path):
    return config.load_config(db=postgres_url, cwd=tmp_path, env={})


def _recounted(url):
    """task_counts as it is, and as the tasks table says it should be (empty buckets left out)."""
    stored = _rows(url, "SELECT job_id, status, n, cost, denied FROM task_counts WHERE n <> 0 OR cost <> 0 "
                        "OR denied <> 0 ORDER BY 1, 2")
    counted = _rows(url, "SELECT coalesce(job_id, ''), klauss_count_bucket(status), count(*), "
                         "sum(coalesce(cost_usd, 0)), sum((denied > 0)::int) FROM tasks GROUP BY 1, 2 ORDER BY 1, 2")
    rounded = [[(j, s, n, round(c, 9), d) for j, s, n, c, d in rows] for rows in (stored, counted)]
    return rounded[0], rounded[1]


def _outcome(cost, denials=0):
    return {"result": "ok", "total_cost_usd": cost, "permission_denials": [{"tool": "Bash"}] * denials}


def test_the_counts_follow_fast_and_general_moves_as_on_sqlite(postgres_url, cfg, tmp_path):
    now = [1000.0]
    q, lite = twin_queues(postgres_url, cfg, tmp_path, clock=lambda: now[0])
    steps = []

    def step(fn):
        results = [fn(queue) for queue in (q, lite)]
        for job in (None, "j1", "j2"):
            assert q.get_stats(job) == lite.get_stats(job), (len(steps), job)
        stored, counted = _recounted(postgres_url)
        assert stored == counted, len(steps)
        steps.append(results)
        return results

    try:
        for queue in (q, lite):
            queue.insert_job("plain", None, None, None, job_id="j1")
            queue.insert_job("budgeted", None, None, 100.0, job_id="j2")
            queue.register_worker("w", state="idle")
        step(lambda x: x.add_tasks([
            {"prompt": "a", "job_id": "j1", "ref": "a", "max_attempts": 3}, {"prompt": "b", "job_id": "j1"},
            {"prompt": "c", "job_id": "j1", "depends_on": ["a"]}, {"prompt": "d", "job_id": "j2"},
            {"prompt": "e", "job_id": "j2"}, {"prompt": "f"}, {"prompt": "g", "max_attempts": 3}]))
        first = step(lambda x: x.claim_task("w", worker_info={}))
        assert first[0].id == first[1].id
        # a (with a dependent): a failure with a cost, back to pending for a retry (one bucket).
        step(lambda x: x.fail_task(first[0].id, "w", "boom", outcome=_outcome(0.25)))
        now[0] += 3600
        held = step(lambda x: x.claim_task("w", worker_info={}))[0]
        assert held.id == first[0].id
        # From here each completion claims the next task in the same call: a's goes the general path
        # (a dependent), the budgeted job's too, the others the fast path.
        for cost, denials in ((0.5, 1), (None, 0), (0.125, 2), (1.0, 0), (0.0625, 1), (2.0, 0), (0.75, 3)):
            done, nxt = step(lambda x, held=held, result=_outcome(cost, denials): x.finish_and_claim(
                "complete", held.id, "w", attempt=held.attempt, claim_next=True, worker_info={}, result=result))[0]
            assert done is True
            if nxt is None:
                break
            held = nxt
        # A release with a cost (one bucket), a cancel, a retry of the cancelled task, its completion.
        h = step(lambda x: x.add_task("h", job_id="j1"))[0]
        held = step(lambda x: x.claim_task("w"))[0]
        assert held.id == h
        step(lambda x: x.release_task(h, "w", cost=0.5))
        step(lambda x: x.cancel_task(h))
        step(lambda x: x.retry_task(h))
        held = step(lambda x: x.claim_task("w"))[0]
        assert held.id == h
        step(lambda x: x.finish_and_claim("complete", h, "w", attempt=held.attempt, result=_outcome(0.25)))
        stats = q.get_stats()
        assert (stats["completed"], stats["total"], stats["denied"]) == (8, 8, 4)
        assert stats["cost_usd"] == pytest.approx(0.25 + 0.5 + 0.125 + 1.0 + 0.0625 + 2.0 + 0.75 + 0.5 + 0.25)
    finally:
        q.close()
        lite.close()


def test_a_live_pause_still_holds_the_claim_in_a_completion(postgres_url, cfg):
    now = [1000.0]
    q = claude_queue.TaskQueue(postgres_url, clock=lambda: now[0], cfg=cfg)
    try:
        a, b = q.add_tasks([{"prompt": "a"}, {"prompt": "b"}])
        held = q.claim_task("w")
        q.set_flag(flags.PAUSED, "usage limit", until=now[0] + 60)
        assert q.finish_and_claim("complete", a, "w", attempt=held.attempt, result="ok", claim_next=True) == (True, None)
        assert q.get_task(b).status == "pending"
        now[0] += 120  # the pause is over
        held = q.claim_task("w")
        q.add_task("c")
        done, nxt = q.finish_and_claim("complete", b, "w", attempt=held.attempt, result="ok", claim_next=True)
        assert done is True and nxt is not None and nxt.prompt == "c"
    finally:
        q.close()


def test_the_counts_trigger_moves_a_task_in_one_statement_and_the_completion_returns_a_named_type(postgres_url,
                                                                                                    cfg):
    q = claude_queue.TaskQueue(postgres_url, cfg=cfg)
    try:
        assert q.schema_version() == queue_postgres.SCHEMA_VERSION >= 4
        body = _rows(postgres_url, "SELECT prosrc FROM pg_proc WHERE proname = 'klauss_task_counts'")[0][0]
        assert "excluded.n" in body
        # A function with OUT parameters has its result described anew from the catalog in every call.
        assert _rows(postgres_url, "SELECT prorettype::regtype::text FROM pg_proc "
                                   "WHERE proname = 'klauss_complete_and_claim'") == [("klauss_completion",)]
    finally:
        q.close()


def test_a_version_3_database_upgrades_with_its_counts(postgres_url, cfg, monkeypatch):
    monkeypatch.setattr(queue_postgres, "SCHEMA_VERSION", 3)
    old = claude_queue.TaskQueue(postgres_url, cfg=cfg)
    old.insert_job("plain", None, None, None, job_id="j1")
    ids = old.add_tasks([{"prompt": f"t{i}", "job_id": "j1" if i % 2 else None} for i in range(6)])
    held = old.claim_task("w")
    for _ in range(2):  # schema 3's function and trigger
        done, held = old.finish_and_claim("complete", held.id, "w", attempt=held.attempt, claim_next=True,
                                          result=_outcome(0.5, 1))
        assert done is True
    old.release_task(held.id, "w", cost=0.25)
    assert old.schema_version() == 3
    before = old.get_stats()
    old.close()
    monkeypatch.undo()
    q = claude_queue.TaskQueue(postgres_url, cfg=cfg)
    try:
        assert q.schema_version() == queue_postgres.SCHEMA_VERSION >= 4
        assert q.get_stats() == before
        held = q.claim_task("w")
        while held is not None:
            done, held = q.finish_and_claim("complete", held.id, "w", attempt=held.attempt, claim_next=True,
                                            result=_outcome(0.125))
            assert done is True
        stored, counted = _recounted(postgres_url)
        assert stored == counted
        stats = q.get_stats()
        assert (stats["completed"], stats["total"], stats["denied"]) == (len(ids), len(ids), 2)
        assert stats["cost_usd"] == 0.5 * 2 + 0.25 + 0.125 * 4
        assert q.get_stats("j1")["completed"] == 3
    finally:
        q.close()


def test_a_fenced_holder_records_nothing_and_still_claims_as_on_sqlite(postgres_url, cfg, tmp_path):
    q, lite = twin_queues(postgres_url, cfg, tmp_path)
    try:
        got = []
        for queue in (q, lite):
            a, b = queue.add_tasks([{"prompt": "a"}, {"prompt": "b"}])
            held = queue.claim_task("w")
            # Another attempt holds the task now: the old holder's completion is fenced.
            done, nxt = queue.finish_and_claim("complete", a, "w", attempt=held.attempt + 1, result=_outcome(1.0),
                                               claim_next=True)
            got.append((done, nxt.id, queue.get_task(a).status, queue.get_task(a).result, queue.get_stats()))
        assert got[0] == got[1]
        assert got[0][:4] == (False, b, "in_progress", None)
        stored, counted = _recounted(postgres_url)
        assert stored == counted
    finally:
        q.close()
        lite.close()
