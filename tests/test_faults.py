"""Faults that used to lose, stall or stop work (issue 13): a database deleted or replaced under a
running pool, slow worktree setup, a stale git index lock, a full disk, a broken or read-only
database, and an unbounded WAL. Each test reproduces the fault for real (real git, real files,
hostile executables written by the test) and would fail on the code before the fix."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import test_worktrees
from test_worktrees import describe

import claude_queue
import config
import processes
from conftest import blocking_task, fake, pid_alive, wait_for

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the tests read /proc (Linux)")


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


# --- 13: a long worktree setup keeps the worker's heartbeat ----------------------------------------

repo = test_worktrees.repo  # a real git project with the fake claude on PATH (tests/test_worktrees.py)

WAIT_SETUP = """import os, sys, time
open(sys.argv[1], "a").write("started\\n")
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
"""


def _slow_setup(repo, lease):
    script, started, go = repo.tmp / "setup.py", repo.tmp / "setup.started", repo.tmp / "setup.go"
    script.write_text(WAIT_SETUP)
    (repo.root / ".klauss.toml").write_text(
        f"[workers]\nlease_seconds = {lease}\nheartbeat_seconds = 0.2\nshutdown_grace_seconds = 1\nidle_timeout = 0\n"
        "restart_backoff_max_seconds = 0.2\n[queue]\nretry_backoff_seconds = 0\n"
        f"[isolation]\nmode = \"worktree\"\nsetup_command = {json.dumps([sys.executable, str(script), str(started), str(go)])}\n")
    return started, go


def test_a_setup_command_longer_than_two_leases_keeps_its_worker_alive(repo):
    lease = 2
    started, go = _slow_setup(repo, lease)
    q = repo.queue
    tid = q.add_task(fake("write", "o.txt", content="x\n"), expected_outputs=["o.txt"])
    out = subprocess.run([sys.executable, str(test_worktrees.ROOT / "claude_coordinator.py"), "start", "1"],
                         cwd=repo.root, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    wait_for(started.exists, what="the setup command to start")
    since = time.time()
    # The coordinator kills a worker silent for 2 leases: the row must keep moving past that.
    wait_for(lambda: q.list_workers()[0]["last_heartbeat"] > since + 3 * lease,
             what=lambda: f"the worker row to be renewed during setup: {q.list_workers()}")
    go.touch()
    wait_for(lambda: q.get_task(tid).status in ("completed", "failed"), what=lambda: describe(q, [tid]))
    t = q.get_task(tid)
    assert t.status == "completed" and t.attempts_used == 1, describe(q, [tid])
    assert started.read_text() == "started\n", "setup ran once"
    assert "silent" not in (repo.cfg.logs_dir / "coordinator.log").read_text()


def test_a_worker_dying_in_setup_names_the_setup_command(repo):
    started, go = _slow_setup(repo, 10)
    q = repo.queue
    tid = q.add_task(fake("write", "o.txt", content="x\n"), expected_outputs=["o.txt"], max_attempts=1)
    worker = subprocess.Popen([sys.executable, str(test_worktrees.WORKER), "w1"], cwd=repo.root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        try:
            wait_for(started.exists, what="the setup command to start")
            # Found by what only the setup command's environment has (its worktree), not by name.
            setup = processes.env_processes("KLAUSS_WORKTREE", str(repo.cfg.state_dir / "worktrees" / f"task-{tid}"))
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        assert setup, "the setup command runs"
        # What the coordinator does when a worker dies: sweep the run marker its row recorded (the
        # setup command, in a session of its own, outlives the worker's group), return the task.
        marker = q.list_workers()[0]["info"]["run_marker"]
        assert marker and all(processes.env_value(p, processes.RUN_MARKER_VAR) == marker for p in setup)
        assert set(setup) <= set(processes.kill_run_processes(marker))
        wait_for(lambda: not any(processes.pid_alive(p) for p in setup), what=f"the setup processes {setup} to end")
        assert processes.env_processes(processes.RUN_MARKER_VAR, marker) == []
        assert q.recover_stale(worker_id="w1") == [tid]
    finally:
        go.touch()  # whatever happened above, no setup.py is left waiting
    t = q.get_task(tid)
    assert t.status == "failed" and "setup_command" in t.error and "setup.py" in t.error, t.error


# --- 14: a stale index.lock in the job's merge worktree ----------------------------------------------

def test_a_stale_index_lock_in_the_merge_worktree_does_not_break_later_merges(repo):
    orch = test_worktrees.ClaudeOrchestrator("t")
    job, [first] = orch.submit_plan("two files", [
        {"prompt": fake("write", "a.txt", content="a\n"), "expected_outputs": ["a.txt"]}], isolation="worktree")
    repo.run_worker()
    q = orch.queue
    assert q.get_task(first).outcome["merge"] == "merged", describe(q, [first])
    mpath = repo.cfg.state_dir / "worktrees" / f"merged-{job}"
    gitdir = test_worktrees.git(mpath, "rev-parse", "--absolute-git-dir")
    # What a git SIGKILLed in the middle of `reset --hard` (with its worker) leaves behind.
    (test_worktrees.Path(gitdir) / "index.lock").write_text("")
    second = orch.add_subtask(job, fake("write", "b.txt", content="b\n"), expected_outputs=["b.txt"])
    repo.run_worker()
    t = q.get_task(second)
    assert t.status == "completed" and t.outcome["merge"] == "merged", (t.outcome.get("merge"), t.outcome.get("warnings"))
    assert repo.show(f"klauss/{job}/merged", "a.txt") == "a" and repo.show(f"klauss/{job}/merged", "b.txt") == "b"


def test_a_merge_error_is_not_reported_as_a_clean_job():
    job = {"id": "j1", "metadata": {"isolation": "worktree", "merge": "auto"}}
    results = {1: {"status": "completed", "merge": "merged"}, 2: {"status": "completed", "merge": "error"}}
    text = "\n".join(test_worktrees.ClaudeOrchestrator._isolation_summary(job, results))
    assert "1 task(s) merged" in text and "Not merged:** 1 completed task(s)" in text and "#2" in text


# --- 15: a full disk pauses the pool instead of killing it -----------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs (root only): filled and freed by the test, like a real full disk."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt):
    """Write a filler file until the disk is full; returns its path (delete it to free the space).
    Every log is first padded to a whole page, so its next line needs space (tmpfs allocates pages)."""
    for log in mnt.rglob("*.log"):
        with open(log, "ab") as fh:
            fh.write(b"\n" * (-log.stat().st_size % 4096))
    filler = mnt / "filler"
    with open(filler, "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == 28, exc
    return filler


def _full_disk_project(make_project, tiny_disk, db_on_disk):
    project = make_project()
    paths = f"[paths]\nstate_dir = \"{tiny_disk / 'state'}\"\n"
    if not db_on_disk:
        paths += f"db = \"{project.tmp / 'tasks.db'}\"\n"
    with open(project.root / ".klauss.toml", "a") as fh:
        fh.write(paths)
    assert project.manage("start", "2").returncode == 0
    project.wait_pool_up(2)
    go = project.tmp / "go"
    ids = project.queue().add_tasks([{"prompt": f"{fake('wait_for_file', str(go))}\ntask {i}"} for i in range(6)])
    wait_for(lambda: project.queue().get_stats()["in_progress"] == 2, what="two tasks running")
    pids = [project.flag()["pid"], *project.flag()["worker_pids"].values()]
    return project, go, ids, pids


def test_a_full_log_disk_pauses_the_pool_and_it_resumes(make_project, tiny_disk):
    project, go, ids, pids = _full_disk_project(make_project, tiny_disk, db_on_disk=False)
    filler = fill(tiny_disk)
    go.touch()  # the two running tasks finish; their workers' log lines no longer fit
    q = project.queue()
    paused = wait_for(lambda: (q.get_flag(f"paused@host:{q.cfg.host}") or {}).get("value"), what=lambda: "the pool to pause: " + describe(q, ids))
    assert paused["reason"] == "disk_full" and "disk full" in paused["message"], paused
    status = project.manage("status")
    assert "disk full" in status.stdout and status.returncode == 0, status.stdout + status.stderr
    assert all(os.path.exists(f"/proc/{p}") for p in pids), "nobody died of the full disk"
    filler.unlink()
    wait_for(lambda: all(q.get_task(t).status == "completed" for t in ids), what=lambda: describe(q, ids))
    assert "writes work again" in (tiny_disk / "state" / "logs" / "coordinator.log").read_text()
    assert q.get_flag(f"paused@host:{q.cfg.host}") is None


def test_a_full_disk_under_the_database_kills_nobody(make_project, tiny_disk):
    project, go, ids, pids = _full_disk_project(make_project, tiny_disk, db_on_disk=True)
    filler = fill(tiny_disk)
    go.touch()
    # The running tasks end; recording them fails for now.
    wait_for(lambda: not [p for p in project.processes() if p not in pids and "fake_claude" in
                          " ".join(test_worktrees.claude_queue.process_args(p) or [])],
             what="the running claude processes to end")
    status = project.manage("status")
    assert status.returncode == 0 and "disk full" in status.stdout, status.stdout + status.stderr
    assert all(os.path.exists(f"/proc/{p}") for p in pids), "nobody died of the full disk"
    # A worker dying now: the coordinator's bookkeeping writes fail too, and it must live on.
    os.killpg(pids[1], signal.SIGKILL)
    wait_for(lambda: not pid_alive(pids[1]), what="the worker to die")
    filler.unlink()
    q = project.queue()
    wait_for(lambda: all(q.get_task(t).status == "completed" for t in ids), timeout=90,
             what=lambda: describe(q, ids))
    assert os.path.exists(f"/proc/{pids[0]}") and project.flag()["pid"] == pids[0]


# --- 16: a corrupt, foreign or read-only database ---------------------------------------------------

def _corrupt(path):
    path.write_bytes(b"this is not an SQLite database\n" * 200)


def _foreign(path):
    conn = sqlite3.connect(str(path))
    conn.execute("CREATE TABLE tasks (id INTEGER PRIMARY KEY, what TEXT)")
    conn.commit()
    conn.close()


@pytest.fixture
def in_process(monkeypatch, capsys):
    """in_process(project, *argv): a manage.sh command through the entry point of the program
    manage.sh runs for it (the pool's commands: claude_coordinator; the queue's: submit_task), in
    this process, in the project as manage.sh would run it; a CompletedProcess. Each program still
    runs as a program too in the tests that use this (a start costs ~0.1 s of CPU here)."""
    import claude_coordinator
    import submit_task

    def run(project, *argv):
        for var in [v for v in os.environ if v.startswith("KLAUSS_")]:
            monkeypatch.delenv(var)
        for var, value in project.env.items():
            monkeypatch.setenv(var, value)
        monkeypatch.chdir(project.root)
        main = claude_coordinator.main if argv[0] in claude_coordinator.HANDLERS else submit_task.main
        capsys.readouterr()
        code = main(list(argv))
        return subprocess.CompletedProcess(argv, code, *capsys.readouterr())
    return run


@pytest.mark.parametrize("spoil, words", [(_corrupt, "is corrupt"), (_foreign, "is not a Klauss database")])
def test_a_broken_database_gets_one_line_and_the_right_fix(make_project, in_process, spoil, words):
    """status (the pool's program), list (the queue's) and doctor as programs; the others in process."""
    project = make_project()
    project.state.mkdir()
    db = project.state / "claude_tasks.db"
    spoil(db)
    for argv in (["status"], ["start", "1"], ["stop"], ["kill"], ["logs", "task", "1"], ["list"], ["stats"]):
        # manage.sh fails the test on a traceback; in this process, the exception does
        out = project.manage(*argv) if argv in (["status"], ["list"]) else in_process(project, *argv)
        assert out.returncode != 0, (argv, out.stdout)
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and f"mv {db} " in lines[0], (argv, out.stderr)
    doctor = project.manage("doctor").stdout
    assert words in doctor and f"fix: move it aside (mv {db} " in doctor or "fix: pass another --db" in doctor, doctor
    assert "writable" not in doctor


@pytest.fixture
def read_only_state(tmp_path):
    """A project whose state directory then becomes read-only (a read-only tmpfs as root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to remount a file system read-only")
    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_read_commands_work_on_a_read_only_state_dir(make_project, read_only_state, in_process):
    """status and list (the pool's and the queue's programs) and both writes as programs; the
    other reads in process."""
    project = make_project()
    with open(project.root / ".klauss.toml", "a") as fh:
        fh.write(f"[paths]\nstate_dir = \"{read_only_state / 'state'}\"\n")
    assert project.manage("submit", "the read-only task").returncode == 0
    project.queue().submit_job("ro job", [{"prompt": "t2"}])
    project.queue().close()
    project._queue = None
    subprocess.run(["mount", "-o", "remount,ro", str(read_only_state)], check=True)
    for argv, expect in ((["status"], "pending"), (["list"], "the read-only task"), (["show", "1"], "the read-only task"),
                         (["stats"], "2"), (["jobs"], "ro job"), (["status", "--json"], '"pending": 2')):
        out = project.manage(*argv) if argv in (["status"], ["list"]) else in_process(project, *argv)
        assert out.returncode == 0 and expect in out.stdout, (argv, out.stdout, out.stderr)
    for argv in (["submit", "cannot be written"], ["start", "1"]):
        out = project.manage(*argv)
        assert out.returncode != 0 and len(out.stderr.strip().splitlines()) == 1, (argv, out.stderr)


# --- 19: the WAL stays bounded while tasks flow -------------------------------------------------------

def test_the_wal_stays_bounded_while_many_tasks_flow(make_queue):
    q = make_queue()
    wal = f"{q.db_path}-wal"
    big = "x" * 4000
    # A reader that holds its snapshot (a slow `list`, an orchestrator between reads) keeps every
    # checkpoint from finishing, so the WAL grows past the limit meanwhile.
    reader = sqlite3.connect(str(q.db_path))
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM tasks").fetchone()
    q.add_tasks([{"prompt": f"{big} {i}"} for i in range(2000)])
    q.checkpoint()
    bound = 4 * 1024 * 1024  # claude_queue.WAL_LIMIT_BYTES
    assert os.path.getsize(wal) > 2 * bound
    reader.rollback()
    reader.close()
    # Then tasks flow and the coordinator checkpoints now and then, as it does every tick.
    sizes = []
    for batch in range(10):
        for _ in range(50):
            task = q.claim_task("w1", lease_seconds=60)
            q.complete_task(task.id, "w1", {"result": big}, attempt=task.attempt)
        q.add_tasks([{"prompt": f"{big} more {batch} {i}"} for i in range(50)])
        q.checkpoint()
        sizes.append(os.path.getsize(wal))
    assert max(sizes) <= bound, sizes


def test_sqlite_disk_full_is_one_clear_error(tiny_disk):
    db = tiny_disk / "q.db"
    q = claude_queue.TaskQueue(str(db), cfg=config.load_config(db=str(db), cwd=tiny_disk, env={}))
    q.add_task("before")
    q._connect().execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()  # every new write must grow the WAL
    filler = fill(tiny_disk)
    with pytest.raises(claude_queue.DiskFull, match=r"^disk full: cannot write the database .*q\.db"):
        q.add_tasks([{"prompt": "x" * 100_000} for _ in range(5)])
    assert [t.prompt for t in q.list_tasks()] == ["before"]
    filler.unlink()
    q.add_task("after")
    q.close()
