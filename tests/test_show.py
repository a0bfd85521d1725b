"""`show` (and the dashboard's details) say exactly what happened: no start time or growing duration
for a released task that is pending again, attempts that agree with the history after a retry, no
"cancel requested" once the cancel finished, sub-second durations, the session id, and a job whose
tasks were all cancelled reads as cancelled."""

import subprocess
import sys
from pathlib import Path

import pytest

import claude_dashboard
import task_report

ROOT = Path(__file__).resolve().parent.parent


def show(q, tid):
    out = subprocess.run([sys.executable, str(ROOT / "submit_task.py"), "--db", str(q.db_path), "show", str(tid)],
                         capture_output=True, text=True, timeout=60, cwd=q.db_path.parent)
    assert out.returncode == 0, out.stderr
    return out.stdout


def text(q, tid, now):
    task = q.get_task(tid)
    return "\n".join(task_report.describe_task(task, q.get_events(tid), [], None, now))


def detail(q, tid, now):
    task = q.get_task(tid)
    rows = claude_dashboard.Dashboard._describe(task, q.get_events(tid), now, 200)
    return "\n".join("".join(part for part, _ in row) for row in rows)


def test_a_released_task_has_no_start_time_or_running_duration(make_queue, clock):
    q = make_queue(clock=clock)
    tid = q.add_task("x")
    t = q.claim_task("w")
    clock.advance(1)
    q.release_task(t.id, "w", reason="Claude usage limit", attempt=t.attempt, delay=300)
    clock.advance(316)
    out = text(q, tid, clock.now)
    assert out.startswith(f"Task #{tid}: pending")
    assert "Started:" not in out and "Duration:" not in out, out
    assert "Took" not in detail(q, tid, clock.now) and "Running for" not in detail(q, tid, clock.now)
    assert "Started:" not in show(q, tid)


def test_a_failed_attempt_waiting_for_its_retry_is_not_running(make_queue, clock):
    q = make_queue(clock=clock, **{"queue": {"retry_backoff_seconds": 60}})
    tid = q.add_task("x", max_attempts=3)
    t = q.claim_task("w")
    q.fail_task(t.id, "w", "boom", attempt=t.attempt)
    clock.advance(30)
    out = text(q, tid, clock.now)
    assert "Duration:" not in out and "Next try:" in out


def test_attempts_agree_with_the_history_after_a_retry(make_queue, clock):
    q = make_queue(clock=clock)
    tid = q.add_task("x", max_attempts=3)
    t = q.claim_task("w")
    q.fail_task(t.id, "w", "no", retryable=False, attempt=t.attempt)
    q.retry_task(tid)
    t = q.claim_task("w")
    out = text(q, tid, clock.now)
    assert "attempt 2" in out.split("History:")[1]
    assert "Attempts:    1 of 3 (2 runs in all" in out, out
    assert "2 runs in all" in detail(q, tid, clock.now)


def test_a_finished_cancel_is_not_still_requested(make_queue, clock):
    q = make_queue(clock=clock)
    tid = q.add_task("x")
    t = q.claim_task("w")
    assert q.cancel_task(tid) == "cancel_requested"
    assert text(q, tid, clock.now).startswith(f"Task #{tid}: running (cancel requested)")
    q.acknowledge_cancel(t.id, "w", attempt=t.attempt)
    out = text(q, tid, clock.now)
    assert out.splitlines()[0] == f"Task #{tid}: cancelled"
    assert "cancel requested" not in detail(q, tid, clock.now)


def test_sub_second_durations_and_the_session_id(make_queue, clock):
    assert task_report.fmt_duration(0.9) == "0.9s"
    assert task_report.fmt_duration(0.01) == "0.1s"
    assert task_report.fmt_duration(0) == "0s" and task_report.fmt_duration(59) == "59s"
    q = make_queue(clock=clock)
    tid = q.add_task("x")
    t = q.claim_task("w")
    clock.advance(0.9)
    q.complete_task(t.id, "w", {"result": "ok", "session_id": "0b8e2c1e-session", "total_cost_usd": 0.0001},
                    attempt=t.attempt)
    out = text(q, tid, clock.now)
    assert "Duration:    0.9s" in out and "Session:     0b8e2c1e-session" in out


@pytest.mark.parametrize("statuses, expected", [
    ({"cancelled": 2}, "cancelled"),
    ({"cancelled": 1, "skipped": 1}, "cancelled"),
    ({"completed": 1, "cancelled": 1}, "2/2"),
    ({"completed": 2}, "2/2"),
    ({"completed": 1, "pending": 1}, "1/2"),
])
def test_job_progress(statuses, expected):
    stats = {s: 0 for s in ("pending", "in_progress", "completed", "failed", "cancelled", "skipped")}
    stats.update(statuses)
    stats["total"] = sum(statuses.values())
    assert task_report.job_progress(stats) == expected


def test_a_job_whose_tasks_were_all_cancelled_reads_as_cancelled(make_queue):
    q = make_queue()
    job, _ = q.submit_job("never mind", [{"prompt": "a"}, {"prompt": "b"}])
    q.cancel_job(job)
    out = subprocess.run([sys.executable, str(ROOT / "submit_task.py"), "--db", str(q.db_path), "jobs"],
                         capture_output=True, text=True, timeout=60, cwd=q.db_path.parent)
    [row] = [line for line in out.stdout.splitlines() if job in line]
    assert "cancelled" in row and "2/2" not in row
    board = subprocess.run([sys.executable, str(ROOT / "claude_dashboard.py"), str(q.db_path), "--once"],
                           capture_output=True, text=True, timeout=60, cwd=q.db_path.parent)
    [row] = [line for line in board.stdout.splitlines() if job in line]
    assert "cancelled" in row and "2/2" not in row
