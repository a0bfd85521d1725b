"""No process outlives its task, with the REAL Claude Code CLI (see tests/test_worker_real_cli.py).

The scripted model makes claude run a Bash tool `python3 -c "import time; time.sleep(300)"`. The
CLI runs each Bash command in a session and process group of its own, and (2.1.197) exits on
SIGTERM without ending it: killing claude's group alone leaves the tool running under pid 1. After
a timeout, a cancel, `manage.sh stop` and a SIGKILLed worker, nothing of that run may be alive
5 s later; and once the task is back in the queue for another run, nothing of the old one is."""

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

import claude_queue
import config
import messages_server as ms
import real_cli
from conftest import all_dead, wait_for
from conftest import pid_alive as alive

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "claude_worker.py"
COORDINATOR = ROOT / "claude_coordinator.py"
MANAGE = ROOT / "manage.sh"


def _read(path):
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def is_sleep_tool(argv):
    """The tool's python itself, whatever path it runs under: a pyenv shim execs it by its full path."""
    return len(argv) > 2 and os.path.basename(argv[0]).startswith(b"python") and argv[1] == b"-c" \
        and argv[2].startswith(b"import time")


class Session:
    """A project whose claude is the real CLI, allowed to run Bash, with a scripted model whose
    first answer runs a long sleep tagged with a word of this test's own."""

    def __init__(self, real_claude, tmp_path):
        self.root = tmp_path / "proj"
        self.root.mkdir()
        (self.root / ".klauss.toml").write_text(
            f"[claude]\ncommand = {json.dumps(str(real_claude))}\nallowed_tools = [\"Bash\"]\n"
            "[workers]\nlease_seconds = 10\nheartbeat_seconds = 0.5\nshutdown_grace_seconds = 1\n"
            "idle_timeout = 0\nrestart_backoff_max_seconds = 0.5\n[queue]\nretry_backoff_seconds = 0\n")
        self.queue = claude_queue.TaskQueue(cfg=config.load_config(cwd=self.root, env={}))
        self.tag = f"klauss-test-{uuid.uuid4().hex}"
        command = f'python3 -c "import time; time.sleep(300)" {self.tag}'
        self.server = ms.MessagesServer(script=[ms.tool_use("Bash", {"command": command, "description": "wait"}),
                                                ms.text("done")])
        self.server.start()
        self.home = tmp_path / "home"
        self.env = real_cli.real_claude_env(self.server.url, self.home)
        self.procs = []
        self.seen = set()

    def run_processes(self, tid):
        """Live processes of task `tid`'s runs: claude and all it started carry the task id and
        our HOME in their environment (the tool's command line also carries our tag)."""
        wanted = (f"KLAUSS_TASK_ID={tid}".encode(), f"HOME={self.home}".encode())
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            env = b"\0" + _read(f"/proc/{name}/environ") + b"\0"
            ours = all(b"\0" + w + b"\0" in env for w in wanted) or self.tag.encode() in _read(f"/proc/{name}/cmdline")
            if ours and alive(int(name)):
                found.append(int(name))
        self.seen.update(found)
        return found

    def tool_running(self, tid):
        """The pids of the run once its Bash tool's sleep runs (claude, the tool's shell, python)."""
        pids = self.run_processes(tid)
        tool = [p for p in pids if is_sleep_tool(_read(f"/proc/{p}/cmdline").split(b"\0"))]
        return pids if tool else None

    def start_worker(self):
        proc = subprocess.Popen([sys.executable, str(WORKER), "w1", "--exit-when-idle"], cwd=self.root, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def pool(self, *args, timeout=120):
        return subprocess.run([str(MANAGE), *args], cwd=self.root, env=self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def close(self):
        if self.queue.get_flag(f"coordinator@{self.queue.cfg.host}"):
            self.pool("kill")
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
        for pid in self.seen:  # whatever a failing test left behind
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        self.server.stop()
        self.queue.close()


@pytest.fixture
def session(real_claude, tmp_path):
    s = Session(real_claude, tmp_path)
    yield s
    s.close()


def test_after_a_timeout_nothing_of_the_run_is_alive(session):
    tid = session.queue.add_task("Run the command.", timeout=20, max_attempts=1)
    worker = session.start_worker()
    pids = wait_for(lambda: session.tool_running(tid), timeout=60, what="the Bash tool to run")
    out, _ = worker.communicate(timeout=120)
    task = session.queue.get_task(tid)
    assert task.status == "failed" and "timed out" in task.error, (task.status, task.error, out)
    assert all_dead(pids + session.run_processes(tid)), [p for p in session.seen if alive(p)]


def test_after_a_cancel_nothing_of_the_run_is_alive(session):
    tid = session.queue.add_task("Run the command.", timeout=600)
    worker = session.start_worker()
    pids = wait_for(lambda: session.tool_running(tid), timeout=60, what="the Bash tool to run")
    session.queue.cancel_task(tid)
    wait_for(lambda: session.queue.get_task(tid).status == "cancelled", timeout=60, what="the cancel")
    assert all_dead(pids + session.run_processes(tid)), [p for p in session.seen if alive(p)]
    out, _ = worker.communicate(timeout=60)
    assert worker.returncode == 0, out


def test_after_manage_stop_nothing_of_the_run_is_alive(session):
    tid = session.queue.add_task("Run the command.", timeout=600)
    started = session.pool("start", "1")
    assert started.returncode == 0, started.stdout + started.stderr
    pids = wait_for(lambda: session.tool_running(tid), timeout=60, what="the Bash tool to run")
    stopper = subprocess.Popen([str(MANAGE), "stop"], cwd=session.root, env=session.env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
    # The task goes back to the queue for another run: by then its old run must be over.
    wait_for(lambda: session.queue.get_task(tid).status == "pending", timeout=60, what="the task's release")
    assert [p for p in pids if alive(p)] == [], "the old run still runs while its task waits for a new one"
    out, _ = stopper.communicate(timeout=60)
    assert stopper.returncode == 0, out
    assert all_dead(pids + session.run_processes(tid)), [p for p in session.seen if alive(p)]


def test_after_a_sigkilled_worker_nothing_of_the_run_is_alive(session):
    tid = session.queue.add_task("Run the command.", timeout=600)
    started = session.pool("start", "1")
    assert started.returncode == 0, started.stdout + started.stderr
    pids = wait_for(lambda: session.tool_running(tid), timeout=60, what="the Bash tool to run")
    worker_pid = session.queue.list_workers()[0]["pid"]
    os.kill(worker_pid, signal.SIGKILL)
    assert all_dead(pids), [p for p in pids if alive(p)]
    # The task went back to the queue and ran again (the script's next answer ends it).
    wait_for(lambda: session.queue.get_task(tid).status == "completed", timeout=120, what="the task's second run")
    stopped = session.pool("stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert all_dead(session.run_processes(tid))
