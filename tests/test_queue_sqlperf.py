"""What keeps a worker's step on SQLite close to a bare SQLite loop (bench/queue_bench.py measures
it; these tests check the properties that make it so, never a time): the claimed Task is made from
the picked row, the wake directory is listed only when it changed, and the counts' trigger is one
statement."""

import os

import claude_queue
from conftest import database_at


def _fields(task):
    return {k: v for k, v in task.to_dict().items() if k != "depends_on"}  # a claim does not read them


def _statements(queue):
    seen = []
    queue._connect().set_trace_callback(lambda sql: seen.append(" ".join(sql.split())))
    return seen


def test_a_claimed_task_is_made_from_the_picked_row_and_equals_the_stored_one(queue, clock, tmp_path):
    (tmp_path / "sub").mkdir()
    a = queue.add_task("a", working_dir=str(tmp_path / "sub"), metadata={"k": [1]}, context_files=["x"],
                       priority=2, max_attempts=3)
    b = queue.add_task("b")
    first = queue.claim_task("w")
    queue.release_task(a, "w", attempt=first.attempt)  # attempt_base moves: attempts_used is derived
    clock.advance(5)
    seen = _statements(queue)
    task = queue.claim_task("w", lease_seconds=60)
    assert not [s for s in seen if s.startswith("SELECT") and "WHERE id = ?" in s], "no read after the claim"
    assert _fields(task) == _fields(queue.get_task(a))
    assert (task.status, task.worker_id, task.attempt, task.attempts_used) == ("in_progress", "w", 2, 1)
    assert task.lease_expires_at == clock() + 60 and task.working_dir == str(tmp_path / "sub")
    clock.advance(1)
    done, nxt = queue.finish_and_claim("complete", a, "w", attempt=task.attempt, result="ok", claim_next=True)
    assert done and _fields(nxt) == _fields(queue.get_task(b))
    assert nxt.started_at == clock() and nxt.cancel_requested is False and nxt.activity is None


def _age(path):
    """As if the directory last changed long ago (its listing may then be reused)."""
    os.utime(path, (1_000_000, 1_000_000))


def test_the_wake_directory_is_listed_again_only_when_it_changed(queue, monkeypatch):
    waker = claude_queue.Waker(queue, "idle")
    listings = []
    real_scandir = os.scandir
    monkeypatch.setattr(claude_queue.os, "scandir", lambda path: listings.append(path) or real_scandir(path))
    try:
        _age(queue.wake_dir)
        queue.notify_waiters()
        queue.notify_waiters()
        assert len(listings) == 1, "an unchanged directory is not listed again"
        assert waker.wait(0) and not waker.wait(0)
        # A waiter that comes changes the directory: it is listed again, and woken.
        second = claude_queue.Waker(queue, "second")
        try:
            queue.notify_waiters()
            assert len(listings) == 2 and second.wait(0) and waker.wait(0)
        finally:
            second.close()
        # A dead process's FIFO that appears is found and removed.
        _age(queue.wake_dir)
        queue.notify_waiters()
        stale = queue.wake_dir / "gone-999999.fifo"
        os.mkfifo(stale)
        queue.add_task("x")
        assert not stale.exists() and waker.wait(0)
    finally:
        waker.close()


def test_a_listing_of_a_just_changed_directory_is_not_reused(queue):
    """Its mtime may not move again within the file system's timestamp granularity: a FIFO made
    in that window must still be woken."""
    waker = claude_queue.Waker(queue, "idle")
    try:
        queue.notify_waiters()  # listed just after the waker came: the directory changed just now
        before = os.stat(queue.wake_dir)
        late = claude_queue.Waker(queue, "late")
        os.utime(queue.wake_dir, ns=(before.st_atime_ns, before.st_mtime_ns))  # the same mtime
        try:
            queue.notify_waiters()
            assert late.wait(0), "a waiter that came in the same timestamp tick is woken"
        finally:
            late.close()
    finally:
        waker.close()


def test_the_counts_trigger_is_one_statement_and_a_schema_7_database_keeps_its_counts(tmp_path, make_queue):
    db = tmp_path / "v7.db"
    conn = database_at(db, 7)
    conn.execute("INSERT INTO jobs (id, description, created_at) VALUES ('job', 'j', 1)")
    for status, cost in (("pending", None), ("in_progress", 0.5), ("completed", 1.0), ("failed", 0.25)):
        conn.execute("INSERT INTO tasks (job_id, prompt, max_attempts, created_at, updated_at, status, cost_usd, "
                     "worker_id, attempt, finished_at) VALUES ('job', 'p', 3, 1, 1, ?, ?, 'w', 1, ?)",
                     (status, cost, 1 if status in ("completed", "failed") else None))
    conn.commit()
    conn.close()
    q = make_queue(db=db)
    assert q._read("PRAGMA user_version")[0][0] == claude_queue.SCHEMA_VERSION >= 8
    body = q._read("SELECT sql FROM sqlite_master WHERE name = 'task_counts_update'")[0][0]
    assert body.count("INSERT INTO task_counts") == 1 and "UPDATE task_counts" not in body
    stats = q.get_stats("job")
    assert (stats["pending"], stats["in_progress"], stats["completed"], stats["failed"]) == (1, 1, 1, 1)
    assert q.complete_task(2, "w", {"result": "ok", "total_cost_usd": 0.25}, attempt=1)
    q.retry_task(4)
    t = q.claim_task("w2")
    q.fail_task(t.id, "w2", "boom", retryable=False, attempt=t.attempt, outcome={"total_cost_usd": 1.0,
                                                                                  "permission_denials": [{}]})
    stats = q.get_stats("job")
    assert (stats["pending"], stats["in_progress"], stats["completed"], stats["failed"]) == (1, 0, 2, 1)
    assert stats["cost_usd"] == 3.0 and q.get_stats()["total"] == 4
    # The counts equal a count of the table itself, status by status.
    counted = {r[0]: (r[1], r[2]) for r in q._read(
        "SELECT CASE status WHEN 'in_progress' THEN 'pending' ELSE status END, count(*), "
        "ifnull(sum(cost_usd), 0) FROM tasks GROUP BY 1")}
    kept = {r[0]: (r[1], r[2]) for r in q._read("SELECT status, n, cost FROM task_counts WHERE n != 0")}
    assert kept == counted
    denied = q._read("SELECT status, denied FROM task_counts WHERE denied != 0")
    assert [tuple(r) for r in denied] == [("failed", 1)]


def test_the_wal_is_checkpointed_at_sqlites_own_threshold(queue):
    """A WAL of 10,000 pages made every page another process wrote slower to find and read: a burst
    of claims by several workers ran at a third of a bare loop's pace instead of a half."""
    assert queue._read("PRAGMA wal_autocheckpoint")[0][0] == claude_queue.WAL_AUTOCHECKPOINT_PAGES == 1000


def test_a_completion_binds_each_value_once_and_builds_no_temporary_table(queue):
    """SQL_COMPLETE: the status and the empty error written in, the time bound once (each bound
    value, a None above all, costs the sqlite3 module an adaptation lookup)."""
    ops = [row[1] for row in queue._read("EXPLAIN " + claude_queue.SQL_COMPLETE, (1,) * 10)]
    assert "OpenEphemeral" not in ops and "Program" in ops, "no temporary B-tree; the counts' trigger runs"
    tid = queue.add_task("x")
    t = queue.claim_task("w")
    seen = _statements(queue)
    assert queue.complete_task(tid, "w", {"result": "ok", "total_cost_usd": 0.5}, attempt=t.attempt)
    assert any(s.startswith("UPDATE tasks SET status = 'completed', finished_at = ") for s in seen)
    done = queue.get_task(tid)
    assert (done.status, done.result, done.cost_usd, done.error, done.lease_expires_at) == ("completed", "ok", 0.5,
                                                                                          None, None)
    assert done.finished_at == done.updated_at and queue.get_stats()["completed"] == 1
