"""Every command Klauss prints runs as printed from a project root with Klauss in `klauss/`:
what a failing job, a stopped pool and a worktree job print is run there, and none of it says
"can't open file", "not found" or "unknown command"."""

import os
import re

import pytest

from conftest import GIT, SubmoduleProject, fake  # noqa: F401 - SubmoduleProject is imported from here by other test files

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the pool reads /proc (Linux)")


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
