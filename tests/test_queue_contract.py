"""The storage contract (see the docstring of claude_queue.py): what every queue backend must do.

Each test takes a queue from the `backend` fixture: "sqlite", and "postgres" on a fresh database of
the session's throwaway server (tests/pg_server.py; skipped, saying why, where none can start). Tests
here use only TaskQueue's public methods, never SQL, so they hold for any backend; what is
particular to SQLite (the query plan, busy retries, PRAGMA user_version) is in test_queue.py.
"""

import multiprocessing as mp
import os

import pytest

import claude_queue
import config

BACKENDS = ["sqlite", "postgres"]


def _open(spec, clock=None, overrides=None):
    """A queue on the store `spec` names: (backend, location). Module-level: child processes use it."""
    backend, location = spec
    if backend == "sqlite":
        cfg = config.load_config(db=location, cwd=os.path.dirname(location), overrides=overrides or {}, env={})
        q = claude_queue.TaskQueue(location, clock=clock, cfg=cfg)
    elif backend == "postgres":
        cfg = config.load_config(db=location, cwd=os.getcwd(), overrides=overrides or {}, env={})
        q = claude_queue.TaskQueue(location, clock=clock, cfg=cfg)
    else:
        raise ValueError(f"unknown backend {backend!r}")
    q.backend_spec = spec
    return q


@pytest.fixture(params=BACKENDS)
def backend(request):
    return request.param


@pytest.fixture
def open_backend(backend, tmp_path, request):
    """open_backend(clock=None, **config overrides) -> a queue on a fresh store of `backend`."""
    made = []
    # PostgreSQL: a fresh database on the session's server (conftest.postgres_url).
    location = request.getfixturevalue("postgres_url") if backend == "postgres" else str(tmp_path / "q.db")

    def make(clock=None, **overrides):
        q = _open((backend, location), clock=clock, overrides=overrides)
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()


@pytest.fixture
def queue(open_backend, clock):
    return open_backend(clock=clock)


def test_claims_highest_priority_first_fifo_within_priority(queue):
    low = queue.add_task("low", priority=1)
    high1 = queue.add_task("high1", priority=9)
    high2 = queue.add_task("high2", priority=9)
    order = [queue.claim_task("w").id for _ in range(3)]
    assert order == [high1, high2, low]
    assert queue.claim_task("w") is None


def test_claim_sets_holder_lease_attempt_and_history(queue, clock):
    tid = queue.add_task("x")
    t = queue.claim_task("w1", lease_seconds=30)
    assert (t.id, t.status, t.worker_id, t.attempt, t.attempts_used) == (tid, "in_progress", "w1", 1, 1)
    assert t.lease_expires_at == clock() + 30 and t.started_at == clock()
    events = queue.get_events(tid)
    assert [(e["event"], e["worker_id"], e["attempt"]) for e in events] == [
        ("created", None, None), ("claimed", "w1", 1)]


def test_dependencies_gate_claims(queue):
    a = queue.add_task("a")
    b = queue.add_task("b", depends_on=[a], priority=5)
    first = queue.claim_task("w")
    assert first.id == a
    assert queue.claim_task("w") is None, "b waits for a"
    assert queue.complete_task(a, "w", "done")
    assert queue.claim_task("w").id == b


def test_retry_backoff_delays_the_next_claim(queue, clock):
    tid = queue.add_task("flaky", max_attempts=3)
    t = queue.claim_task("w")
    assert queue.fail_task(tid, "w", "API Error: 529 Overloaded", attempt=t.attempt)
    task = queue.get_task(tid)
    assert task.status == "pending" and task.not_before == clock() + 10
    assert queue.claim_task("w") is None, "not before its retry time"
    assert queue.next_claimable_at() == clock() + 10
    clock.advance(10)
    t2 = queue.claim_task("w")
    assert (t2.id, t2.attempt) == (tid, 2)
    assert queue.fail_task(tid, "w", "overloaded again")
    assert queue.get_task(tid).not_before == clock() + 20, "backoff doubles"
    clock.advance(20)
    queue.claim_task("w")
    assert queue.fail_task(tid, "w", "third time")
    task = queue.get_task(tid)
    assert task.status == "failed" and task.error == "third time" and task.attempts_used == 3


def test_non_retryable_failure_fails_at_once_and_skips_dependents_transitively(queue):
    a = queue.add_task("a", max_attempts=5)
    b = queue.add_task("b", depends_on=[a])
    c = queue.add_task("c", depends_on=[b])
    other = queue.add_task("other")
    queue.claim_task("w")
    assert queue.fail_task(a, "w", "max turns reached", retryable=False)
    assert queue.get_task(a).status == "failed"
    for dep in (b, c):
        t = queue.get_task(dep)
        assert t.status == "skipped" and "failed" in t.error
    assert queue.get_task(other).status == "pending"
    assert queue.claim_task("w").id == other


def test_failed_task_keeps_its_output(queue):
    tid = queue.add_task("x")
    queue.claim_task("w")
    queue.fail_task(tid, "w", "missing outputs: a.py", retryable=False,
                    outcome={"result": "I could not", "total_cost_usd": 0.5, "session_id": "s1"})
    t = queue.get_task(tid)
    assert (t.result, t.cost_usd, t.outcome["session_id"]) == ("I could not", 0.5, "s1")


def test_retry_task_revives_skipped_dependents_but_not_those_still_blocked(queue):
    a = queue.add_task("a", max_attempts=1)
    z = queue.add_task("z", max_attempts=1)
    b = queue.add_task("b", depends_on=[a])
    bz = queue.add_task("bz", depends_on=[a, z])
    for _ in range(2):
        t = queue.claim_task("w")
        queue.fail_task(t.id, "w", "boom")
    assert {queue.get_task(i).status for i in (b, bz)} == {"skipped"}
    with pytest.raises(ValueError, match="retry #"):
        queue.retry_task(b)
    assert queue.retry_task(a) == [a, b]
    assert queue.get_task(bz).status == "skipped", "z is still failed"
    ta = queue.get_task(a)
    assert ta.status == "pending" and ta.attempts_used == 0 and ta.error is None
    assert queue.get_task(b).deps_remaining == 1
    with pytest.raises(ValueError, match="only failed"):
        queue.retry_task(a)
    with pytest.raises(KeyError):
        queue.retry_task(999)
    t = queue.claim_task("w")
    assert t.id == a and t.attempt == 2 and t.attempts_used == 1


def test_new_task_depending_on_a_failed_one_is_skipped(queue):
    a = queue.add_task("a", max_attempts=1)
    queue.claim_task("w")
    queue.fail_task(a, "w", "boom")
    b = queue.add_task("b", depends_on=[a])
    assert queue.get_task(b).status == "skipped"
    assert queue.retry_task(a) == [a, b]


def test_lost_lease_cannot_overwrite_the_new_holder(queue, clock):
    tid = queue.add_task("x")
    old = queue.claim_task("w1", lease_seconds=60)
    clock.advance(30)
    assert queue.heartbeat(tid, "w1", attempt=old.attempt)
    clock.advance(61)  # w1 stopped heartbeating
    assert queue.recover_stale() == [tid]
    assert queue.get_task(tid).status == "pending"
    assert not queue.heartbeat(tid, "w1"), "heartbeat reports the lost lease"
    new = queue.claim_task("w2")
    assert new.attempt == 2
    assert not queue.complete_task(tid, "w1", "late result")
    assert not queue.fail_task(tid, "w1", "late failure")
    assert not queue.release_task(tid, "w1")
    t = queue.get_task(tid)
    assert (t.status, t.worker_id, t.result) == ("in_progress", "w2", None)
    assert queue.complete_task(tid, "w2", "real result", attempt=new.attempt)
    assert queue.get_task(tid).result == "real result"
    assert [e["event"] for e in queue.get_events(tid)] == ["created", "claimed", "recovered", "claimed", "completed"]


def test_same_worker_id_is_fenced_by_attempt(queue, clock):
    tid = queue.add_task("x")
    first = queue.claim_task("w1", lease_seconds=5)
    clock.advance(6)
    queue.recover_stale()
    second = queue.claim_task("w1")
    assert not queue.complete_task(tid, "w1", "stale", attempt=first.attempt)
    assert queue.complete_task(tid, "w1", "fresh", attempt=second.attempt)


def test_stale_recovery_spends_attempts_then_fails(queue, clock):
    tid = queue.add_task("crashy", max_attempts=2)
    dep = queue.add_task("after", depends_on=[tid])
    for _ in range(2):
        assert queue.claim_task("w", lease_seconds=5).id == tid
        clock.advance(6)
        assert queue.recover_stale() == [tid]
    t = queue.get_task(tid)
    assert t.status == "failed" and "no attempts left" in t.error
    assert queue.get_task(dep).status == "skipped"


def test_recover_a_dead_workers_tasks_at_once(queue):
    a = queue.add_task("a")
    queue.add_task("b")
    queue.claim_task("dead")
    queue.claim_task("alive")
    assert queue.recover_stale(worker_id="dead") == [a]
    assert queue.get_task(a).status == "pending"
    assert queue.list_tasks(status="in_progress")[0].worker_id == "alive"


def test_release_does_not_spend_an_attempt(queue, clock):
    tid = queue.add_task("x", max_attempts=1)
    t = queue.claim_task("w")
    assert queue.release_task(tid, "w", delay=30, reason="usage limit", attempt=t.attempt)
    task = queue.get_task(tid)
    assert task.status == "pending" and task.attempts_used == 0 and task.not_before == clock() + 30
    clock.advance(30)
    t = queue.claim_task("w")
    assert t.attempt == 2 and t.attempts_used == 1
    assert queue.fail_task(tid, "w", "boom")
    assert queue.get_task(tid).status == "failed", "max_attempts=1 still allows exactly one real try"


def test_cancel_pending_and_running(queue):
    job = queue.create_job("j")
    run = queue.add_task("running", job_id=job)
    wait = queue.add_task("waiting", job_id=job)
    after = queue.add_task("after", depends_on=[wait])
    queue.claim_task("w")
    assert queue.cancel_job(job) == {run: "cancel_requested", wait: "cancelled"}
    assert queue.get_task(after).status == "skipped"
    assert queue.cancel_requested(run) and queue.get_task(run).status == "in_progress"
    assert queue.acknowledge_cancel(run, "w")
    assert queue.get_task(run).status == "cancelled"
    assert queue.cancel_task(run) == "cancelled"
    assert queue.cancel_task(999) is None


def test_cancel_requested_task_whose_worker_died_ends_cancelled(queue, clock):
    tid = queue.add_task("x")
    queue.claim_task("w", lease_seconds=5)
    queue.cancel_task(tid)
    clock.advance(6)
    queue.recover_stale()
    assert queue.get_task(tid).status == "cancelled"


def test_list_filters_and_stats(queue):
    job = queue.create_job("j")
    ids = [queue.add_task(f"t{i}", job_id=job if i % 2 else None) for i in range(6)]
    queue.claim_task("w")
    assert [t.id for t in queue.list_tasks(limit=2)] == ids[::-1][:2]
    assert {t.id for t in queue.list_tasks(job_id=job)} == {ids[1], ids[3], ids[5]}
    assert [t.id for t in queue.list_tasks(status="in_progress")] == [ids[0]]
    assert len(queue.list_tasks(status=["pending", "in_progress"])) == 6
    with pytest.raises(ValueError, match="status"):
        queue.list_tasks(status="done")
    stats = queue.get_stats()
    assert (stats["pending"], stats["in_progress"], stats["total"]) == (5, 1, 6)
    assert queue.get_stats(job)["total"] == 3
    queue.complete_task(ids[0], "w", {"result": "ok", "total_cost_usd": 0.25})
    assert queue.get_stats()["cost_usd"] == 0.25 and queue.get_stats()["completed"] == 1
    job_info = queue.get_job(job)
    assert job_info["description"] == "j" and job_info["stats"]["pending"] == 3
    assert [j["id"] for j in queue.list_jobs()] == [job]


def test_job_budget_skips_remaining_tasks(queue):
    job = queue.create_job("budgeted", max_budget_usd=1.0)
    a = queue.add_task("a", job_id=job)
    b = queue.add_task("b", job_id=job)
    queue.claim_task("w")
    queue.complete_task(a, "w", {"result": "ok", "total_cost_usd": 1.2})
    t = queue.get_task(b)
    assert t.status == "skipped" and "budget" in t.error
    with pytest.raises(ValueError, match="max_budget_usd"):
        queue.create_job("x", max_budget_usd=0)


def test_workers_and_flags(queue, clock):
    queue.register_worker("w1", pid=123)
    assert queue.worker_heartbeat("w1", state="busy", current_task=7)
    [w] = queue.list_workers()
    assert (w["pid"], w["state"], w["current_task"]) == (123, "busy", 7)
    assert queue.unregister_worker("w1") and queue.list_workers() == []
    queue.set_flag("paused", {"reason": "usage limit"}, until=clock() + 60)
    assert queue.get_flag("paused")["value"] == {"reason": "usage limit"}
    clock.advance(61)
    assert queue.get_flag("paused") is None
    queue.set_flag("config_error", "run claude /login")
    assert queue.clear_flag("config_error") and queue.get_flag("config_error") is None


def test_a_flag_set_with_a_release_lands_in_its_commit_and_holds_the_next_claim(queue, clock):
    """A worker stopped by a configuration error releases its task and sets the flag in one
    commit: a waiter told "stopped" finds the task pending, and the same step claims nothing."""
    first, _ = queue.add_tasks([{"prompt": "a"}, {"prompt": "b"}])
    t = queue.claim_task("w")
    stop = ("config_error:h", {"message": "not logged in"}, None)
    with pytest.raises(TypeError):  # the flag cannot be stored: the release is undone with it
        queue.finish_and_claim("release", first, "w", attempt=t.attempt, flag=(stop[0], {object()}, None))
    assert queue.get_task(first).status == "in_progress" and queue.get_flag(stop[0]) is None
    done, claimed = queue.finish_and_claim("release", first, "w", attempt=t.attempt, claim_next=True,
                                           holds=[stop[0]], flag=stop, reason="not logged in")
    assert done and claimed is None, "the flag set in this commit holds its claim"
    assert queue.get_task(first).status == "pending" and queue.get_flag(stop[0])["value"] == stop[1]


def test_list_flags_by_prefix(queue, clock):
    queue.set_flag("borrow:1", {"task": 1}, until=clock() + 10)
    queue.set_flag("borrow:2", {"task": 2})
    queue.set_flag("paused", True)
    assert sorted(queue.list_flags("borrow:")) == ["borrow:1", "borrow:2"]
    clock.advance(11)
    assert list(queue.list_flags("borrow:")) == ["borrow:2"]


def test_waker_is_woken_by_state_changes_not_by_claims(queue):
    waker = claude_queue.Waker(queue, "test")
    try:
        assert not waker.wait(0), "nothing happened yet"
        tid = queue.add_task("x")
        assert waker.wait(5), "adding work wakes waiters"
        assert not waker.wait(0), "one change, one wake-up (drained)"
        queue.claim_task("w")
        assert not waker.wait(0), "claims wake nobody"
        queue.complete_task(tid, "w", "ok")
        assert waker.wait(5)
        waker.wake()
        assert waker.wait(0), "a process can wake its own wait (signal handlers do)"
    finally:
        waker.close()
    assert waker.path is None or not waker.path.exists(), "a FIFO is removed; PostgreSQL has none"


def test_many_processes_complete_every_task_exactly_once(open_backend, tmp_path):
    q = open_backend(**{"queue.retry_backoff_seconds": 0})
    n = 1000
    q.add_tasks([{"prompt": f"task {i}"} for i in range(n)])
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_drain_retrying, args=(q.backend_spec, f"w{i}", out)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    completions = {}
    for t in q.list_tasks():
        completions[t.id] = [e["event"] for e in q.get_events(t.id)].count("completed")
    assert len(completions) == n and all(c == 1 for c in completions.values())
    stats = q.get_stats()
    assert stats["completed"] == n and stats["total"] == n
    claims = sum(len(c) for _, c in results)
    assert claims == n + n // 2, "each odd task was claimed exactly twice, each even one once"


def _drain_retrying(spec, name, out):
    # Every odd task fails once first, so retries race with claims too; no backoff, so the
    # retried task is claimable at once.
    q = _open(spec, overrides={"queue.retry_backoff_seconds": 0})
    claimed = []
    while True:
        t = q.claim_task(name)
        if t is None:
            if q.get_stats()["in_progress"] == 0 and q.get_stats()["pending"] == 0:
                break
            continue  # another process holds a task that may still be retried
        claimed.append(t.id)
        if t.id % 2 and t.attempt == 1:
            q.fail_task(t.id, name, "transient")
        else:
            assert q.complete_task(t.id, name, f"done by {name}")
    out.put((name, claimed))


# --- a worker's combined steps (the lean write path) ---------------------------------------------

def test_a_workers_claim_sets_its_row_in_the_same_step(queue):
    tid = queue.add_task("x")
    queue.register_worker("w", state="idle")
    t = queue.claim_task("w", worker_info={"claude_pid": None})
    [row] = queue.list_workers()
    assert t.id == tid and (row["state"], row["current_task"], row["info"]) == ("busy", tid, {"claude_pid": None})


def test_finish_and_claim_records_the_end_and_claims_the_next(queue):
    a, b = queue.add_task("a", priority=2), queue.add_task("b", priority=1)
    queue.register_worker("w")
    first = queue.claim_task("w", worker_info={})
    done, nxt = queue.finish_and_claim("complete", a, "w", attempt=first.attempt, result={"result": "A", "x": 1},
                                       claim_next=True, worker_info={"n": 1})
    assert done and nxt.id == b and nxt.status == "in_progress" and nxt.worker_id == "w"
    ta = queue.get_task(a)
    assert (ta.status, ta.result, ta.outcome) == ("completed", "A", {"result": "A", "x": 1})
    assert [e["event"] for e in queue.get_events(a)] == ["created", "claimed", "completed"]
    [row] = queue.list_workers()
    assert (row["state"], row["current_task"], row["info"]) == ("busy", b, {"n": 1})
    # Nothing left: the worker's row says idle in the same step.
    assert queue.finish_and_claim("fail", b, "w", attempt=nxt.attempt, error="boom", retryable=False,
                                  claim_next=True, worker_info={}) == (True, None)
    assert queue.get_task(b).status == "failed"
    [row] = queue.list_workers()
    assert (row["state"], row["current_task"]) == ("idle", None)
    stats = queue.get_stats()
    assert (stats["completed"], stats["failed"], stats["pending"], stats["in_progress"]) == (1, 1, 0, 0)


@pytest.mark.parametrize("action, details, status", [
    ("release", {"reason": "shutting down", "cost": 0.5}, "pending"),
    ("cancel", {"outcome": {"result": "stopped"}}, "cancelled"),
    ("fail", {"error": "flaky"}, "pending"),
])
def test_finish_and_claim_takes_every_ending(queue, action, details, status):
    tid = queue.add_task("x", max_attempts=3)
    t = queue.claim_task("w")
    if action == "cancel":
        queue.cancel_task(tid)
    assert queue.finish_and_claim(action, tid, "w", attempt=t.attempt, **details) == (True, None)
    assert queue.get_task(tid).status == status


def test_finish_and_claim_is_fenced_and_claims_nothing_while_paused(queue, clock):
    a = queue.add_task("a")
    queue.add_task("b")
    old = queue.claim_task("w1", lease_seconds=5)
    clock.advance(6)
    queue.recover_stale()
    new = queue.claim_task("w2")
    assert new.id == a
    assert queue.finish_and_claim("complete", a, "w1", attempt=old.attempt, result="late") == (False, None)
    queue.set_flag("paused", {"reason": "usage_limit"}, until=clock() + 60)
    assert queue.finish_and_claim("complete", a, "w2", attempt=new.attempt, result="ok", claim_next=True) == (True, None)
    clock.advance(61)
    done, nxt = queue.finish_and_claim("complete", a, "w2", attempt=new.attempt, claim_next=True)
    assert not done and nxt is not None, "the pause is over: the next task is claimed"
    queue.set_flag("config_error", {"message": "m", "fix": "f"})
    assert queue.finish_and_claim("release", nxt.id, "w2", attempt=nxt.attempt, claim_next=True) == (True, None)


def test_renew_lease_reports_lost_leases_and_cancel_requests(queue, clock):
    tid = queue.add_task("x")
    queue.register_worker("w")
    t = queue.claim_task("w", lease_seconds=10)
    clock.advance(5)
    assert queue.renew_lease(tid, "w", attempt=t.attempt, lease_seconds=10, worker_info={"claude_pid": 7}) is False
    assert queue.get_task(tid).lease_expires_at == clock() + 10
    [row] = queue.list_workers()
    assert (row["state"], row["current_task"], row["info"], row["last_heartbeat"]) == ("busy", tid, {"claude_pid": 7},
                                                                                       clock())
    queue.cancel_task(tid)
    assert queue.renew_lease(tid, "w", attempt=t.attempt) is True
    assert queue.renew_lease(tid, "w", attempt=t.attempt + 1) is None, "fenced by attempt"
    assert queue.renew_lease(tid, "other") is None


def test_counts_follow_every_transition(queue, clock):
    job = queue.create_job("j")
    a, b, c = (queue.add_task(p, job_id=job, max_attempts=2) for p in "abc")

    def counts(job_id=None):
        s = queue.get_stats(job_id)
        return tuple(s[k] for k in ("pending", "in_progress", "completed", "failed", "cancelled", "total"))

    assert counts() == counts(job) == (3, 0, 0, 0, 0, 3)
    ta = queue.claim_task("w", lease_seconds=5)
    tb = queue.claim_task("w2", lease_seconds=50)
    assert counts(job) == (1, 2, 0, 0, 0, 3)
    queue.release_task(tb.id, "w2", attempt=tb.attempt, cost=0.1)
    assert counts(job) == (2, 1, 0, 0, 0, 3) and queue.get_stats(job)["cost_usd"] == 0.1
    clock.advance(6)
    queue.recover_stale()
    assert counts(job) == (3, 0, 0, 0, 0, 3)
    t = queue.claim_task("w")
    queue.complete_task(t.id, "w", {"result": "ok", "total_cost_usd": 0.2}, attempt=t.attempt)
    queue.cancel_task(c)
    assert counts(job) == counts() == (1, 0, 1, 0, 1, 3)
    assert queue.get_stats(job)["cost_usd"] == pytest.approx(0.3)
    assert ta.id == a and b
