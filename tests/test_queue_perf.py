"""What keeps a worker's step cheap on SQLite (bench/queue_bench.py measures it; these tests only
check the properties that make it so, never a time), and the upgrade of databases made before."""

import sqlite3

import pytest

import claude_queue


def _ops(queue, sql, nparams):
    return [row[1] for row in queue._read("EXPLAIN " + sql, (1,) * nparams)]


def _database_at(path, version):
    """A database built by the migrations up to `version`, as an older Klauss left it."""
    conn = sqlite3.connect(path)
    for number in range(version):
        for statement in claude_queue._split_sql(claude_queue.MIGRATIONS[number]):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


@pytest.mark.parametrize("name, nparams", [("SQL_CLAIM_ID", 5), ("SQL_FINISH", 13), ("SQL_PICK_UNLESS_PAUSED", 1)])
def test_the_hot_statements_build_no_temporary_table(queue, name, nparams):
    """A partial index's or a lookup's `IN (...)` list makes SQLite build a temporary B-tree each
    time the statement runs; a claim or a completion must not pay for one."""
    assert "OpenEphemeral" not in _ops(queue, getattr(claude_queue, name), nparams)


def test_a_schema_6_database_upgrades_and_lists_its_unsuccessful_tasks(tmp_path, make_queue):
    db = tmp_path / "v6.db"
    conn = _database_at(db, 6)
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
