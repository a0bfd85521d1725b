"""Several hosts on a PostgreSQL queue (issue 16): what the multi-host behaviour asks of the queue,
checked on both backends, and hosts on this machine reaching the server over a network link that
is cut mid-task (in network namespaces, where root and `ip netns` are available).

The pools of several hosts on one database are tested in test_hosts.py, on both backends too."""

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading

import pytest
from test_hosts import LEASE, MANAGE, Host, blocking, completions, ran_on

import claude_queue
import config
import flags
from conftest import ROOT, all_dead, copy_klauss, install_fake_claude, wait_for


@pytest.fixture(params=["sqlite", "postgres"])
def queue(request, tmp_path):
    if request.param == "postgres":
        location, cwd = request.getfixturevalue("postgres_url"), tmp_path
    else:
        location, cwd = str(tmp_path / "q.db"), tmp_path
    q = claude_queue.TaskQueue(location, cfg=config.load_config(db=location, cwd=cwd, env={}))
    yield q
    q.close()


@pytest.mark.parametrize("flag", [flags.config_error("beta"), flags.paused_login("acct-b"), flags.paused_host("beta")])
def test_a_workers_next_claim_honours_its_hosts_and_logins_flags(queue, flag):
    # A worker of beta on login acct-b finishing a task claims no next one while a flag that holds
    # beta or acct-b is set; a worker of alpha on another login goes on claiming.
    first, second = queue.add_task("first"), queue.add_task("second")
    queue.register_worker("worker_1@beta", pid=1)
    assert queue.claim_task("worker_1@beta", lease_seconds=60).id == first
    queue.set_flag(flag, {"host": "beta"})
    done, nxt = queue.finish_and_claim("release", first, "worker_1@beta", attempt=1, claim_next=True,
                                       lease_seconds=60, worker_info={}, holds=flags.holds("beta", "acct-b"),
                                       reason="configuration error")
    assert done and nxt is None, "held by its own host's or login's flag"
    queue.register_worker("worker_1@alpha", pid=2)
    task = queue.claim_task("worker_1@alpha", lease_seconds=60)
    done, nxt = queue.finish_and_claim("complete", task.id, "worker_1@alpha", attempt=task.attempt,
                                       claim_next=True, lease_seconds=60, worker_info={},
                                       holds=flags.holds("alpha", "acct-a"), result={"result": "ok"})
    assert done and nxt is not None and {task.id, nxt.id} == {first, second}, "another host goes on"


def test_list_jobs_takes_a_limit(queue):
    older, _ = queue.submit_job("older", [{"prompt": "a"}])
    newer, _ = queue.submit_job("newer", [{"prompt": "b"}])
    assert [j["id"] for j in queue.list_jobs(limit=1)] == [newer]
    assert [j["id"] for j in queue.list_jobs()] == [newer, older]



# --- a host cut off from the server --------------------------------------------------------------

def _ip(*args):
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)


class Link:
    """A network namespace of our own (the cut-off host's network) joined to this machine's by a
    veth pair: `server` (this side) and `client` (in the namespace) on a /30 of their own."""

    def __init__(self):
        # Unique names (an interface name has at most 15 characters): only these are removed.
        self.tag = f"kl{os.getpid() % 100000}{secrets.token_hex(2)}"
        self.ns, self.host_if, self.ns_if = self.tag, self.tag + "h", self.tag + "n"
        used = _ip("-4", "addr").stdout + _ip("-4", "route").stdout
        for _ in range(100):
            net = f"10.{secrets.randbelow(200) + 50}.{secrets.randbelow(250)}"
            if f"{net}." not in used:
                break
        self.server, self.client, self.cidr = f"{net}.1", f"{net}.2", f"{net}.0/30"
        self.made_ns = self.made_link = False

    def create(self):
        steps = [(["netns", "add", self.ns], "made_ns"),
                 (["link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if], "made_link"),
                 (["link", "set", self.ns_if, "netns", self.ns], None),
                 (["addr", "add", f"{self.server}/30", "dev", self.host_if], None),
                 (["link", "set", self.host_if, "up"], None),
                 (["netns", "exec", self.ns, "ip", "addr", "add", f"{self.client}/30", "dev", self.ns_if], None),
                 (["netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up"], None),
                 (["netns", "exec", self.ns, "ip", "link", "set", "lo", "up"], None)]
        for argv, made in steps:
            done = _ip(*argv)
            if done.returncode:
                return f"`ip {' '.join(argv)}` failed: {done.stderr.strip()}"
            if made:
                setattr(self, made, True)
        return None

    def set(self, state):
        # The cut-off host's own end: for the server, its peer just goes silent (a local interface
        # down would fail the server's sends at once instead, which TCP retries without end).
        done = _ip("netns", "exec", self.ns, "ip", "link", "set", self.ns_if, state)
        assert done.returncode == 0, done.stderr

    def remove(self):
        if self.made_link:
            _ip("link", "del", self.host_if)  # its peer goes with it
        if self.made_ns:
            _ip("netns", "del", self.ns)


@pytest.fixture
def link():
    if os.geteuid() != 0:
        pytest.skip("a network namespace needs root")
    if not shutil.which("ip"):
        pytest.skip("no `ip` command (iproute2) to make a network namespace")
    made = Link()
    try:
        problem = made.create()
        if problem:
            pytest.skip(f"cannot make a network namespace and veth pair here: {problem}")
        yield made
    finally:
        made.remove()


class NetnsHost(Host):
    """A host whose processes (coordinator, workers, claude) run in the link's namespace: it
    reaches the server only over the veth pair."""

    def __init__(self, *args, ns, **kw):
        super().__init__(*args, **kw)
        self.ns = ns

    def manage(self, *args, timeout=120):
        out = subprocess.run(["ip", "netns", "exec", self.ns, str(MANAGE), *map(str, args)], cwd=str(self.root),
                             env=self.env, capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
        assert "Traceback" not in out.stderr, out.stderr
        return out


def test_a_host_cut_off_from_the_server_mid_task_its_task_is_finished_by_the_other_once(tmp_path, link):
    import pg_server

    try:
        server = pg_server.PgServer.start(listen=[link.server], trust=[link.cidr])
    except pg_server.PgUnavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    alpha = beta = None
    try:
        url = server.new_database()
        name = url.split("?")[0].rsplit("/", 1)[1]
        # Alpha, in the namespace, reaches the server over TCP on the veth pair; beta, on this
        # machine, through its unix socket: one database.
        alpha = NetnsHost(tmp_path, "alpha", f"postgresql://{pg_server.SUPERUSER}@{link.server}:{server.port}/{name}",
                          ns=link.ns)
        beta = Host(tmp_path, "beta", url)
        q = beta.queue
        alpha.start(1)
        prompt, started, go = blocking(tmp_path, "cut")
        tid = q.add_task(prompt)
        wait_for(started.exists, what="alpha to start the task")
        assert ran_on(q, tid) == "alpha" and q.get_task(tid).attempt == 1
        beta.start(1)

        link.set("down")  # alpha's link is cut: its worker and coordinator reach nothing
        try:
            expires = q.get_task(tid).lease_expires_at
            wait_for(lambda: ran_on(q, tid) == "beta" and q.get_task(tid).attempt == 2, timeout=6 * LEASE + 30,
                     what="beta to take the task over once alpha's lease expired")
            go.write_text("")  # both claudes finish: alpha's runs on, cut off, in its own clone
            wait_for(lambda: q.get_task(tid).status == "completed", what="beta to complete the task")
            recovered = next(e for e in q.get_events(tid) if e["event"] == "recovered")
            assert recovered["at"] <= expires + LEASE, "returned within a lease of its expiry"
        finally:
            link.set("up")
        # The link is back: alpha's worker reaches the server again with its old attempt's end
        # (or its coordinator ends it as hung first); either way nothing of it is recorded.
        wait_for(lambda: (lambda w: w and w[0]["current_task"] != tid)(
            [w for w in q.list_workers() if w["worker_id"] == "worker_1@alpha"]),
            timeout=12 * LEASE + 60, what="alpha's worker to be done with its old attempt")
        task = q.get_task(tid)
        assert task.status == "completed" and task.worker_id == "worker_1@beta" and task.attempt == 2
        done = completions(q, tid)
        assert len(done) == 1 and done[0]["worker_id"] == "worker_1@beta" and done[0]["attempt"] == 2, done
        events = [e["event"] for e in q.get_events(tid)]
        assert events.count("recovered") == 1 and events.count("claimed") == 2, events
        assert q.get_stats()["pending"] == 0
        log = (alpha.cfg.logs_dir / "worker_1.log").read_text()
        assert f"task {tid}: completed" not in log, log
    finally:
        for host in (alpha, beta):
            if host is not None:
                host.close()
        server.stop()


# --- the README's "Several machines" ---------------------------------------------------------------

def readme_section():
    readme = (ROOT / "README.md").read_text()
    return readme.split("## Several machines\n", 1)[1].split("\n## ", 1)[0]


def test_the_readme_has_one_place_for_several_machines():
    readme = (ROOT / "README.md").read_text()
    assert "## Several hosts on one queue" not in readme
    section = readme_section()
    assert readme.count("requirements-postgres.txt") == 1 and "requirements-postgres.txt" in section
    for topic in (".pgpass", "PGPASSWORD", "[isolation] remote", "KLAUSS_HOST", "login", "cut off"):
        assert topic in section, topic
    toml = re.findall(r"^```toml\n(.*?)^```", section, re.S | re.M)
    assert len(toml) == 1
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    assert config.is_database_url(tomllib.loads(toml[0])["paths"]["db"])


def test_the_readmes_several_machines_commands_run_as_printed_from_a_project_root(tmp_path, postgres_url):
    commands = [line.strip() for block in re.findall(r"^```bash\n(.*?)^```", readme_section(), re.S | re.M)
                for line in block.splitlines() if line.strip()]
    assert commands[0] == "pip install -r klauss/requirements-postgres.txt"
    project = tmp_path / "project"
    project.mkdir()
    copy_klauss(project / "klauss")
    assert (project / "klauss" / "requirements-postgres.txt").is_file()  # pip itself is not run here
    install_fake_claude(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    env.update(PATH=f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}", KLAUSS_DB=postgres_url,
               KLAUSS_PYTHON=sys.executable)
    rest = commands[1:]
    assert rest and all(c.startswith("klauss/manage.sh ") for c in rest), rest
    try:
        for command in rest:
            out = subprocess.run(command.split(), cwd=str(project), env=env, capture_output=True, text=True,
                                 timeout=180, stdin=subprocess.DEVNULL)
            assert out.returncode == 0 and "Traceback" not in out.stderr, (command, out.stdout, out.stderr)
            if command.endswith("doctor"):
                assert "PostgreSQL" in out.stdout, out.stdout
    finally:
        subprocess.run([sys.executable, str(project / "klauss" / "claude_coordinator.py"), "kill"], cwd=str(project),
                       env=env, capture_output=True, timeout=60)


# --- the database URL's password is never shown ----------------------------------------------------

def test_a_database_url_is_shown_without_its_password():
    url = config.DatabaseUrl("postgresql://k:s3cret@db.example.com:5432/q?sslmode=require&password=other", ".")
    assert url.redacted() == "postgresql://k:***@db.example.com:5432/q?sslmode=require&password=***"
    assert config.shown_db(url) == url.redacted() and str(url).startswith("postgresql://k:s3cret@")
    assert config.shown_db(config.DatabaseUrl("postgresql://k@h/q", ".")) == "postgresql://k@h/q"


def test_no_view_log_or_process_listing_shows_the_database_password(tmp_path, postgres_url, monkeypatch, capsys):
    """Each of the three view programs (the coordinator, submit_task.py, the dashboard) as a program
    through manage.sh; the coordinator's other views through its entry point in this process (a
    start costs ~0.45 s of CPU here, most of it importing psycopg)."""
    import claude_coordinator
    secret = "Pw-s3cret-9x"  # the test server trusts local clients: the password is carried, not checked
    url = postgres_url.replace("postgresql://klauss@", f"postgresql://klauss:{secret}@", 1)
    assert secret in url
    project = tmp_path / "project"
    project.mkdir()
    (project / ".klauss.toml").write_text(f'[paths]\ndb = "{url}"\n[workers]\nidle_timeout = 0\n')
    install_fake_claude(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    env.update(PATH=f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}", KLAUSS_PYTHON=sys.executable)

    def manage(*args):
        out = subprocess.run([str(MANAGE), *args], cwd=str(project), env=env, capture_output=True, text=True,
                             timeout=120, stdin=subprocess.DEVNULL)
        assert "Traceback" not in out.stderr, out.stderr
        return out

    shown = []
    try:
        out = manage("start", "1")
        assert out.returncode == 0, out.stdout + out.stderr
        shown.append(out.stdout + out.stderr)
        cfg = config.load_config(cwd=project, env={})
        queue = claude_queue.TaskQueue(cfg=cfg)
        try:
            tid = queue.add_task("hello")
            wait_for(lambda: queue.get_task(tid).status == "completed", what="the task to run")
            coordinator = queue.get_flag(flags.coordinator(cfg.host))["value"]
            pids = [coordinator["pid"]] + [w["pid"] for w in queue.list_workers()]
            assert secret not in str(coordinator) and secret not in str(queue.list_workers())
        finally:
            queue.close()
        for var in [v for v in os.environ if v.startswith("KLAUSS_")]:
            monkeypatch.delenv(var)
        for var in ("PATH", "KLAUSS_PYTHON"):
            monkeypatch.setenv(var, env[var])
        monkeypatch.chdir(project)
        for args in (["status"], ["status", "--json"], ["doctor"], ["ps"], ["ps", "--json"],
                     ["logs", "coordinator"], ["logs", "worker", "1"], ["show", str(tid)], ["dashboard", "--once"]):
            if args in (["status"], ["show", str(tid)], ["dashboard", "--once"]):
                out = manage(*args)
                shown.append(out.stdout + out.stderr)
            else:
                capsys.readouterr()
                claude_coordinator.main(args)
                shown.append("".join(capsys.readouterr()))
        assert "postgresql://klauss:***@" in shown[1] + shown[2], shown[1]
        status = json.loads(manage("status", "--json").stdout)
        assert status["running"] and [w["alive"] for w in status["workers"]] == [True], \
            "the pool's processes are known by their command lines, which hold no password"
        for pid in pids:
            shown.append(open(f"/proc/{pid}/cmdline").read().replace("\0", " "))
        assert "postgresql://klauss" in shown[-1], "the worker names its database, without the password"
    finally:
        shown.append(manage("kill").stdout)
    assert all_dead(pids, within=30), "a process of the pool outlived `kill`"
    shown += [p.read_text() for p in (project / ".klauss" / "logs").glob("*.log")]
    for text in shown:
        assert secret not in text, text


def test_clean_leaves_a_database_on_a_server_alone_and_says_so(tmp_path, postgres_url):
    (tmp_path / ".klauss.toml").write_text(f'[paths]\ndb = "{postgres_url}"\n')
    cfg = config.load_config(cwd=tmp_path, env={})
    queue = claude_queue.TaskQueue(cfg=cfg)
    try:
        tid = queue.add_task("kept")
        cfg.logs_dir.mkdir(parents=True, exist_ok=True)
        (cfg.logs_dir / "worker_1.log").write_text("old\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
        out = subprocess.run([str(MANAGE), "clean", "--yes"], cwd=str(tmp_path), env={**env, "KLAUSS_PYTHON": sys.executable},
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0 and "stays on its server" in out.stdout, out.stdout + out.stderr
        assert "deleted the database" not in out.stdout and "deleted 1 log file(s)" in out.stdout, out.stdout
        assert queue.get_task(tid).prompt == "kept" and not (cfg.logs_dir / "worker_1.log").exists()
    finally:
        queue.close()



HOLDER = r"""
import sys
sys.path.insert(0, sys.argv[1])
import claude_queue, config
cfg = config.load_config(db=sys.argv[2], cwd=sys.argv[3], env={}, overrides={"workers": {"lease_seconds": 3}})
q = claude_queue.TaskQueue(sys.argv[2], cfg=cfg)
with q._write() as conn:
    conn.execute("SELECT count(*) FROM tasks").fetchone()  # the write lock is held from here
    print("locked", flush=True)
    sys.stdin.read()  # never ends the transaction: its host is cut off now
"""


def _a_write_gets_through(url, tmp_path):
    """The prompts in the queue once another client's task was added within a minute, else None."""
    queue = claude_queue.TaskQueue(url, cfg=config.load_config(db=url, cwd=tmp_path, env={}))
    done = []
    writer = threading.Thread(target=lambda: done.append(queue.add_task("after")), daemon=True)
    writer.start()
    writer.join(timeout=60)
    try:
        return [t.prompt for t in queue.list_tasks()] if done else None
    finally:
        queue.close()


def test_a_host_cut_off_inside_a_transaction_holds_the_queue_only_briefly(tmp_path, link):
    # The server keeps a cut-off client's transaction (and the write lock in it) until its TCP
    # gives up on the connection, hours later; every other host would wait that long.
    import pg_server

    try:
        server = pg_server.PgServer.start(listen=[link.server], trust=[link.cidr])
    except pg_server.PgUnavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    holder = None
    try:
        url = server.new_database()
        name = url.split("?")[0].rsplit("/", 1)[1]
        remote = f"postgresql://{pg_server.SUPERUSER}@{link.server}:{server.port}/{name}"
        holder = subprocess.Popen(["ip", "netns", "exec", link.ns, sys.executable, "-c", HOLDER, str(ROOT), remote,
                                   str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "locked"
        link.set("down")
        assert _a_write_gets_through(url, tmp_path), "another host's write still waits for the cut-off host's transaction"
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        server.stop()


def test_a_client_stopped_inside_a_transaction_holds_the_queue_only_a_lease(tmp_path, postgres_url):
    # Connected and silent (^Z, SIGSTOP, a debugger): its TCP answers the server's probes, so only
    # the transaction's own idle time can end it. Its write is undone, every other write goes on.
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(ROOT), postgres_url, str(tmp_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        os.kill(holder.pid, signal.SIGSTOP)
        assert _a_write_gets_through(postgres_url, tmp_path) == ["after"], \
            "another process's write still waits for the stopped client's transaction"
    finally:
        holder.kill()
        holder.wait()


def test_a_pool_keeps_to_the_connections_the_readme_allows(tmp_path, postgres_url):
    """README, "Connections": each worker holds two or three (its queue, its wake-up LISTEN and,
    while a task runs, its heartbeat's), the coordinator one; so a host's pool of W busy workers
    holds at most 3 x W + 1 of the server's connections."""
    import psycopg

    def connections():
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                 "AND pid <> pg_backend_pid()").fetchone()[0]

    host = Host(tmp_path, "alpha", postgres_url)
    try:
        host.queue.get_stats()  # the test's own connection, counted in `before`
        before = connections()
        host.start(2)
        runs = [blocking(tmp_path, name) for name in ("a", "b")]
        tids = [host.queue.add_task(prompt) for prompt, _, _ in runs]
        for _, started, _ in runs:
            wait_for(started.exists, what="both workers to be busy")
        # Counted once each heartbeat has renewed its lease: its connection is open then.
        leases = {t: host.queue.get_task(t).lease_expires_at for t in tids}
        wait_for(lambda: all(host.queue.get_task(t).lease_expires_at > leases[t] for t in tids),
                 what="both heartbeats")
        pool = connections() - before
        assert 2 + 1 <= pool <= 3 * 2 + 1, pool
        for _, _, go in runs:
            go.touch()
        wait_for(lambda: all(host.queue.get_task(t).status == "completed" for t in tids), what="both tasks to end")
    finally:
        host.close()
