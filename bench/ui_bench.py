#!/usr/bin/env python3
"""How long the user-facing programs take on a big queue: one dashboard refresh, `list --limit 50`
and `stats`, on a database of 100,000 tasks (goal: each <= 50 ms), and whether a refresh costs more
as finished tasks pile up (goal: no).

    python bench/ui_bench.py [--tasks 100000] [--small 1000] [--runs 30]

Times are medians. "query" is the work inside one running program (what every dashboard refresh
pays); "command" is main() in-process, including reading the config and opening the database;
"process" is a fresh `python ...` run, which adds the interpreter's own start-up (shown alone as
`python -c pass`). The VM column counts SQLite virtual-machine steps (in hundreds), a measure of
work that does not depend on the machine.
"""

import argparse
import contextlib
import io
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import claude_dashboard  # noqa: E402
import claude_queue  # noqa: E402
import config  # noqa: E402
import submit_task  # noqa: E402

RESULT = ("Added docstrings to every public function in src/utils.py and fixed two type hints. " * 12).strip()
OUTCOME = {"result": RESULT[:200], "session_id": "0" * 36, "total_cost_usd": 0.0421, "num_turns": 7,
           "usage": {"input_tokens": 1200, "output_tokens": 340, "cache_read_input_tokens": 5000,
                     "cache_creation_input_tokens": 0},
           "duration_ms": 48000, "exit_code": 0, "permission_denials": [], "outputs_verified": ["src/utils.py"],
           "outputs_missing": [], "transcript": "/project/.klauss/logs/tasks/task-1-attempt-1.jsonl"}


def open_queue(db):
    return claude_queue.TaskQueue(db, cfg=config.load_config(db=db, env={}))


def build(db, n):
    """n tasks shaped like a long-running project: nearly all completed (with results and outcomes),
    1% failed and a few cancelled or skipped scattered through history, the newest 300 pending,
    8 running on 8 workers, 20 jobs, a coordinator and a usage-limit pause."""
    q = open_queue(db)
    jobs = [q.create_job(f"job {j}: refactor module {j}") for j in range(20)]
    prompt = "Refactor the function below so it is easier to test; keep its behaviour. " * 6
    t0 = time.perf_counter()
    for start in range(0, n, 10_000):
        q.add_tasks([{"prompt": f"#{i} {prompt}", "job_id": jobs[i * 20 // n], "priority": i % 3,
                      "expected_outputs": ["src/module.py"]} for i in range(start, min(n, start + 10_000))])
    fill_seconds = time.perf_counter() - t0
    pending_from = n - 300
    with q._write() as conn:  # a bench shortcut: statuses set in bulk (the triggers keep the counts; they fire on finished_at)
        conn.execute("UPDATE tasks SET status = 'completed', attempt = 1, worker_id = 'w' || (id % 8), "
                     "started_at = created_at, finished_at = created_at + 60, cost_usd = 0.0421, result = ?, "
                     "outcome = ? WHERE id < ?", (RESULT, json.dumps(OUTCOME), pending_from))
        conn.execute("UPDATE tasks SET status = 'failed', finished_at = finished_at, error = 'claude exited 1' WHERE id % 100 = 7 AND id < ?",
                     (pending_from,))
        conn.execute("UPDATE tasks SET status = 'cancelled', finished_at = finished_at WHERE id % 997 = 3 AND id < ?", (pending_from,))
        conn.execute("UPDATE tasks SET status = 'skipped', finished_at = finished_at WHERE id % 1999 = 5 AND id < ?", (pending_from,))
    for w in range(8):
        q.register_worker(f"w{w}", state="busy", info={"slot": w})
        t = q.claim_task(f"w{w}")
        q.worker_heartbeat(f"w{w}", state="busy", current_task=t.id)
        q.set_activity(t.id, f"w{w}", "Bash: npm test · 12k tokens")
    q.set_flag("coordinator", {"pid": os.getpid(), "workers": 8, "started_at": time.time()})
    q.set_flag("paused", {"reason": "usage_limit", "message": "Claude usage limit reached"}, until=time.time() + 3600)
    q.close()
    return fill_seconds


def median_ms(fn, runs):
    fn()  # warm the page cache and the connection
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def vm_steps(q, fn):
    conn = q._connect()
    count = [0]

    def tick():
        count[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    try:
        fn()
    finally:
        conn.set_progress_handler(None, 100)
    return count[0]


def quiet_main(module, argv):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert module.main(argv) == 0


def process_ms(argv, runs):
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(argv, capture_output=True, check=True, env={**os.environ, "COLUMNS": "120"})
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def measure(db, runs, processes):
    q = open_queue(db)
    rows = []

    def refresh(status=None):
        dash = claude_dashboard.Dashboard(q, status=status)
        return lambda: dash.frame(120, 40)

    for label, status in (("dashboard refresh", None), ("dashboard refresh, filter failed", "failed"),
                          ("dashboard refresh, filter pending", "pending")):
        fn = refresh(status)
        rows.append((label, median_ms(fn, runs), vm_steps(q, fn), None, None))
    once = lambda: claude_dashboard.plain_text(claude_dashboard.Dashboard(q).frame(120))  # noqa: E731
    rows.append(("dashboard --once", median_ms(once, runs), vm_steps(q, once),
                 median_ms(lambda: quiet_main(claude_dashboard, [db, "--once"]), runs),
                 process_ms([sys.executable, str(ROOT / "claude_dashboard.py"), db, "--once"], processes)))
    list50 = lambda: q.recent_tasks(limit=50)  # noqa: E731
    rows.append(("list --limit 50", median_ms(list50, runs), vm_steps(q, list50),
                 median_ms(lambda: quiet_main(submit_task, ["list", "--limit", "50", "--db", db]), runs),
                 process_ms([sys.executable, str(ROOT / "submit_task.py"), "list", "--limit", "50", "--db", db],
                            processes)))
    failed50 = lambda: q.recent_tasks(status="failed", limit=50)  # noqa: E731
    rows.append(("list --status failed --limit 50", median_ms(failed50, runs), vm_steps(q, failed50),
                 median_ms(lambda: quiet_main(submit_task, ["list", "--status", "failed", "--db", db]), runs), None))
    rows.append(("stats", median_ms(q.get_stats, runs), vm_steps(q, q.get_stats),
                 median_ms(lambda: quiet_main(submit_task, ["stats", "--db", db]), runs),
                 process_ms([sys.executable, str(ROOT / "submit_task.py"), "stats", "--db", db], processes)))
    q.close()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--small", type=int, default=1_000, help="the small database, to show the cost does not grow")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--processes", type=int, default=7, help="fresh-process runs per command")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="klauss-ui-bench-") as tmp:
        run(args, tmp)


def run(args, tmp):
    print(f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    startup = process_ms([sys.executable, "-c", "pass"], args.processes)
    results = {}
    for n in (args.small, args.tasks):
        db = os.path.join(tmp, f"ui-{n}.db")
        seconds = build(db, n)
        print(f"built {n:,} tasks in {seconds:.1f} s ({os.path.getsize(db) / 1e6:.0f} MB)")
        results[n] = measure(db, args.runs, args.processes)

    def cell(value):
        return f"{value:>9.2f}" if value is not None else f"{'':>9}"

    print(f"\nmedian ms; `python -c pass` alone takes {startup:.0f} ms here")
    print(f"{'':<34}{'query':>9}{'VM':>6}{'command':>9}{'process':>9}   "
          f"{'query':>9}{'VM':>6}{'command':>9}{'process':>9}")
    print(f"{'':<34}{f'--- {args.small:,} tasks ---':^33}   {f'--- {args.tasks:,} tasks ---':^33}")
    for small, big in zip(results[args.small], results[args.tasks]):
        print(f"{small[0]:<34}{cell(small[1])}{small[2]:>6}{cell(small[3])}{cell(small[4])}   "
              f"{cell(big[1])}{big[2]:>6}{cell(big[3])}{cell(big[4])}")


if __name__ == "__main__":
    main()
