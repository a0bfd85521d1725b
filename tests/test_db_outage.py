"""A database that goes away for a while (a PostgreSQL restart or failover) and comes back: the pool
rides it out. Runs go on, nothing is claimed or recorded meanwhile, a run that ends in the gap is
recorded once the server is back, and no worker is restarted or killed for it."""

import io
import json
import os
import signal
import threading

import pytest
from test_hosts import Host, blocking, completions

import claude_queue
import claude_worker
import config
import queue_postgres
import submit_task
from conftest import all_dead, wait_for
from orchestrator import ClaudeOrchestrator


@pytest.fixture
def server():
    import pg_server

    try:
        server = pg_server.PgServer.start()  # its own: the session's server is shared by other tests
    except pg_server.PgUnavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    yield server
    server.stop()


def _logs(host):
    return "".join(p.read_text(errors="replace") for p in sorted(host.cfg.logs_dir.glob("*.log")))


def _close(host, server):
    """A test that failed while the server was halted would leave its pool waiting for it for
    good: the pool is stopped through the database, so the server comes back first."""
    if server.halted:
        server.resume()
    host.close()


def _pool_running_a_task(tmp_path, server, workers):
    """A host's pool on the server, its first task started and waiting for its `go` file:
    (host, task id, go). A lease longer than any outage here: what the tests show is the gap ridden
    out, not a lease expiring."""
    host = Host(tmp_path, "alpha", server.new_database())
    toml = host.root / ".klauss.toml"
    toml.write_text(toml.read_text().replace("lease_seconds = 3", "lease_seconds = 60"))
    host.start(workers)
    prompt, started, go = blocking(tmp_path, "a")
    tid = host.queue.add_task(prompt)
    wait_for(started.exists, what="the task to start")
    return host, tid, go


def test_a_pool_rides_out_a_database_server_restart(tmp_path, server):
    host, tid, go = _pool_running_a_task(tmp_path, server, 2)
    try:
        coordinator = host.coordinator()["pid"]
        workers = sorted(w["pid"] for w in host.workers())

        server.halt()
        wait_for(lambda: "the pool waits for the database" in _logs(host), what="the coordinator to wait")
        status = host.manage("status")
        assert status.returncode == 1 and "cannot connect" in status.stderr, status.stderr
        assert f"coordinator pid {coordinator} is running and waits for the database" in status.stdout
        status = host.manage("status", "--json")
        assert status.returncode == 1 and json.loads(status.stdout)["coordinator"] == {
            "pid": coordinator, "state": "waiting for the database"}
        go.touch()  # the run ends while the server is down
        wait_for(lambda: f"task {tid}: cannot record its end yet" in _logs(host), what="the worker to hold its outcome")
        server.resume()

        wait_for(lambda: host.queue.get_task(tid).status == "completed", what="the held outcome to be recorded")
        wait_for(lambda: "the database is back" in _logs(host), what="the coordinator to go on")
        assert len(completions(host.queue, tid)) == 1
        after = host.queue.add_task("task b")
        wait_for(lambda: host.queue.get_task(after).status == "completed", what="a task queued after the outage")
        assert host.coordinator()["pid"] == coordinator
        assert sorted(w["pid"] for w in host.workers()) == workers, "no worker was restarted or killed"
        assert "killing it" not in _logs(host)
    finally:
        _close(host, server)


def test_a_worker_started_while_the_database_is_down_waits_for_it(tmp_path, server, monkeypatch, capsys):
    url = server.new_database()
    cfg = config.load_config(db=url, cwd=tmp_path, env={})
    tries = []
    real = queue_postgres.connect

    def connect(url, **kw):
        tries.append(url)
        if len(tries) == 1:
            server.halt()
        if len(tries) == 3:
            server.resume()
        return real(url, **kw)

    monkeypatch.setattr(queue_postgres, "connect", connect)
    monkeypatch.setattr(claude_worker, "IDLE_TICK_SECONDS", 0.0)
    # The first try's server is halted before it connects: the worker says so once and waits.
    parent = claude_worker.os.getppid()
    queue = claude_worker.open_queue(cfg, url, coordinator_pid=parent)
    assert queue is not None and len(tries) >= 3
    assert capsys.readouterr().err.count("waiting for the database") == 1
    queue.close()
    # Run by hand (no coordinator), the same start is a failed command: exit 1, not bad usage.
    server.halt()
    monkeypatch.setattr(queue_postgres, "connect", real)
    assert claude_worker.main(["w1", "--db", url]) == 1
    assert "cannot connect" in capsys.readouterr().err
    server.resume()


class _Outage:
    """A queue whose reads fail (the database out of reach) while `down` is set."""

    def __init__(self, queue):
        self.queue, self.down = queue, False

    def __getattr__(self, name):
        attr = getattr(self.queue, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.down:
                raise claude_queue.DatabaseUnavailable("cannot connect to the server", "check that it is up")
            return attr(*args, **kwargs)
        return call


def _waiting_queue(tmp_path):
    q = claude_queue.TaskQueue(str(tmp_path / "q.db"), cfg=config.load_config(cwd=tmp_path, env={}))
    q.cfg["workers"]["auto_start"] = False  # the test is the worker
    return q


def test_submit_wait_waits_through_an_outage(tmp_path, capsys):
    q = _waiting_queue(tmp_path)
    tid = q.add_task("do it")
    outage = _Outage(q)
    steps = iter(["down", "still down", "back", "done"])

    def worker(_seconds):
        step = next(steps)
        outage.down = step.endswith("down")
        if step == "done":
            t = q.claim_task("w")
            q.complete_task(t.id, "w", "All done.")

    assert submit_task.wait_for(outage, tid, sleep=worker) == 0
    out, err = capsys.readouterr()
    assert out == "All done.\n"
    assert err.count("cannot connect to the server") == 1 and f"still waiting for task {tid}" in err
    assert "the database is back" in err


def test_a_wait_that_runs_out_during_an_outage_says_to_wait_again_not_to_submit_again(tmp_path):
    q = _waiting_queue(tmp_path)
    tid = q.add_task("do it")
    outage = _Outage(q)
    ticks = iter(range(0, 1000, 10))

    def sleep(_seconds):
        outage.down = True

    with pytest.raises(submit_task.CliError) as exc:
        submit_task.wait_for(outage, tid, timeout=25, sleep=sleep, clock=lambda: next(ticks))
    message = str(exc.value)
    assert exc.value.code == 1 and f"task {tid} stays queued" in message and "again" in message
    assert f"manage.sh wait {tid}`" in message and "run the command again" not in message
    assert q.get_task(tid).status == "pending" and len(q.list_tasks()) == 1


def test_the_orchestrators_wait_goes_on_through_an_outage(tmp_path, server, monkeypatch):
    url = server.new_database()
    monkeypatch.chdir(tmp_path)
    orch = ClaudeOrchestrator("t", db_path=url, **{"workers.auto_start": False})
    # The test is the pool: it completes the task itself.
    monkeypatch.setattr(orch, "_ensure_pool_for_wait", lambda _job: None)
    monkeypatch.setattr(orch, "_check_pool_alive", lambda _job: None)
    job = orch.create_job("outage")
    tid = orch.add_subtask(job, "do it")
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    waiting, results = threading.Event(), []

    def wait():
        results.append(orch.wait_and_collect(job, timeout=120, poll_interval=0.05, show_progress=True,
                                             on_progress=lambda _status: waiting.set()))

    waiter = threading.Thread(target=wait, daemon=True)
    waiter.start()
    wait_for(waiting.is_set, what="the wait to start")
    server.halt()
    wait_for(lambda: f"still waiting for job {job}" in err.getvalue(), what="the wait to say why nothing moves")
    server.resume()
    worker = claude_queue.TaskQueue(url, cfg=config.load_config(db=url, cwd=tmp_path, env={}))
    task = worker.claim_task("w")
    assert task.id == tid and worker.complete_task(tid, "w", "done", attempt=task.attempt)
    worker.close()
    waiter.join(timeout=120)
    assert results and not results[0].timed_out and results[0][tid]["status"] == "completed"
    assert err.getvalue().count("still waiting") == 1 and "the database is back" in err.getvalue()


def test_a_worker_that_dies_during_an_outage_has_its_claude_ended_at_once_and_its_task_returned_once_back(tmp_path, server):
    host, tid, go = _pool_running_a_task(tmp_path, server, 1)
    try:
        [worker] = host.workers()
        claude = wait_for(lambda: host.workers()[0]["info"].get("claude_pid"), what="claude's pid recorded")

        server.halt()
        wait_for(lambda: "the pool waits for the database" in _logs(host), what="the coordinator to wait")
        os.kill(worker["pid"], signal.SIGKILL)
        wait_for(lambda: f"(pid {worker['pid']}) killed by SIGKILL" in _logs(host), what="the coordinator to reap it")
        # Its run can no longer be recorded: ended during the outage (by the token it carries),
        # not left to work on until the database is back.
        assert all_dead([claude]), "the dead worker's claude is ended at once"
        assert f"worker_1@alpha: killed process {claude} it left behind" in _logs(host)
        server.resume()

        wait_for(lambda: f"task {tid}: its worker worker_1@alpha ended while the database was down; returned to "
                 "the queue" in _logs(host), what="the clean-up once the database is back")
        go.touch()
        wait_for(lambda: host.queue.get_task(tid).status == "completed", what="the task to run again and complete")
        assert len(completions(host.queue, tid)) == 1
        assert [w["pid"] for w in host.workers()] != [worker["pid"]], "its slot was started again"
    finally:
        _close(host, server)


def test_a_server_with_no_connection_left_is_an_outage_like_a_restart(tmp_path, server):
    # What a full server answers is what a stopped one does (DatabaseUnavailable): every part of the
    # pool then waits for a connection as the tests above show it waits through a restart.
    import psycopg

    url = server.new_database()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("CREATE ROLE lim LOGIN CONNECTION LIMIT 1")
        admin.execute(f"GRANT ALL ON DATABASE {url.split('?')[0].rsplit('/', 1)[1]} TO lim")
        admin.execute("GRANT ALL ON SCHEMA public TO lim")
    limited = url.replace("klauss@", "lim@")
    held = psycopg.connect(limited)  # the role's one connection
    try:
        with pytest.raises(claude_queue.DatabaseUnavailable) as exc:
            claude_queue.TaskQueue(limited, cfg=config.load_config(db=limited, cwd=tmp_path, env={}))
        assert "too many connections" in str(exc.value)
    finally:
        held.close()

    def slot_free():  # the server frees the slot once the closed connection's backend has exited
        with psycopg.connect(url, autocommit=True) as admin:
            return not admin.execute("SELECT count(*) FROM pg_stat_activity WHERE usename = 'lim'").fetchone()[0]

    wait_for(slot_free, what="the role's one connection to be free again")
    queue = claude_queue.TaskQueue(limited, cfg=config.load_config(db=limited, cwd=tmp_path, env={}))
    assert queue.add_task("once there is room") == 1
    queue.close()
