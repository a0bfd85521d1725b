#!/usr/bin/env python3
"""Dispatch latency of idle workers, per-task overhead, worker memory and idle CPU.

    python bench/dispatch_bench.py [--workers 4] [--tasks 100] [--duration 0.05]

A fake `claude` (a tiny shell script, so its own start-up does not blur the figure) records the
moment it starts and then takes a fixed time D. Tasks are submitted one at a time while the
workers are idle; pickup latency is "task committed" to "claude started".
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import claude_queue  # noqa: E402
import config  # noqa: E402

FAKE = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "2.1.197 (Claude Code)"; exit 0; fi
echo "$KLAUSS_TASK_ID $(date +%s.%N)" >> "$BENCH_STARTS"
cat > /dev/null
sleep "$BENCH_DURATION"
echo '{"type":"system","subtype":"init","session_id":"s"}'
echo '{"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"s","total_cost_usd":0}'
"""


def proc_stat(pid):
    """(cpu seconds, resident MB) of a process, from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as fh:
        rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
    return cpu, rss


def wait_until(predicate, timeout=30):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.005)
    raise TimeoutError


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=100)
    ap.add_argument("--duration", type=float, default=0.05, help="D, seconds the fake claude takes")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="klauss-dispatch-"))
    (tmp / "bin").mkdir()
    fake = tmp / "bin" / "claude"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    starts = tmp / "starts.log"
    db = tmp / "q.db"
    env = {**os.environ, "PATH": f"{tmp / 'bin'}:{os.environ['PATH']}", "BENCH_STARTS": str(starts),
           "BENCH_DURATION": str(args.duration)}
    env.pop("KLAUSS_DB", None)
    cfg = config.load_config(db=str(db), cwd=tmp, env={})
    q = claude_queue.TaskQueue(str(db), cfg=cfg)
    workers = [subprocess.Popen([sys.executable, str(ROOT / "claude_worker.py"), f"w{i}", "--db", str(db)],
                                cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for i in range(args.workers)]
    try:
        wait_until(lambda: len([w for w in q.list_workers() if w["state"] == "idle"]) == args.workers)
        time.sleep(1.0)  # let start-up settle before measuring idle CPU
        before = {w.pid: proc_stat(w.pid) for w in workers}
        time.sleep(5.0)
        after = {w.pid: proc_stat(w.pid) for w in workers}
        idle_cpu = max((after[p][0] - before[p][0]) / 5.0 * 100 for p in before)
        rss = max(after[p][1] for p in after)

        committed = {}
        for i in range(args.tasks):
            tid = q.add_task(f"task {i}")
            committed[tid] = time.time()
            wait_until(lambda tid=tid: q.get_task(tid).status == "completed")
            time.sleep(0.02)  # every worker back to idle before the next task
        latencies = {}
        for line in starts.read_text().split("\n"):
            if line.strip():
                tid, at = line.split()
                latencies[int(tid)] = (float(at) - committed[int(tid)]) * 1000
        lat = sorted(latencies.values())
        overheads = []
        for t in q.list_tasks(status="completed"):
            overheads.append((t.finished_at - committed[t.id] - args.duration) * 1000)
        overheads.sort()

        # Throughput overhead: a burst of tasks on busy workers.
        burst = args.workers * 10
        t0 = time.time()
        q.add_tasks([{"prompt": f"burst {i}"} for i in range(burst)])
        wait_until(lambda: q.get_stats()["completed"] == args.tasks + burst, timeout=120)
        makespan = time.time() - t0
        ideal = burst / args.workers * args.duration
        print(f"{args.workers} idle workers, fake claude D = {args.duration * 1000:.0f} ms, {args.tasks} tasks")
        print(f"pickup latency (committed -> claude started): p50 {statistics.median(lat):.1f} ms, "
              f"p99 {lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.1f} ms, max {lat[-1]:.1f} ms")
        print(f"commit -> completed minus D: p50 {statistics.median(overheads):.1f} ms, "
              f"p99 {overheads[min(len(overheads) - 1, int(len(overheads) * 0.99))]:.1f} ms")
        print(f"burst of {burst}: makespan {makespan:.2f} s vs ideal {ideal:.2f} s "
              f"({(makespan - ideal) / (burst / args.workers) * 1000:.1f} ms overhead per task per worker)")
        print(f"worker resident memory (max): {rss:.1f} MB; idle worker CPU (max): {idle_cpu:.2f}%")
    finally:
        for w in workers:
            w.terminate()
        for w in workers:
            w.wait(timeout=30)


if __name__ == "__main__":
    main()
