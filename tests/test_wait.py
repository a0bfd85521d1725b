"""Waiting can be resumed and interrupted: `manage.sh wait JOB` waits again and ends as `run` does;
Ctrl-C while `run`, `wait` or `submit --wait` waits says in one line that the work goes on and how
to wait again or cancel, and exits 130; `submit --wait` starts a pool as `run` does."""

import json
import re
import signal
import subprocess

import pytest
from test_hints_run import SubmoduleProject

from conftest import fake

STOPPED = re.compile(r"^stopped waiting; (job|task) (\S+) keeps running: `([^`]+)`, `([^`]+)`$")


@pytest.fixture
def project(tmp_path):
    made = SubmoduleProject(tmp_path)
    yield made
    made.manage("kill")


def start(project, *args):
    return subprocess.Popen(["klauss/manage.sh", *args], cwd=str(project.root), env=project.env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def read_until(proc, marker):
    """Lines of the process's stderr up to the first that contains `marker`."""
    lines = []
    while True:
        line = proc.stderr.readline()
        assert line, f"exited ({proc.wait()}) before saying {marker!r}: {''.join(lines)}"
        lines.append(line)
        if marker in line:
            return lines


def interrupt(proc, marker):
    """Ctrl-C once the process says it waits; returns (exit code, stdout, stderr)."""
    before = read_until(proc, marker)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, "".join(before) + err


def test_ctrl_c_stops_waiting_and_wait_resumes(project):
    plan = {"description": "slow", "tasks": [
        {"id": "a", "prompt": "wait\n" + fake("wait_for_file", "go", timeout=120) + "\n" + fake("text", "went")}]}
    project.plan("plan.json", plan)

    code, out, err = interrupt(start(project, "run", "plan.json", "--yes"), "waiting for job")
    job = re.search(r"job (\S+): 1 task", err).group(1)
    last = err.strip().splitlines()[-1]
    assert code == 130 and "Traceback" not in err and out == "", err
    m = STOPPED.match(last)
    assert m and m.groups() == ("job", job, f"klauss/manage.sh wait {job}", f"klauss/manage.sh cancel --job {job}"), last

    # `wait` can itself be interrupted, and resumed again; the task ran on meanwhile.
    code, out, err = interrupt(start(project, "wait", job), "waiting for job")
    assert code == 130 and "Traceback" not in err and STOPPED.match(err.strip().splitlines()[-1]), err
    waiting = start(project, "wait", job)
    read_until(waiting, "waiting for job")
    (project.root / "go").write_text("")
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err
    assert f"({job})" in out and "went" in out and "1 completed" in out.replace("**", "")

    again = project.manage("wait", job, "--json")
    assert again.returncode == 0 and json.loads(again.stdout)["job_id"] == job
    assert project.manage("wait", "job-nope").returncode == 1


def test_wait_ends_like_run_for_a_failed_job(project):
    project.plan("plan.json", {"description": "fails", "tasks": [
        {"id": "bad", "prompt": "break\n" + fake("exit", 1, stderr="boom")}]})
    ran = project.manage("run", "plan.json", "--yes")
    job = re.search(r"job (\S+): 1 task", ran.stderr).group(1)
    waited = project.manage("wait", job)
    assert ran.returncode == waited.returncode == 1
    # The same synthesis (only the wall time, which `wait` did not see, may differ).
    assert waited.stdout.splitlines()[0] == ran.stdout.splitlines()[0]
    assert waited.stdout.split("\n## ", 1)[1] == ran.stdout.split("\n## ", 1)[1]


def test_submit_wait_starts_a_pool_and_ctrl_c_says_how_to_go_on(project):
    # No pool runs: [workers] auto_start (on by default) starts one, as `run` does.
    done = project.manage("submit", "say hi\n" + fake("text", "hi there"), "--wait")
    assert done.returncode == 0 and done.stdout == "hi there\n", done.stderr

    proc = start(project, "submit", "wait\n" + fake("wait_for_file", "go", timeout=120), "--wait")
    code, out, err = interrupt(proc, "waiting for it to finish")
    m = STOPPED.match(err.strip().splitlines()[-1])
    assert code == 130 and "Traceback" not in err and m and m.group(1) == "task", err
    for command in m.groups()[2:]:
        project.run_hint(command)
