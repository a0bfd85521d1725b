"""The README's commands are true: CI runs its test command, and its quick start and project
set-up commands run (with a fake `claude` that writes what each task's expected outputs ask for)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import copy_klauss, install_writer_claude

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def bash_blocks():
    return re.findall(r"^```bash\n(.*?)^```", README, re.S | re.M)


def git(*args, cwd):
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "-c", "protocol.file.allow=always", *args], cwd=cwd, env=env, check=True,
                   capture_output=True)


@pytest.fixture
def env(tmp_path):
    install_writer_claude(tmp_path / "bin")
    e = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    e["PATH"] = f"{tmp_path / 'bin'}:{e['PATH']}"
    return e


def run(script, cwd, env, timeout=300):
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def stop_pool(cwd, env):
    subprocess.run([sys.executable, str(ROOT / "claude_coordinator.py"), "kill"], cwd=cwd, env=env,
                   capture_output=True, timeout=60)


def test_ci_runs_exactly_the_readme_test_command():
    quick_start = bash_blocks()[:2]
    test_command = quick_start[1].strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_command in ci.splitlines()


def test_quick_start_runs_the_main_job(tmp_path, env):
    klauss = copy_klauss(tmp_path / "klauss")
    try:
        out = run(bash_blocks()[0], klauss, env)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "4 completed" in out.stdout
        for note in ("sqlite.md", "leases.md", "process-groups.md", "README.md"):
            assert (klauss / "examples" / "out" / note).exists(), note
    finally:
        stop_pool(klauss, env)


def test_adding_klauss_to_a_project_and_driving_it(tmp_path, env):
    source = copy_klauss(tmp_path / "klauss-src")
    git("init", "-q", "-b", "main", cwd=source)
    git("add", "-A", cwd=source)
    git("commit", "-q", "-m", "klauss", cwd=source)
    project = tmp_path / "project"
    project.mkdir()
    git("init", "-q", "-b", "main", cwd=project)
    setup, usage = bash_blocks()[2:4]
    # Local clones of a submodule need file:// allowed (a real install fetches over the network).
    setup = setup.replace("git submodule add <klauss repository url> klauss",
                          f"git -c protocol.file.allow=always submodule add -q {source} klauss")
    try:
        out = run(setup, project, env)
        assert out.returncode == 0, out.stdout + out.stderr
        assert (project / ".klauss.toml").exists() and (project / ".claude" / "skills" / "klauss" / "SKILL.md").exists()
        assert "OK   claude" in out.stdout

        (project / "src").mkdir()
        (project / "plan.json").write_text(
            '{"description": "d", "tasks": [{"prompt": "Write src/a.py", "expected_outputs": ["src/a.py"]}]}')
        # The dashboard needs a terminal (its curses view is tested in test_dashboard.py).
        lines = [ln for ln in usage.splitlines() if "manage.sh dashboard" not in ln]
        out = run("\n".join(lines), project, env)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "1 completed" in out.stdout and (project / "src" / "a.py").exists()
        assert (project / ".klauss" / "claude_tasks.db").exists(), "state lives at the project root"
    finally:
        stop_pool(project, env)
