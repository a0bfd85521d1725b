#!/usr/bin/env python3
"""The pool's makespan against the ideal and against a bare launcher; start-up time; idle CPU.

    python bench/pool_bench.py [--tasks 64] [--workers 8] [--duration 0.5] [--idle 5]

A fake `claude` takes a fixed D seconds: a tiny shell script by default, or with `--fake py` the
project's tests/fake_claude.py (a Python start-up per task, like a heavier CLI). T tasks run on a pool of N workers
started with `manage.sh start N`; the makespan is from the moment the batch is committed to the
last task's `finished_at`. The same fake runs T times on N threads of a bare launcher
(`subprocess.run` with the prompt on stdin, as the worker does), in the same run, so the ratio
pool/bare is measured on the same machine under the same load. Ideal: ceil(T/N) * D.

Goals: pool >= 0.95 of the bare launcher; the coordinator's CPU while idle ~ 0; `manage.sh start 8`
until every worker is ready under 2 s.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import claude_queue  # noqa: E402
import config  # noqa: E402

FAKE = """#!/bin/sh
if [ "$1" = "--version" ]; then echo "2.1.197 (Claude Code)"; exit 0; fi
cat > /dev/null
sleep "$BENCH_DURATION"
echo '{"type":"system","subtype":"init","session_id":"s"}'
echo '{"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"s","total_cost_usd":0}'
"""

ARGV = ["-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "acceptEdits"]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(predicate, timeout=120, step=0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(step)
    raise TimeoutError


def bare_launcher(fake, tasks, workers, env):
    """T runs of the fake on N threads, each taking the next run when its last one ends."""
    remaining = list(range(tasks))
    lock = threading.Lock()

    def loop():
        while True:
            with lock:
                if not remaining:
                    return
                remaining.pop()
            subprocess.run([fake, *ARGV], input=b"a prompt\n", capture_output=True, env=env, check=True)

    threads = [threading.Thread(target=loop) for _ in range(workers)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - start


def manage(project, env, *args):
    out = subprocess.run([str(ROOT / "manage.sh"), *args], cwd=str(project), env=env, capture_output=True, text=True,
                         timeout=120)
    if out.returncode != 0:
        raise SystemExit(f"manage.sh {' '.join(args)} failed ({out.returncode}): {out.stderr.strip()}")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=64, help="T")
    ap.add_argument("--workers", type=int, default=8, help="N")
    ap.add_argument("--duration", type=float, default=0.5, help="D, seconds the fake claude takes")
    ap.add_argument("--idle", type=float, default=5.0, help="seconds over which idle CPU is measured")
    ap.add_argument("--fake", choices=("sh", "py"), default="sh", help="the shell fake or tests/fake_claude.py")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
    T, N, D = args.tasks, args.workers, args.duration

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        project = tmp / "proj"
        project.mkdir()
        fake = tmp / "bin" / "claude"
        fake.parent.mkdir()
        if args.fake == "sh":
            fake.write_text(FAKE)
            fake.chmod(0o755)
        else:
            fake.symlink_to(ROOT / "tests" / "fake_claude.py")
        (project / ".klauss.toml").write_text("[workers]\nidle_timeout = 0\nshutdown_grace_seconds = 2\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
        env.update(PATH=f"{fake.parent}{os.pathsep}{env.get('PATH', '')}", BENCH_DURATION=str(D),
                   FAKE_CLAUDE_SCENARIO=json.dumps([{"sleep": D}]))

        bare = bare_launcher(str(fake), T, N, env)

        t0 = time.monotonic()
        manage(project, env, "start", str(N))
        startup = time.monotonic() - t0
        cfg = config.load_config(cwd=project, env={})
        queue = claude_queue.TaskQueue(None, cfg=cfg)
        coordinator_pid = queue.get_flag("coordinator")["value"]["pid"]
        worker_pids = [w["pid"] for w in queue.list_workers()]
        try:
            busy_before = cpu_seconds(coordinator_pid), sum(cpu_seconds(p) for p in worker_pids)
            submitted = time.time()
            ids = queue.add_tasks([{"prompt": f"task {i}"} for i in range(T)])
            wait_until(lambda: queue.get_stats()["completed"] == T, step=0.05)
            finished = max(queue.get_task(i).finished_at for i in ids)
            pool = finished - submitted
            busy_after = cpu_seconds(coordinator_pid), sum(cpu_seconds(p) for p in worker_pids)

            time.sleep(1.0)  # let the last heartbeats and log lines settle before measuring idle
            before = cpu_seconds(coordinator_pid), sum(cpu_seconds(p) for p in worker_pids)
            time.sleep(args.idle)
            after = cpu_seconds(coordinator_pid), sum(cpu_seconds(p) for p in worker_pids)
        finally:
            queue.close()
            manage(project, env, "stop")

    ideal = math.ceil(T / N) * D
    figures = {
        "tasks": T, "workers": N, "duration": D, "fake": args.fake, "ideal_s": ideal,
        "bare_s": round(bare, 3), "pool_s": round(pool, 3),
        "bare_vs_ideal": round(ideal / bare, 3), "pool_vs_ideal": round(ideal / pool, 3),
        "pool_vs_bare": round(bare / pool, 3), "startup_s": round(startup, 3),
        "coordinator_batch_cpu_s": round(busy_after[0] - busy_before[0], 3),
        "workers_batch_cpu_s": round(busy_after[1] - busy_before[1], 3),
        "coordinator_idle_cpu_percent": round(100 * (after[0] - before[0]) / args.idle, 2),
        "workers_idle_cpu_percent": round(100 * (after[1] - before[1]) / args.idle, 2),
    }
    print(f"T={T} tasks, N={N} workers, D={D}s, {args.fake} fake: ideal ceil(T/N)*D = {ideal:.2f}s")
    print(f"  bare launcher   {bare:7.3f}s   {figures['bare_vs_ideal']:.3f} of ideal")
    print(f"  pool            {pool:7.3f}s   {figures['pool_vs_ideal']:.3f} of ideal, "
          f"{figures['pool_vs_bare']:.3f} of the bare launcher (goal >= 0.95)")
    print(f"  batch CPU       coordinator {figures['coordinator_batch_cpu_s']:.3f}s, "
          f"workers {figures['workers_batch_cpu_s']:.3f}s ({1000 * figures['workers_batch_cpu_s'] / T:.1f} ms per task)")
    print(f"  start-up        {startup:7.3f}s   manage.sh start {N} until all workers ready (goal < 2 s)")
    print(f"  idle CPU        coordinator {figures['coordinator_idle_cpu_percent']:.2f}% of a core, "
          f"{N} workers together {figures['workers_idle_cpu_percent']:.2f}% (over {args.idle:g}s)")
    if args.json:
        print(json.dumps(figures))
    return 0 if figures["pool_vs_bare"] >= 0.95 and startup < 2 else 1


if __name__ == "__main__":
    sys.exit(main())
