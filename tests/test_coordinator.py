"""The pool through the real scripts: claude_coordinator.py and manage.sh running the real worker
with the fake `claude` (tests/fake_claude.py) on PATH.

Every process a test starts carries a marker in its environment (inherited by the coordinator,
its workers and their claude children), so the fixture's finalizer finds and kills every one of
them even when a test fails half-way, and tests can prove that nothing was left behind. Tests
wait by polling the database, files and /proc with a deadline, never by sleeping a fixed time.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import (  # noqa: F401 - Project, MANAGE and ROOT are imported from here by other test files
    MANAGE,
    ROOT,
    Project,
    all_dead,
    blocking_task,
    fake,
    pid_alive,
    wait_for,
)

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the tests read /proc (Linux)")


@pytest.fixture
def project(make_project):
    return make_project()


STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ")


# --- the normal life of a pool ---------------------------------------------------------------------

def test_pool_runs_a_batch_logs_line_by_line_and_stops_cleanly(project):
    out = project.manage("start", "3")
    assert out.returncode == 0, out.stderr
    assert "3 of 3 worker(s) ready" in out.stdout
    flag = project.flag()
    assert flag["workers"] == 3 and flag["state"] == "running" and pid_alive(flag["pid"])
    assert (project.state / "coordinator.pid").read_text().strip() == str(flag["pid"])
    workers = project.workers()
    assert sorted(workers) == [f"worker_{n}@{project.queue().cfg.host}" for n in (1, 2, 3)]
    assert {w["pid"] for w in workers.values()} == set(flag["worker_pids"].values())

    # A task still running shows that its worker's log is written as it goes, not at exit.
    prompt, started, go = blocking_task(project, "slow")
    slow = project.queue().add_task(prompt)
    wait_for(started.exists, what="the slow task to start")
    wait_for(lambda: any(f"task {slow}: claimed" in p.read_text() for p in project.logs.glob("worker_*.log")),
             what="the claim to reach a worker log while the task runs")
    ids = project.queue().add_tasks([{"prompt": f"task number {i}"} for i in range(9)])
    for tid in ids:
        project.wait_status(tid, "completed")
    go.touch()
    project.wait_status(slow, "completed")

    def log_lines():
        return [line for p in project.logs.glob("worker_*.log") for line in p.read_text().splitlines()]

    # The worker logs a completion just after recording it, and the coordinator copies the line a
    # moment later: wait for the last one to arrive.
    wait_for(lambda: all(any(f"task {tid}: completed" in line for line in log_lines()) for tid in [slow, *ids]),
             what="every completion in the worker logs")
    assert sorted(p.name for p in project.logs.glob("worker_*.log")) == ["worker_1.log", "worker_2.log", "worker_3.log"]
    lines = log_lines()
    assert lines and all(STAMP.match(line) for line in lines), lines[:5]
    for tid in [slow, *ids]:
        assert sum(f"task {tid}: completed" in line for line in lines) == 1

    status = json.loads(project.manage("status", "--json").stdout)
    assert status["running"] and status["coordinator"]["pid"] == flag["pid"]
    assert status["queue"]["completed"] == 10 and len(status["workers"]) == 3

    out = project.manage("stop")
    assert out.returncode == 0 and "stopped" in out.stdout, out.stderr
    assert project.flag() is None and project.workers() == {}
    assert not (project.state / "coordinator.pid").exists()
    project.wait_no_processes(timeout=5)
    assert "stopped (SIGTERM received)" in (project.logs / "coordinator.log").read_text()


def test_stop_releases_a_running_task_without_spending_an_attempt(project):
    assert project.manage("start", "1").returncode == 0
    prompt, started, _go = blocking_task(project, "held")
    tid = project.queue().add_task(prompt)
    wait_for(started.exists, what="the task to start")
    claude_pid = wait_for(lambda: project.workers()[f"worker_1@{project.queue().cfg.host}"]["info"].get("claude_pid"), what="claude's pid")

    out = project.manage("stop")
    assert out.returncode == 0, out.stderr
    task = project.task(tid)
    assert task.status == "pending" and task.attempts_used == 0
    assert project.events(tid)[-1] == "released"
    assert all_dead([claude_pid])
    project.wait_no_processes(timeout=5)


def test_ctrl_c_stops_gracefully_and_a_second_one_kills_at_once(project):
    project.write_settings(shutdown_grace_seconds=60)
    coordinator = project.popen_coordinator("1")
    try:
        prompt, started, _go = blocking_task(project, "interrupted")
        tid = project.queue().add_task(prompt)
        wait_for(started.exists, what="the task to start")
        claude_pid = wait_for(lambda: project.workers()[f"worker_1@{project.queue().cfg.host}"]["info"].get("claude_pid"), what="claude's pid")
        coordinator.send_signal(signal.SIGINT)
        wait_for(lambda: project.flag()["state"] == "stopping", what="the pool to start stopping")
        assert pid_alive(claude_pid), "a running task gets its grace period"
        coordinator.send_signal(signal.SIGINT)
        assert coordinator.wait(timeout=20) == 0  # far sooner than the 60 s grace
    finally:
        coordinator.kill()
        stderr = coordinator.communicate()[1]
    assert "stopping (SIGINT received)" in stderr and "SIGINT again: killing the workers now" in stderr
    task = project.task(tid)
    assert task.status == "pending" and task.attempts_used == 0
    assert project.flag() is None and project.workers() == {}
    project.wait_no_processes(timeout=5)


# --- healing ----------------------------------------------------------------------------------------

def test_sigkilled_worker_mid_task_its_task_runs_again_at_once_and_completes_exactly_once(project):
    assert project.manage("start", "2").returncode == 0
    prompt, started, go = blocking_task(project, "victim")
    tid = project.queue().add_task(prompt)
    wait_for(started.exists, what="the task to start")
    holder = wait_for(lambda: project.task(tid).worker_id, what="the task's worker")
    row = wait_for(lambda: project.workers()[holder]["info"].get("claude_pid") and project.workers()[holder],
                   what="the worker to record claude")
    worker_pid, claude_pid = row["pid"], row["info"]["claude_pid"]
    started.unlink()

    os.kill(worker_pid, signal.SIGKILL)
    # The lease is 30 s: a rerun within it proves the coordinator returned the task itself.
    wait_for(started.exists, timeout=10, what="the task to run again")
    assert all_dead([claude_pid]), "the dead worker's claude must be killed, not left running"
    assert project.events(tid)[:4] == ["created", "claimed", "recovered", "claimed"]
    wait_for(lambda: holder in project.workers() and project.workers()[holder]["pid"] != worker_pid,
             what=f"{holder} to be restarted")

    go.touch()
    project.wait_status(tid, "completed")
    events = project.events(tid)
    assert events.count("completed") == 1 and events.count("claimed") == 2
    assert project.task(tid).attempts_used == 2
    log = (project.logs / "coordinator.log").read_text()
    assert f"{holder} (pid {worker_pid}) killed by SIGKILL; task(s) {tid} returned to the queue" in log
    assert f"{holder}: killed its orphaned claude (process group {claude_pid})" in log
    assert project.manage("stop").returncode == 0
    project.wait_no_processes(timeout=5)


def test_the_coordinator_returns_a_task_whose_lease_expired(project):
    assert project.manage("start", "1").returncode == 0
    project.wait_pool_up(1)
    # A holder the pool does not know, whose lease ran out: only recover_stale() can free it. The
    # pool is paused meanwhile, so no worker claims the task first or recovers it itself.
    queue = project.queue()
    queue.set_flag("paused", {"reason": "test"}, until=time.time() + 60)
    tid = queue.add_task("held by a ghost")
    assert queue.claim_task("ghost", lease_seconds=0.01).id == tid
    wait_for(lambda: project.task(tid).status == "pending", timeout=10, what="the coordinator to recover it")
    assert project.events(tid) == ["created", "claimed", "recovered"]
    wait_for(lambda: f"task {tid}: lease expired; returned to the queue" in (project.logs / "coordinator.log").read_text(),
             what="the recovery in the coordinator's log")
    queue.clear_flag("paused")
    project.wait_status(tid, "completed")
    assert project.manage("stop").returncode == 0


def test_sigkilled_coordinator_leaves_no_orphan_and_no_stuck_task(project):
    assert project.manage("start", "2").returncode == 0
    prompt, started, go = blocking_task(project, "orphan")
    tid = project.queue().add_task(prompt)
    wait_for(started.exists, what="the task to start")
    first = project.flag()["pid"]

    os.kill(first, signal.SIGKILL)
    # Workers notice, release their task and exit; their claude goes with them.
    project.wait_no_processes(timeout=15)
    task = project.task(tid)
    assert task.status == "pending" and task.attempts_used == 0
    assert project.workers() == {}
    assert (project.state / "coordinator.pid").read_text().strip() == str(first), "a stale pid file is left"
    status = json.loads(project.manage("status", "--json").stdout)
    assert status["running"] is False

    started.unlink()
    out = project.manage("start", "2")
    assert out.returncode == 0, out.stderr
    wait_for(started.exists, what="the task to run on the new pool")
    go.touch()
    project.wait_status(tid, "completed")
    assert project.manage("stop").returncode == 0
    project.wait_no_processes(timeout=5)


def test_a_second_coordinator_is_refused_and_names_the_first(project):
    assert project.manage("start", "1").returncode == 0
    first = project.flag()["pid"]
    out = project.coordinator("1", timeout=30)
    assert out.returncode == 0  # the pool asked for is there: said, not an error
    assert f"pid {first}" in out.stdout and "already running" in out.stdout
    out = project.manage("start", "2")
    assert out.returncode == 0 and f"pid {first}" in out.stdout
    db = project.state / "claude_tasks.db"
    out = project.coordinator("run", "1", str(db), timeout=30, cwd=project.tmp)
    assert out.returncode == 0 and f"pid {first}" in out.stdout
    assert project.flag()["pid"] == first and len(project.workers()) == 1
    assert project.manage("stop").returncode == 0


def test_idle_pool_shuts_itself_down(project):
    project.write_settings(idle_timeout=0.5)
    tid = project.queue().add_task("one small task")  # queued first: the pool is never idle before it
    coordinator = project.popen_coordinator("2")
    try:
        assert coordinator.wait(timeout=30) == 0
    finally:
        coordinator.kill()
        stderr = coordinator.communicate()[1]
    assert project.task(tid).status == "completed"
    assert "stopping (idle for 0.5s)" in stderr
    assert project.flag() is None and project.workers() == {}
    project.wait_no_processes(timeout=5)


def test_a_worker_that_keeps_crashing_is_given_up_with_the_reason(project):
    crasher = [sys.executable, "-c", "import sys; print('error: cannot import foo'); sys.exit(1)"]
    # The worker command is the supervisor's Python API (the command line has no such option).
    script = ("import sys, config, supervisor; "
              f"sys.exit(supervisor.Coordinator(config.load_config(), 1, worker_cmd={crasher!r}).run())")
    coordinator = subprocess.Popen([sys.executable, "-c", script], cwd=str(project.root),
                                   env={**project.env, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert coordinator.wait(timeout=30) == 1
    finally:
        coordinator.kill()
        stderr = coordinator.communicate()[1]
    me = project.queue().cfg.host
    assert f"worker_1@{me} not restarted: 3 immediate crashes in a row; last: exit code 1: cannot import foo" in stderr
    assert stderr.count(f"worker_1@{me} restarted") == 2
    assert project.flag() is None


def test_claude_missing_the_pool_says_so_instead_of_looping(make_project):
    project = make_project(claude=False)
    out = project.manage("start", "2")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "claude CLI not found" in out.stderr
    log = (project.logs / "coordinator.log").read_text()
    assert "restarted (pid" not in log
    assert f"worker_1@{project.queue().cfg.host} not restarted: configuration error: claude CLI not found" in log
    assert project.flag() is None
    project.wait_no_processes(timeout=5)


def test_not_logged_in_stops_the_pool_with_the_fix_and_keeps_the_task(project):
    assert project.manage("start", "2").returncode == 0
    coordinator = project.flag()["pid"]
    tid = project.queue().add_task(fake("error", "not_logged_in"))
    wait_for(lambda: not pid_alive(coordinator), what="the pool to stop by itself")
    project.wait_no_processes(timeout=5)
    log = (project.logs / "coordinator.log").read_text()
    assert "stopping (no worker can run: configuration error: Claude is not authenticated" in log
    task = project.task(tid)
    assert task.status == "pending" and task.attempts_used == 0
    status = project.manage("status").stdout
    assert "pool: not running" in status and "configuration error:" in status and "/login" in status
    doctor = project.manage("doctor")
    assert doctor.returncode == 1 and "FAIL workers: stopped on a configuration error" in doctor.stdout


def test_a_stale_lock_and_pid_file_do_not_block_a_start(project):
    project.state.mkdir()
    (project.state / "coordinator.pid").write_text("999999\n")
    (project.state / "coordinator.lock").write_text("999999\n")
    project.queue().set_flag("coordinator", {"pid": 999999, "workers": 3, "state": "running"})
    out = project.manage("start", "1")
    assert out.returncode == 0, out.stderr
    assert project.flag()["pid"] != 999999
    assert project.manage("stop").returncode == 0


# --- looking at and controlling a running pool -------------------------------------------------------

def test_status_ps_logs_and_kill_see_only_our_processes(project):
    assert project.manage("start", "2").returncode == 0
    prompt, started, _go = blocking_task(project, "watched")
    tid = project.queue().add_task(prompt)
    wait_for(started.exists, what="the task to start")
    holder = project.task(tid).worker_id
    claude_pid = wait_for(lambda: project.workers()[holder]["info"].get("claude_pid"), what="claude's pid")
    unrelated = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=project.env)
    try:
        status = json.loads(project.manage("status", "--json").stdout)
        busy = [w for w in status["workers"] if w["worker_id"] == holder][0]
        assert busy["state"] == "busy" and busy["current_task"] == tid and busy["claude_pid"] == claude_pid
        assert busy["cpu_percent"] is not None and busy["rss_kb"] > 0
        text = project.manage("status").stdout
        assert f"#{tid}" in text and "queue: 0 pending, 1 running" in text

        roles = {p["role"].split(" (")[0]: p["pid"] for p in json.loads(project.manage("ps", "--json").stdout)}
        assert roles["coordinator"] == project.flag()["pid"] and roles["claude"] == claude_pid
        assert unrelated.pid not in roles.values()

        assert f"task {tid}: claimed" in project.manage("logs", "worker", holder.split("_")[1].split("@")[0]).stdout
        history = project.manage("logs", "task", str(tid)).stdout
        assert "claimed" in history and f"task-{tid}-attempt-1.jsonl" in history
        assert "pool up: 2 of 2" in project.manage("logs").stdout

        out = project.manage("kill")
        assert out.returncode == 0 and "coordinator" in out.stdout, out.stderr
        wait_for(lambda: project.processes() == [unrelated.pid], timeout=10, what="only the unrelated process to remain")
        task = project.task(tid)
        assert task.status == "pending" and task.attempts_used == 0
        assert project.flag() is None and project.workers() == {}
    finally:
        unrelated.kill()
        unrelated.wait()


def test_resize_and_restart(project):
    assert project.manage("start", "1").returncode == 0
    out = project.coordinator("resize", "3")
    assert out.returncode == 0, out.stderr
    project.wait_pool_up(3)
    assert project.coordinator("resize", "2").returncode == 0
    wait_for(lambda: sorted(project.workers()) == [f"worker_{n}@{project.queue().cfg.host}" for n in (1, 2)],
             what="the pool to shrink")
    first = project.flag()["pid"]
    out = project.manage("restart")
    assert out.returncode == 0, out.stderr
    assert project.flag()["pid"] != first and project.flag()["workers"] == 2
    assert project.manage("stop").returncode == 0
    project.wait_no_processes(timeout=5)
