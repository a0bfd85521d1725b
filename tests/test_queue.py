"""TaskQueue on SQLite beyond the storage contract (that is tests/test_queue_contract.py): validation,
path policy, the query plan, busy retries, threads, migrations, wake-up FIFOs."""

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

def test_claim_without_returning_support(queue, monkeypatch):
    monkeypatch.setattr(claude_queue, "HAS_RETURNING", False)
    a = queue.add_task("a", priority=1)
    b = queue.add_task("b", priority=2)
    assert [queue.claim_task("w").id, queue.claim_task("w").id] == [b, a]
    assert queue.claim_task("w") is None
    assert queue.get_task(b).status == "in_progress"


def test_many_blocked_tasks_never_starve_a_runnable_one(queue):
    gate = queue.add_task("gate")
    queue.claim_task("w")  # gate is running: everything depending on it is blocked
    queue.add_tasks([{"prompt": f"blocked {i}", "priority": 100, "depends_on": [gate]} for i in range(5000)])
    runnable = queue.add_task("runnable", priority=0)
    assert queue.claim_task("w").id == runnable
    plan = " ".join(r[3] for r in queue._read("EXPLAIN QUERY PLAN " + claude_queue.SQL_PICK, (0,)))
    assert "tasks_open" in plan and "TEMP B-TREE" not in plan


# --- reading and purge (the contract's own tests are in test_queue_contract.py) -----------------

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


def test_a_dead_waiters_fifo_is_removed(queue):
    import os
    queue.wake_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    stale = queue.wake_dir / "w-999999.fifo"
    os.mkfifo(stale)
    queue.add_task("x")
    assert not stale.exists(), "nobody reads it: its process is gone"
