"""How a worker runs and stops one `claude` and everything it starts, against hostile `claude`
executables written here (the `evil_claude` modes of the faults report, Appendix B): a claude that
never reads its stdin, prints malformed events, lingers after its result, leaves a descendant in a
session of its own (with or without its environment), or prints without bound."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import claude_queue
import claude_worker
import config
import processes
from conftest import all_dead, wait_for
from conftest import pid_alive as alive

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "claude_worker.py"

EVIL = r'''#!{python}
import json, os, signal, sys, time
MODE = {mode!r}
if "--version" in sys.argv:
    print("2.1.329 (Claude Code)")
    sys.exit(0)
with open({pids!r}, "a") as fh:
    fh.write("%d\n" % os.getpid())

def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

RESULT = {{"type": "result", "subtype": "success", "is_error": False, "result": "work done",
          "session_id": "s1", "total_cost_usd": 0.001, "num_turns": 1, "permission_denials": []}}
if MODE == "nostdin":
    time.sleep(3600)
sys.stdin.buffer.read()
emit({{"type": "system", "subtype": "init", "session_id": "s1", "model": "evil"}})
if MODE == "malformed2":
    emit({{"type": "assistant", "message": {{"content": [], "usage": {{"output_tokens": "12k"}}}}}})
    for i in range(200):
        emit({{"type": "assistant", "message": {{"content": [{{"type": "text", "text": "x" * 1000}}]}}}})
elif MODE == "malformed":
    for odd in ([1, 2, 3], "str", None, {{"type": "assistant", "message": "notadict"}},
                {{"type": "assistant", "message": {{"content": "notalist", "usage": []}}}},
                {{"type": "system", "subtype": "api_retry", "attempt": {{}}}}):
        emit(odd)
    sys.stdout.write("[" * 100000 + "\n")  # too deep for json: RecursionError, not ValueError
    for i in range(200):
        emit({{"type": "assistant", "message": {{"content": [{{"type": "text", "text": "y" * 1000}}]}}}})
elif MODE == "linger":
    emit(RESULT)
    sys.stdout.close()
    time.sleep(3600)
elif MODE == "hugeline":
    for i in range(40):
        sys.stdout.write("z" * (1 << 20))
    sys.stdout.write("\n")
elif MODE == "bigout":
    for i in range(4000):
        emit({{"type": "assistant", "message": {{"content": [{{"type": "text", "text": "%06d" % i + "b" * 1000}}]}}}})
elif MODE in ("escape", "escape_env", "escape_env_stay"):
    child = os.fork()
    if child == 0:
        os.setsid()
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if MODE != "escape":
            os.execve("/bin/sleep", ["sleep", "600"], {{}})
        time.sleep(600)
        os._exit(0)
    with open({pids!r}, "a") as fh:
        fh.write("%d\n" % child)
    if MODE == "escape_env_stay":
        time.sleep(600)
emit(RESULT)
'''


def write_evil(tmp_path, mode):
    path = tmp_path / f"evil_{mode}"
    pids = tmp_path / f"pids_{mode}"
    path.write_text(EVIL.format(python=sys.executable, mode=mode, pids=str(pids)))
    path.chmod(0o755)
    return path, pids


def started_pids(pids_file):
    return [int(p) for p in pids_file.read_text().split()] if pids_file.exists() else []


@pytest.fixture
def evil_project(tmp_path):
    """evil_project(mode, timeout=...) -> (queue, claude path, pids file); cleans up every pid the
    hostile claude and its children recorded, whatever the test did."""
    made = []

    def make(mode):
        root = tmp_path / "proj"
        root.mkdir(exist_ok=True)
        exe, pids = write_evil(tmp_path, mode)
        (root / ".klauss.toml").write_text(
            f"[claude]\ncommand = {json.dumps(str(exe))}\n"
            "[workers]\nlease_seconds = 10\nheartbeat_seconds = 0.5\nshutdown_grace_seconds = 1\n"
            "[queue]\nretry_backoff_seconds = 0\n")
        queue = claude_queue.TaskQueue(cfg=config.load_config(cwd=root, env={}))
        made.append((queue, pids))
        return root, queue, pids

    yield make
    for queue, pids in made:
        for pid in started_pids(pids):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        queue.close()


def run_worker(root, timeout=90):
    """One worker until idle. Killed (with what it started) if it is still going after `timeout`."""
    proc = subprocess.Popen([sys.executable, str(WORKER), "w1", "--exit-when-idle"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise AssertionError(f"the worker was still running after {timeout}s:\n{out}") from None
    return proc.returncode, out


# --- C: a claude that never reads stdin -----------------------------------------------------------

def test_a_prompt_bigger_than_the_pipe_times_out_when_claude_does_not_read_it(evil_project):
    root, queue, pids = evil_project("nostdin")
    tid = queue.add_task("x" * 300_000, timeout=2, max_attempts=1)
    rc, out = run_worker(root, timeout=60)
    task = queue.get_task(tid)
    assert rc == 0, out
    assert task.status == "failed" and "timed out after 2s" in task.error, (task.status, task.error, out)
    assert all_dead(started_pids(pids))


@pytest.mark.parametrize("how", ["cancel", "stop"])
def test_stop_and_cancel_act_while_claude_does_not_read_its_prompt(evil_project, how):
    root, queue, pids = evil_project("nostdin")
    tid = queue.add_task("x" * 300_000, timeout=600)
    proc = subprocess.Popen([sys.executable, str(WORKER), "w1", "--exit-when-idle"], cwd=root,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for(lambda: started_pids(pids), what="claude started")
        if how == "cancel":
            queue.cancel_task(tid)
        else:
            os.kill(proc.pid, signal.SIGTERM)  # what the coordinator does on manage.sh stop
        expected = "cancelled" if how == "cancel" else "pending"
        wait_for(lambda: queue.get_task(tid).status == expected, timeout=30,
                 what=lambda: f"the {how} to act (task is {queue.get_task(tid).status})")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert all_dead(started_pids(pids))


# --- D: malformed stream events ----------------------------------------------------------------

@pytest.mark.parametrize("mode", ["malformed2", "malformed"])
def test_malformed_events_are_skipped_and_the_stream_keeps_draining(evil_project, mode):
    root, queue, pids = evil_project(mode)
    tid = queue.add_task("go", timeout=30, max_attempts=1)
    rc, out = run_worker(root)
    task = queue.get_task(tid)
    assert task.status == "completed", (task.error, out)
    assert task.result == "work done"
    assert "Traceback" not in out and "Exception in thread" not in out, out
    assert any("malformed stream event(s) skipped" in w for w in task.outcome.get("warnings", [])), task.outcome
    transcript = Path(task.outcome["transcript"]).read_bytes().splitlines()
    assert json.loads(transcript[-1])["type"] == "result", "the whole stream reached the transcript"


def test_stream_state_never_raises_on_a_wrong_shape():
    import claude_cli
    state = claude_cli.StreamState()
    for event in ({"type": "assistant", "message": "notadict"},
                  {"type": "assistant", "message": {"usage": {"output_tokens": "12k"}}},
                  {"type": "assistant", "message": {"content": 5}},
                  {"type": "rate_limit_event", "rate_limit_info": "x"},
                  {"type": "result", "subtype": "success", "total_cost_usd": "lots"},
                  {"type": "result", "subtype": 5}):
        assert state.feed(event) is False
    assert state.malformed_events == 6 and state.result is None
    assert state.feed({"type": "assistant", "message": {"usage": {"output_tokens": 7}}})
    assert state.output_tokens == 7


# --- E: a claude that prints its result but does not exit ---------------------------------------

def test_a_result_then_no_exit_is_judged_by_the_result(evil_project):
    root, queue, pids = evil_project("linger")
    tid = queue.add_task("go", timeout=45, max_attempts=1)
    rc, out = run_worker(root)
    task = queue.get_task(tid)
    assert task.status == "completed", (task.error, out)
    assert task.result == "work done"
    assert any("did not exit" in w for w in task.outcome["warnings"])
    assert all_dead(started_pids(pids))


# --- B: a descendant that leaves claude's session -----------------------------------------------

@pytest.mark.parametrize("mode", ["escape", "escape_env"])
def test_a_descendant_in_a_session_of_its_own_dies_with_the_run(evil_project, mode):
    root, queue, pids = evil_project(mode)
    tids = [queue.add_task(f"go {i}", timeout=60, max_attempts=1) for i in range(2)]
    rc, out = run_worker(root)
    assert [queue.get_task(t).status for t in tids] == ["completed", "completed"], out
    started = started_pids(pids)
    assert len(started) == 4, started  # two claudes, each with its escaped child
    assert all_dead(started), [p for p in started if alive(p)]
    assert "left outside claude's group" in out, out


def test_what_a_sigkilled_workers_run_left_without_its_environment_dies_too(evil_project):
    root, queue, pids = evil_project("escape_env_stay")
    tid = queue.add_task("go", timeout=600)
    coordinator = [sys.executable, str(ROOT / "claude_coordinator.py")]
    started = subprocess.run([*coordinator, "start", "1"], cwd=root, capture_output=True, text=True, timeout=120)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        escaped = wait_for(lambda: started_pids(pids)[1:], timeout=60, what="claude's escaped child")
        worker = next(w["pid"] for w in queue.list_workers() if w["current_task"] == tid)
        os.kill(worker, signal.SIGKILL)
        assert all_dead(started_pids(pids)), [p for p in started_pids(pids) if alive(p)]
        assert escaped
    finally:
        subprocess.run([*coordinator, "kill"], cwd=root, capture_output=True, timeout=60)


def test_the_worker_is_a_subreaper_and_reaps_only_children_not_kept(tmp_path):
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_CHILD_SUBREAPER is Linux only")
    grandchild = "import os\nif os.fork() == 0:\n    os.setsid()\n    os.execve('/bin/sleep', ['sleep', '60'], {})\n"
    code = (
        "import json, os, subprocess, sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "import processes\n"
        "assert processes.become_subreaper()\n"
        "keep = subprocess.Popen(['sleep', '60'])\n"
        # a grandchild that leaves its session and clears its environment; then its parent exits
        f"subprocess.run([sys.executable, '-c', {grandchild!r}])\n"
        "while len(processes.child_pids()) < 2: time.sleep(0.01)\n"
        "orphan = [p for p in processes.child_pids() if p != keep.pid][0]\n"
        "killed = processes.reap_orphans(keep={keep.pid})\n"
        "print(json.dumps({'orphan': orphan, 'killed': killed, 'kept': keep.poll(), 'left': processes.child_pids()}))\n"
        "keep.kill(); keep.wait()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    orphan = got["orphan"]
    assert got["killed"] == [orphan] and got["kept"] is None and got["left"] == [got["left"][0]]
    assert not alive(int(orphan))


# --- F: bounded output ------------------------------------------------------------------------

class _StubWorker:
    """What a Run needs of its worker, for driving one run in-process."""
    subreaper = False
    worker_id = "w1"
    queue = SimpleNamespace(set_activity=lambda *a, **k: None)

    def note_claude(self, pid, marker=None):
        pass

    def shutdown_due(self):
        return False


def run_in_process(tmp_path, mode):
    exe, pids = write_evil(tmp_path, mode)
    task = SimpleNamespace(id=1, attempt=1)
    transcript = tmp_path / "transcript.jsonl"
    run = claude_worker.Run(_StubWorker(), task, [str(exe), "-p"], "go", str(tmp_path), dict(os.environ), 60,
                            transcript)
    code, _ = run.execute()
    return run, code, transcript


def test_a_huge_line_is_cut_and_the_run_still_reads_its_result(tmp_path, monkeypatch):
    monkeypatch.setattr(claude_worker, "MAX_EVENT_LINE_BYTES", 1 << 20, raising=False)
    run, code, transcript = run_in_process(tmp_path, "hugeline")
    assert code == 0 and run.state.result["result"] == "work done"
    assert transcript.stat().st_size < 64 * 1024
    lines = [json.loads(line) for line in transcript.read_bytes().splitlines()]
    cut = [e for e in lines if e["type"] == "klauss_line_cut"]
    assert len(cut) == 1 and cut[0]["bytes"] == 40 * (1 << 20) + 1 and cut[0]["head"].startswith("zzz")
    assert run.problems == {f"stream line(s) over {1 << 20} bytes cut": 1}


def test_a_transcript_keeps_its_head_and_tail_and_says_what_was_cut(tmp_path, monkeypatch):
    monkeypatch.setattr(claude_worker, "TRANSCRIPT_HEAD_BYTES", 100_000, raising=False)
    monkeypatch.setattr(claude_worker, "TRANSCRIPT_TAIL_BYTES", 50_000, raising=False)
    run, code, transcript = run_in_process(tmp_path, "bigout")
    assert code == 0 and run.state.result["result"] == "work done"
    data = transcript.read_bytes()
    assert len(data) <= 100_000 + 50_000 + 1000
    lines = [json.loads(line) for line in data.splitlines()]
    assert lines[0]["type"] == "system" and lines[-1]["type"] == "result"
    notes = [e for e in lines if e["type"] == "klauss_transcript_cut"]
    assert len(notes) == 1 and notes[0]["lines"] > 3000 and "cut" in notes[0]["message"]
    texts = [e["message"]["content"][0]["text"][:6] for e in lines if e["type"] == "assistant"]
    kept = len(texts)
    assert kept + notes[0]["lines"] == 4000
    assert texts[0] == "000000" and texts[-1] == "003999"


def test_the_run_marker_is_in_claudes_environment_and_recorded(tmp_path):
    exe = tmp_path / "envclaude"
    exe.write_text(f"#!{sys.executable}\nimport json, os, sys\nsys.stdin.read()\n"
                   "print(json.dumps({'type': 'result', 'subtype': 'success', 'is_error': False, "
                   "'result': os.environ.get('KLAUSS_RUN')}))\n")
    exe.chmod(0o755)
    noted = []
    worker = _StubWorker()
    worker.note_claude = lambda pid, marker=None: noted.append(marker)
    run = claude_worker.Run(worker, SimpleNamespace(id=7, attempt=2), [str(exe)], "go", str(tmp_path),
                            dict(os.environ), 60, tmp_path / "t.jsonl")
    run.execute()
    assert run.state.result["result"] == run.marker and run.marker.startswith("7:2:")
    assert noted == [run.marker, None]
    assert processes.RUN_MARKER_VAR == "KLAUSS_RUN"


def test_a_pipe_held_by_a_process_out_of_reach_leaks_no_thread_and_no_descriptor(tmp_path):
    # Driven in-process without a subreaper, the escaped, environment-less child is out of our
    # reach and keeps claude's stdout and stderr open: the run must still end, closing its pipes
    # and ending its threads rather than leaving them blocked on those pipes.
    import threading
    threads_before = threading.active_count()
    fds_before = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    try:
        run, code, _ = run_in_process(tmp_path, "escape_env")
        assert code == 0 and run.state.result["result"] == "work done"
        escaped = started_pids(tmp_path / "pids_escape_env")[1]
        assert alive(escaped), "the test needs a process the run could not end"
        assert threading.active_count() == threads_before
        if fds_before is not None:
            assert len(os.listdir("/proc/self/fd")) == fds_before
    finally:
        for pid in started_pids(tmp_path / "pids_escape_env"):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
