"""The PostgreSQL backend (queue_postgres.py) beyond the shared contract of test_queue_contract.py:
the test server itself, the URL rule, the driver error, wake-ups through LISTEN/NOTIFY, doctor."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pg_server
import pytest

import claude_queue
import config
import queue_postgres
import queues
from conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent


def test_the_test_server_gives_each_test_a_fresh_database(postgres_server, postgres_url):
    import psycopg

    other = postgres_server.new_database()
    assert other != postgres_url
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (x int)")
    with psycopg.connect(other, autocommit=True) as conn:
        assert conn.execute("SELECT to_regclass('t')").fetchone()[0] is None
        assert conn.execute("SHOW fsync").fetchone()[0] == "off"


def test_server_binaries_are_found_off_path():
    assert pg_server.find_bin("definitely-not-a-postgres-binary") is None


def _cfg(url, **kw):
    return config.load_config(db=url, env={}, **kw)


@pytest.mark.parametrize("how", ["--db", "KLAUSS_DB", "[paths] db"])
def test_a_postgresql_url_selects_the_postgresql_backend(postgres_url, tmp_path, how):
    if how == "--db":
        cfg = config.load_config(db=postgres_url, cwd=tmp_path, env={})
    elif how == "KLAUSS_DB":
        cfg = config.load_config(cwd=tmp_path, env={"KLAUSS_DB": postgres_url})
    else:
        (tmp_path / ".klauss.toml").write_text(f'[paths]\ndb = "{postgres_url}"\n')
        cfg = config.load_config(cwd=tmp_path, env={})
    assert cfg.db_url == postgres_url and str(cfg.db_path) == postgres_url
    assert cfg.state_dir == tmp_path / ".klauss", "this host's logs and lock stay in its project"
    q = queues.open_queue(cfg)
    try:
        assert isinstance(q, queue_postgres.PostgresTaskQueue)
        tid = q.add_task("x")
        assert claude_queue.TaskQueue(postgres_url, cfg=cfg).get_task(tid).prompt == "x"
    finally:
        q.close()


def test_a_sqlite_path_stays_sqlite(tmp_path):
    cfg = config.load_config(db=str(tmp_path / "q.db"), cwd=tmp_path, env={})
    assert cfg.db_url is None
    q = claude_queue.TaskQueue(str(tmp_path / "q.db"), cfg=cfg)
    assert type(q) is claude_queue.TaskQueue
    q.close()


def test_a_url_without_the_driver_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg raises ImportError
    url = "postgresql://nobody@127.0.0.1:1/none"
    with pytest.raises(claude_queue.QueueError) as err:
        claude_queue.TaskQueue(url, cfg=config.load_config(db=url, cwd=tmp_path, env={}))
    message = str(err.value)
    assert "\n" not in message and "psycopg" in message and "pip install -r" in message
    assert "requirements-postgres.txt" in message


def test_the_cli_runs_on_a_postgresql_url(postgres_url, tmp_path):
    env = {**os.environ, "KLAUSS_DB": postgres_url}
    done = subprocess.run([sys.executable, str(ROOT / "submit_task.py"), "submit", "hello from the cli"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    listed = subprocess.run([sys.executable, str(ROOT / "submit_task.py"), "list", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [t["prompt"] for t in json.loads(listed.stdout)] == ["hello from the cli"]


def test_a_database_of_something_else_is_refused(postgres_url, tmp_path):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int)")
    with pytest.raises(claude_queue.DatabaseBroken, match="not a Klauss database"):
        claude_queue.TaskQueue(postgres_url, cfg=config.load_config(db=postgres_url, cwd=tmp_path, env={}))


def test_migrations_record_the_version_and_refuse_a_newer_one(postgres_url, tmp_path):
    import psycopg

    cfg = config.load_config(db=postgres_url, cwd=tmp_path, env={})
    q = claude_queue.TaskQueue(postgres_url, cfg=cfg)
    assert q.schema_version() == queue_postgres.SCHEMA_VERSION
    q.close()
    # Opened again: nothing to do (it would fail creating the tables twice).
    claude_queue.TaskQueue(postgres_url, cfg=cfg).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE klauss_schema SET version = version + 1")
    with pytest.raises(claude_queue.QueueError, match="newer than this Klauss"):
        claude_queue.TaskQueue(postgres_url, cfg=cfg)


def test_concurrent_first_opens_migrate_once(postgres_url, tmp_path):
    cfg = config.load_config(db=postgres_url, cwd=tmp_path, env={})
    errors, queues_ = [], []

    def open_one():
        try:
            queues_.append(claude_queue.TaskQueue(postgres_url, cfg=cfg))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for q in queues_:
        q.close()


def test_the_password_stays_out_of_messages():
    url = config.DatabaseUrl("postgresql://klauss:s3cret@db.example/klauss", "/tmp")
    assert url.redacted() == "postgresql://klauss:***@db.example/klauss"


# --- wake-ups through LISTEN/NOTIFY --------------------------------------------------------------

def _pg_queue(url, tmp_path):
    return claude_queue.TaskQueue(url, cfg=config.load_config(db=url, cwd=tmp_path, env={}))


def test_an_idle_waiter_is_woken_by_another_process_commit(postgres_url, tmp_path):
    waiter_queue = _pg_queue(postgres_url, tmp_path)
    waker = claude_queue.Waker(waiter_queue, "idle worker")
    assert isinstance(waker, queue_postgres.PgWaker)
    woken = []
    waiting = threading.Thread(target=lambda: woken.append(waker.wait(60)))
    waiting.start()
    try:
        # Another client (its own connection, as another host's would be) adds work.
        done = subprocess.run([sys.executable, str(ROOT / "submit_task.py"), "submit", "wake up"], cwd=tmp_path,
                              env={**os.environ, "KLAUSS_DB": postgres_url}, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        waiting.join(60)
        assert woken == [True], "woken by the commit, not by the 60 s timeout"
        assert not waker.wait(0), "one change, one wake-up"
        waiter_queue.notify_waiters()
        assert waker.wait(10), "notify_waiters wakes LISTENers too"
    finally:
        waiting.join(60)
        waker.close()
        waiter_queue.close()


def test_an_idle_waiter_blocks_on_its_socket_without_polling(postgres_url, tmp_path, monkeypatch):
    q = _pg_queue(postgres_url, tmp_path)
    waker = claude_queue.Waker(q, "idle")
    calls = []
    real_select = queue_postgres.select.select

    def counting_select(r, w, x, timeout):
        calls.append(timeout)
        return real_select(r, w, x, timeout)

    monkeypatch.setattr(queue_postgres.select, "select", counting_select)
    try:
        assert not waker.wait(0.3)
        assert len(calls) == 1 and calls[0] > 0.2, "one select for the whole wait: no polling loop"
    finally:
        waker.close()
        q.close()


def test_a_rolled_back_write_wakes_nobody(postgres_url, tmp_path):
    q = _pg_queue(postgres_url, tmp_path)
    waker = claude_queue.Waker(q, "idle")
    try:
        with pytest.raises(ValueError):
            q.add_tasks([{"prompt": "a"}, {"prompt": "b", "depends_on": [999]}])
        assert not waker.wait(0.2), "NOTIFY is sent with the commit, and nothing committed"
    finally:
        waker.close()
        q.close()


def test_a_waker_outlives_a_lost_connection(postgres_url, tmp_path):
    import psycopg

    q = _pg_queue(postgres_url, tmp_path)
    waker = claude_queue.Waker(q, "idle")
    try:
        pid = waker._conn.info.backend_pid
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert waker.wait(10), "the loss wakes the waiter, which then looks at the queue itself"
        wait_for(lambda: waker.wait(0) or waker._conn is not None and waker._conn.info.backend_pid != pid,
                 what="a new LISTEN connection")
        q.add_task("after the loss")
        assert wait_for(lambda: waker.wait(1), what="a wake-up on the new connection")
    finally:
        waker.close()
        q.close()


# --- doctor --------------------------------------------------------------------------------------

def _doctor(tmp_path, url, **env):
    done = subprocess.run([sys.executable, str(ROOT / "claude_coordinator.py"), "doctor", "--json"], cwd=tmp_path,
                          env={**os.environ, "KLAUSS_DB": url, **env}, capture_output=True, text=True, timeout=120)
    return {c["check"]: c for c in json.loads(done.stdout)}


@pytest.fixture
def doctor(monkeypatch, capsys):
    """What _doctor gives, through the coordinator's entry point in this process (a doctor start
    costs ~0.5 s of CPU here, most of it importing psycopg); the tests that change the interpreter
    under it (a driver hidden, a clock ahead) run it as a program."""
    import claude_coordinator

    def run(tmp_path, url):
        monkeypatch.setenv("KLAUSS_DB", url)
        monkeypatch.chdir(tmp_path)
        capsys.readouterr()
        claude_coordinator.main(["doctor", "--json"])
        return {c["check"]: c for c in json.loads(capsys.readouterr().out)}
    return run


def test_doctor_checks_the_connection_server_version_and_schema(postgres_url, tmp_path, doctor):
    db = doctor(tmp_path, postgres_url)["database"]
    assert db["ok"] is True, db
    assert "PostgreSQL 1" in db["detail"] and f"schema version {queue_postgres.SCHEMA_VERSION}" in db["detail"]


def test_doctor_says_when_the_server_cannot_be_reached(postgres_server, tmp_path, doctor):
    url = postgres_server.url("no_such_database")
    db = doctor(tmp_path, url)["database"]
    assert db["ok"] is False and "cannot connect" in db["detail"] and "no_such_database" in db["detail"]
    assert "pg_hba.conf" in db["fix"]


def test_doctor_names_a_newer_schema(postgres_url, tmp_path, doctor):
    import psycopg

    _pg_queue(postgres_url, tmp_path).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE klauss_schema SET version = 99")
    db = doctor(tmp_path, postgres_url)["database"]
    assert db["ok"] is False and "schema version 99" in db["detail"] and "update Klauss" in db["detail"]


def test_doctor_names_the_missing_driver(postgres_url, tmp_path):
    # A sitecustomize that hides psycopg, as on a machine without requirements-postgres.txt.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['psycopg'] = None\n")
    db = _doctor(tmp_path, postgres_url, PYTHONPATH=str(site))["database"]
    assert db["ok"] is False and "psycopg" in db["detail"]
    assert db["fix"].startswith("pip install -r ") and db["fix"].endswith("requirements-postgres.txt")


def test_doctor_compares_this_hosts_clock_with_the_servers(postgres_url, tmp_path, doctor):
    clock = doctor(tmp_path, postgres_url)["clock"]
    assert clock["ok"] is True and clock["detail"].startswith("within "), clock
    # A host whose clock runs five minutes ahead: hosts judge each other's leases by their clocks.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import time\n_time = time.time\ntime.time = lambda: _time() + 300\n")
    clock = _doctor(tmp_path, postgres_url, PYTHONPATH=str(site))["clock"]
    assert clock["ok"] is None and "300s ahead of the database server's" in clock["detail"], clock
    assert "NTP" in clock["fix"]


class _Ahead:
    """The time module of a host whose clock runs `seconds` ahead."""

    def __init__(self, seconds):
        self.seconds = seconds

    def time(self):
        return time.time() + self.seconds

    def __getattr__(self, name):
        return getattr(time, name)


def test_hosts_whose_clocks_disagree_agree_on_leases(postgres_url, tmp_path, monkeypatch):
    here = _pg_queue(postgres_url, tmp_path)
    tid = here.add_task("x")
    task = here.claim_task("w@here", lease_seconds=60)
    # Another host, its clock five minutes ahead: by its own clock the lease ran out long ago.
    monkeypatch.setattr(queue_postgres, "time", _Ahead(300))
    there = _pg_queue(postgres_url, tmp_path)
    assert abs(there.clock() - time.time()) < 5, "it goes by the server's clock"
    assert there.recover_stale() == [] and there.get_task(tid).status == "in_progress"
    assert here.complete_task(tid, "w@here", "done", attempt=task.attempt)
    there.close()
    here.close()


# --- a pool on PostgreSQL ------------------------------------------------------------------------

def test_a_pool_runs_tasks_from_a_postgresql_queue(pool_project, postgres_url):
    with open(pool_project / ".klauss.toml", "a") as f:
        f.write(f'[paths]\ndb = "{postgres_url}"\n')

    def manage(*args):
        return subprocess.run(["bash", str(ROOT / "manage.sh"), *args], cwd=pool_project, capture_output=True,
                              text=True, timeout=120)

    # One task through manage.sh, three more through the queue (each manage.sh start costs ~0.45 s of
    # CPU here, most of it importing psycopg).
    assert manage("submit", "task 0").returncode == 0
    q = _pg_queue(postgres_url, pool_project)
    try:
        q.add_tasks([{"prompt": f"task {i}"} for i in range(1, 4)])
        started = manage("start", "2")
        assert started.returncode == 0, started.stderr
        wait_for(lambda: q.get_stats()["completed"] == 4, what=lambda: q.get_stats())
        assert {t.worker_id.split("@")[0] for t in q.list_tasks()} <= {"worker_1", "worker_2"}
        assert manage("stop").returncode == 0
        assert (pool_project / ".klauss" / "logs").is_dir(), "this host's logs stay in its project"
    finally:
        q.close()


def test_a_value_postgresql_cannot_store_is_bad_input_and_writes_nothing(postgres_url, tmp_path):
    q = _pg_queue(postgres_url, tmp_path)
    try:
        with pytest.raises(ValueError, match="NUL"):
            q.add_tasks([{"prompt": "fine"}, {"prompt": "a\x00b"}])
        assert q.get_stats()["total"] == 0
        assert q.add_task("after") and q.get_stats()["total"] == 1, "the connection is still usable"
    finally:
        q.close()


def test_the_postgresql_schema_mirrors_sqlites(postgres_url, tmp_path):
    """A column added to claude_queue.MIGRATIONS needs its PG_MIGRATIONS entry too: this says which."""
    import psycopg

    lite = claude_queue.TaskQueue(str(tmp_path / "q.db"), cfg=config.load_config(db=str(tmp_path / "q.db"),
                                                                                   cwd=tmp_path, env={}))
    conn = lite._connect()
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    sqlite_columns = {t: {r[1] for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}
    lite.close()
    _pg_queue(postgres_url, tmp_path).close()
    with psycopg.connect(postgres_url) as pg:
        pg_columns = {}
        for table, column in pg.execute("SELECT table_name, column_name FROM information_schema.columns "
                                        "WHERE table_schema = current_schema()"):
            pg_columns.setdefault(table, set()).add(column)
    pg_columns.pop("klauss_schema")
    pg_columns["jobs"].discard("seq")  # SQLite's rowid
    assert pg_columns == sqlite_columns


def test_a_claim_skips_a_task_another_transaction_holds(postgres_url, tmp_path):
    import psycopg

    q = _pg_queue(postgres_url, tmp_path)
    try:
        first, second = q.add_task("first", priority=5), q.add_task("second")
        with psycopg.connect(postgres_url) as other:  # a transaction, as another claimer's
            other.execute("SELECT id FROM tasks WHERE id = %s FOR UPDATE", (first,))
            assert q.claim_task("w").id == second, "the held row is skipped, not waited for"
            assert q.claim_task("w") is None
        assert q.claim_task("w").id == first
    finally:
        q.close()
