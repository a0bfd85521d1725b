"""The PostgreSQL backend's fast paths (queue_postgres.py, "Fast paths"): a worker's completion with
its next claim, a claim and a lease renewal are one statement each; a completion that changes no
other task's row runs beside claims and other such completions (the write lock shared), and what
the functions leave to the general path (dependents, budgets) still keeps the contract."""

import threading

import pytest

import claude_queue
import config
import queue_postgres
from conftest import wait_for


@pytest.fixture
def pg(postgres_url, tmp_path):
    made = []

    def make():
        q = claude_queue.TaskQueue(postgres_url, cfg=config.load_config(db=postgres_url, cwd=tmp_path, env={}))
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()


def _statements(monkeypatch):
    """statements(fn, *args) -> (fn's result, the statements it sent)."""
    import psycopg

    sent = []
    execute = psycopg.Cursor.execute

    def counted(self, query, *args, **kwargs):
        sent.append(query)
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Cursor, "execute", counted)

    def run(fn, *args, **kwargs):
        sent.clear()
        return fn(*args, **kwargs), list(sent)

    return run


def test_a_completion_with_the_next_claim_is_one_statement(pg, monkeypatch):
    q = pg()
    first, second = q.add_tasks([{"prompt": "a"}, {"prompt": "b"}])
    q.register_worker("w", state="idle")
    task = q.claim_task("w", worker_info={"claude_pid": None})
    assert task.id == first
    statements = _statements(monkeypatch)
    (done, nxt), sent = statements(q.finish_and_claim, "complete", task.id, "w", attempt=task.attempt,
                                   result={"result": "ok", "total_cost_usd": 0.25}, claim_next=True,
                                   worker_info={"claude_pid": None})
    assert len(sent) == 1, sent
    assert done is True and nxt.id == second and nxt.status == "in_progress" and nxt.attempt == 1
    assert nxt.prompt == "b" and nxt.worker_id == "w" and nxt.metadata == {} and nxt.attempts_used == 1
    got = q.get_task(first)
    assert got.status == "completed" and got.result == "ok" and got.cost_usd == 0.25
    assert [e["event"] for e in q.get_events(first)][-1] == "completed"
    assert q.list_workers()[0]["current_task"] == second and q.list_workers()[0]["state"] == "busy"
    renewed, sent = statements(q.renew_lease, second, "w", attempt=1, worker_info={"claude_pid": 7})
    assert renewed is False and len(sent) == 1, "a lease renewal is one statement too"
    q.cancel_task(second)
    assert q.renew_lease(second, "w", attempt=1) is True
    # The last task done, nothing left: the worker's row says idle in the same statement.
    out, sent = statements(q.finish_and_claim, "complete", second, "w", attempt=1, result="ok", claim_next=True,
                           worker_info={"claude_pid": None})
    assert out == (True, None) and len(sent) == 1
    assert q.list_workers()[0]["state"] == "idle" and q.list_workers()[0]["current_task"] is None
    # A stale holder is fenced: nothing recorded, and still one statement.
    out, sent = statements(q.finish_and_claim, "complete", second, "w", attempt=1, result="late")
    assert out == (False, None) and len(sent) == 1 and q.get_task(second).result == "ok"
    # A claim alone, too.
    q.add_task("c")
    task, sent = statements(q.claim_task, "w", worker_info={"claude_pid": None})
    assert task.prompt == "c" and len(sent) == 1


def _hold_shared_write_lock(url):
    """Another session holding the write lock shared, as a claim in progress does."""
    import psycopg

    conn = psycopg.connect(url)
    conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (queue_postgres.WRITE_LOCK,))
    return conn


def test_a_completion_without_dependents_runs_beside_a_claim(pg, postgres_url):
    q = pg()
    q.add_tasks([{"prompt": "a"}, {"prompt": "b"}])
    task = q.claim_task("w")
    other = _hold_shared_write_lock(postgres_url)
    try:
        # Were the write lock taken whole, this would wait for `other` (and fail, after lock_timeout).
        q._connect().raw.execute("SET lock_timeout = '20s'")
        done, nxt = q.finish_and_claim("complete", task.id, "w", attempt=task.attempt, result="ok", claim_next=True)
        assert done is True and nxt is not None
    finally:
        other.close()


def test_a_completion_with_dependents_waits_for_the_write_lock(pg, postgres_url):
    q = pg()
    a, b = q.add_tasks([{"prompt": "a", "ref": "a"}, {"prompt": "b", "depends_on": ["a"]}])
    task = q.claim_task("w")
    other = _hold_shared_write_lock(postgres_url)
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault(
        "out", q.finish_and_claim("complete", task.id, "w", attempt=task.attempt, result="ok", claim_next=True)))
    try:
        thread.start()
        watcher = pg()
        wait_for(lambda: watcher._read("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                                       "AND mode = 'ExclusiveLock' AND NOT granted")[0][0],
                 what="the completion waiting for the write lock")
        assert q.get_task(a).status == "in_progress"
    finally:
        other.close()
    thread.join(60)
    done, nxt = result["out"]
    assert done is True and nxt.id == b, "the dependent it unblocked is claimed in the same step"


def test_a_claim_that_meets_a_spent_budget_goes_the_general_path(pg):
    q = pg()
    lone = q.add_task("no job")
    job = q.create_job("budgeted", max_budget_usd=0.5)
    first = q.add_task("spends it", job_id=job, priority=5)
    task = q.claim_task("w")
    assert task.id == first
    assert q.complete_task(first, "w", result={"result": "ok", "total_cost_usd": 1.0}, attempt=1) is True
    late = q.add_task("added after the budget was spent", job_id=job, priority=9)
    after = q.add_task("no job either")
    task = q.claim_task("w")
    assert task.id == lone, "the spent job's task is skipped, not claimed"
    assert q.get_task(late).status == "skipped" and "budget" in q.get_task(late).error
    done, nxt = q.finish_and_claim("complete", lone, "w", attempt=task.attempt, result="ok", claim_next=True)
    assert done is True and nxt.id == after


def test_a_finish_in_a_budgeted_job_skips_its_pending_tasks(pg):
    q = pg()
    job = q.create_job("budgeted", max_budget_usd=0.5)
    first, second = q.add_tasks([{"prompt": "a", "job_id": job}, {"prompt": "b", "job_id": job}])
    task = q.claim_task("w")
    done, nxt = q.finish_and_claim("complete", task.id, "w", attempt=task.attempt,
                                   result={"result": "ok", "total_cost_usd": 0.75}, claim_next=True)
    assert done is True and nxt is None
    assert q.get_task(second).status == "skipped"


def test_a_version_1_database_gains_the_functions(postgres_url, tmp_path, monkeypatch):
    cfg = config.load_config(db=postgres_url, cwd=tmp_path, env={})
    monkeypatch.setattr(queue_postgres, "SCHEMA_VERSION", 1)
    old = claude_queue.TaskQueue(postgres_url, cfg=cfg)
    tid = old.add_task("from before")
    assert old.schema_version() == 1
    old.close()
    monkeypatch.undo()
    q = claude_queue.TaskQueue(postgres_url, cfg=cfg)
    try:
        assert q.schema_version() == queue_postgres.SCHEMA_VERSION >= 2
        task = q.claim_task("w")
        assert task.id == tid
        assert q.finish_and_claim("complete", tid, "w", attempt=1, result="ok", claim_next=True) == (True, None)
    finally:
        q.close()
