"""Shared fixtures. Every test gets a private database and a configuration that ignores the
developer's own environment and `.klauss.toml`."""

import compileall
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import leftovers  # noqa: E402
from leftovers import pytest_sessionfinish  # noqa: E402,F401  (the hook, by its name here)

import claude_queue  # noqa: E402
import config  # noqa: E402
import pool  # noqa: E402
import real_cli  # noqa: E402

FAKE_CLAUDE = ROOT / "tests" / "fake_claude_start.py"  # tests/fake_claude.py, from its bytecode
MANAGE = ROOT / "manage.sh"
COORDINATOR = ROOT / "claude_coordinator.py"
MARKER_VAR = "KLAUSS_TEST_MARKER"


def install_fake_claude(bindir):
    """Put the fake `claude` in `bindir`, started with this very interpreter: through the shebang
    (and a pyenv shim) each start would cost ten times as much."""
    bindir = Path(bindir)
    bindir.mkdir(parents=True, exist_ok=True)
    claude = bindir / "claude"
    # `claude --version` (every new project's first worker asks) answered by the shell, as the fake
    # would (fake_claude.VERSION), unless the test records invocations: a Python start less each.
    claude.write_text('#!/bin/sh\n'
                      'if [ "$#" = 1 ] && [ "$1" = --version ] && [ -z "$FAKE_CLAUDE_LOG" ]; then\n'
                      '    echo "${FAKE_CLAUDE_VERSION:-2.1.197} (Claude Code)"; exit 0\n'
                      'fi\n'
                      f'exec "{sys.executable}" "{FAKE_CLAUDE}" "$@"\n')
    claude.chmod(0o755)
    return claude


# A `claude` that does the work the prompt's "Expected outputs" section asks for, by handing the
# fake CLI one write action per listed file: enough for documented commands to run for real.
WRITER = """#!{python}
import json, os, re, subprocess, sys
if "--version" in sys.argv:
    os.execv({python!r}, [{python!r}, {fake!r}, *sys.argv[1:]])
prompt = sys.stdin.read()
section = prompt.split("## Expected outputs", 1)[1].split("## ", 1)[0] if "## Expected outputs" in prompt else ""
outputs = re.findall(r"^- (\\S+)$", section, re.M)
actions = "".join("@fake " + json.dumps({{"write": p, "content": "generated\\n"}}) + "\\n" for p in outputs)
sys.exit(subprocess.run([{python!r}, {fake!r}, *sys.argv[1:]], input=(prompt + actions).encode()).returncode)
"""


def install_writer_claude(bindir):
    bindir = Path(bindir)
    bindir.mkdir(parents=True, exist_ok=True)
    claude = bindir / "claude"
    claude.write_text(WRITER.format(python=sys.executable, fake=str(FAKE_CLAUDE)))
    claude.chmod(0o755)
    return claude


def copy_klauss(dest):
    """A copy of this Klauss checkout's files (not its git data or runtime state) at `dest`, as a
    project would have it in `klauss/`; its bytecode goes along (see pytest_configure)."""
    skip = {".git", ".klauss", "__pycache__", ".pytest_cache", ".ruff_cache", "out", ".venv"}
    shutil.copytree(ROOT, dest, ignore=lambda _d, names: [n for n in names if n in skip or n.endswith(".db")])
    _copy_bytecode(ROOT, dest)
    return Path(dest)


def _copy_bytecode(src, dest):
    """The copy's modules keep their source's mtime and size (copytree), so the bytecode compiled
    for the session (pytest_configure) stays valid there: each process started in the copy is
    spared compiling every module it imports."""
    try:
        shutil.copytree(Path(src) / "__pycache__", Path(dest) / "__pycache__", dirs_exist_ok=True)
    except OSError:
        pass  # only a speed-up: without it, the copy's modules compile as they are imported


def fake(action, *args, **kwargs):
    """One fake-claude scenario line for a task prompt:
    fake("write", "out.txt", content="x") -> '@fake {"write": "out.txt", "content": "x"}'."""
    return "@fake " + json.dumps({action: args[0] if args else True, **kwargs})


def py(code):
    """A fake `run` action: a Python snippet run in the task's working dir."""
    return fake("run", [sys.executable, "-c", code])


def wait_for(predicate, timeout=60, what="condition"):
    """Poll until predicate() is truthy and return its value: the tests' one synchronization,
    bounded by a deadline that only a hang reaches. `what` (text or a callable giving text) says
    what never happened."""
    end = time.monotonic() + timeout
    pause = 0.01
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what() if callable(what) else what}")
        time.sleep(pause)
        # Quick to see what comes quickly; then less often, as predicates cost CPU (a /proc scan,
        # a query) that the processes under test, waited for, need more.
        pause = min(pause * 1.5, 0.1)


def database_at(path, version):
    """An SQLite database built by the migrations up to `version`, as an older Klauss left it
    (an open connection, to add that version's rows)."""
    conn = sqlite3.connect(path)
    for number in range(version):
        for statement in claude_queue._split_sql(claude_queue.MIGRATIONS[number]):
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {version}")
    return conn


def pid_alive(pid):
    """Running: a zombie counts as dead (in a container nothing may ever reap it)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def all_dead(pids, within=5.0):
    """True once none of `pids` runs (a SIGKILLed process takes a moment to go), False if one
    still does after `within` seconds."""
    try:
        wait_for(lambda: not any(pid_alive(p) for p in pids), timeout=within)
    except AssertionError:
        return False
    return True


def pytest_configure(config):
    """Compile Klauss (and the fakes) once for the session: the suite starts a thousand Python
    processes, and where PYTHONDONTWRITEBYTECODE=1 each would compile every module it imports
    (~0.1 s of CPU each). Python reads a valid .pyc even when it writes none."""
    _sigint_reaches_children()
    if hasattr(config, "workerinput"):  # an xdist worker: the controller did it before starting it
        return
    for directory in (ROOT, ROOT / "tests"):
        # Only what processes import; pytest compiles the test modules its own way.
        compileall.compile_dir(str(directory), maxlevels=0, quiet=2, rx=re.compile(r"[\\/](test_|conftest)[^\\/]*$"))
    _python3_without_a_shim(config)


def _sigint_reaches_children():
    """A suite started in the background by a shell without job control (`cmd &` in a script, as
    a CI runner may) has SIGINT ignored, and an ignored signal stays ignored across exec: the
    processes the Ctrl-C tests interrupt would never see it. Handled here, it is back to the
    default in every process the tests start."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _python3_without_a_shim(config):
    """Where `python3` on PATH is a script (a pyenv shim: bash and some thirty processes, ~0.15 s
    of CPU at every start), the processes tests start by that name (manage.sh's default, scripts'
    shebangs) get this very interpreter instead, as on a machine whose python3 is a binary. Set
    before xdist starts its workers, which inherit it; their test processes copy os.environ."""
    found = shutil.which("python3")
    try:
        with open(found or os.devnull, "rb") as fh:
            if fh.read(2) != b"#!":
                return
    except OSError:
        return
    # The interpreter's own directory first: a symlink elsewhere would start the base interpreter
    # behind a virtual environment (its pyvenv.cfg is looked for next to the name started), without
    # the environment's packages.
    bindir = Path(sys.executable).parent
    if not (bindir / "python3").exists():
        bindir = Path(tempfile.mkdtemp(prefix="klauss-tests-python3-"))
        (bindir / "python3").symlink_to(sys.executable)
        config.add_cleanup(lambda: shutil.rmtree(bindir, ignore_errors=True))
    os.environ["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.hookimpl(hookwrapper=True)
def pytest_collection(session):
    """pytest keeps the assertion-rewritten test modules in tests/__pycache__ only where bytecode
    may be written: under PYTHONDONTWRITEBYTECODE=1 every test process (four under xdist) would
    rewrite and compile every test module again (~3.5 s of CPU each). Collection alone may write
    them; the tests themselves run as the environment says."""
    was = sys.dont_write_bytecode
    sys.dont_write_bytecode = False
    try:
        yield
    finally:
        sys.dont_write_bytecode = was


def pytest_xdist_auto_num_workers(config):
    """`-n auto` (pyproject.toml): most tests wait on processes they started (pools, workers,
    claude, git) rather than use the CPU, so two test processes per core, at most eight."""
    return min(8, 2 * (os.cpu_count() or 1))


def kill_pool(cfg, cwd, env=None):
    """A test's teardown `claude_coordinator.py kill` of the pool it left running: the same
    pool.kill, in this process (a process start less per test); the command where that fails."""
    try:
        pool.kill(cfg)
    except Exception:
        subprocess.run([sys.executable, str(COORDINATOR), "kill"], cwd=str(cwd), env=env, capture_output=True,
                       timeout=60)


@pytest.fixture
def pool_project(tmp_path, monkeypatch):
    """A temp project with the fake claude on PATH, short timings, and cwd inside it; whatever pool
    a test started there is killed afterwards, by the pids its coordinator recorded."""
    root = tmp_path / "proj"
    root.mkdir()
    bindir = tmp_path / "bin"
    install_fake_claude(bindir)
    (root / ".klauss.toml").write_text(
        "[workers]\nlease_seconds = 10\nheartbeat_seconds = 0.5\nshutdown_grace_seconds = 1\nmax_workers = 4\n"
        "idle_timeout = 0\n[queue]\nretry_backoff_seconds = 0\n")
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.chdir(root)
    yield root
    try:
        q = claude_queue.TaskQueue(cfg=config.load_config(cwd=root, env={}))
    except (config.ConfigError, claude_queue.QueueError):
        return
    if q.running_coordinator() or q.get_flag(f"coordinator@{q.cfg.host}"):
        kill_pool(q.cfg, root)
    q.close()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in list(os.environ):
        if var.startswith("KLAUSS_"):
            monkeypatch.delenv(var)


class FakeClock:
    """A clock tests move by hand, so lease and backoff tests never wait for real time."""

    def __init__(self, start=1_700_000_000.0):
        self.now = start

    def __call__(self):
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def make_queue(tmp_path):
    """make_queue(clock=None, **overrides) -> TaskQueue on tmp_path/q.db."""
    made = []

    def make(clock=None, db=None, **overrides):
        db = db or tmp_path / "q.db"
        cfg = config.load_config(db=str(db), cwd=tmp_path, overrides=overrides, env={})
        q = claude_queue.TaskQueue(str(db), clock=clock, cfg=cfg)
        made.append(q)
        return q

    yield make
    for q in made:
        q.close()


@pytest.fixture
def queue(make_queue, clock):
    return make_queue(clock=clock)


@pytest.fixture(scope="session")
def real_claude():
    """The real Claude Code CLI (tests/real_cli.py installs and caches it); skipped, saying why,
    where it cannot be had or KLAUSS_SKIP_REAL_CLI=1."""
    if os.environ.get("KLAUSS_SKIP_REAL_CLI") == "1":
        pytest.skip("KLAUSS_SKIP_REAL_CLI=1")
    try:
        return real_cli.find_or_install_real_claude()
    except real_cli.RealCliUnavailable as exc:
        pytest.skip(f"real claude CLI unavailable: {exc}")


# --- a project driven through the real scripts ---------------------------------------------------

# Short enough that the whole file stays fast; the lease is long unless a test needs otherwise,
# so recovery that happens quickly proves the coordinator returned the task, not the lease.
POOL_SETTINGS = {
    "lease_seconds": 30,
    "heartbeat_seconds": 0.2,
    "poll_seconds": 0.2,
    "idle_timeout": 0,
    "shutdown_grace_seconds": 0.5,
    "restart_backoff_max_seconds": 0.2,
    "max_fast_crashes": 3,
}


class Project:
    """A project run through the real scripts (manage.sh, claude_coordinator.py) with the fake
    `claude` on PATH. Every process started with `env` carries a marker (inherited by the
    coordinator, its workers and their claude children), so cleanup() finds and kills every one
    of them even when a test fails half-way, and a test can prove nothing was left behind."""

    def __init__(self, tmp_path, claude=True, **settings):
        self.tmp = tmp_path
        self.root = tmp_path / "proj"
        self.root.mkdir(parents=True)
        self.marker = uuid.uuid4().hex
        self.bin = tmp_path / "bin"
        self.bin.mkdir(parents=True)
        if claude:
            install_fake_claude(self.bin)
        env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
        env["PATH"] = f"{self.bin}{os.pathsep}{env.get('PATH', '')}"
        env[MARKER_VAR] = self.marker
        env["KLAUSS_PYTHON"] = sys.executable  # manage.sh runs the programs on the Python under test
        self.env = env
        self.write_settings(**settings)
        self._queue = None

    def write_settings(self, **settings):
        values = {**POOL_SETTINGS, **settings}
        lines = ["[workers]"] + [f"{k} = {json.dumps(v)}" for k, v in values.items()]
        (self.root / ".klauss.toml").write_text("\n".join(lines) + "\n")

    @property
    def state(self):
        return self.root / ".klauss"

    @property
    def logs(self):
        return self.state / "logs"

    # --- running the scripts ---

    def run(self, argv, timeout=60, cwd=None, env=None, input=None):
        out = subprocess.run([str(a) for a in argv], cwd=str(cwd or self.root), env={**self.env, **(env or {})},
                             capture_output=True, text=True, timeout=timeout, input=input,
                             stdin=None if input is not None else subprocess.DEVNULL)
        assert "Traceback" not in out.stderr, out.stderr
        return out

    def manage(self, *args, **kw):
        return self.run([MANAGE, *args], **kw)

    def coordinator(self, *args, **kw):
        return self.run([sys.executable, COORDINATOR, *args], **kw)

    def popen_coordinator(self, *args):
        """A coordinator in the foreground (a child of the test), its stderr captured."""
        return subprocess.Popen([sys.executable, str(COORDINATOR), *map(str, args)], cwd=str(self.root), env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # --- the database ---

    def queue(self):
        if self._queue is None:
            cfg = config.load_config(cwd=self.root, env={})
            cfg.ensure_state_dir()
            self._queue = claude_queue.TaskQueue(None, cfg=cfg)
        return self._queue

    def flag(self):
        q = self.queue()
        flag = q.get_flag(f"coordinator@{q.cfg.host}")
        return flag["value"] if flag else None

    def workers(self):
        return {w["worker_id"]: w for w in self.queue().list_workers()}

    def task(self, task_id):
        return self.queue().get_task(task_id)

    def events(self, task_id):
        return [e["event"] for e in self.queue().get_events(task_id)]

    def wait_status(self, task_id, status, timeout=30):
        return wait_for(lambda: self.task(task_id).status == status, timeout, f"task {task_id} to be {status}")

    def wait_pool_up(self, n, timeout=30):
        def up():
            value = self.flag()
            ws = self.workers()
            return value and value.get("state") == "running" and len(ws) == n and \
                all(w["state"] in ("idle", "busy") for w in ws.values())
        return wait_for(up, timeout, f"a pool of {n} ready workers")

    # --- processes ---

    def processes(self):
        """Live (non-zombie) pids whose environment carries this project's marker."""
        found = []
        needle = f"{MARKER_VAR}={self.marker}".encode()
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/environ", "rb") as fh:
                    env = fh.read()
                with open(f"/proc/{name}/stat", "rb") as fh:
                    state = fh.read().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if needle in env and state != b"Z":
                found.append(int(name))
        return found

    def wait_no_processes(self, timeout=20):
        wait_for(lambda: not self.processes(), timeout, "every process of the pool to exit")

    def cleanup(self):
        leftovers.end(self.processes())
        if self._queue is not None:
            self._queue.close()


@pytest.fixture
def make_project(tmp_path):
    """make_project(claude=True, **settings) -> a Project (see there); every process it started is
    killed afterwards."""
    made = []

    def make(**kw):
        project = Project(tmp_path / f"p{len(made)}", **kw)
        made.append(project)
        return project

    yield make
    for project in made:
        project.cleanup()


def blocking_task(project, name):
    """A prompt that touches <name>.started, then waits for <name>.go before it succeeds."""
    started, go = project.tmp / f"{name}.started", project.tmp / f"{name}.go"
    prompt = "\n".join([fake("touch_file", str(started)), fake("wait_for_file", str(go)), f"task {name}"])
    return prompt, started, go


# --- a git project with Klauss in klauss/, driven as a user would ------------------------------------

GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com"]
SUBMODULE_SETTINGS = ("[workers]\nlease_seconds = 10\nheartbeat_seconds = 0.2\nshutdown_grace_seconds = 1\nmax_workers = 2\n"
                      "idle_timeout = 0\n[queue]\nretry_backoff_seconds = 0\nmax_attempts = 1\n")
# A printed command: the manage.sh path as the project root sees it, up to the end of its quote.
HINT = re.compile(r"klauss/manage\.sh(?: [^`)\n;,]*)?")
BROKEN = ("can't open file", "No such file", "command not found", "not found", "unknown command",
          "invalid choice", "unrecognized arguments", "Traceback")


class SubmoduleProject:
    """A git project with Klauss copied into klauss/ and the fake claude on PATH."""

    def __init__(self, tmp_path):
        self.root = tmp_path / "proj"
        self.root.mkdir()
        copy_klauss(self.root / "klauss")
        (self.root / ".klauss.toml").write_text(SUBMODULE_SETTINGS)
        (self.root / "README").write_text("a project\n")
        bindir = tmp_path / "bin"
        install_fake_claude(bindir)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
        self.env.update(PATH=f"{bindir}:{os.environ['PATH']}", KLAUSS_PYTHON=sys.executable)
        self.run("git", "init", "-q")
        self.run(*GIT, "add", "-A")
        self.run(*GIT, "commit", "-qm", "start")

    def run(self, *argv, check=True, **kw):
        out = subprocess.run(list(argv), cwd=str(self.root), env=self.env, capture_output=True, text=True,
                             timeout=180, stdin=subprocess.DEVNULL, **kw)
        if check:
            assert out.returncode == 0, (argv, out.stdout, out.stderr)
        return out

    def manage(self, *args, check=False):
        return self.run("klauss/manage.sh", *args, check=check)

    def plan(self, name, plan):
        (self.root / name).write_text(json.dumps(plan))
        return name

    def hinted(self, *outputs):
        found = []
        for text in outputs:
            for match in HINT.finditer(text):
                command = re.sub(r"\s*\[[A-Z]+\]", "", match.group(0)).strip()  # "[N]": an optional argument
                if command not in found:
                    found.append(command)
        return found

    def run_hint(self, command):
        out = self.run("bash", "-c", command, check=False)
        said = out.stdout + out.stderr
        assert out.returncode not in (2, 126, 127) and not any(b in said for b in BROKEN), (command, said)
        return out


@pytest.fixture(scope="session")
def postgres_server():
    """A throwaway PostgreSQL server for the whole session (tests/pg_server.py); skipped, saying
    why, where none can be started."""
    import pg_server

    try:
        server = pg_server.PgServer.start()
    except pg_server.PgUnavailable as exc:
        pytest.skip(f"no PostgreSQL server: {exc}")
    yield server
    server.stop()


@pytest.fixture
def postgres_url(postgres_server):
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    return postgres_server.new_database()
