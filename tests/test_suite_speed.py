"""The suite's own costs: what conftest.py does so a thousand process starts stay cheap."""

import subprocess
import sys

from conftest import copy_klauss


def test_a_copy_of_klauss_imports_the_sessions_bytecode_without_compiling(tmp_path):
    """pytest_configure compiled Klauss; copy_klauss carries the .pyc along, still valid for the
    copy (same mtime and size), so a process started there loads it instead of compiling."""
    copy = copy_klauss(tmp_path / "klauss")
    out = subprocess.run([sys.executable, "-v", "-c", "import claude_worker"], cwd=copy, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert f"code object from '{copy / '__pycache__' / 'claude_worker.'}" in out.stderr, out.stderr[-2000:]
