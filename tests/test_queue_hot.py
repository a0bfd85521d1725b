"""The worker's step on SQLite made cheaper without changing what it does (bench/queue_bench.py
measures the cost; these tests check behaviour, never a time): Task as a plain class, the step's
statements on one reused cursor, the pick's columns, and schema 9's one index of unfinished tasks."""

import ast
import os
import sqlite3
from pathlib import Path

import pytest

import claude_queue
from claude_queue import Task
from conftest import database_at

ROOT = Path(__file__).resolve().parent.parent


# --- Task, a plain class with what the dataclass gave ------------------------------------------

def test_task_has_the_dataclass_defaults_order_equality_and_repr():
    task = Task(1, "p", "pending", metadata={"k": [1, {"x": 2}]})
    assert (task.priority, task.context_files, task.max_attempts, task.cancel_requested, task.depends_on) \
        == (0, [], 1, False, None)
    assert Task(2, "q", "pending").context_files is not Task(3, "r", "pending").context_files
    data = task.to_dict()
    assert list(data)[:4] == ["id", "prompt", "status", "priority"] and list(data)[-1] == "depends_on"
    assert len(data) == 31
    data["metadata"]["k"][1]["x"] = 99  # a deep copy, as dataclasses.asdict made
    assert task.metadata == {"k": [1, {"x": 2}]}
    assert task == Task(1, "p", "pending", metadata={"k": [1, {"x": 2}]})
    assert task != Task(1, "p", "pending")
    assert (task == "Task") is False
    with pytest.raises(TypeError):
        hash(task)
    assert repr(Task(1, "p", "pending")).startswith("Task(id=1, prompt='p', status='pending', priority=0, ")


def test_task_refuses_what_the_dataclass_refused():
    with pytest.raises(TypeError):
        Task(1, "p")  # status is required
    with pytest.raises(TypeError):
        Task(1, "p", "pending", colour="red")
    with pytest.raises(TypeError):
        Task(1, "p", "pending", id=2)


def test_claude_queue_does_not_import_dataclasses():
    tree = ast.parse((ROOT / "claude_queue.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "dataclasses" not in imported


def test_a_task_read_back_is_a_task_with_every_field(queue):
    tid = queue.add_task("a", metadata={"m": 1})
    task = queue.get_task(tid)
    assert isinstance(task, Task) and task.to_dict()["metadata"] == {"m": 1}
    assert set(task.to_dict()) == set(Task(0, "", "").to_dict())


# --- the step's statements ----------------------------------------------------------------------

def test_a_retried_task_is_claimed_with_what_its_earlier_attempt_left(queue, clock):
    tid = queue.add_task("a", max_attempts=3)
    first = queue.claim_task("w")
    outcome = {"result": "half", "total_cost_usd": 0.5, "permission_denials": [{"tool": "Bash"}]}
    queue.fail_task(tid, "w", "boom", attempt=first.attempt, outcome=outcome)
    clock.advance(3600)  # past the retry's backoff
    task = queue.claim_task("w")
    stored = queue.get_task(tid)
    assert task.id == tid and task.attempt == 2
    assert {k: v for k, v in task.to_dict().items() if k != "depends_on"} \
        == {k: v for k, v in stored.to_dict().items() if k != "depends_on"}
    assert task.error == "boom" and task.outcome["result"] == "half"


def _other_connection(queue):
    conn = sqlite3.connect(str(queue.db_path), isolation_level=None)
    conn.execute("PRAGMA busy_timeout=5000")
    return conn


def test_the_step_leaves_no_statement_open_on_its_reused_cursor(queue):
    """A statement left open would hold a read snapshot after the commit: no checkpoint could get
    past it, and the next BEGIN IMMEDIATE could find its snapshot stale."""
    a, b = queue.add_task("a"), queue.add_task("b")
    task = queue.claim_task("w")
    conn = queue._connect()
    assert isinstance(conn.tuples.execute("SELECT 1").fetchone(), tuple)  # plain tuples, not Rows
    other = _other_connection(queue)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE tasks SET updated_at = updated_at WHERE id = ?", (b,))
    other.execute("COMMIT")
    done, nxt = queue.finish_and_claim("complete", a, "w", attempt=task.attempt, result="ok", claim_next=True)
    assert done and nxt.id == b and not conn.in_transaction
    busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    assert queue.finish_and_claim("complete", b, "w", attempt=nxt.attempt, result="ok", claim_next=True) \
        == (True, None)
    assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0
    other.close()


def test_a_read_only_connection_reads_and_refuses_writes(queue):
    """The read-only connection (a database that cannot be written) is the same kind of connection."""
    tid = queue.add_task("a")
    queue.close()
    queue.read_only = True
    assert queue.get_task(tid).prompt == "a"
    assert isinstance(queue._connect(), claude_queue._Connection)
    with pytest.raises((sqlite3.OperationalError, claude_queue.QueueError)):
        queue.add_task("b")


# --- schema 9: one index of unfinished tasks -----------------------------------------------------

def _indexes(queue):
    return {r[0] for r in queue._read("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE 'tasks_%'")}


def test_a_schema_8_database_upgrades_to_one_index_of_unfinished_tasks(tmp_path, make_queue):
    db = tmp_path / "q.db"
    old = database_at(db, 8)
    for tid, status, deps, priority, worker in ((1, "pending", 0, 0, None), (2, "pending", 1, 9, None),
                                                 (3, "in_progress", 0, 0, "w1"), (4, "pending", 0, 5, None),
                                                 (5, "completed", 0, 9, None)):
        old.execute("INSERT INTO tasks (id, prompt, status, deps_remaining, priority, worker_id, max_attempts, "
                    "lease_expires_at, created_at, updated_at, finished_at) VALUES (?, 'p', ?, ?, ?, ?, 1, ?, 0, 0, ?)",
                    (tid, status, deps, priority, worker, 1.0 if worker else None,
                     1.0 if status == "completed" else None))
    old.commit()
    old.close()
    queue = make_queue()
    assert queue._read(claude_queue.SQL_VERSION)[0][0] == claude_queue.SCHEMA_VERSION >= 9
    assert "tasks_open" in _indexes(queue) and not _indexes(queue) & {"tasks_claimable", "tasks_running"}
    stats = queue.get_stats()
    assert (stats["pending"], stats["in_progress"], stats["completed"]) == (3, 1, 1)
    assert queue.claim_task("w2").id == 4  # the best runnable one; #2 (priority 9) waits for a dependency
    assert [t.id for t in queue.list_tasks(status="in_progress")] == [4, 3]
    assert queue.get_stats()["in_progress"] == 2


def test_running_counts_and_stale_checks_read_the_unfinished_index(queue):
    for name in ("SQL_RUNNING_COUNT", "SQL_ANY_STALE"):
        sql = getattr(claude_queue, name)
        plan = " ".join(r[3] for r in queue._read("EXPLAIN QUERY PLAN " + sql, (0,) if "?" in sql else ()))
        assert "tasks_open" in plan, name


def test_a_worker_step_writes_one_index_page_not_two(queue):
    """Claim and completion in one commit, checkpoints off: the task row, the unfinished tasks'
    index and the counts (about 3 WAL pages a task; two indexes made it about 4)."""
    n = 200
    queue.add_tasks([{"prompt": f"t{i}"} for i in range(n + 1)])
    conn = queue._connect()
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    task = queue.claim_task("w")
    before = os.path.getsize(f"{queue.db_path}-wal")
    for _ in range(n):
        _, task = queue.finish_and_claim("complete", task.id, "w", attempt=task.attempt, result="ok",
                                         claim_next=True)
    frames = (os.path.getsize(f"{queue.db_path}-wal") - before) / (page + 24)
    assert frames / n < 3.6


def test_a_completion_encodes_its_outcome_before_taking_the_write_lock(queue, monkeypatch):
    tid = queue.add_task("a")
    task = queue.claim_task("w")
    in_transaction = []
    real = claude_queue._outcome_json
    monkeypatch.setattr(claude_queue, "_outcome_json",
                        lambda outcome: in_transaction.append(queue._connect().in_transaction) or real(outcome))
    outcome = {"result": "ok", "total_cost_usd": 0.25, "permission_denials": [{"tool": "Bash"}], "num_turns": 3}
    done, nxt = queue.finish_and_claim("complete", tid, "w", attempt=task.attempt, result=outcome, claim_next=True)
    assert done and nxt is None and in_transaction == [False]
    stored = queue.get_task(tid)
    assert (stored.status, stored.result, stored.cost_usd, stored.denied) == ("completed", "ok", 0.25, 1)
    assert stored.outcome == outcome
