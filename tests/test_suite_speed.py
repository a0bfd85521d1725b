"""The suite's own costs: what conftest.py does so a thousand process starts stay cheap."""

import subprocess
import sys

import conftest
from conftest import FAKE_CLAUDE, ROOT, copy_klauss


def test_a_copy_of_klauss_imports_the_sessions_bytecode_without_compiling(tmp_path):
    """pytest_configure compiled Klauss; copy_klauss carries the .pyc along, still valid for the
    copy (same mtime and size), so a process started there loads it instead of compiling."""
    copy = copy_klauss(tmp_path / "klauss")
    out = subprocess.run([sys.executable, "-v", "-c", "import claude_worker"], cwd=copy, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"code object from '{copy / '__pycache__' / 'claude_worker.'}" in out.stderr, out.stderr[-2000:]


def test_the_fake_claude_runs_from_bytecode():
    """The suite starts the fake `claude` a thousand times: through FAKE_CLAUDE it is an imported
    module, loaded from the session's .pyc, not a script compiled at every start."""
    out = subprocess.run([sys.executable, "-v", str(FAKE_CLAUDE), "--version"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "2.1.197 (Claude Code)", (out.stdout, out.stderr[-2000:])
    assert f"code object from '{ROOT / 'tests' / '__pycache__' / 'fake_claude.'}" in out.stderr, out.stderr[-2000:]


def test_wait_for_sees_quick_changes_quickly_and_polls_long_waits_less_often(monkeypatch):
    """Predicates cost CPU (a /proc scan, a query) that the processes waited for need more: the
    first looks come fast, then at most ten a second. A fake clock: no real time passes."""
    now = [0.0]
    pauses = []

    def sleep(seconds):
        pauses.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(conftest.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(conftest.time, "sleep", sleep)
    assert conftest.wait_for(lambda: now[0] >= 5.0, timeout=60) is True
    assert pauses[0] <= 0.02 and max(pauses) <= 0.1
    assert len(pauses) < 70, len(pauses)  # a fixed 0.02 s would look 250 times
