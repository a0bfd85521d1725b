"""Faults that used to lose, stall or stop work (issue 13): a database deleted or replaced under a
running pool, slow worktree setup, a stale git index lock, a full disk, a broken or read-only
database, and an unbounded WAL. Each test reproduces the fault for real (real git, real files,
hostile executables written by the test) and would fail on the code before the fix."""

import json
import os

import pytest
from test_coordinator import Project, blocking_task

import claude_queue
import config
from conftest import wait_for

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the tests read /proc (Linux)")


@pytest.fixture
def make_project(tmp_path):
    made = []

    def make(**kw):
        project = Project(tmp_path / f"p{len(made)}", **kw)
        made.append(project)
        return project

    yield make
    for project in made:
        project.cleanup()


def coordinator_log(project):
    path = project.logs / "coordinator.log"
    return path.read_text() if path.exists() else ""


# --- 9: the database deleted or replaced under a running pool --------------------------------------

def _remove_db(project, how):
    db = project.state / "claude_tasks.db"
    if how == "deleted":
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(f"{db}{suffix}")
            except FileNotFoundError:
                pass
    else:  # a restored backup: another Klauss database put in its place
        other = project.tmp / "other.db"
        cfg = config.load_config(db=str(other), cwd=project.tmp, env={})
        claude_queue.TaskQueue(str(other), cfg=cfg).close()
        os.replace(other, db)
        for suffix in ("-wal", "-shm"):
            try:
                os.unlink(f"{db}{suffix}")
            except FileNotFoundError:
                pass


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_pool_whose_database_vanished_stops_claiming_and_can_still_be_stopped(make_project, how):
    project = make_project()
    assert project.manage("start", "2").returncode == 0
    project.wait_pool_up(2)
    pid = project.flag()["pid"]
    old = project.queue()  # stays connected to the file the pool opened
    prompt, started, go = blocking_task(project, "busy")
    old.add_task(prompt)
    wait_for(started.exists, what="a task running")

    _remove_db(project, how)
    wait_for(lambda: f"was {how} under the running pool" in coordinator_log(project),
             what=lambda: "the coordinator to notice: " + coordinator_log(project)[-3000:])
    # Whatever reaches the old file now would be lost with it: nobody claims it.
    late = old.add_task("claimed by nobody")
    wait_for(lambda: sum(f"was {how} under the running pool" in p.read_text()
                         for p in project.logs.glob("worker_*.log")) >= 1, what="the idle worker to say so")
    assert old.get_task(late).status == "pending"

    status = project.manage("status")
    assert status.returncode == 0
    assert f"coordinator pid {pid} is running" in status.stdout, status.stdout
    assert f"was {how} under the running pool" in status.stdout, status.stdout
    assert json.loads(project.manage("status", "--json").stdout)["running"] is True

    # A second pool is refused while this one lives; stop finds it through the lock file.
    assert project.manage("start", "1").returncode != 0
    stop = project.manage("stop")
    assert stop.returncode == 0, stop.stderr
    assert f"coordinator pid {pid}" in stop.stdout + stop.stderr
    project.wait_no_processes()
    started.unlink()
    go.touch()
    assert project.manage("start", "1").returncode == 0


def test_kill_reaches_a_pool_whose_database_was_deleted(make_project):
    project = make_project()
    assert project.manage("start", "2").returncode == 0
    project.wait_pool_up(2)
    prompt, started, _go = blocking_task(project, "busy")
    project.queue().add_task(prompt)
    wait_for(started.exists, what="a task running")
    _remove_db(project, "deleted")
    wait_for(lambda: "was deleted under the running pool" in coordinator_log(project), what="the coordinator to notice")
    out = project.manage("kill")
    assert out.returncode == 0 and "coordinator" in out.stdout, out.stdout + out.stderr
    project.wait_no_processes(timeout=10)  # coordinator, both workers and the running claude
