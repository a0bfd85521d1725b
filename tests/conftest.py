"""Shared fixtures. Every test gets a private database and a configuration that ignores the
developer's own environment and `.klauss.toml`."""

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import claude_queue  # noqa: E402
import config  # noqa: E402
import real_cli  # noqa: E402

FAKE_CLAUDE = ROOT / "tests" / "fake_claude.py"


def install_fake_claude(bindir):
    """Put the fake `claude` in `bindir`, started with this very interpreter: through the shebang
    (and a pyenv shim) each start would cost ten times as much."""
    bindir = Path(bindir)
    bindir.mkdir(parents=True, exist_ok=True)
    claude = bindir / "claude"
    claude.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_CLAUDE}" "$@"\n')
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
    project would have it in `klauss/`."""
    skip = {".git", ".klauss", "__pycache__", ".pytest_cache", ".ruff_cache", "out", ".venv"}
    shutil.copytree(ROOT, dest, ignore=lambda _d, names: [n for n in names if n in skip or n.endswith(".db")])
    return Path(dest)


def fake(action, *args, **kwargs):
    """One fake-claude scenario line for a task prompt:
    fake("write", "out.txt", content="x") -> '@fake {"write": "out.txt", "content": "x"}'."""
    return "@fake " + json.dumps({action: args[0] if args else True, **kwargs})


def wait_for(predicate, timeout=60, what="condition"):
    """Poll until predicate() is truthy: the tests' synchronization, bounded by a deadline."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}")


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
        subprocess.run([sys.executable, str(ROOT / "claude_coordinator.py"), "kill"], cwd=root,
                       capture_output=True, timeout=60)
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
