#!/usr/bin/env python3
"""The verified merge queue: serial integration against `batch = N`, with one bad branch.

    python bench/integration_bench.py [--tasks 16] [--batch 4] [--verify-seconds 1] [--workers 4]

A job of one-file tasks (the fake `claude` writes one file each) runs in worktrees of a scratch git
repository; the verify command takes `--verify-seconds` and fails when a file says BROKEN, which one
task's file does. `fix_attempts = 0`, so no fix-up task blurs the figures. For each mode it prints
the time from the last task's finish to the verified job branch (the last integration task's end),
the verify runs, verify runs per merged task, and whether the bad task alone was kept out.
Prints; asserts nothing.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import claude_queue  # noqa: E402
import config  # noqa: E402
import integration  # noqa: E402
from orchestrator import ClaudeOrchestrator  # noqa: E402

VERIFY = """import pathlib, sys, time
time.sleep(float(sys.argv[1]))
sys.exit(1 if any("BROKEN" in p.read_text() for p in pathlib.Path(".").glob("*.txt")) else 0)
"""
SETTINGS = ("[workers]\nlease_seconds = 30\nheartbeat_seconds = 1\nidle_timeout = 0\n[queue]\nretry_backoff_seconds = 0\n"
            "[isolation]\nmode = \"worktree\"\n[integration]\nverify_command = {verify}\nbatch = {batch}\n"
            "fix_attempts = 0\n")


def git(cwd, *args):
    subprocess.run(["git", "-c", "user.name=Bench", "-c", "user.email=bench@localhost", *args], cwd=cwd, check=True,
                   capture_output=True)


def one_run(tmp, tasks, batch, verify_seconds, workers, bad):
    root = tmp / f"batch-{batch}"
    root.mkdir()
    bindir = tmp / "bin"
    if not bindir.exists():
        bindir.mkdir()
        claude = bindir / "claude"
        claude.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{ROOT / "tests" / "fake_claude.py"}" "$@"\n')
        claude.chmod(0o755)
        (tmp / "verify.py").write_text(VERIFY)
    verify = json.dumps([sys.executable, str(tmp / "verify.py"), str(verify_seconds)])
    (root / ".klauss.toml").write_text(SETTINGS.format(verify=verify, batch=batch))
    (root / ".gitignore").write_text(".klauss/\n")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "initial")
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"}
    os.environ["PATH"] = env["PATH"]
    os.chdir(root)
    orch = ClaudeOrchestrator("bench")
    plan = [{"prompt": f"write f{i}.txt\n@fake " + json.dumps({"write": f"f{i}.txt",
                                                              "content": "BROKEN\n" if i == bad else f"{i}\n"})}
            for i in range(tasks)]
    job, ids = orch.submit_plan("bench", plan)
    procs = [subprocess.Popen([sys.executable, str(ROOT / "claude_worker.py"), f"w{n}", "--exit-when-idle"],
                              cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for n in range(workers)]
    for p in procs:
        p.wait()
    queue = claude_queue.TaskQueue(cfg=config.load_config(cwd=root))
    everything = queue.list_tasks(job_id=job)
    work = [t for t in everything if not integration.is_integration(t)]
    merges = [t for t in everything if integration.is_integration(t)]
    report = integration.job_report(queue, job)
    states = {r["task"]: r["state"] for r in report["tasks"]}
    merged = sum(1 for s in states.values() if s == "merged")
    kept_out = sorted(t for t, s in states.items() if s != "merged")
    return {"batch": batch, "after_last_task_s": max(t.finished_at for t in merges) - max(t.finished_at for t in work),
            "verify_runs": report["verify_runs"], "merged": merged,
            "runs_per_merged": report["verify_runs"] / merged if merged else float("nan"),
            "bad_isolated": kept_out == [ids[bad]],
            "kept_out": [f"#{r['task']} {r['state']}: {r['why']}" for r in report["tasks"] if r["state"] != "merged"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--verify-seconds", type=float, default=1.0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--bad", type=int, default=None, help="index of the bad task (default: the middle one)")
    args = ap.parse_args()
    bad = args.tasks // 2 if args.bad is None else args.bad
    home = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="klauss-integration-bench-") as tmp:
        rows = []
        try:
            for batch in (1, args.batch):
                rows.append(one_run(Path(tmp), args.tasks, batch, args.verify_seconds, args.workers, bad))
        finally:
            os.chdir(home)
    print(f"{args.tasks} one-file tasks, task #{bad + 1} breaks verification, verify takes {args.verify_seconds:g}s, "
          f"{args.workers} workers, fix_attempts = 0")
    print(f"{'mode':<10} {'last task -> verified branch':>28} {'verify runs':>12} {'merged':>7} {'runs/merged':>12} "
          f"{'bad isolated':>13}")
    for r in rows:
        mode = "serial" if r["batch"] == 1 else f"batch={r['batch']}"
        print(f"{mode:<10} {r['after_last_task_s']:>27.1f}s {r['verify_runs']:>12} {r['merged']:>7} "
              f"{r['runs_per_merged']:>12.2f} {str(r['bad_isolated']):>13}")
        for line in r["kept_out"]:
            print(f"{'':<10} kept out: {line}")


if __name__ == "__main__":
    main()
