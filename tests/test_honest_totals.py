"""Every attempt's cost counts: a task's cost is the sum over its attempts (each kept in its
history), releases that spent money count too, the job budget is checked on that true total before
every claim, and small amounts are shown non-zero by the one money formatter."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import claude_queue
import config
import task_report
from conftest import database_at, fake, install_fake_claude

ROOT = Path(__file__).resolve().parent.parent


def run_attempt(q, worker, cost, fail=True):
    t = q.claim_task(worker)
    assert t is not None
    outcome = {"result": "r", "total_cost_usd": cost}
    if fail:
        q.fail_task(t.id, worker, "boom", attempt=t.attempt, outcome=outcome)
    else:
        q.complete_task(t.id, worker, outcome, attempt=t.attempt)
    return t


def test_a_task_costs_the_sum_of_its_attempts(make_queue):
    q = make_queue(**{"queue": {"retry_backoff_seconds": 0}})
    job = q.create_job("j")
    tid = q.add_task("x", job_id=job, max_attempts=4)
    for _ in range(3):
        run_attempt(q, "w", 0.000188)
    run_attempt(q, "w", 0.000188, fail=False)
    t = q.get_task(tid)
    assert t.status == "completed" and t.cost_usd == pytest.approx(0.000752)
    assert q.get_stats(job)["cost_usd"] == pytest.approx(0.000752)
    assert q.get_job(job)["stats"]["cost_usd"] == pytest.approx(0.000752)
    # Each attempt's own cost stays in the history.
    costs = [(e["event"], e["attempt"], e["cost_usd"]) for e in q.get_events(tid) if e["cost_usd"] is not None]
    assert costs == [("failed", 1, 0.000188), ("failed", 2, 0.000188), ("failed", 3, 0.000188),
                     ("completed", 4, 0.000188)]


def test_a_run_without_a_known_cost_adds_nothing(make_queue):
    q = make_queue(**{"queue": {"retry_backoff_seconds": 0}})
    tid = q.add_task("x", max_attempts=3)
    run_attempt(q, "w", 0.01)
    t = q.claim_task("w")
    q.fail_task(t.id, "w", "crashed", attempt=t.attempt)  # no outcome, no cost
    assert q.get_task(tid).cost_usd == pytest.approx(0.01)


def test_a_release_that_spent_money_counts(make_queue):
    q = make_queue()
    job = q.create_job("j")
    tid = q.add_task("x", job_id=job)
    t = q.claim_task("w")
    assert q.release_task(t.id, "w", reason="usage limit", attempt=t.attempt, cost=0.0003)
    run_attempt(q, "w", 0.0002, fail=False)
    assert q.get_task(tid).cost_usd == pytest.approx(0.0005)
    assert q.get_stats(job)["cost_usd"] == pytest.approx(0.0005)
    [released] = [e for e in q.get_events(tid) if e["event"] == "released"]
    assert released["cost_usd"] == pytest.approx(0.0003)


def test_the_job_budget_is_checked_on_the_true_total(make_queue):
    """The seen case: a $0.0005 budget, runs of $0.000188 each. The third run brings the true total
    to $0.000564, so no fourth run starts (before: each run's cost replaced the last, and the job
    kept claiming)."""
    q = make_queue(**{"queue": {"retry_backoff_seconds": 0}})
    job = q.create_job("j", max_budget_usd=0.0005)
    tid = q.add_task("x", job_id=job, max_attempts=5)
    for _ in range(3):
        run_attempt(q, "w", 0.000188)
    assert q.claim_task("w") is None
    t = q.get_task(tid)
    assert t.status == "skipped" and t.attempts_used == 3
    assert "job budget $0.0005 reached (spent $0.0006)" in t.error


def test_the_budget_is_checked_before_every_claim(make_queue):
    q = make_queue()
    job = q.create_job("j", max_budget_usd=0.001)
    other = q.add_task("not in the job", priority=0)
    first = q.add_task("a", job_id=job, priority=5)
    t = q.claim_task("w")
    assert t.id == first
    # A release records what the run spent; the job is now over budget.
    q.release_task(t.id, "w", attempt=t.attempt, cost=0.002)
    late = q.add_task("added to a spent job", job_id=job, priority=9)
    claimed = q.claim_task("w")
    assert claimed.id == other, "a spent job's task must not start"
    assert q.get_task(late).status == "skipped" and q.get_task(first).status == "skipped"


def test_money_is_shown_non_zero_with_four_decimals():
    fmt = task_report.fmt_cost
    assert fmt(0.000188) == "$0.0002"
    assert fmt(0.00004) == "$0.00004"
    assert fmt(0.0) == "$0.0000"
    assert fmt(1.5) == "$1.5000"
    assert fmt(1234.4) == "$1,234"
    assert fmt(None) == "-"


def test_old_database_gains_attempt_costs(tmp_path, make_queue):
    db = tmp_path / "v2.db"
    conn = database_at(db, 2)
    conn.execute("INSERT INTO jobs (id, description, created_at) VALUES ('job-old', 'old', 1)")
    conn.execute("INSERT INTO tasks (job_id, prompt, max_attempts, created_at, updated_at, cost_usd) "
                 "VALUES ('job-old', 'from v2', 3, 1, 1, 0.5)")
    conn.execute("INSERT INTO task_events (task_id, seq, at, event) VALUES (1, 1, 1, 'created')")
    conn.commit()
    conn.close()
    q = make_queue(db=db, **{"queue": {"retry_backoff_seconds": 0}})
    assert q._read("PRAGMA user_version")[0][0] == claude_queue.SCHEMA_VERSION >= 3
    assert q.get_stats("job-old")["cost_usd"] == pytest.approx(0.5)
    assert q.get_events(1)[0]["cost_usd"] is None
    run_attempt(q, "w", 0.25)
    assert q.get_task(1).cost_usd == pytest.approx(0.75)
    assert q.get_stats("job-old")["cost_usd"] == pytest.approx(0.75)


# --- through the worker and the commands ---------------------------------------------------------

@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    bindir = tmp_path / "bin"
    install_fake_claude(bindir)
    (root / ".klauss.toml").write_text(
        "[workers]\nlease_seconds = 5\nheartbeat_seconds = 0.2\nshutdown_grace_seconds = 0.5\n"
        "[queue]\nretry_backoff_seconds = 0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    env["PATH"] = f"{bindir}:{os.environ['PATH']}"
    q = claude_queue.TaskQueue(cfg=config.load_config(cwd=root, env={}))
    yield root, env, q
    q.close()


def run(root, env, script, *args):
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


def test_worker_runs_add_up_and_stop_at_the_budget(project):
    root, env, q = project
    job = q.create_job("budgeted", max_budget_usd=0.02)
    # Each run does one tool call (one $0.0123 turn) and then fails in a retryable way.
    tid = q.add_task("\n".join([fake("tool", "Read", input={"file_path": "x"}), fake("error", "during_execution")]),
                     job_id=job, max_attempts=3)
    run(root, env, "claude_worker.py", "w1", "--exit-when-idle")
    t = q.get_task(tid)
    assert t.attempts_used == 2 and t.status == "skipped", (t.status, t.attempts_used, t.error)
    assert t.cost_usd == pytest.approx(0.0246)
    out = run(root, env, "submit_task.py", "show", str(tid)).stdout
    assert "Cost:        $0.0246" in out and out.count("$0.0123") == 2
    out = run(root, env, "submit_task.py", "stats", "--job", job).stdout
    assert "$0.0246" in out and "$0.0200" in out
    jobs = run(root, env, "submit_task.py", "jobs").stdout
    assert "$0.0246" in jobs


def test_a_usage_limit_release_keeps_its_cost(project):
    root, env, q = project
    tid = q.add_task("\n".join([fake("tool", "Read", input={"file_path": "x"}),
                                fake("error", "usage_limit", resets_at=int(time.time()) + 3600)]))
    run(root, env, "claude_worker.py", "w1", "--exit-when-idle")
    t = q.get_task(tid)
    assert t.status == "pending" and t.cost_usd == pytest.approx(0.0123)
    assert q.get_stats()["cost_usd"] == pytest.approx(0.0123)
    stats = json.loads(run(root, env, "submit_task.py", "stats", "--json").stdout)
    assert stats["cost_usd"] == pytest.approx(0.0123)
