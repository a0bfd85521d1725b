"""What keeps a worker's step on SQLite close to a bare SQLite loop (bench/queue_bench.py measures
it; these tests check the properties that make it so, never a time): the claimed Task is made from
the picked row, the wake directory is listed only when it changed, and the counts' trigger is one
statement."""

import os

import claude_queue


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
