"""PostgreSQL's schema 3 (queue_postgres.PG_MIGRATIONS[2]): a claim fires no counts trigger, a
completion through the fast path writes no history row (as on SQLite since its schema 7), and a
version-2 database upgrades in place, its histories and counts intact."""

import psycopg
import pytest

import claude_queue
import config
import queue_postgres


@pytest.fixture
def cfg(postgres_url, tmp_path):
    return config.load_config(db=postgres_url, cwd=tmp_path, env={})


def _rows(url, sql):
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(sql).fetchall()


def twin_queues(postgres_url, cfg, tmp_path, clock=None):
    """The same queue on PostgreSQL and on SQLite (in tmp_path), on one clock: what one records,
    the other must too."""
    return (claude_queue.TaskQueue(postgres_url, clock=clock, cfg=cfg),
            claude_queue.TaskQueue(str(tmp_path / "q.db"), clock=clock, cfg=config.load_config(cwd=tmp_path, env={})))


def _events(q, task_id):
    return [(e["event"], e["worker_id"], e["attempt"], e["cost_usd"]) for e in q.get_events(task_id)]


def test_a_claim_moves_no_counter_and_a_fast_completion_stores_no_history_row(postgres_url, cfg, tmp_path):
    q, lite = twin_queues(postgres_url, cfg, tmp_path)
    try:
        for queue in (q, lite):
            first, second = queue.add_tasks([{"prompt": "a"}, {"prompt": "b"}])
            queue.register_worker("w", state="idle")
            task = queue.claim_task("w", worker_info={})
            done, nxt = queue.finish_and_claim("complete", task.id, "w", attempt=task.attempt, claim_next=True,
                                               result={"result": "ok", "total_cost_usd": 0.5}, worker_info={})
            assert done is True and nxt.id == second
        # The same history on both backends, from the task row (no row stored for the completion).
        assert _events(q, first) == _events(lite, first) == [
            ("created", None, None, None), ("claimed", "w", 1, None), ("completed", "w", 1, 0.5)]
        assert _rows(postgres_url, "SELECT event FROM task_events ORDER BY task_id, seq") == [("created",), ("created",)]
        assert q.get_stats() == lite.get_stats()
        # A claim alone (status only) runs no counts trigger: the trigger watches finished_at.
        trigger = _rows(postgres_url, "SELECT pg_get_triggerdef(oid) FROM pg_trigger "
                                      "WHERE tgname = 'task_counts_update'")[0][0]
        assert "UPDATE OF finished_at, cost_usd, job_id, denied" in trigger
        # Its condition is in its body: a WHEN would be parsed anew by every statement that fires it.
        assert "WHEN" not in trigger
        assert q.get_stats()["in_progress"] == 1 and q.get_stats()["completed"] == 1
    finally:
        q.close()
        lite.close()


def test_a_version_2_database_upgrades_in_place(postgres_url, cfg, monkeypatch):
    monkeypatch.setattr(queue_postgres, "SCHEMA_VERSION", 2)
    old = claude_queue.TaskQueue(postgres_url, cfg=cfg)
    done_before, running, waiting = old.add_tasks([{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c"}])
    assert old.claim_task("w").id == done_before
    assert old.schema_version() == 2
    old.close()
    # Schema 2's function (as Klauss called it then) stores the completion in the history too.
    done, task = _rows(postgres_url, f"""SELECT done, task FROM klauss_complete_and_claim({done_before}, 'w', 1,
        1e9, 'ok', NULL, 0, NULL, true, 60, ARRAY['paused'], NULL, 'busy', 'idle')""")[0]
    assert done == 1 and task["id"] == running
    assert _rows(postgres_url, f"SELECT event FROM task_events WHERE task_id = {done_before} AND event = 'completed'")
    monkeypatch.undo()
    q = claude_queue.TaskQueue(postgres_url, cfg=cfg)
    try:
        assert q.schema_version() == queue_postgres.SCHEMA_VERSION >= 3
        # The old completion is shown once, from its stored row.
        assert [e["event"] for e in q.get_events(done_before)] == ["created", "claimed", "completed"]
        done, nxt = q.finish_and_claim("complete", running, "w", attempt=1, result="ok", claim_next=True)
        assert done is True and nxt.id == waiting
        assert [e["event"] for e in q.get_events(running)] == ["created", "claimed", "completed"]
        stats = q.get_stats()
        assert (stats["completed"], stats["in_progress"], stats["pending"], stats["total"]) == (2, 1, 0, 3)
    finally:
        q.close()


def test_the_counts_follow_every_move_as_on_sqlite(postgres_url, cfg, tmp_path):
    """The counts' condition now in the trigger's body: moves that change a count (and those that
    fire the trigger without changing one) leave the same stats as SQLite's trigger."""
    now = [1000.0]
    q, lite = twin_queues(postgres_url, cfg, tmp_path, clock=lambda: now[0])
    seen = []

    def step(fn):
        results = [fn(queue) for queue in (q, lite)]
        assert q.get_stats() == lite.get_stats(), (len(seen), q.get_stats(), lite.get_stats())
        seen.append(q.get_stats())
        return results[0]

    try:
        step(lambda x: x.add_tasks([{"prompt": "a", "max_attempts": 2}, {"prompt": "b"}, {"prompt": "c"}]))
        a = step(lambda x: x.claim_task("w")).id
        step(lambda x: x.release_task(a, "w", cost=0.25))  # in_progress -> pending, with a cost
        step(lambda x: x.claim_task("w"))
        step(lambda x: x.fail_task(a, "w", "boom"))  # back to pending for a retry: no cost, no move
        now[0] += 3600
        step(lambda x: x.claim_task("w"))
        step(lambda x: x.fail_task(a, "w", "boom", outcome={"total_cost_usd": 0.5}))  # failed for good
        step(lambda x: x.retry_task(a))
        again = step(lambda x: x.claim_task("w"))
        assert again.id == a
        nxt = step(lambda x: x.finish_and_claim("complete", a, "w", attempt=again.attempt, claim_next=True,
                                                result={"result": "ok", "total_cost_usd": 1.0,
                                                        "permission_denials": [{"tool": "Bash"}]}))[1]
        step(lambda x: x.cancel_task(nxt.id + 1))  # pending: cancelled at once
        assert (seen[-1]["completed"], seen[-1]["cancelled"], seen[-1]["in_progress"]) == (1, 1, 1)
        assert seen[-1]["denied"] == 1 and seen[-1]["cost_usd"] == 1.75
    finally:
        q.close()
        lite.close()
