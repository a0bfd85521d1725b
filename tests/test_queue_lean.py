"""The lean write path on SQLite: what a task costs in commits and what a completion stores, and
the upgrade of a database made before it (schema 4 -> 5)."""

import os

import claude_cli
import claude_queue
import claude_worker
import config
from conftest import database_at, install_fake_claude


def test_a_schema_4_database_is_upgraded_with_its_counts(tmp_path, make_queue):
    db = tmp_path / "v4.db"
    conn = database_at(db, 4)
    conn.execute("INSERT INTO jobs (id, description, created_at) VALUES ('job-old', 'old', 1)")
    for status, cost in (("pending", None), ("in_progress", 0.5), ("in_progress", None), ("completed", 1.0)):
        conn.execute("INSERT INTO tasks (job_id, prompt, max_attempts, created_at, updated_at, status, cost_usd, "
                     "worker_id) VALUES ('job-old', 'p', 3, 1, 1, ?, ?, 'w')", (status, cost))
    conn.commit()
    conn.close()
    q = make_queue(db=db)
    assert q._read("PRAGMA user_version")[0][0] == claude_queue.SCHEMA_VERSION >= 5
    assert q._read("SELECT count(*) FROM task_counts WHERE status = 'in_progress'")[0][0] == 0
    stats = q.get_stats("job-old")
    assert (stats["pending"], stats["in_progress"], stats["completed"], stats["total"]) == (1, 2, 1, 4)
    assert stats["cost_usd"] == 1.5
    assert q.complete_task(2, "w", {"result": "ok", "total_cost_usd": 0.25})
    stats = q.get_stats()
    assert (stats["pending"], stats["in_progress"], stats["completed"], stats["cost_usd"]) == (1, 1, 2, 1.75)


def test_a_claim_changes_no_count_row(queue):
    queue.add_task("x")
    before = queue._read("SELECT * FROM task_counts")
    queue.claim_task("w")
    assert [tuple(r) for r in queue._read("SELECT * FROM task_counts")] == [tuple(r) for r in before]


def test_the_result_text_is_stored_once(queue):
    tid = queue.add_task("x")
    queue.claim_task("w")
    text = "the answer " * 150
    queue.complete_task(tid, "w", {"result": text, "session_id": "s"})
    stored_result, stored_outcome = queue._read("SELECT result, outcome FROM tasks WHERE id = ?", (tid,))[0]
    assert stored_result == text and text not in stored_outcome
    assert queue.get_task(tid).outcome == {"result": text, "session_id": "s"}
    # A row written before (its outcome holding the text too) reads the same.
    queue._read("UPDATE tasks SET outcome = ? WHERE id = ?", (claude_queue._dumps({"result": text}), tid))
    assert queue.get_task(tid).outcome == {"result": text}


def test_a_worker_commits_twice_per_task(tmp_path, monkeypatch):
    """Its claim (or its previous task's end with this claim), and claude's pid: nothing else."""
    install_fake_claude(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    cfg = config.load_config(cwd=tmp_path, env={}, overrides={"workers.heartbeat_seconds": 30})
    q = claude_queue.TaskQueue(cfg=cfg)
    n = 5
    q.add_tasks([{"prompt": f"task {i}"} for i in range(n)])
    worker = claude_worker.Worker("w1", q, cfg, exit_when_idle=True)
    worker.executable = claude_cli.resolve_command(cfg["claude"]["command"])
    worker.waker = claude_queue.Waker(q, "w1")
    q.register_worker("w1", state="idle", info=worker._info)
    trace = []
    q._connect().set_trace_callback(trace.append)
    try:
        assert worker.loop() == claude_worker.EXIT_OK
    finally:
        q._connect().set_trace_callback(None)
        worker.waker.close()
    assert q.get_stats()["completed"] == n
    commits = [trace[i - 1] for i, sql in enumerate(trace) if sql.startswith("COMMIT")]
    assert len(commits) <= 2 * n + 1, "one claim, then per task: claude's pid, and its end with the next claim"
    [row] = q.list_workers()
    assert (row["state"], row["current_task"], row["info"]["claude_pid"]) == ("idle", None, None)


def test_one_history_row_per_attempt_shows_every_claim(queue, clock):
    tid = queue.add_task("x", max_attempts=3)
    queue.claim_task("w1", lease_seconds=5)
    assert [(e["event"], e["worker_id"], e["attempt"], e["at"]) for e in queue.get_events(tid)] == [
        ("created", None, None, clock()), ("claimed", "w1", 1, clock())], "the running attempt, from the task row"
    clock.advance(1)
    queue.cancel_task(tid)
    clock.advance(5)
    assert queue.recover_stale() == [tid]
    assert [(e["event"], e["worker_id"], e["attempt"]) for e in queue.get_events(tid)] == [
        ("created", None, None), ("claimed", "w1", 1), ("cancel_requested", None, None), ("cancelled", "w1", 1)]
    queue.retry_task(tid)
    t = queue.claim_task("w2")
    clock.advance(2)
    queue.release_task(tid, "w2", reason="shutting down")
    t = queue.claim_task("w3")
    assert queue.complete_task(tid, "w3", "ok", attempt=t.attempt)
    events = queue.get_events(tid)
    assert [(e["event"], e["worker_id"], e["attempt"]) for e in events][4:] == [
        ("retried", None, None), ("claimed", "w2", 2), ("released", "w2", 2), ("claimed", "w3", 3),
        ("completed", "w3", 3)]
    assert events[5]["at"] == events[6]["at"] - 2, "a claim is shown at the time it happened"
    assert set(events[0]) == {"at", "event", "worker_id", "attempt", "detail", "cost_usd"}
    stored = queue._read("SELECT event FROM task_events WHERE task_id = ? ORDER BY seq", (tid,))
    assert "claimed" not in [r[0] for r in stored], "a claim writes no row of its own"


def test_a_schema_5_history_reads_the_same(tmp_path, make_queue):
    """A database from before schema 6 has its own 'claimed' rows: no claim is shown twice."""
    db = tmp_path / "v5.db"
    conn = database_at(db, 5)
    conn.execute("INSERT INTO tasks (prompt, max_attempts, created_at, updated_at, status, worker_id, attempt, "
                 "started_at, lease_expires_at) VALUES ('p', 3, 1, 1, 'in_progress', 'w', 1, 2, 9e9)")
    conn.executemany("INSERT INTO task_events (task_id, seq, at, event, worker_id, attempt) VALUES (1, ?, ?, ?, ?, ?)",
                     [(1, 1, "created", None, None), (2, 2, "claimed", "w", 1)])
    conn.commit()
    conn.close()
    q = make_queue(db=db)
    assert q._read("PRAGMA user_version")[0][0] == claude_queue.SCHEMA_VERSION
    assert [e["event"] for e in q.get_events(1)] == ["created", "claimed"]
    assert q.complete_task(1, "w", "ok", attempt=1)
    assert [e["event"] for e in q.get_events(1)] == ["created", "claimed", "completed"]


def test_the_worker_steps_without_returning_support(queue, monkeypatch):
    """SQLite before 3.35 (Python 3.9 on Debian 11) has no UPDATE ... RETURNING."""
    monkeypatch.setattr(claude_queue, "HAS_RETURNING", False)
    a, b = queue.add_task("a"), queue.add_task("b")
    t = queue.claim_task("w")
    assert queue.renew_lease(a, "w", attempt=t.attempt) is False
    assert queue.renew_lease(a, "other") is None
    done, nxt = queue.finish_and_claim("complete", a, "w", attempt=t.attempt, result="ok", claim_next=True)
    assert done and nxt.id == b
    assert [e["event"] for e in queue.get_events(a)] == ["created", "claimed", "completed"]
    assert queue.finish_and_claim("complete", a, "w", attempt=t.attempt) == (False, None)
