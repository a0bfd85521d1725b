"""manage.sh: its help, finding the project from anywhere, delegation to the Python programs,
init-config, clean and doctor. The pool's behaviour itself is in test_coordinator.py."""

import json
import os
import queue
import signal
import subprocess
import threading

import pytest

import config
from conftest import MANAGE, ROOT, Project

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the tests read /proc (Linux)")

POOL_COMMANDS = ["start", "stop", "kill", "restart", "resize", "status", "workers", "ps", "logs", "init-config",
                 "clean", "doctor"]
QUEUE_COMMANDS = ["submit", "submit-file", "list", "show", "stats", "jobs", "cancel", "retry", "purge"]


@pytest.fixture
def project(tmp_path):
    made = Project(tmp_path)
    yield made
    made.cleanup()


def git_init(path):
    subprocess.run(["git", "init", "-q", str(path)], check=True, capture_output=True)


def test_help_has_one_line_per_command(project):
    for argv in (["help"], [], ["--help"]):
        out = project.manage(*argv)
        assert out.returncode == 0, out.stderr
        lines = out.stdout.splitlines()
        for command in POOL_COMMANDS + QUEUE_COMMANDS + ["dashboard", "help"]:
            assert sum(1 for line in lines if line.split()[:1] == [command] or f" {command} " in f" {line} ") >= 1, command
    out = project.manage("frobnicate")
    assert out.returncode == 2 and "unknown command 'frobnicate'" in out.stderr and "usage:" in out.stderr


def test_works_from_any_directory_and_through_symlinks(project):
    git_init(project.root)
    deep = project.root / "src" / "deep"
    deep.mkdir(parents=True)
    tools = project.root / "tools"
    tools.mkdir()
    (tools / "first").symlink_to(MANAGE)
    (tools / "km").symlink_to("first")  # a relative link to a link
    for cwd in (project.root, deep):
        out = project.run([tools / "km", "status", "--json"], cwd=cwd)
        assert out.returncode == 0, out.stderr
        status = json.loads(out.stdout)
        assert status["db"] == str(project.root.resolve() / ".klauss" / "claude_tasks.db")
        assert status["running"] is False


def test_commands_are_delegated_to_the_right_program(project):
    recorder = project.tmp / "python"
    recorder.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    recorder.chmod(0o755)
    env = {"KLAUSS_PYTHON": str(recorder)}
    for command in QUEUE_COMMANDS:
        out = project.manage(command, "--json", "a b", env=env)
        assert out.stdout.splitlines() == [str(ROOT / "submit_task.py"), command, "--json", "a b"]
    out = project.manage("dashboard", "--once", env=env)
    assert out.stdout.splitlines() == [str(ROOT / "claude_dashboard.py"), "--once"]
    for command in POOL_COMMANDS:
        out = project.manage(command, "--db", "x.db", env=env)
        assert out.stdout.splitlines() == [str(ROOT / "claude_coordinator.py"), command, "--db", "x.db"]


def test_init_config_writes_the_commented_defaults_once(project):
    git_init(project.root)
    (project.root / ".klauss.toml").unlink()
    sub = project.root / "sub"
    sub.mkdir()
    out = project.manage("init-config", cwd=sub)
    assert out.returncode == 0 and "wrote" in out.stdout, out.stderr
    written = (project.root / ".klauss.toml").read_text()
    assert written == config.render_default_config()
    assert "lease_seconds = 60" in written and "heartbeat_seconds = 10" in written and "idle_timeout = 300" in written
    (project.root / ".klauss.toml").write_text("# mine\n")
    out = project.manage("init-config")
    assert out.returncode == 0 and "already exists" in out.stderr
    assert (project.root / ".klauss.toml").read_text() == "# mine\n"


def test_doctor_with_claude_and_a_pool(project):
    out = project.manage("doctor")
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    for name in ("python", "toml", "config", "claude", "login", "database", "pool"):
        assert any(line[5:].startswith(f"{name}:") for line in lines), (name, out.stdout)
    claude = next(line for line in lines if line[5:].startswith("claude:"))
    assert claude.startswith("OK") and str(project.bin / "claude") in claude and "Claude Code" in claude
    assert "OK   pool: not running" in out.stdout
    assert project.manage("start", "1").returncode == 0
    checks = {c["check"]: c for c in json.loads(project.manage("doctor", "--json").stdout)}
    assert checks["pool"]["ok"] and checks["pool"]["detail"].startswith("running: coordinator pid")
    assert project.manage("stop").returncode == 0


def test_doctor_without_claude_says_how_to_fix_it(project):
    out = project.manage("doctor", env={"KLAUSS_CLAUDE": "claude-not-installed-here"})
    assert out.returncode == 1
    assert "FAIL claude: 'claude-not-installed-here' not found on PATH" in out.stdout
    assert "fix: npm install -g @anthropic-ai/claude-code" in out.stdout
    assert "OK   database:" in out.stdout


def test_doctor_reports_a_broken_config_file(project):
    (project.root / ".klauss.toml").write_text("[workers]\ncount = \"four\"\n")
    out = project.manage("doctor")
    assert out.returncode == 1 and "FAIL config:" in out.stdout and "workers.count" in out.stdout


def test_clean_asks_first_and_keeps_what_it_should(project):
    queue = project.queue()
    queue.add_task("something")
    project.logs.mkdir(parents=True, exist_ok=True)
    (project.logs / "worker_1.log").write_text("x\n")
    db = project.state / "claude_tasks.db"

    out = project.manage("clean")  # stdin is not a terminal: refuse rather than hang
    assert out.returncode == 2 and "--yes" in out.stderr and db.exists()
    out = project.manage("clean", input="n\n")
    assert db.exists() and (project.logs / "worker_1.log").exists()

    out = project.manage("clean", "--logs", "--yes")
    assert out.returncode == 0 and not (project.logs / "worker_1.log").exists() and db.exists()

    assert project.manage("start", "1").returncode == 0
    out = project.manage("clean", "--yes")
    assert out.returncode == 1 and "stop it first" in out.stderr and db.exists()
    assert project.manage("stop").returncode == 0

    queue.close()
    project._queue = None
    out = project.manage("clean", "--yes")
    assert out.returncode == 0, out.stderr
    assert not db.exists() and "1 task(s)" in out.stdout
    assert not (project.state / "claude_tasks.db-wake").exists() and not project.logs.exists()


def test_logs_follow_prints_lines_as_they_are_appended(project):
    project.logs.mkdir(parents=True)
    log = project.logs / "worker_2.log"
    log.write_text("old line\n")
    follower = subprocess.Popen([str(MANAGE), "logs", "worker", "2", "-f"], cwd=str(project.root), env=project.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout], daemon=True).start()
    try:
        assert lines.get(timeout=20) == "old line\n"
        with open(log, "a") as fh:
            fh.write("new line\n")
        assert lines.get(timeout=20) == "new line\n"
    finally:
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=10) == 0
        follower.stderr.close()


def test_looking_at_a_project_where_nothing_ran_creates_nothing(project):
    for argv in (["status"], ["status", "--json"], ["ps"], ["stop"], ["kill"], ["clean", "--yes"]):
        out = project.manage(*argv)
        assert out.returncode == 0, (argv, out.stderr)
    assert project.manage("resize", "2").returncode == 1
    assert not project.state.exists()
