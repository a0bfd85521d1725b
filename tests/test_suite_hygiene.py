"""The suite ends what its tests left running (tests/leftovers.py): a run whose test leaves a
process behind, as a failing one may, finishes with that process gone, and nothing it did not start
touched."""

import os
import subprocess
import sys
import textwrap

import pytest

from conftest import all_dead, pid_alive

HERE = os.path.dirname(os.path.abspath(__file__))

INNER = textwrap.dedent('''
    import subprocess, sys
    def test_leaves_a_process_behind(tmp_path):
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(tmp_path / "proj")],
                                 start_new_session=True)
        (tmp_path.parent.parent / "left.pid").write_text(str(child.pid))
''')


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="the sweep reads /proc")
def test_what_a_test_left_running_is_ended_with_the_run(tmp_path):
    (tmp_path / "test_inner.py").write_text(INNER)
    # Not this run's: the same kind of process, naming a directory of its own.
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(tmp_path / "other")])
    try:
        env = {**os.environ, "PYTHONPATH": HERE}
        out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "leftovers", "-p", "no:cacheprovider",
                              "-p", "no:xdist", "--basetemp", str(tmp_path / "base"), "test_inner.py"],
                             cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        left = int((tmp_path / "left.pid").read_text())
        assert f"pid {left}: " in out.stderr and "leftovers: ending 1 process(es)" in out.stderr, out.stderr
        # SIGKILLed: gone as soon as the kernel lets it go (a busy machine may take a while).
        assert all_dead([left], within=60), "the process the inner test left is ended with its run"
        assert pid_alive(bystander.pid), "a process the run did not start is left alone"
    finally:
        bystander.kill()
        bystander.wait()
        if (tmp_path / "left.pid").exists():  # where the sweep failed, this test's own clean-up
            try:
                os.kill(int((tmp_path / "left.pid").read_text()), 9)
            except OSError:
                pass
