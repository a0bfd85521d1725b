"""Start-up cost: each entry point imports only what it needs.

Every manage.sh command, worker and coordinator is a fresh Python process, and most of its CPU is
imports. Each entry point here runs for real (sys.executable, a temp project without a
`.klauss.toml`) under `-X importtime`, and the modules it must do without are named: standard
modules a cheaper equivalent replaces (uuid -> os.urandom, socket.gethostname -> os.uname, hashlib
-> the built-in SHA-256, copy.deepcopy of flat defaults), those only some commands need (tomllib
when a config file exists, curses in the dashboard), and Klauss's own modules a view never uses.
Measured figures: bench/startup_bench.py.

The interpreter runs with -S: whatever its site-packages import at start (a .pth file) would
otherwise be imported already and hide the same import by Klauss.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

import claude_queue
import config
from conftest import ROOT, install_fake_claude

# Never needed at start by any program.
NEVER = {"uuid", "platform", "hashlib", "_hashlib", "socket", "tomllib", "tomli", "curses", "random"}
# dataclasses drags in inspect, ast, dis, tokenize and copy; typing costs ~3 ms. Each is forbidden
# to every program once claude_queue, which all of them import, does not import it (today neither:
# Task is a plain class, and the Outcome TypedDict lives in outcome.py); test_shared_modules_on_their_own
# checks the modules beneath the queue either way.
NO_DATACLASSES = {"dataclasses", "inspect", "ast", "dis", "copy"}  # not tokenize: linecache (traceback) needs it
QUEUE_SOURCE = (ROOT / "claude_queue.py").read_text()
if not re.search(r"^(from|import) dataclasses\b", QUEUE_SOURCE, re.M):
    NEVER |= NO_DATACLASSES
if not re.search(r"^(from|import) typing\b", QUEUE_SOURCE, re.M):
    NEVER |= {"typing"}
# Klauss's own modules: each program imports no other program (but the MCP server the
# orchestrator API, as test_codebase.py allows), and no view the pool's control.
PROGRAMS = {"claude_coordinator", "claude_worker", "claude_dashboard", "submit_task", "orchestrator", "klauss_mcp"}
POOL_CONTROL = {"pool", "supervisor"}
MCP_INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                             "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                        "clientInfo": {"name": "test", "version": "0"}}}) + "\n"


def imported(stderr):
    """{module: the module whose import imported it (None at top level)} from -X importtime's
    report, which lists a module before the one that imported it, one indentation level out."""
    rows = [(len(m.group(1)) // 2, m.group(2)) for m in re.finditer(r"^import time:\s*\d+ \|\s*\d+ \|( *)(\S+)$",
                                                                    stderr, re.M)]
    parents = {}
    for i, (depth, name) in enumerate(rows):
        parents[name] = next((n for d, n in rows[i + 1:] if d < depth), None)
    return parents


def run(root, env, script, *args, stdin=None, site=False):
    out = subprocess.run([sys.executable, *([] if site else ["-S"]), "-X", "importtime", str(ROOT / script), *args],
                         cwd=root, env=env, input=stdin, capture_output=True, text=True, timeout=60,
                         stdin=None if stdin is not None else subprocess.DEVNULL)
    assert "Traceback" not in out.stderr, out.stderr
    modules = imported(out.stderr)
    assert "claude_queue" in modules, out.stderr  # the report was read
    return out, modules


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project with one job of two tasks and the fake claude on PATH, no .klauss.toml."""
    tmp = tmp_path_factory.mktemp("startup")
    root = tmp / "proj"
    root.mkdir()
    install_fake_claude(tmp / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    env["PATH"] = f"{tmp / 'bin'}{os.pathsep}{env['PATH']}"
    cfg = config.load_config(cwd=root, env={})
    assert cfg.config_file is None
    cfg.ensure_state_dir()
    q = claude_queue.TaskQueue(None, cfg=cfg)
    job = q.create_job("startup")
    q.add_task("first", job_id=job)
    q.add_task("second", job_id=job)
    q.close()
    return root, env, job


def check(modules, forbidden):
    found = {name: modules[name] for name in sorted(forbidden & set(modules))}
    assert not found, "imported at start (module: by whom): " + ", ".join(f"{m}: {by or 'the program'}"
                                                                         for m, by in found.items())


# command -> (argv, Klauss modules it must not import beside the other programs)
CASES = {
    "claude_coordinator.py status": (["claude_coordinator.py", "status"], {"worktrees", "integration", "submission"}),
    "claude_coordinator.py status --json": (["claude_coordinator.py", "status", "--json"],
                                            {"worktrees", "integration", "submission"}),
    "submit_task.py list": (["submit_task.py", "list"], POOL_CONTROL | {"admin"}),
    "submit_task.py show 1": (["submit_task.py", "show", "1"], POOL_CONTROL | {"admin"}),
    "submit_task.py stats": (["submit_task.py", "stats"], POOL_CONTROL | {"admin"}),
    "orchestrator.py status JOB": (["orchestrator.py", "status", "{job}"], POOL_CONTROL | {"admin"}),
    # As far as a worker gets without a task: an empty queue of its own.
    "claude_worker.py --exit-when-idle": (["claude_worker.py", "worker_t", "--db", "idle.db", "--exit-when-idle"],
                                          POOL_CONTROL | {"admin"}),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_command_imports_only_what_it_needs(project, case):
    root, env, job = project
    argv, own = CASES[case]
    out, modules = run(root, env, *[a.format(job=job) for a in argv])
    assert out.returncode == 0, out.stderr[-2000:]
    check(modules, NEVER | own | (PROGRAMS - {argv[0][:-3]}))


def test_mcp_server_answers_initialize_without_the_pool(project):
    root, env, _ = project
    out, modules = run(root, env, "klauss_mcp.py", stdin=MCP_INITIALIZE)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.splitlines()[0])["result"]["serverInfo"]
    # The MCP server is a front end to the orchestrator API (test_codebase.py's one exception).
    check(modules, NEVER | POOL_CONTROL | {"admin"} | (PROGRAMS - {"klauss_mcp", "orchestrator"}))


def test_a_config_file_is_read_with_tomllib(project, tmp_path):
    """tomllib is imported when there is a file to read (with the site-packages, where tomli is
    before Python 3.11)."""
    if sys.version_info < (3, 11):
        pytest.importorskip("tomli")
    root, env, _ = project
    (tmp_path / "other.toml").write_text("[workers]\nmax_workers = 3\n")
    out, modules = run(root, {**env, "KLAUSS_CONFIG": str(tmp_path / "other.toml")}, "claude_coordinator.py",
                       "doctor", "--json", site=True)
    assert out.returncode in (0, 1), out.stderr[-2000:]
    assert ("tomllib" if sys.version_info >= (3, 11) else "tomli") in modules


@pytest.mark.parametrize("module", ["claude_cli", "config", "hosts", "processes", "task_report", "validation"])
def test_shared_modules_on_their_own(module):
    """The modules beneath the queue: claude_cli's records are plain classes, config copies its
    defaults without the copy module, and none needs typing."""
    out = subprocess.run([sys.executable, "-S", "-X", "importtime", "-c", f"import {module}"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    modules = imported(out.stderr)
    assert module in modules, out.stderr
    check(modules, NEVER | NO_DATACLASSES | {"typing"})


def test_a_project_beside_klauss_starts_no_git(tmp_path):
    """Finding the project root starts no git in a plain repository (gitroot.py walks up to its
    `.git`), and where Klauss's checkout is elsewhere its top level is not looked up (test_config.py
    and test_git_root.py cover the submodule layouts)."""
    log = tmp_path / "git.log"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    real_git = shutil.which("git")
    (bindir / "git").write_text(f'#!/bin/sh\necho "$(pwd -P) $*" >> "{log}"\nexec "{real_git}" "$@"\n')
    (bindir / "git").chmod(0o755)
    project = tmp_path / "proj"
    subprocess.run(["git", "init", "-q", str(project)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    out = subprocess.run([sys.executable, str(ROOT / "submit_task.py"), "list"], cwd=project, env=env,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60)
    assert out.returncode == 0, out.stderr
    assert not log.exists(), log.read_text()
