"""Every view of the queue's counts tells the same numbers as `stats`: the merge queue's integration
tasks (integration.py) are not the user's tasks, so `status` (and its --json), the dashboard
(`--once` too), the MCP server's status and `stats` leave them out of every count, and say apart
how many still integrate. The whole queue's integration tasks are counted by one index read
(`TaskQueue.integration_counts`, on both backends), not by listing every gated job's tasks.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_queue_contract import backend, open_backend  # noqa: F401  (fixtures: the storage contract's backends)

import claude_queue
import integration
import klauss_mcp
import queue_postgres
import task_report
from conftest import database_at

ROOT = Path(__file__).resolve().parent.parent
DENIED = {"result": "done", "permission_denials": [{"tool_name": "Bash"}]}


def integration_task(of, **extra):
    # What integration.enqueue queues for a finished task (its _add_integration).
    return {"prompt": f"integrate task #{of}", "metadata": {integration.KIND: {"task": of}, "isolation": "none"}, **extra}


def gated_queue(q):
    """A job with a verify command whose user's tasks and integration tasks are in every state, beside
    an ungated job and a task of no job. Returns (job id, the user's counts, the integration counts)."""
    job = q.create_job("gated", metadata={"isolation": "worktree", "merge": "auto", "verify": [sys.executable, "-c", "pass"]})
    plain = q.create_job("plain")
    done, fails = q.add_tasks([{"prompt": "done, with a denial", "job_id": job}, {"prompt": "fails", "job_id": job}])
    merged, verified, broken, skipped, other = q.add_tasks([
        {**integration_task(done), "job_id": job}, {**integration_task(done), "job_id": job},
        {**integration_task(done), "job_id": job},
        {**integration_task(fails), "job_id": job, "depends_on": [fails]},
        {"prompt": "plain and done", "job_id": plain}])
    fates = {done: "denied", fails: "fail", merged: "complete", verified: "complete", broken: "fail", other: "complete"}
    while True:
        task = q.claim_task("w1")
        if task is None:
            break
        fate = fates[task.id]
        if fate == "fail":
            assert q.fail_task(task.id, "w1", "boom", retryable=False, attempt=task.attempt)
        else:
            assert q.complete_task(task.id, "w1", result=DENIED if fate == "denied" else {"result": "ok"},
                                   attempt=task.attempt)
    assert q.get_task(skipped).status == "skipped"  # its task failed
    mine_running, merge_running = q.add_tasks([{"prompt": "runs", "job_id": job}, {**integration_task(done), "job_id": job}])
    assert {q.claim_task("w1").id, q.claim_task("w2").id} == {mine_running, merge_running}
    cancelled = q.add_tasks([{**integration_task(done), "job_id": job, "depends_on": [mine_running]}])[0]
    q.cancel_task(cancelled)
    q.add_tasks([{"prompt": "waits", "job_id": job, "depends_on": [mine_running]},
                 {**integration_task(done), "job_id": job, "depends_on": [mine_running]},
                 {"prompt": "no job"}])
    merging = {"pending": 1, "in_progress": 1, "completed": 2, "failed": 1, "cancelled": 1, "skipped": 1, "total": 7}
    mine = {"pending": 2, "in_progress": 1, "completed": 2, "failed": 1, "cancelled": 0, "skipped": 0, "total": 6,
            "denied": 1}
    return job, mine, merging


def counts_of(stats):
    return {k: stats[k] for k in (*claude_queue.STATUSES, "total", "denied")}


# --- the storage contract ------------------------------------------------------------------------

def test_integration_counts_per_status_of_the_queue_and_of_a_job(open_backend):  # noqa: F811
    q = open_backend()
    assert q.integration_counts() == {**{s: 0 for s in claude_queue.STATUSES}, "total": 0}
    assert task_report.queue_user_stats(q) == q.get_stats()  # no integration task: the stats as they are
    job, mine, merging = gated_queue(q)
    assert q.integration_counts() == merging
    assert q.integration_counts(job) == merging
    assert q.integration_counts("no-such-job")["total"] == 0
    everything = q.get_stats()
    assert counts_of(everything) == {**{k: mine[k] + merging[k] for k in merging}, "denied": 1}
    assert counts_of(task_report.queue_user_stats(q)) == mine
    job_stats = q.get_job(job)["stats"]
    user = integration.user_stats(q, q.get_job(job))
    assert counts_of(user) == {**mine, "pending": 1, "completed": 1, "total": 4}  # without the other job's
    assert (user["integrating"], user["integration_tasks"], user["cost_usd"]) == (2, 7, job_stats["cost_usd"])
    # The counts follow a revived task and a purge.
    failed = next(t for t in q.list_tasks(status="failed", job_id=job) if integration.is_integration(t))
    q.retry_task(failed.id)
    assert q.integration_counts()["failed"] == 0 and q.integration_counts()["pending"] == 2


def test_the_whole_queue_is_counted_without_listing_jobs_or_tasks(open_backend, monkeypatch):  # noqa: F811
    q = open_backend()
    gated_queue(q)
    expected = task_report.queue_user_stats(q)
    for name in ("list_jobs", "list_tasks", "recent_tasks", "get_job"):
        monkeypatch.setattr(q, name, lambda *a, **k: pytest.fail("the whole queue's counts read every task"))
    assert integration.queue_user_stats(q) == expected


# --- schema: SQLite 10, PostgreSQL 5 -------------------------------------------------------------

def test_the_count_reads_its_index(make_queue):
    q = make_queue()
    for sql, params in ((claude_queue.SQL_INTEGRATION_TOTAL, ()), (claude_queue.SQL_JOB_INTEGRATION_TOTAL, ("j",)),
                        (claude_queue.SQL_INTEGRATION_COUNTS, ()), (claude_queue.SQL_JOB_INTEGRATION_COUNTS, ("j",))):
        plan = " ".join(r[3] for r in q._read("EXPLAIN QUERY PLAN " + sql, params))
        assert "tasks_integration" in plan and "TEMP B-TREE" not in plan, plan


def test_a_schema_9_database_upgrades_and_counts_its_integration_tasks(tmp_path, make_queue):
    db = tmp_path / "q.db"
    old = database_at(db, 9)
    old.execute("INSERT INTO jobs (id, description, created_at) VALUES ('j', 'old', 0)")
    for tid, status, metadata in ((1, "completed", "{}"), (2, "completed", '{"klauss_integration":{"task":1}}'),
                                  (3, "pending", '{"klauss_integration":{"task":1}}')):
        old.execute("INSERT INTO tasks (id, job_id, prompt, status, metadata, max_attempts, created_at, updated_at, "
                    "finished_at) VALUES (?, 'j', 'p', ?, ?, 1, 0, 0, ?)",
                    (tid, status, metadata, 1.0 if status == "completed" else None))
    old.commit()
    old.close()
    q = make_queue()
    assert q._read(claude_queue.SQL_VERSION)[0][0] == claude_queue.SCHEMA_VERSION >= 10
    counts = q.integration_counts()
    assert (counts["completed"], counts["pending"], counts["total"]) == (1, 1, 2)
    assert q.integration_counts("j") == counts


def test_a_postgres_version_4_database_upgrades_and_counts_its_integration_tasks(postgres_url, monkeypatch):
    cfg = claude_queue.config.load_config(db=postgres_url, env={})
    monkeypatch.setattr(queue_postgres, "SCHEMA_VERSION", 4)
    old = claude_queue.TaskQueue(postgres_url, cfg=cfg)
    job = old.create_job("old")
    old.add_tasks([{"prompt": "mine", "job_id": job}, {**integration_task(1), "job_id": job}])
    assert old.schema_version() == 4
    old.close()
    monkeypatch.undo()
    q = claude_queue.TaskQueue(postgres_url, cfg=cfg)
    try:
        assert q.schema_version() == queue_postgres.SCHEMA_VERSION >= 5
        assert (q.integration_counts()["pending"], q.integration_counts(job)["total"]) == (1, 1)
    finally:
        q.close()


# --- every view says the same ----------------------------------------------------------------------

def run(tmp_path, script, *args):
    out = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=str(tmp_path), capture_output=True,
                         text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_status_dashboard_mcp_and_stats_give_the_same_counts(tmp_path, make_queue, monkeypatch, capsys):
    """Each program's view as a program once (stats --json, status --json, the dashboard); their
    other views through the same entry points in this process (a start costs ~0.1 s of CPU here)."""
    import claude_coordinator
    import submit_task

    q = make_queue()
    job, mine, merging = gated_queue(q)
    db = str(q.db_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)

    def call(main, *args):
        capsys.readouterr()
        assert main(list(args)) == 0
        return capsys.readouterr().out

    stats = json.loads(run(tmp_path, "submit_task.py", "stats", "--json", "--db", db))
    assert counts_of(stats) == mine and (stats["integrating"], stats["integration_tasks"]) == (2, 7)
    text = call(submit_task.main, "stats", "--db", db)
    assert f"{'total':<12}{6:>9,}" in text and "integration         7  the merge queue's own tasks" in text

    status = json.loads(run(tmp_path, "claude_coordinator.py", "status", "--json", "--db", db))["queue"]
    assert status == stats
    text = call(claude_coordinator.main, "status", "--db", db)
    assert ("queue: 2 pending, 1 running, 2 completed, 1 failed, 0 cancelled, 0 skipped (6 total), 2 integrating"
            in text.splitlines())

    screen = run(tmp_path, "claude_dashboard.py", db, "--once")
    line = next(x for x in screen.splitlines() if x.startswith("Queue: "))
    assert line.split() == ["Queue:", "2", "pending", "1", "running", "2", "completed", "1", "failed", "0", "cancelled",
                            "0", "skipped", "(6", "total)", "2", "integrating"], line
    assert "Tasks (all): 1-13 of 13 (7 of them the merge queue's)" in screen  # the list shows every task

    text = klauss_mcp.KlaussTools(db_path=db).call("worker_status", {})
    assert "Queue: 2 pending, 1 running, 2 completed, 1 failed, 2 integrating." in text.splitlines()

    # A job's own view counts it the same way (and `jobs`, `stats --job`).
    job_stats = json.loads(call(submit_task.main, "stats", "--json", "--job", job, "--db", db))
    listed = next(j for j in json.loads(call(submit_task.main, "jobs", "--json", "--db", db)) if j["id"] == job)
    assert {k: listed["stats"][k] for k in job_stats if k != "job_id"} == {k: v for k, v in job_stats.items()
                                                                          if k != "job_id"}
    assert job_stats["total"] == 4 and job_stats["integration_tasks"] == 7
