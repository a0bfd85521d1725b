"""What keeps a worker's step cheap on SQLite (bench/queue_bench.py measures it; these tests only
check the properties that make it so, never a time), and the upgrade of databases made before."""

import pytest

import claude_queue
from conftest import database_at


def _ops(queue, sql, nparams):
    return [row[1] for row in queue._read("EXPLAIN " + sql, (1,) * nparams)]


@pytest.mark.parametrize("name, nparams", [("SQL_CLAIM_ID", 5), ("SQL_FINISH", 13), ("SQL_PICK_UNLESS_PAUSED", 6)])
def test_the_hot_statements_build_no_temporary_table(queue, name, nparams):
    """A partial index's or a lookup's `IN (...)` list makes SQLite build a temporary B-tree each
    time the statement runs; a claim or a completion must not pay for one."""
    assert "OpenEphemeral" not in _ops(queue, getattr(claude_queue, name), nparams)


def test_a_schema_6_database_upgrades_and_lists_its_unsuccessful_tasks(tmp_path, make_queue):
    db = tmp_path / "v6.db"
    conn = database_at(db, 6)
    for status in ("failed", "completed", "skipped", "cancelled"):
        conn.execute("INSERT INTO tasks (prompt, max_attempts, created_at, updated_at, finished_at, status) "
                     "VALUES ('p', 3, 1, 1, 1, ?)", (status,))
    conn.commit()
    conn.close()
    q = make_queue(db=db)
    assert q._read("PRAGMA user_version")[0][0] == claude_queue.SCHEMA_VERSION >= 7
    assert [t.id for t in q.recent_tasks("failed")] == [1]
    assert [t.id for t in q.list_tasks(status=["skipped", "cancelled"])] == [4, 3]
    plan = " ".join(r[3] for r in q._read("EXPLAIN QUERY PLAN SELECT * FROM tasks INDEXED BY tasks_unsuccessful "
                                          f"WHERE {claude_queue._UNSUCCESSFUL} AND status = 'failed'"))
    assert "tasks_unsuccessful" in plan
    tid = q.add_task("new")
    assert q.claim_task("w").id == tid
    q.fail_task(tid, "w", "boom", retryable=False)
    assert [t.id for t in q.recent_tasks("failed")] == [tid, 1]


def test_a_completion_writes_no_history_row_yet_its_history_shows_it(queue, clock):
    tid = queue.add_task("x", max_attempts=3)
    first = queue.claim_task("w1")
    clock.advance(2)
    queue.fail_task(tid, "w1", "boom", attempt=first.attempt, outcome={"result": "r", "total_cost_usd": 0.25})
    clock.advance(100)
    t = queue.claim_task("w2")
    clock.advance(1)
    queue.cancel_task(tid)  # a cancel asked for while it ran, then it completed all the same
    clock.advance(3)
    assert queue.complete_task(tid, "w2", {"result": "done", "total_cost_usd": 0.5}, attempt=t.attempt)
    stored = [r[0] for r in queue._read("SELECT event FROM task_events WHERE task_id = ? ORDER BY seq", (tid,))]
    assert stored == ["created", "failed", "cancel_requested"]
    events = queue.get_events(tid)
    assert [(e["event"], e["worker_id"], e["attempt"], e["cost_usd"]) for e in events] == [
        ("created", None, None, None), ("claimed", "w1", 1, None), ("failed", "w1", 1, 0.25),
        ("claimed", "w2", 2, None), ("cancel_requested", None, None, None), ("completed", "w2", 2, 0.5)]
    assert events[-1]["at"] == clock() and events[-3]["at"] == clock() - 4
    assert events[-1]["detail"] is None and set(events[-1]) == set(events[0])
    assert queue.get_task(tid).cost_usd == 0.75
    # A text result has no cost; a task not yet finished shows no completion.
    other = queue.add_task("y")
    queue.claim_task("w3")
    assert "completed" not in [e["event"] for e in queue.get_events(other)]
    queue.complete_task(other, "w3", "plain text")
    assert queue.get_events(other)[-1]["event"] == "completed" and queue.get_events(other)[-1]["cost_usd"] is None


def test_a_completion_stored_by_an_older_version_is_shown_once(tmp_path, make_queue):
    db = tmp_path / "v6.db"
    conn = database_at(db, 6)
    conn.execute("INSERT INTO tasks (prompt, max_attempts, created_at, updated_at, status, worker_id, attempt, "
                 "started_at, finished_at, outcome) VALUES ('p', 3, 1, 1, 'completed', 'w', 1, 2, 5, "
                 "'{\"total_cost_usd\":0.5}')")
    conn.executemany("INSERT INTO task_events (task_id, seq, at, event, worker_id, attempt, cost_usd, started_at) "
                     "VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                     [(1, 1, "created", None, None, None, None), (2, 5, "completed", "w", 1, 0.5, 2)])
    conn.commit()
    conn.close()
    q = make_queue(db=db)
    assert [(e["event"], e["at"]) for e in q.get_events(1)] == [("created", 1), ("claimed", 2), ("completed", 5)]


def test_a_claim_runs_no_trigger_and_counts_still_follow_finishes(queue):
    """The counts' trigger fires on finished_at (set by every move into or out of a finished
    status), so the claim's UPDATE, which sets status only, carries no trigger program."""
    assert "Program" not in _ops(queue, claude_queue.SQL_CLAIM_ID, 5)
    assert "Program" in _ops(queue, claude_queue.SQL_FINISH, 13)
    a, b = queue.add_task("a"), queue.add_task("b")
    t = queue.claim_task("w")
    assert (queue.get_stats()["pending"], queue.get_stats()["in_progress"]) == (1, 1)
    queue.fail_task(a, "w", "x", retryable=False, attempt=t.attempt)
    queue.cancel_task(b)
    stats = queue.get_stats()
    assert (stats["pending"], stats["in_progress"], stats["failed"], stats["cancelled"]) == (0, 0, 1, 1)
    queue.retry_task(a)
    assert (queue.get_stats()["pending"], queue.get_stats()["failed"]) == (1, 0)
