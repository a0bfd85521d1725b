"""TaskQueue behaviour: claims, leases, retries, dependencies, cancel, history, migrations."""

import multiprocessing as mp
import sqlite3
import threading

import pytest

import claude_queue
import config
from claude_queue import TaskQueue


def count_rows(q):
    return q._read("SELECT count(*) FROM tasks")[0][0]


# --- adding and validating -----------------------------------------------------------------------

def test_add_and_get_round_trip(queue, tmp_path):
    (tmp_path / "src").mkdir()
    job = queue.create_job("Build auth")
    tid = queue.add_task("Write login", working_dir=str(tmp_path / "src"), context_files=["src/*.py"],
                         expected_outputs=["login.py"], metadata={"model": "haiku"}, priority=3,
                         job_id=job, max_attempts=2, timeout=60)
    t = queue.get_task(tid)
    assert (t.prompt, t.status, t.priority, t.job_id) == ("Write login", "pending", 3, job)
    assert t.working_dir == str(tmp_path / "src")
    assert t.context_files == ["src/*.py"] and t.expected_outputs == ["login.py"]
    assert t.metadata == {"model": "haiku"} and t.max_attempts == 2 and t.timeout == 60
    assert t.to_dict()["id"] == tid
    assert [e["event"] for e in queue.get_events(tid)] == ["created"]


@pytest.mark.parametrize("kwargs, field", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   "}, "prompt"),
    ({"prompt": None}, "prompt"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": "a\x00b"}, "prompt"),
    ({"prompt": "x", "priority": "high"}, "priority"),
    ({"prompt": "x", "priority": -1}, "priority"),
    ({"prompt": "x", "priority": 1.5}, "priority"),
    ({"prompt": "x", "timeout": -5}, "timeout"),
    ({"prompt": "x", "timeout": "10"}, "timeout"),
    ({"prompt": "x", "max_attempts": 0}, "max_attempts"),
    ({"prompt": "x", "max_attempts": 2.5}, "max_attempts"),
    ({"prompt": "x", "context_files": "a.js"}, "context_files"),
    ({"prompt": "x", "expected_outputs": [1]}, "expected_outputs"),
    ({"prompt": "x", "metadata": ["a"]}, "metadata"),
    ({"prompt": "x", "metadata": {"a": object()}}, "metadata"),
    ({"prompt": "x", "depends_on": [999]}, "depends_on"),
    ({"prompt": "x", "job_id": "job-nope"}, "job_id"),
    ({"prompt": "x", "parent_id": 999}, "parent_id"),
])
def test_bad_input_is_a_valueerror_naming_the_field_and_writes_nothing(queue, kwargs, field):
    with pytest.raises(ValueError, match=field):
        queue.add_task(**kwargs)
    assert count_rows(queue) == 0


def test_working_dir_defaults_to_the_project_root_and_must_exist(queue, tmp_path):
    assert queue.get_task(queue.add_task("x")).working_dir == str(tmp_path)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="working_dir: .*does not exist"):
        queue.add_task("x", working_dir=str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="working_dir: .*is not a directory"):
        queue.add_task("x", working_dir=str(tmp_path / "file.txt"))


@pytest.mark.parametrize("field, value", [
    ("working_dir", "/"),
    ("working_dir", "{root}/.."),
    ("working_dir", "{root}/escape"),  # a symlink to outside
    ("context_files", ["../../etc/*.conf"]),
    ("context_files", ["escape/secrets.txt"]),
    ("expected_outputs", ["/etc/passwd"]),
    ("expected_outputs", ["sub/../../out.txt"]),
])
def test_paths_escaping_the_project_are_refused(queue, tmp_path, field, value):
    outside = tmp_path.parent / f"outside-{tmp_path.name}"
    outside.mkdir(exist_ok=True)
    (tmp_path / "escape").symlink_to(outside)
    value = value.replace("{root}", str(tmp_path)) if isinstance(value, str) else value
    with pytest.raises(ValueError, match=f"{field}: .*outside the project"):
        queue.add_task("x", **{field: value})
    assert count_rows(queue) == 0


def test_external_dirs_when_the_config_allows_them(make_queue, tmp_path):
    outside = tmp_path.parent / f"allowed-{tmp_path.name}"
    outside.mkdir(exist_ok=True)
    q = make_queue(**{"safety.allowed_dirs": [str(outside)]})
    assert q.get_task(q.add_task("x", working_dir=str(outside))).working_dir == str(outside)
    with pytest.raises(ValueError, match="outside the project"):
        q.add_task("x", working_dir="/")
    q2 = make_queue(db=tmp_path / "q2.db", **{"safety.allow_external_dirs": True})
    q2.add_task("x", working_dir="/", expected_outputs=["/tmp/out.txt"])


def test_prompt_size_limit_is_enforced_not_truncated(queue, monkeypatch):
    monkeypatch.setattr(config, "MAX_PROMPT_BYTES", 100)
    tid = queue.add_task("x" * 100)
    assert queue.get_task(tid).prompt == "x" * 100
    with pytest.raises(ValueError, match="prompt: 101 bytes is over the limit"):
        queue.add_task("x" * 101)


def test_add_tasks_is_all_or_nothing(queue):
    with pytest.raises(ValueError, match=r"task 2: priority"):
        queue.add_tasks([{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c", "priority": "high"}])
    with pytest.raises(ValueError, match="unknown field.*promt"):
        queue.add_tasks([{"prompt": "a"}, {"promt": "typo"}])
    with pytest.raises(ValueError, match="unknown task id"):
        queue.add_tasks([{"prompt": "a"}, {"prompt": "b", "depends_on": [42]}])
    assert count_rows(queue) == 0
    assert queue.add_tasks([{"prompt": "a"}, {"prompt": "b"}]) == [1, 2]


def test_batch_refs_may_point_forward_and_cycles_are_rejected(queue):
    ids = queue.add_tasks([{"prompt": "tests", "ref": "t", "depends_on": ["impl"]},
                           {"prompt": "impl", "ref": "impl"}])
    tests, impl = ids
    assert impl < tests, "a dependency is inserted before its dependent"
    assert queue.get_task(tests).depends_on == [impl]
    with pytest.raises(ValueError, match="cycle a -> b -> a"):
        queue.add_tasks([{"prompt": "a", "ref": "a", "depends_on": ["b"]},
                         {"prompt": "b", "ref": "b", "depends_on": ["a"]}])
    with pytest.raises(ValueError, match="depend on itself"):
        queue.add_tasks([{"prompt": "a", "ref": "a", "depends_on": ["a"]}])
    with pytest.raises(ValueError, match="unknown task 'zz'"):
        queue.add_tasks([{"prompt": "a", "depends_on": ["zz"]}])
    with pytest.raises(ValueError, match="used twice"):
        queue.add_tasks([{"prompt": "a", "ref": "a"}, {"prompt": "b", "ref": "a"}])
    assert count_rows(queue) == 2


# --- claiming ------------------------------------------------------------------------------------

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


def test_claim_without_returning_support(queue, monkeypatch):
    monkeypatch.setattr(claude_queue, "HAS_RETURNING", False)
    a = queue.add_task("a", priority=1)
    b = queue.add_task("b", priority=2)
    assert [queue.claim_task("w").id, queue.claim_task("w").id] == [b, a]
    assert queue.claim_task("w") is None
    assert queue.get_task(b).status == "in_progress"


def test_dependencies_gate_claims(queue):
    a = queue.add_task("a")
    b = queue.add_task("b", depends_on=[a], priority=5)
    first = queue.claim_task("w")
    assert first.id == a
    assert queue.claim_task("w") is None, "b waits for a"
    assert queue.complete_task(a, "w", "done")
    assert queue.claim_task("w").id == b


def test_many_blocked_tasks_never_starve_a_runnable_one(queue):
    gate = queue.add_task("gate")
    queue.claim_task("w")  # gate is running: everything depending on it is blocked
    queue.add_tasks([{"prompt": f"blocked {i}", "priority": 100, "depends_on": [gate]} for i in range(5000)])
    runnable = queue.add_task("runnable", priority=0)
    assert queue.claim_task("w").id == runnable
    plan = " ".join(r[3] for r in queue._read("EXPLAIN QUERY PLAN " + claude_queue.SQL_PICK, (0,)))
    assert "tasks_claimable" in plan and "TEMP B-TREE" not in plan


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


# --- leases and fencing --------------------------------------------------------------------------

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


# --- cancel --------------------------------------------------------------------------------------

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


# --- reading, stats, purge, jobs, workers, flags -------------------------------------------------

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


def test_purge_removes_old_finished_tasks_only(queue, clock):
    old = queue.add_task("old")
    keep_dep = queue.add_task("dep of pending")
    pending_child = queue.add_task("child", depends_on=[keep_dep])
    for tid in (old, keep_dep):
        queue.claim_task("w")
        queue.complete_task(tid, "w", "ok")
    clock.advance(86400 * 8)
    fresh = queue.add_task("fresh")
    queue.claim_task("w")  # the child
    queue.claim_task("w")
    queue.complete_task(fresh, "w", "ok")
    assert queue.purge(older_than=86400 * 7) == 1
    assert queue.get_task(old) is None and queue.get_events(old) == []
    assert queue.get_task(keep_dep) is not None, "a running task still depends on it"
    assert queue.get_task(pending_child) is not None
    assert queue.get_stats()["total"] == 3
    with pytest.raises(ValueError):
        queue.purge(older_than=0, statuses=["pending"])


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


# --- the database itself -------------------------------------------------------------------------

def test_wal_and_foreign_keys(queue):
    assert queue._read("PRAGMA journal_mode")[0][0] == "wal"
    assert queue._read("PRAGMA foreign_keys")[0][0] == 1
    assert queue._read("PRAGMA user_version")[0][0] == claude_queue.SCHEMA_VERSION


def test_old_database_is_upgraded_in_place(tmp_path, make_queue):
    db = tmp_path / "old.db"
    conn = sqlite3.connect(db)
    for statement in claude_queue._split_sql(claude_queue.MIGRATIONS[0]):
        conn.execute(statement)
    conn.execute("INSERT INTO tasks (prompt, max_attempts, created_at, updated_at) VALUES ('from v1', 3, 1, 1)")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    q = make_queue(db=db)
    assert q._read("PRAGMA user_version")[0][0] == claude_queue.SCHEMA_VERSION
    assert q.get_task(1).prompt == "from v1"
    assert q.claim_task("w").id == 1
    q.set_flag("paused", True)  # a table from migration 2


def test_newer_database_is_refused(tmp_path, make_queue):
    db = tmp_path / "new.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {claude_queue.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(claude_queue.QueueError, match="newer than this Klauss"):
        make_queue(db=db)


def test_missing_database_directory_is_a_clear_error(tmp_path):
    db = tmp_path / "nope" / "q.db"
    cfg = config.load_config(db=str(db), cwd=tmp_path, env={})
    with pytest.raises(claude_queue.QueueError, match="does not exist"):
        TaskQueue(str(db), cfg=cfg)
    assert not db.parent.exists()


def test_busy_database_is_retried_not_raised(queue, monkeypatch, tmp_path):
    queue.add_task("x")
    blocker = sqlite3.connect(queue.db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    conn = queue._connect()
    conn.execute("PRAGMA busy_timeout = 0")  # fail fast into our own retry loop
    sleeps = []

    def fake_sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == 3:
            blocker.execute("COMMIT")  # the other writer finishes while we back off

    monkeypatch.setattr(claude_queue.time, "sleep", fake_sleep)
    assert queue.claim_task("w").prompt == "x"
    assert len(sleeps) == 3
    blocker.close()


def test_threads_share_a_queue_safely(queue):
    queue.add_tasks([{"prompt": f"t{i}"} for i in range(200)])
    done = []

    def drain(name):
        while True:
            t = queue.claim_task(name)
            if t is None:
                return
            assert queue.complete_task(t.id, name, "ok")
            done.append(t.id)

    threads = [threading.Thread(target=drain, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(done) == list(range(1, 201))


def test_many_processes_complete_every_task_exactly_once(tmp_path, make_queue):
    db = str(tmp_path / "multi.db")
    q = make_queue(db=db, **{"queue.retry_backoff_seconds": 0})
    n = 3000
    q.add_tasks([{"prompt": f"task {i}"} for i in range(n)])
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_drain_retrying, args=(db, f"w{i}", out)) for i in range(4)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert all(p.exitcode == 0 for p in procs)
    completions = q._read("SELECT task_id, count(*) FROM task_events WHERE event = 'completed' GROUP BY task_id")
    assert len(completions) == n and all(c == 1 for _, c in completions)
    stats = q.get_stats()
    assert stats["completed"] == n and stats["total"] == n
    claims = sum(len(c) for _, c in results)
    assert claims == n + n // 2, "each odd task was claimed exactly twice, each even one once"


def _drain_retrying(db, name, out):
    # Every odd task fails once first, so retries race with claims too; no backoff, so the
    # retried task is claimable at once.
    cfg = config.load_config(db=db, env={}, overrides={"queue.retry_backoff_seconds": 0})
    q = TaskQueue(db, cfg=cfg)
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
    assert not waker.path.exists()


def test_a_dead_waiters_fifo_is_removed(queue):
    import os
    queue.wake_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stale = queue.wake_dir / "w-999999.fifo"
    os.mkfifo(stale)
    queue.add_task("x")
    assert not stale.exists(), "nobody reads it: its process is gone"
