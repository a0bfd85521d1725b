"""Several hosts sharing one queue (issue 16): each "host" here is a project directory of its own
with its own state directory, host id, `claude` and coordinator, all on one database. Nothing in
these tests depends on the database being SQLite: the database location is the `shared_db`
fixture, a parameter: each test runs on a SQLite file and on a PostgreSQL database (HOSTS_TEST_DB
may name another database to use instead).

Processes of another host are out of reach of a host's pid checks only in principle here (they
share this machine), so where that matters a row of a host that does not run here stands in."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import claude_queue
import config
import flags
import hosts
from conftest import ROOT, all_dead, fake, install_fake_claude, kill_pool, pid_alive, wait_for

MANAGE = ROOT / "manage.sh"
WORKER = ROOT / "claude_worker.py"
LEASE = 3
SETTINGS = {"lease_seconds": LEASE, "heartbeat_seconds": 0.3, "shutdown_grace_seconds": 1, "idle_timeout": 0,
            "poll_seconds": 0.5, "max_workers": 4}


@pytest.fixture(params=["sqlite", "postgres"])
def shared_db(request, tmp_path):
    """Where the hosts' shared database lives: a SQLite file, or a fresh PostgreSQL database (the
    backend several machines share); the same tests run on both."""
    if os.environ.get("HOSTS_TEST_DB"):
        return os.environ["HOSTS_TEST_DB"]
    if request.param == "postgres":
        return request.getfixturevalue("postgres_url")
    return str(tmp_path / "shared" / "queue.db")


class Host:
    """One machine's worth of Klauss: its own project directory, state, config, claude and host id."""

    def __init__(self, tmp_path, name, db, login=None, env=None):
        self.name = name
        self.root = tmp_path / name
        self.root.mkdir(parents=True, exist_ok=True)  # a clone may be there already
        self.bin = tmp_path / f"{name}-bin"
        install_fake_claude(self.bin)
        if "://" not in db:
            Path(db).parent.mkdir(parents=True, exist_ok=True)
        pool = [f"host = {json.dumps(name)}"] + ([f"login = {json.dumps(login)}"] if login else [])
        (self.root / ".klauss.toml").write_text("\n".join([
            "[paths]", f"db = {json.dumps(db)}", 'state_dir = ".klauss"', "[pool]", *pool,
            "[workers]", *(f"{k} = {json.dumps(v)}" for k, v in SETTINGS.items()),
            "[queue]", "retry_backoff_seconds = 0", ""]))
        base = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
        self.env = {**base, "PATH": f"{self.bin}{os.pathsep}{base.get('PATH', '')}", "KLAUSS_PYTHON": sys.executable,
                    **(env or {})}
        self.cfg = config.load_config(cwd=self.root, env={})
        self.cfg.ensure_state_dir()
        self.queue = claude_queue.TaskQueue(cfg=self.cfg)
        self.procs = []

    def manage(self, *args, timeout=120):
        out = subprocess.run([str(MANAGE), *map(str, args)], cwd=str(self.root), env=self.env, capture_output=True,
                             text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        assert "Traceback" not in out.stderr, out.stderr
        return out

    def start(self, n):
        out = self.manage("start", n)
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    def coordinator(self):
        flag = self.queue.get_flag(flags.coordinator(self.name))
        return flag["value"] if flag else None

    def workers(self):
        return [w for w in self.queue.list_workers() if hosts.host_of(w["worker_id"]) == self.name]

    def close(self):
        if self.queue.get_flag(flags.coordinator(self.name)):
            kill_pool(self.cfg, self.root, self.env)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.queue.close()


@pytest.fixture
def make_host(tmp_path, shared_db):
    made = []

    def make(name, **kw):
        host = Host(tmp_path, name, shared_db, **kw)
        made.append(host)
        return host

    yield make
    for host in made:
        host.close()


def blocking(tmp_path, name):
    """A prompt that touches <name>.started, then waits for <name>.go before it succeeds."""
    started, go = tmp_path / f"{name}.started", tmp_path / f"{name}.go"
    prompt = "\n".join([fake("touch_file", path=str(started)), fake("wait_for_file", path=str(go)), f"task {name}"])
    return prompt, started, go


def ran_on(queue, tid):
    return hosts.host_of(queue.get_task(tid).worker_id)


def completions(queue, tid):
    return [e for e in queue.get_events(tid) if e["event"] == "completed"]


# --- identity ---------------------------------------------------------------------------------

def test_the_host_id_comes_from_the_environment_then_the_config_then_the_hostname(tmp_path):
    assert config.load_config(cwd=tmp_path, env={}).host == config.hostname_id()
    (tmp_path / ".klauss.toml").write_text('[pool]\nhost = "alpha"\n')
    assert config.load_config(cwd=tmp_path, env={}).host == "alpha"
    assert config.load_config(cwd=tmp_path, env={"KLAUSS_HOST": "beta"}).host == "beta"
    with pytest.raises(config.ConfigError, match=r"^KLAUSS_HOST: expected letters, digits.*got 'a b'$"):
        config.load_config(cwd=tmp_path, env={"KLAUSS_HOST": "a b"})
    (tmp_path / ".klauss.toml").write_text('[pool]\nhost = "x@y"\n')
    with pytest.raises(config.ConfigError, match=r"pool\.host: expected letters, digits.*got 'x@y'$"):
        config.load_config(cwd=tmp_path, env={})


def test_a_bad_host_id_is_a_one_line_usage_error(tmp_path):
    (tmp_path / ".klauss.toml").write_text('[pool]\nhost = "no/slashes"\n')
    out = subprocess.run([str(MANAGE), "status"], cwd=str(tmp_path), capture_output=True, text=True, timeout=60,
                         env={**os.environ, "KLAUSS_PYTHON": sys.executable})
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "pool.host" in out.stderr


def test_the_login_key_names_a_login_without_keeping_a_secret(tmp_path):
    cfg = config.load_config(cwd=tmp_path, env={})
    secret = "sk-ant-api03-secret-value"
    key = hosts.login_key(cfg, env={"ANTHROPIC_API_KEY": secret})
    assert key.startswith("key-") and secret not in key and "secret" not in key
    assert key == hosts.login_key(cfg, env={"ANTHROPIC_API_KEY": secret, "HOME": "/elsewhere"}), "same key, same login"
    assert key != hosts.login_key(cfg, env={"ANTHROPIC_API_KEY": secret + "2"})
    home = tmp_path / "home"
    home.mkdir()
    (home / ".claude.json").write_text(json.dumps({"oauthAccount": {"accountUuid": "u-1", "emailAddress": "a@b"}}))
    account = hosts.login_key(cfg, env={"HOME": str(home)})
    assert account.startswith("account-") and "u-1" not in account
    other = tmp_path / "cfgdir"
    other.mkdir()
    (other / ".claude.json").write_text(json.dumps({"oauthAccount": {"accountUuid": "u-1"}}))
    assert hosts.login_key(cfg, env={"HOME": "/nowhere", "CLAUDE_CONFIG_DIR": str(other)}) == account
    assert hosts.login_key(cfg, env={"HOME": str(tmp_path / "nobody")}).startswith("local-")
    named = config.load_config(cwd=tmp_path, env={"KLAUSS_LOGIN": "team"})
    assert hosts.login_key(named, env={"ANTHROPIC_API_KEY": secret}) == "team", "a name given wins"


# --- two hosts, one queue ----------------------------------------------------------------------

def test_a_job_spreads_over_two_hosts_and_every_view_shows_both(tmp_path, make_host):
    alpha, beta = make_host("alpha"), make_host("beta")
    alpha.start(2)
    beta.start(2)
    assert alpha.coordinator()["pid"] != beta.coordinator()["pid"], "one coordinator per host on one database"
    prompts, go = [], tmp_path / "all.go"
    for n in range(4):
        prompt, _started, _ = blocking(tmp_path, f"t{n}")
        prompts.append({"prompt": prompt.replace(f"t{n}.go", "all.go")})
    _job, tids = alpha.queue.submit_job("spread", prompts)
    # Four blocking tasks and four workers: each worker holds one, so both hosts run two.
    wait_for(lambda: alpha.queue.get_stats()["in_progress"] == 4, what="all four tasks to run")
    assert sorted(ran_on(alpha.queue, t) for t in tids) == ["alpha", "alpha", "beta", "beta"]

    status = json.loads(alpha.manage("status", "--json").stdout)
    assert status["host"] == "alpha" and set(status["hosts"]) == {"alpha", "beta"}
    assert sorted(w["host"] for w in status["workers"]) == ["alpha", "alpha", "beta", "beta"]
    assert all(w["alive"] and w["state"] == "busy" for w in status["workers"])
    assert all(w["in_pool"] for w in status["workers"]), "each host's coordinator vouches for its workers"
    text = alpha.manage("status").stdout
    assert "host beta: coordinator pid" in text and " beta " in text and "HOST" in text
    ps = json.loads(alpha.manage("ps", "--json").stdout)
    assert sorted(p["role"] for p in ps if p.get("remote")) == ["worker_1@beta", "worker_2@beta"]

    go.write_text("")
    wait_for(lambda: all(alpha.queue.get_task(t).status == "completed" for t in tids), what="the job to finish")
    beta_task = next(t for t in tids if ran_on(alpha.queue, t) == "beta")
    shown = alpha.manage("show", beta_task).stdout
    assert "Host:        beta\n" in shown and "(on host beta;" in shown, shown
    assert "Host:        beta (this host)" in beta.manage("show", beta_task).stdout
    assert json.loads(alpha.manage("show", beta_task, "--json").stdout)["host"] == "beta"
    assert all(len(completions(alpha.queue, t)) == 1 for t in tids)


def test_a_host_killed_mid_run_its_task_is_finished_by_the_other_once(tmp_path, make_host):
    alpha, beta = make_host("alpha"), make_host("beta")
    alpha.start(1)
    prompt, started, go = blocking(tmp_path, "victim")
    tid = alpha.queue.add_task(prompt)
    wait_for(started.exists, what="alpha to start the task")
    assert ran_on(alpha.queue, tid) == "alpha"
    row = wait_for(lambda: [w for w in alpha.workers() if w["info"].get("claude_pgid")], what="claude's pid")[0]
    beta.start(1)
    assert alpha.queue.get_task(tid).status == "in_progress" and alpha.workers(), \
        "starting a host leaves the other host's running work alone"

    # The whole of alpha dies at once, as a machine does: nothing of it records anything.
    victims = [alpha.coordinator()["pid"], row["pid"]]
    os.kill(victims[0], signal.SIGKILL)
    os.killpg(row["pid"], signal.SIGKILL)
    os.killpg(row["info"]["claude_pgid"], signal.SIGKILL)
    wait_for(lambda: not any(pid_alive(p) for p in victims), what="alpha's processes to go")
    expires = alpha.queue.get_task(tid).lease_expires_at  # nothing of alpha renews it any more
    go.write_text("")
    # Beta returns the task once its lease expires, claims it and finishes it.
    wait_for(lambda: alpha.queue.get_task(tid).status == "completed", timeout=6 * LEASE + 30,
             what="beta to finish alpha's task")
    task = alpha.queue.get_task(tid)
    assert hosts.host_of(task.worker_id) == "beta" and task.attempt == 2
    events = [e["event"] for e in alpha.queue.get_events(tid)]
    assert events.count("recovered") == 1 and events.count("completed") == 1, events
    # Returned when its lease ran out (a lease after the kill at most), not at some later sweep;
    # the one lease of slack is for a loaded machine's ticks.
    recovered = next(e for e in alpha.queue.get_events(tid) if e["event"] == "recovered")
    assert expires <= recovered["at"] <= expires + LEASE, (expires, recovered)
    assert alpha.queue.get_stats()["pending"] == 0


def test_a_coordinator_never_takes_another_hosts_worker_for_its_own_dead_one(tmp_path, make_host, shared_db):
    alpha = make_host("alpha")
    # A worker of host gamma (not running here: its pid means nothing on this machine) holds a task.
    tid = alpha.queue.add_task("gamma's task")
    alpha.queue.register_worker("worker_1@gamma", pid=999999, state="busy")
    alpha.queue.claim_task("worker_1@gamma", lease_seconds=3600)
    alpha.start(1)
    log = (alpha.cfg.logs_dir / "coordinator.log").read_text()
    assert "gamma" not in log
    assert alpha.queue.get_task(tid).status == "in_progress" and alpha.queue.get_task(tid).worker_id == "worker_1@gamma"
    assert any(w["worker_id"] == "worker_1@gamma" for w in alpha.queue.list_workers())
    # Gamma's heartbeat an hour ahead: recent however long this loaded machine took to get here.
    real_clock = alpha.queue.clock
    alpha.queue.clock = lambda: real_clock() + 3600
    alpha.queue.worker_heartbeat("worker_1@gamma", state="busy", current_task=tid)
    alpha.queue.clock = real_clock
    status = json.loads(alpha.manage("status", "--json").stdout)
    gamma = [w for w in status["workers"] if w["host"] == "gamma"][0]
    assert gamma["state"] == "busy" and gamma["alive"], "judged by its heartbeat, not by a pid here"
    # `kill` on this host touches only this host's workers.
    alpha.manage("kill")
    assert alpha.queue.get_task(tid).status == "in_progress"
    assert any(w["worker_id"] == "worker_1@gamma" for w in alpha.queue.list_workers())


def test_a_stopped_then_continued_workers_late_completion_is_fenced_out(tmp_path, make_host):
    alpha, beta = make_host("alpha"), make_host("beta")
    # Alpha's worker runs by itself (no coordinator that would kill it as hung meanwhile).
    late = subprocess.Popen([sys.executable, str(WORKER), "worker_9@alpha", "--db", str(alpha.cfg.db_path)],
                            cwd=str(alpha.root), env=alpha.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    alpha.procs.append(late)
    prompt, started, go = blocking(tmp_path, "fenced")
    tid = alpha.queue.add_task(prompt)
    wait_for(started.exists, what="alpha's worker to start the task")
    assert alpha.queue.get_task(tid).worker_id == "worker_9@alpha"
    os.kill(late.pid, signal.SIGSTOP)  # its claude goes on, waiting for the go file
    try:
        beta.start(1)
        wait_for(lambda: alpha.queue.get_task(tid).attempt == 2 and ran_on(alpha.queue, tid) == "beta",
                 timeout=6 * LEASE + 30, what="beta to take the task over once the lease expired")
        go.write_text("")  # both claudes finish now
        wait_for(lambda: alpha.queue.get_task(tid).status == "completed", what="beta to complete it")
    finally:
        os.kill(late.pid, signal.SIGCONT)
    # The continued worker handles its run's end: whatever it tries is refused by attempt.
    wait_for(lambda: (lambda w: w and w[0]["current_task"] != tid)(
        [w for w in alpha.queue.list_workers() if w["worker_id"] == "worker_9@alpha"]),
        what="the continued worker to be done with its old attempt")
    task = alpha.queue.get_task(tid)
    assert task.status == "completed" and task.worker_id == "worker_1@beta" and task.attempt == 2
    done = completions(alpha.queue, tid)
    assert len(done) == 1 and done[0]["worker_id"] == "worker_1@beta" and done[0]["attempt"] == 2
    late.send_signal(signal.SIGTERM)
    out = late.communicate(timeout=30)[0]
    assert f"task {tid}: completed" not in out, out


def test_stop_stops_this_host_and_stop_all_hosts_stops_every_host(make_host):
    alpha, beta = make_host("alpha"), make_host("beta")
    alpha.start(1)
    beta.start(1)
    out = alpha.manage("stop")
    assert out.returncode == 0, out.stderr
    assert alpha.coordinator() is None and beta.coordinator() is not None
    assert beta.queue.running_coordinator() is not None and beta.workers()
    # A running coordinator renews its flag once a lease: how other hosts tell it lives.
    seen = beta.queue.get_flag(flags.coordinator("beta"))["updated_at"]
    wait_for(lambda: beta.queue.get_flag(flags.coordinator("beta"))["updated_at"] > seen, timeout=4 * LEASE + 30,
             what="beta's coordinator to renew its flag")
    alpha.start(1)
    beta_pid = beta.coordinator()["pid"]
    out = alpha.manage("stop", "--all-hosts")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "asked host beta to stop" in out.stdout and "host beta: stopped" in out.stdout
    assert alpha.coordinator() is None and beta.coordinator() is None and not alpha.queue.list_workers()
    assert "stop --all-hosts from alpha" in (beta.cfg.logs_dir / "coordinator.log").read_text()
    # Its flag goes as its last act; the interpreter may still be exiting a moment later.
    assert all_dead([beta_pid], within=30), "beta's coordinator still runs after reporting it stopped"


def test_a_usage_limit_pauses_only_the_workers_on_that_login(tmp_path, make_host):
    alpha, beta = make_host("alpha", login="acct-a"), make_host("beta", login="acct-b")
    alpha.start(1)
    prompt, started, go = blocking(tmp_path, "long")
    first = alpha.queue.add_task(prompt)
    wait_for(started.exists, what="alpha to be busy")
    beta.start(1)
    limited = beta.queue.add_task(fake("error", "usage_limit", resets_at=int(time.time()) + 3600))
    wait_for(lambda: beta.queue.get_flag(flags.paused_login("acct-b")), what="beta's login to pause")
    # The pause is set just before the task is released (two commits): wait for the release.
    wait_for(lambda: beta.queue.get_task(limited).status == "pending", what="the limited task to be released")
    assert beta.queue.get_flag(flags.paused_login("acct-a")) is None and beta.queue.get_flag(flags.PAUSED) is None
    wait_for(lambda: [w["state"] for w in beta.workers()] == ["paused"], what="beta's worker to pause")
    go.write_text("")
    after = alpha.queue.add_task("after the limit")
    wait_for(lambda: alpha.queue.get_task(after).status == "completed", what="alpha to go on claiming")
    assert ran_on(alpha.queue, after) == "alpha" and alpha.queue.get_task(first).status == "completed"
    assert alpha.queue.get_task(limited).status == "pending", "its retry waits for the limit to reset"
    assert json.loads(beta.manage("status", "--json").stdout)["pool_state"]["state"] == "paused"
    assert json.loads(alpha.manage("status", "--json").stdout)["pool_state"]["state"] == "running"


def test_a_configuration_error_stops_only_that_host(tmp_path, make_host):
    alpha = make_host("alpha")
    beta = make_host("beta", env={"FAKE_CLAUDE_SCENARIO": json.dumps([{"error": "not_logged_in"}])})
    alpha.start(1)
    prompt, started, go = blocking(tmp_path, "long")
    first = alpha.queue.add_task(prompt)
    wait_for(started.exists, what="alpha to be busy")
    beta.start(1)
    broken = beta.queue.add_task("plain work")
    wait_for(lambda: beta.queue.get_flag(flags.config_error("beta")), what="beta's configuration error")
    wait_for(lambda: beta.coordinator() is None, what="beta's pool to stop")
    assert beta.queue.get_flag(flags.config_error("alpha")) is None and beta.queue.get_flag(flags.CONFIG_ERROR) is None
    go.write_text("")
    wait_for(lambda: alpha.queue.get_task(broken).status == "completed", what="alpha to run the released task")
    assert ran_on(alpha.queue, broken) == "alpha" and alpha.queue.get_task(first).status == "completed"
    assert alpha.queue.running_coordinator() is not None
    status = json.loads(alpha.manage("status", "--json").stdout)
    assert status["config_error"] is None and "not logged in" in status["hosts"]["beta"]["config_error"]["message"].lower()
    assert json.loads(beta.manage("status", "--json").stdout)["pool_state"]["state"] == "config_error"


# --- paths travel as paths inside the project --------------------------------------------------

def test_a_task_runs_in_the_same_place_of_the_other_hosts_clone(tmp_path, make_host):
    origin = tmp_path / "origin"
    (origin / "src").mkdir(parents=True)
    (origin / "src" / "keep.txt").write_text("tracked\n")
    git = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
           "PATH": os.environ["PATH"], "HOME": str(tmp_path)}
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "initial"]):
        subprocess.run(["git", *argv], cwd=str(origin), env=git, check=True, capture_output=True)
    for name in ("alpha", "beta"):
        subprocess.run(["git", "clone", "-q", str(origin), str(tmp_path / name)], env=git, check=True,
                       capture_output=True)
    alpha, beta = make_host("alpha"), make_host("beta")
    # Submitted on alpha, naming a directory of the project.
    out = subprocess.run([sys.executable, str(ROOT / "submit_task.py"), "submit", fake("write", "made.txt", content="x"),
                          "--dir", "src", "--outputs", "made.txt"], cwd=str(alpha.root), env=alpha.env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    (tid,) = [t.id for t in alpha.queue.list_tasks()]
    assert alpha.queue.get_task(tid).working_dir == str(alpha.root / "src")
    assert beta.queue.get_task(tid).working_dir == str(beta.root / "src"), "each host reads it in its own clone"
    beta.start(1)  # only beta runs workers
    wait_for(lambda: beta.queue.get_task(tid).status in ("completed", "failed"), what="beta to run the task")
    task = beta.queue.get_task(tid)
    assert task.status == "completed", task.error
    assert (beta.root / "src" / "made.txt").read_text() == "x"
    assert not (alpha.root / "src" / "made.txt").exists(), "never in a directory of the host that submitted it"


def test_stop_all_hosts_names_a_host_that_does_not_answer(make_host):
    alpha = make_host("alpha")
    # Host gamma's coordinator is recorded but gone (its machine died ten minutes ago): nobody reads
    # the request, and its flag has not been renewed since.
    past = claude_queue.TaskQueue(cfg=alpha.cfg, clock=lambda: time.time() - 600)
    past.set_flag(flags.coordinator("gamma"), {"pid": 4242, "token": "t-gamma", "state": "running", "workers": 1,
                                               "lease_seconds": LEASE})
    past.close()
    status = json.loads(alpha.manage("status", "--json").stdout)
    assert status["hosts"]["gamma"]["silent_for"] >= 600
    assert "host gamma: coordinator pid 4242 there, 1 worker(s), running, silent for" in alpha.manage("status").stdout
    # Silent for two leases: named at once, not waited for (an hour's --timeout would hang the test).
    out = alpha.manage("stop", "--all-hosts", "--timeout", "3600", timeout=60)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "gamma did not stop (silent for 10m" in out.stderr and "asked host gamma to stop" in out.stdout
    assert alpha.queue.get_flag(flags.stop("gamma"))["value"]["token"] == "t-gamma", "it stops if it comes back"


def test_the_orchestrator_mcp_and_dashboard_show_every_hosts_workers(make_host, monkeypatch):
    import klauss_mcp

    alpha = make_host("alpha")
    tid = alpha.queue.add_task("gamma's task")
    alpha.queue.register_worker("worker_1@gamma", pid=999999, state="busy")
    alpha.queue.claim_task("worker_1@gamma", lease_seconds=3600, worker_info={"host": "gamma"})
    alpha.queue.set_flag(flags.coordinator("gamma"), {"pid": 4242, "token": "t", "state": "running", "workers": 1})
    monkeypatch.chdir(alpha.root)
    tools = klauss_mcp.KlaussTools()
    st = tools.orch.get_worker_status()
    assert st["host"] == "alpha" and not st["running"] and st["hosts"]["gamma"]["coordinator_pid"] == 4242
    assert st["hosts"]["gamma"]["silent_for"] is None, "just renewed"
    assert st["other_workers"] == [{"worker_id": "worker_1@gamma", "host": "gamma", "state": "busy",
                                    "current_task": tid, "last_heartbeat": st["other_workers"][0]["last_heartbeat"]}]
    assert f"- worker_1@gamma (host gamma): busy, task #{tid}" in tools._status_text()
    board = alpha.manage("dashboard", "--once")
    assert board.returncode == 0 and "worker_1@gamma" in board.stdout, board.stdout + board.stderr


def test_clean_refuses_while_another_hosts_pool_uses_the_database(make_host):
    alpha, beta = make_host("alpha"), make_host("beta")
    beta.start(1)
    out = alpha.manage("clean", "--yes")
    assert out.returncode == 1 and "host(s) beta" in out.stderr and "stop --all-hosts" in out.stderr, out.stderr
    assert alpha.cfg.db_path.exists() and beta.queue.running_coordinator() is not None
    assert alpha.manage("clean", "--logs", "--yes").returncode == 0, "this host's logs are its own"
