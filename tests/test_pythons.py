"""Klauss runs on Python 3.9 to 3.13: every runtime module imports, and a task goes from submit to
completed through a real worker, under each other interpreter this machine has (pyenv's included).
vermin (tests/test_codebase.py) checks the syntax and APIs; this checks that it actually runs."""

import glob
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import install_fake_claude

ROOT = Path(__file__).resolve().parent.parent
MODULES = ["config", "claude_queue", "claude_cli", "task_report", "worktrees", "claude_worker", "claude_coordinator",
           "claude_dashboard", "submit_task", "orchestrator", "klauss_mcp", "flags", "supervisor", "pool", "admin"]


def other_pythons():
    found = {}
    for minor in (9, 10, 11, 12, 13):
        candidates = [f"/usr/bin/python3.{minor}", os.path.expanduser(f"~/.pyenv/versions/3.{minor}*/bin/python3")]
        for pattern in candidates:
            for exe in sorted(glob.glob(pattern)):
                if os.access(exe, os.X_OK) and (3, minor) != sys.version_info[:2]:
                    found.setdefault(f"3.{minor}", exe)
    return found


PYTHONS = other_pythons()


@pytest.mark.parametrize("version", sorted(PYTHONS) or [pytest.param(None, marks=pytest.mark.skip(
    reason="no other Python 3.9-3.13 interpreter on this machine"))])
def test_runs_under(version, tmp_path):
    exe = PYTHONS[version]
    project = tmp_path / "proj"
    project.mkdir()
    install_fake_claude(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLAUSS_", "PYTHON"))}
    env["PATH"] = f"{tmp_path / 'bin'}:{env['PATH']}"
    # No .klauss.toml: Python < 3.11 only needs tomli to read one.
    out = subprocess.run([exe, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); import {', '.join(MODULES)}"],
                         cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    submit = subprocess.run([exe, str(ROOT / "submit_task.py"), "submit", '@fake {"write": "out.txt", "content": "x"}',
                             "--outputs", "out.txt"], cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert submit.returncode == 0, submit.stderr
    worker = subprocess.run([exe, str(ROOT / "claude_worker.py"), "w1", "--exit-when-idle"], cwd=project, env=env,
                            capture_output=True, text=True, timeout=120)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    show = subprocess.run([exe, str(ROOT / "submit_task.py"), "show", submit.stdout.strip(), "--json"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=120)
    assert '"status": "completed"' in show.stdout, show.stdout + show.stderr
    assert (project / "out.txt").read_text() == "x"
