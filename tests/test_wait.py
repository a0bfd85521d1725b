"""Waiting can be resumed and interrupted: `manage.sh wait JOB` waits again and ends as `run` does;
Ctrl-C while `run`, `wait` or `submit --wait` waits says in one line that the work goes on and how
to wait again or cancel, and exits 130; `submit --wait` starts a pool as `run` does."""

import json
import os
import re
import signal
import subprocess
import time

import pytest

import claude_coordinator
import hints
import klauss_mcp
import orchestrator
from conftest import SubmoduleProject, fake

STOPPED = re.compile(r"^stopped waiting; (job|task) (\S+) keeps running: `([^`]+)`, `([^`]+)`$")


@pytest.fixture
def project(tmp_path):
    made = SubmoduleProject(tmp_path)
    made.started = []
    yield made
    # A waiter a failed test left running would start the pool again after the kill.
    for proc in made.started:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    made.manage("kill")


def start(project, *args):
    proc = subprocess.Popen(["klauss/manage.sh", *args], cwd=str(project.root), env=project.env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    project.started.append(proc)
    return proc


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

    proc = start(project, "submit", "wait\n" + fake("wait_for_file", "go", timeout=120) + "\n" + fake("text", "went"),
                 "--wait")
    code, out, err = interrupt(proc, "waiting for it to finish")
    m = STOPPED.match(err.strip().splitlines()[-1])
    assert code == 130 and "Traceback" not in err and m and m.group(1) == "task", err
    task = m.group(2)
    assert m.groups()[2:] == (f"klauss/manage.sh wait {task}", f"klauss/manage.sh cancel {task}")

    # `wait` on the task: interrupted too, then resumed to its result (as submit --wait prints it).
    code, out, err = interrupt(start(project, "wait", task), "waiting for task")
    assert code == 130 and STOPPED.match(err.strip().splitlines()[-1]).group(1) == "task", err
    waiting = start(project, "wait", task)
    read_until(waiting, "waiting for task")
    (project.root / "go").write_text("")
    out, err = waiting.communicate(timeout=120)
    assert (waiting.returncode, out) == (0, "went\n"), err
    assert project.manage("wait", "999").returncode == 1


def test_every_waiter_says_why_nothing_moves(tmp_path, monkeypatch, capsys):
    root = tmp_path / "proj"
    root.mkdir()
    (root / ".klauss.toml").write_text("[workers]\nauto_start = false\n")
    monkeypatch.chdir(root)
    orch = orchestrator.ClaudeOrchestrator("t")
    job, _ = orch.submit_plan("d", [{"prompt": "x"}])
    q = orch.queue
    mcp = klauss_mcp.KlaussTools()

    # No pool: the command (or the tool) that starts one.
    with pytest.raises(orchestrator.OrchestratorError, match=re.escape(f"`{hints.command('start', 1)}`")):
        orch.wait_and_collect(job, timeout=5)
    assert "no pool running: call the start_workers tool" in mcp.call("job_status", {"job_id": job})

    # A pool paused by a usage limit (this process stands in for its coordinator): until when, and why.
    q.set_flag("coordinator", {"pid": os.getpid(), "workers": 1})
    until = time.time() + 600
    q.set_flag("paused", {"message": "usage limit reached"}, until=until)
    paused = f"paused until {time.strftime('%H:%M:%S', time.localtime(until))} ("
    capsys.readouterr()
    assert orch.wait_and_collect(job, timeout=0.2, show_progress=True).timed_out
    assert paused in capsys.readouterr().err and "usage limit reached" in orch.get_job_status(job)["pool"]["text"]
    assert paused in mcp.call("job_status", {"job_id": job})
    waited = mcp.call("wait_job", {"job_id": job, "timeout_seconds": 0.2})
    assert "still running" in waited and paused in waited
    assert claude_coordinator.main(["status"]) == 0 and paused in capsys.readouterr().out

    # Workers stopped by a configuration error: what to fix, and how to go on.
    q.set_flag("config_error", {"message": "Not logged in", "fix": "run claude /login"})
    stopped = "workers stopped by a configuration error: Not logged in. To fix: run claude /login. "
    assert orch.wait_and_collect(job, timeout=0.2, show_progress=True).timed_out
    assert f"{stopped}Restart them with `{hints.command('restart')}`" in capsys.readouterr().err
    assert stopped + "Then call start_workers" in mcp.call("job_status", {"job_id": job})
    assert claude_coordinator.main(["status"]) == 0 and stopped in capsys.readouterr().out


def test_progress_into_a_log_prints_only_changes_and_the_end_says_the_pool_stays(project):
    project.plan("plan.json", {"description": "slow", "tasks": [
        {"id": "a", "prompt": "slow\n" + fake("sleep", 2.5) + "\n" + fake("text", "done")}]})
    ran = project.manage("run", "plan.json", "--yes")  # stderr is a pipe here, as in a log
    assert ran.returncode == 0, ran.stderr
    progress = [line for line in ran.stderr.splitlines() if line.startswith("[job-")]
    contents = [line.rsplit(" · ", 1)[0] for line in progress]
    assert progress and all(a != b for a, b in zip(contents, contents[1:])), progress
    assert all(re.search(r" · \$\d+\.\d{4}", line) for line in progress), progress
    last = ran.stderr.strip().splitlines()[-1]
    assert "the pool stays up until stopped (idle_timeout = 0)" in last, ran.stderr
    [stop] = re.findall(r"`([^`]+)`", last)
    assert stop == "klauss/manage.sh stop"
    project.run_hint(stop)
    assert "pool: not running" in project.manage("status").stdout


def test_a_failed_start_says_the_job_is_queued_and_the_same_plan_resumes_it(project):
    project.plan("plan.json", {"description": "hello", "tasks": [{"id": "a", "prompt": "say hi\n" + fake("text", "hi")}]})
    # The same plan, laid out differently: the same content.
    project.plan("again.json", {"tasks": [{"prompt": "say hi\n" + fake("text", "hi"), "id": "a"}], "description": "hello"})
    fixed_env = dict(project.env)
    project.env["KLAUSS_CLAUDE"] = str(project.root / "no-such-claude")

    first = project.manage("run", "plan.json", "--yes")
    job = re.search(r"job (\S+): 1 task", first.stderr).group(1)
    last = first.stderr.strip().splitlines()[-1]
    assert first.returncode == 1 and f"job {job} is still queued" in last, first.stderr
    wait, cancel = re.findall(r"`([^`]+)`", last)[-2:]
    assert (wait, cancel) == (f"klauss/manage.sh wait {job}", f"klauss/manage.sh cancel --job {job}")

    second = project.manage("run", "again.json", "--yes")
    assert second.returncode == 1 and f"job {job}: the same plan is still unfinished (0/1 done); resuming it" \
        in second.stderr, second.stderr
    assert [j["id"] for j in json.loads(project.manage("jobs", "--json").stdout)] == [job]

    third = project.manage("run", "plan.json", "--yes", "--new")
    other = re.search(r"job (\S+): 1 task", third.stderr).group(1)
    assert third.returncode == 1 and other != job
    assert len(json.loads(project.manage("jobs", "--json").stdout)) == 2

    project.env = fixed_env  # claude is back: the hints go on from here
    cancel_copy = project.hinted(third.stderr)[-1]
    assert cancel_copy == f"klauss/manage.sh cancel --job {other}"
    project.run_hint(cancel_copy)
    resumed = project.run_hint(wait)
    assert resumed.returncode == 0 and "hi" in resumed.stdout, resumed.stderr


def test_a_run_stopped_by_a_login_problem_says_the_job_is_queued(project):
    project.plan("plan.json", {"description": "d", "tasks": [{"prompt": "x\n" + fake("error", "not_logged_in")}]})
    ran = project.manage("run", "plan.json", "--yes")
    job = re.search(r"job (\S+): 1 task", ran.stderr).group(1)
    last = ran.stderr.strip().splitlines()[-1]
    assert ran.returncode == 1 and last.startswith("error: workers stopped by a configuration error: "), ran.stderr
    assert "/login" in last and f"job {job} is still queued" in last
    assert re.findall(r"`([^`]+)`", last)[-3:] == ["klauss/manage.sh restart", f"klauss/manage.sh wait {job}",
                                                   f"klauss/manage.sh cancel --job {job}"]
    assert "pending" in project.manage("list").stdout


def test_submit_wait_says_when_workers_stop_on_a_login_problem(project):
    out = project.manage("submit", "x\n" + fake("error", "not_logged_in"), "--wait")
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and "workers stopped by a configuration error: " in last and "/login" in last, out.stderr
    assert "stays queued" in last and "klauss/manage.sh cancel 1" in last
