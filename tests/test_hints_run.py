"""Every command Klauss prints runs as printed from a project root with Klauss in `klauss/`:
what a failing job, a stopped pool and a worktree job print is run there, and none of it says
"can't open file", "not found" or "unknown command"."""

import json
import os
import re
import subprocess
import sys

import pytest

from conftest import copy_klauss, fake, install_fake_claude

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the pool reads /proc (Linux)")

GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]
SETTINGS = ("[workers]\nlease_seconds = 10\nheartbeat_seconds = 0.2\nshutdown_grace_seconds = 1\nmax_workers = 2\n"
            "idle_timeout = 0\n[queue]\nretry_backoff_seconds = 0\nmax_attempts = 1\n")
# A printed command: the manage.sh path as the project root sees it, up to the end of its quote.
HINT = re.compile(r"klauss/manage\.sh(?: [^`)\n;,]*)?")
BROKEN = ("can't open file", "No such file", "command not found", "not found", "unknown command",
          "invalid choice", "unrecognized arguments", "Traceback")


class SubmoduleProject:
    """A git project with Klauss copied into klauss/ and the fake claude on PATH."""

    def __init__(self, tmp_path):
        self.root = tmp_path / "proj"
        self.root.mkdir()
        copy_klauss(self.root / "klauss")
        (self.root / ".klauss.toml").write_text(SETTINGS)
        (self.root / "README").write_text("a project\n")
        bindir = tmp_path / "bin"
        install_fake_claude(bindir)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
        self.env.update(PATH=f"{bindir}:{os.environ['PATH']}", KLAUSS_PYTHON=sys.executable)
        self.run("git", "init", "-q")
        self.run(*GIT, "add", "-A")
        self.run(*GIT, "commit", "-qm", "start")

    def run(self, *argv, check=True, **kw):
        out = subprocess.run(list(argv), cwd=str(self.root), env=self.env, capture_output=True, text=True,
                             timeout=180, stdin=subprocess.DEVNULL, **kw)
        if check:
            assert out.returncode == 0, (argv, out.stdout, out.stderr)
        return out

    def manage(self, *args, check=False):
        return self.run("klauss/manage.sh", *args, check=check)

    def plan(self, name, plan):
        (self.root / name).write_text(json.dumps(plan))
        return name

    def hinted(self, *outputs):
        found = []
        for text in outputs:
            for match in HINT.finditer(text):
                command = re.sub(r"\s*\[[A-Z]+\]", "", match.group(0)).strip()  # "[N]": an optional argument
                if command not in found:
                    found.append(command)
        return found

    def run_hint(self, command):
        out = self.run("bash", "-c", command, check=False)
        said = out.stdout + out.stderr
        assert out.returncode not in (2, 126, 127) and not any(b in said for b in BROKEN), (command, said)
        return out


@pytest.fixture
def project(tmp_path):
    made = SubmoduleProject(tmp_path)
    yield made
    made.manage("kill")


def test_a_failing_job_and_a_stopped_pool_print_commands_that_run(project):
    stopped = [project.manage("status"), project.manage("resize", "2"), project.manage("purge"),
               project.manage("submit", "x", "--priority", "high")]
    hints = project.hinted(*(o.stdout + o.stderr for o in stopped))
    assert "klauss/manage.sh start" in hints and "klauss/manage.sh start 2" in hints, hints
    assert "klauss/manage.sh purge --help" in hints and "klauss/manage.sh submit --help" in hints, hints

    plan = project.plan("plan.json", {"description": "fails", "tasks": [
        {"id": "bad", "prompt": "break\n" + fake("exit", 1, stderr="boom")}]})
    ran = project.manage("run", plan, "--yes")
    assert ran.returncode == 1, ran.stderr
    job = re.search(r"job (\S+): 1 task", ran.stderr).group(1)
    hints += project.hinted(ran.stdout, ran.stderr)
    assert f"klauss/manage.sh retry --failed --job {job}" in hints, ran.stdout
    for command in hints:
        project.run_hint(command)


def test_a_worktree_job_prints_a_merge_command_that_runs(project):
    plan = project.plan("wt.json", {"description": "isolated", "isolation": "worktree", "tasks": [
        {"id": "a", "prompt": "write\n" + fake("write", "a.txt", content="a\n"), "expected_outputs": ["a.txt"]}]})
    ran = project.manage("run", plan, "--yes")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    job = re.search(r"job (\S+): 1 task", ran.stderr).group(1)
    hints = project.hinted(ran.stdout, ran.stderr)
    assert f"klauss/manage.sh merge {job}" in hints, ran.stdout
    project.run(*GIT, "add", "wt.json")
    project.run(*GIT, "commit", "-qm", "plans")
    for command in hints:
        project.run_hint(command)
    assert (project.root / "a.txt").read_text() == "a\n"
