#!/usr/bin/env python3
"""What a Klauss command costs to start: the CPU of each entry point run as a fresh process (as
every manage.sh command, worker and coordinator is), beside the interpreter alone (`python -c
pass`) and the standard library a command line really needs (the "stdlib floor").

    python bench/startup_bench.py [--runs 20] [--no-site] [--python PATH] [--compare OTHER_CHECKOUT]

Figures are CPU milliseconds (user + system) of the process and whatever it waited for (git,
`claude --version`), from resource.getrusage(RUSAGE_CHILDREN) before and after each run: precise
even on a busy machine, where wall-clock time is not. The minimum over the runs is shown (the
least the command can cost; other processes only ever add to it), and the median beside it.
`--no-site` passes -S to every command: it leaves out what the interpreter's site-packages run at
start (.pth files), which is the installation's cost rather than Klauss's. The project is a
temporary git repository with one job of two tasks, Klauss's modules compiled first, no `.klauss.toml`; `claude` is a shell script
that prints a version.
"""

import argparse
import compileall
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STDLIB_FLOOR = "import argparse, json, re, sqlite3, subprocess, pathlib, shlex, shutil"
MCP_INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                             "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                        "clientInfo": {"name": "bench", "version": "0"}}}) + "\n"


BASELINES = [("python -c pass", ["-c", "pass"], None), ("stdlib floor", ["-c", STDLIB_FLOOR], None)]


def commands(job, klauss):
    """(label, argv after the interpreter, stdin) of the Klauss checkout at `klauss`."""
    k = str(klauss)
    return [
        ("claude_coordinator.py status", [f"{k}/claude_coordinator.py", "status"], None),
        ("claude_coordinator.py status --help", [f"{k}/claude_coordinator.py", "status", "--help"], None),
        ("submit_task.py list", [f"{k}/submit_task.py", "list"], None),
        ("submit_task.py show 1", [f"{k}/submit_task.py", "show", "1"], None),
        ("orchestrator.py status JOB", [f"{k}/orchestrator.py", "status", job], None),
        ("claude_worker.py (idle, exits)", [f"{k}/claude_worker.py", "bench_worker", "--exit-when-idle"], None),
        ("klauss_mcp.py initialize", [f"{k}/klauss_mcp.py"], MCP_INITIALIZE),
    ]


def cpu_ms(argv, cwd, env, stdin):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, cwd=cwd, env=env, input=stdin, capture_output=True, text=True,
                         stdin=None if stdin is not None else subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return 1000 * ((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))


def make_project(tmp, klauss):
    """A project whose job is queued by the checkout at `klauss` (each checkout its own: an older
    Klauss refuses a database of a newer schema)."""
    Path(tmp).mkdir()
    project = Path(tmp) / "proj"
    project.mkdir()
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    bindir = Path(tmp) / "bin"
    bindir.mkdir()
    claude = bindir / "claude"
    claude.write_text("#!/bin/sh\necho '2.1.0 (Claude Code)'\n")
    claude.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    env["PATH"] = f"{bindir}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(tmp)  # no ~/.claude.json of the developer's
    # Through the API in a process of its own (cwd: the project), so this one imports no Klauss.
    queue_job = ("import sys; sys.path.insert(0, sys.argv[1]); import orchestrator; "
                 "o = orchestrator.ClaudeOrchestrator('bench'); "
                 "print(o.submit_plan('bench', [{'prompt': 'Write a.txt'}, {'prompt': 'Write b.txt'}])[0])")
    job = subprocess.run([sys.executable, "-c", queue_job, str(klauss)], cwd=project, env=env, check=True,
                         capture_output=True, text=True).stdout.strip()
    return project, env, job


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--no-site", action="store_true", help="run every command with python -S")
    ap.add_argument("--compare", metavar="DIR",
                    help="another Klauss checkout (say, main's) whose commands run in the same rounds, for a before/after")
    args = ap.parse_args()
    checkouts = [ROOT] + ([Path(args.compare).resolve()] if args.compare else [])
    for klauss in checkouts:
        # Where PYTHONDONTWRITEBYTECODE=1, each run would otherwise compile every module it imports.
        compileall.compile_dir(str(klauss), maxlevels=0, quiet=2)
    with tempfile.TemporaryDirectory() as tmp:
        projects = {klauss: make_project(Path(tmp) / str(i), klauss) for i, klauss in enumerate(checkouts)}
        python = [args.python, "-S"] if args.no_site else [args.python]
        rows = [(label, None, argv, stdin, projects[ROOT]) for label, argv, stdin in BASELINES]
        rows += [(label, klauss, argv, stdin, projects[klauss]) for klauss in checkouts
                 for label, argv, stdin in commands(projects[klauss][2], klauss)]
        samples = {(label, klauss): [] for label, klauss, *_ in rows}
        for _ in range(args.runs):  # interleaved, so a busy spell weighs on every command alike
            for label, klauss, argv, stdin, (project, env, _) in rows:
                samples[label, klauss].append(cpu_ms([*python, *argv], str(project), env, stdin))
    print(f"{' '.join(python)} ({sys.version.split()[0] if args.python == sys.executable else args.python}), "
          f"{args.runs} runs, CPU ms (user + system, with children)")
    heads = "".join(f" {'min':>7} {'median':>7}" for _ in checkouts)
    print(f"{'':40}" + "".join(f" {k.name[:15]:>15}" for k in checkouts))
    print(f"{'command':40}{heads}")
    for label, _, _ in BASELINES:
        values = samples[label, None]
        print(f"{label:40} {min(values):7.1f} {statistics.median(values):7.1f}")
    for label, _, _ in commands(projects[ROOT][2], ROOT):
        cells = "".join(f" {min(samples[label, k]):7.1f} {statistics.median(samples[label, k]):7.1f}" for k in checkouts)
        print(f"{label:40}{cells}")


if __name__ == "__main__":
    main()
