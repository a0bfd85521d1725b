"""claude_worker.py end to end, driven through the real script with the fake `claude` on PATH.

Scenarios are `@fake {json}` lines in the task prompt (see tests/fake_claude.py)."""

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
from conftest import fake, install_fake_claude, wait_for
from conftest import pid_alive as alive

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "claude_worker.py"


def gone(pgid):
    """No live process is left in the process group."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except (FileNotFoundError, ProcessLookupError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                return False
    return True


class Project:
    def __init__(self, root, env, fakelog):
        self.root = root
        self.env = env
        self.fakelog = fakelog
        self.cfg = config.load_config(cwd=root, env={})
        self.queue = claude_queue.TaskQueue(cfg=self.cfg)
        self.procs = []

    def add(self, *lines, **kwargs):
        return self.queue.add_task("\n".join(lines), **kwargs)

    def run_worker(self, *args, timeout=60):
        return subprocess.run([sys.executable, str(WORKER), "w1", "--exit-when-idle", *args], cwd=self.root,
                              env=self.env, capture_output=True, text=True, timeout=timeout)

    def start_worker(self, *args, name="w1"):
        proc = subprocess.Popen([sys.executable, str(WORKER), name, *args], cwd=self.root, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(proc)
        return proc

    def invocations(self):
        """The fake's task runs (not the worker's `claude --version` check)."""
        path = self.fakelog / "invocations.jsonl"
        runs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [r for r in runs if "-p" in r["argv"]]

    def task(self, tid):
        return self.queue.get_task(tid)


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    bindir = tmp_path / "bin"
    install_fake_claude(bindir)
    fakelog = tmp_path / "fakelog"
    fakelog.mkdir()
    (root / ".klauss.toml").write_text(
        "[workers]\nlease_seconds = 5\nheartbeat_seconds = 0.2\nshutdown_grace_seconds = 0.5\n"
        "[queue]\nretry_backoff_seconds = 0\n"
        "[claude]\nenv = { KLAUSS_TEST_MARK = \"yes\" }\ncontext_inline_bytes = 100\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    env.update(PATH=f"{bindir}:{os.environ['PATH']}", FAKE_CLAUDE_LOG=str(fakelog))
    p = Project(root, env, fakelog)
    yield p
    for proc in p.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    for inv in p.invocations():
        if inv["pgid"] == os.getpgid(0):
            continue  # never our own group
        try:
            os.killpg(inv["pgid"], signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


# --- running a task ------------------------------------------------------------------------------

def test_success_records_the_whole_outcome(project):
    (project.root / "src").mkdir()
    (project.root / "src" / "small.py").write_text("print('hi')\n")
    (project.root / "src" / "big.py").write_text("x = 1\n" * 100)
    job = project.queue.create_job("Build auth", metadata={"context": "We use Flask."})
    tid = project.add("Implement login", fake("write", "src/login.py", content="def login(): pass\n"),
                      fake("text", "Login implemented."),
                      job_id=job, context_files=["src/*.py"], expected_outputs=["src/login.py"])
    out = project.run_worker()
    assert out.returncode == 0, out.stderr
    t = project.task(tid)
    assert t.status == "completed", t.error
    assert t.result == "Login implemented."
    o = t.outcome
    assert o["session_id"] and o["total_cost_usd"] > 0 and t.cost_usd == o["total_cost_usd"]
    assert o["num_turns"] == 2 and o["usage"]["output_tokens"] > 0
    assert o["outputs_verified"] == ["src/login.py"] and o["outputs_missing"] == []
    assert o["exit_code"] == 0 and o["error_class"] == "success"
    transcript = [json.loads(line) for line in Path(o["transcript"]).read_text().splitlines()]
    assert transcript[0]["subtype"] == "init" and transcript[-1]["type"] == "result"
    assert Path(o["transcript"]).parent == project.cfg.logs_dir / "tasks"
    assert [e["event"] for e in project.queue.get_events(tid)] == ["created", "claimed", "completed"]

    [inv] = project.invocations()
    assert inv["argv"] == ["-p", "--output-format", "stream-json", "--verbose", "--permission-mode", "acceptEdits"]
    assert inv["cwd"] == str(project.root)
    assert inv["env"]["KLAUSS_TASK_ID"] == str(tid) and inv["env"]["KLAUSS_JOB_ID"] == job
    prompt = inv["stdin"]
    assert "Implement login" not in " ".join(inv["argv"]), "the prompt travels on stdin only"
    for piece in (f"task #{tid}", job, "Build auth", "We use Flask.", "src/small.py", "print('hi')",
                  "src/big.py (600 bytes) (not inlined", "## Expected outputs", "- src/login.py"):
        assert piece in prompt, piece
    assert prompt.index("## Task") > prompt.index("## Expected outputs"), "the task itself comes last"


def test_config_and_task_metadata_shape_the_command(project):
    (project.root / ".klauss.toml").write_text(
        "[claude]\nmodel = \"sonnet\"\nmax_turns = 7\nallowed_tools = [\"Bash(npm test:*)\"]\n"
        "extra_args = [\"--add-dir\", \"/tmp\"]\nenv = { KLAUSS_TEST_MARK = \"yes\" }\n")
    project.add("a", metadata={"model": "haiku", "max_budget_usd": 2, "allowed_tools": ["Edit"]})
    assert project.run_worker().returncode == 0
    argv = project.invocations()[0]["argv"]
    assert "--model=haiku" in argv and "--max-turns=7" in argv and "--max-budget-usd=2" in argv
    assert argv[argv.index("--allowedTools=Bash(npm test:*)") + 1] == "--allowedTools=Edit"
    assert argv[-2:] == ["--add-dir", "/tmp"]
    assert project.invocations()[0]["env"]["KLAUSS_TEST_MARK"] == "yes"


def test_live_activity_while_claude_works(project):
    release = project.root / "release"
    tid = project.add(fake("tool", "Bash", input={"command": "npm test"}),
                      fake("wait_for_file", str(release)), fake("text", "done"))
    worker = project.start_worker()
    # The first write may be "started"; the tool call follows within the throttle interval.
    activity = wait_for(lambda: (project.task(tid).activity or "").startswith("Bash") and project.task(tid).activity,
                        what="activity")
    assert activity.startswith("Bash: npm test") and "tokens" in activity
    [w] = wait_for(lambda: [w for w in project.queue.list_workers() if w["state"] == "busy"], what="busy worker")
    assert w["current_task"] == tid and w["info"]["claude_pid"]
    release.touch()
    wait_for(lambda: project.task(tid).status == "completed", what="completion")
    assert project.task(tid).activity is None
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


# --- deciding the outcome ------------------------------------------------------------------------

def test_missing_expected_output_is_a_retryable_failure(project):
    tid = project.add("say hi", expected_outputs=["report.md"], max_attempts=2)
    project.run_worker()
    t = project.task(tid)
    assert t.status == "failed" and t.attempts_used == 2
    assert "report.md" in t.error and t.outcome["outputs_missing"] == ["report.md"]


def test_output_that_existed_but_was_not_rewritten_does_not_count(project):
    (project.root / "old.txt").write_text("from before")
    tid = project.add("do nothing", expected_outputs=["old.txt"], max_attempts=1)
    project.run_worker()
    assert project.task(tid).status == "failed"
    tid2 = project.add(fake("write", "old.txt", content="new"), expected_outputs=["old.txt"])
    project.run_worker()
    assert project.task(tid2).status == "completed"


def test_denied_tool_calls_fail_the_task_and_say_how_to_allow_them(project):
    tid = project.add(fake("deny", "Write", path="out.txt", content="x"), expected_outputs=["out.txt"],
                      max_attempts=3)
    project.run_worker()
    t = project.task(tid)
    assert t.status == "failed" and t.attempts_used == 1, "a denial would repeat: not retried"
    assert "denied (Write)" in t.error and 'allowed_tools = ["Write"]' in t.error
    assert t.outcome["permission_denials"][0]["tool_name"] == "Write"


def test_denials_without_missing_outputs_complete_with_a_warning(project):
    tid = project.add(fake("deny", "Bash", input={"command": "rm -rf /"}), fake("text", "done anyway"))
    project.run_worker()
    t = project.task(tid)
    assert t.status == "completed" and "Bash" in t.outcome["warnings"][0]


@pytest.mark.parametrize("kind", ["max_turns", "max_budget", "prompt_too_long"])
def test_limits_fail_without_retry(project, kind):
    tid = project.add(fake("error", kind), max_attempts=3)
    project.run_worker()
    t = project.task(tid)
    assert t.status == "failed" and t.attempts_used == 1, t.error


@pytest.mark.parametrize("kind", ["rate_limit", "overloaded", "server_error", "connection_failed", "during_execution"])
def test_transient_errors_are_retried_then_fail(project, kind):
    tid = project.add(fake("error", kind), max_attempts=2)
    project.run_worker()
    t = project.task(tid)
    assert t.status == "failed" and t.attempts_used == 2
    assert [e["event"] for e in project.queue.get_events(tid)].count("failed") == 2


def test_transient_error_then_success(project, tmp_path):
    marker = tmp_path / "second-attempt"
    # The first attempt fails (and leaves a marker); the retry finds the marker and succeeds.
    script = tmp_path / "once.py"
    script.write_text(f"import os, sys\nm = {str(marker)!r}\nsys.exit(0 if os.path.exists(m) else (open(m, 'w').close() or 1))\n")
    tid = project.add(fake("run", [sys.executable, str(script)]), fake("text", "ok"), max_attempts=2)
    project.run_worker()
    assert project.task(tid).status == "completed"


def test_crash_without_result_keeps_stderr(project):
    tid = project.add(fake("exit", 1, stderr="TypeError: boom in claude"), max_attempts=1)
    project.run_worker()
    t = project.task(tid)
    assert t.status == "failed" and "without a result" in t.error and "boom" in t.error
    assert "boom" in t.outcome["stderr_tail"]


@pytest.mark.parametrize("kind, advice", [("invalid_api_key", "/login"), ("not_logged_in", "/login"),
                                          ("billing", "credits")])
def test_configuration_errors_release_the_task_and_stop_the_worker(project, kind, advice):
    first = project.add(fake("error", kind))
    second = project.add("never reached")
    out = project.run_worker()
    assert out.returncode == 3
    assert advice in out.stderr
    for tid in (first, second):
        t = project.task(tid)
        assert t.status == "pending" and t.attempts_used == 0, "nothing burned"
    assert len(project.invocations()) == 1
    flag = project.queue.get_flag(f"config_error@{project.queue.cfg.host}")  # this host's
    assert advice in flag["value"]["fix"]
    # A fresh start is the user's "fixed it": the flag clears and work resumes.
    (project.root / "fixed").touch()
    project.queue.add_task("after the fix")
    project.queue.cancel_task(first)
    assert project.run_worker().returncode == 0
    assert project.task(second).status == "completed"


def test_usage_limit_pauses_every_worker_until_the_reset(project):
    resets = int(time.time()) + 3600
    tid = project.add(fake("error", "usage_limit", resets_at=resets))
    other = project.add("would run next")
    out = project.run_worker()
    assert out.returncode == 0
    t = project.task(tid)
    assert t.status == "pending" and t.attempts_used == 0 and t.not_before == pytest.approx(resets, abs=1)
    (pause,) = project.queue.list_flags("paused@login:").values()  # every worker on this login
    assert pause["until"] == resets and pause["value"]["reason"] == "usage_limit"
    assert project.task(other).status == "pending", "no worker claims while paused"
    assert len(project.invocations()) == 1


def test_timeout_kills_the_whole_process_group(project, tmp_path):
    pidfile = tmp_path / "pids.json"
    tid = project.add(fake("hang", child=True, pidfile=str(pidfile)), timeout=1, max_attempts=1)
    project.run_worker()
    t = project.task(tid)
    assert t.status == "failed" and "timed out after 1s" in t.error
    pids = json.loads(pidfile.read_text())
    assert not alive(pids["pid"]) and not alive(pids["child_pid"]) and gone(pids["pid"])


def test_claude_not_found_is_a_clear_error_at_start(project):
    env = dict(project.env, KLAUSS_CLAUDE="definitely-not-claude")
    out = subprocess.run([sys.executable, str(WORKER), "w1", "--exit-when-idle"], cwd=project.root, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    assert "claude CLI not found: tried 'definitely-not-claude'" in out.stderr
    assert "Traceback" not in out.stderr


def test_boundary_is_checked_again_before_running(project, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    loose = config.load_config(cwd=project.root, env={}, overrides={"safety.allow_external_dirs": True})
    tid = claude_queue.TaskQueue(cfg=loose).add_task("escape", working_dir=str(outside))
    project.run_worker()
    t = project.task(tid)
    assert t.status == "failed" and "refused before running" in t.error and "outside the project" in t.error
    assert project.invocations() == []


# --- cancel, shutdown, crashes -------------------------------------------------------------------

def test_cancel_stops_claude_and_ends_cancelled(project, tmp_path):
    started = tmp_path / "started"
    tid = project.add(fake("touch_file", str(started)), fake("hang", child=True, pidfile=str(tmp_path / "p.json")))
    worker = project.start_worker()
    wait_for((tmp_path / "p.json").exists, what="claude to start")
    assert project.queue.cancel_task(tid) == "cancel_requested"
    wait_for(lambda: project.task(tid).status == "cancelled", what="cancel")
    pids = json.loads((tmp_path / "p.json").read_text())
    wait_for(lambda: gone(pids["pid"]), what="claude's group to die")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


def test_sigterm_releases_the_running_task_after_the_grace_period(project, tmp_path):
    started = tmp_path / "started"
    tid = project.add(fake("touch_file", str(started)), fake("hang", child=True, pidfile=str(tmp_path / "p.json")))
    worker = project.start_worker()
    wait_for((tmp_path / "p.json").exists, what="claude to start")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    t = project.task(tid)
    assert t.status == "pending" and t.attempts_used == 0, "released, not failed"
    assert "released" in [e["event"] for e in project.queue.get_events(tid)]
    pids = json.loads((tmp_path / "p.json").read_text())
    assert gone(pids["pid"]) and not alive(pids["child_pid"])
    assert project.queue.list_workers() == []


def test_sigterm_lets_a_task_that_finishes_within_the_grace_period_complete(project, tmp_path):
    (project.root / ".klauss.toml").write_text("[workers]\nshutdown_grace_seconds = 60\nheartbeat_seconds = 0.2\n")
    started, release = tmp_path / "started", tmp_path / "release"
    tid = project.add(fake("touch_file", str(started)), fake("wait_for_file", str(release)), fake("text", "finished"))
    worker = project.start_worker()
    wait_for(started.exists, what="claude to start")
    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: any(w["state"] == "busy" for w in project.queue.list_workers()), what="still busy")
    release.touch()
    assert worker.wait(timeout=30) == 0
    assert project.task(tid).status == "completed"


def test_worker_exits_and_releases_when_its_coordinator_dies(project, tmp_path):
    started = tmp_path / "started"
    tid = project.add(fake("touch_file", str(started)), fake("hang"))
    stand_in = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    project.procs.append(stand_in)
    worker = project.start_worker("--coordinator-pid", str(stand_in.pid))
    wait_for(started.exists, what="claude to start")
    stand_in.kill()
    stand_in.wait()
    assert worker.wait(timeout=30) == 0
    assert project.task(tid).status == "pending"


def test_lost_lease_stops_claude_and_records_nothing(project, tmp_path):
    started = tmp_path / "started"
    tid = project.add(fake("touch_file", str(started)), fake("hang", pidfile=str(tmp_path / "p.json")))
    worker = project.start_worker()
    wait_for((tmp_path / "p.json").exists, what="claude to start")
    project.queue.recover_stale(worker_id="w1")  # as a coordinator does when it thinks w1 is dead
    pids = json.loads((tmp_path / "p.json").read_text())
    wait_for(lambda: gone(pids["pid"]), what="claude to be stopped")
    t = project.task(tid)
    assert t.status in ("pending", "in_progress")
    assert "lease lost" in "".join(_drain_after_stop(worker))
    events = [e["event"] for e in project.queue.get_events(tid)]
    assert events[:3] == ["created", "claimed", "recovered"] and "failed" not in events


def _drain_after_stop(worker):
    worker.send_signal(signal.SIGTERM)
    out, _ = worker.communicate(timeout=30)
    return out


def test_sigkilled_worker_loses_nothing(project, tmp_path):
    started = tmp_path / "started"
    tid = project.add(fake("touch_file", str(started)), fake("wait_for_file", str(tmp_path / "never")),
                      max_attempts=2)
    worker = project.start_worker()
    wait_for(started.exists, what="claude to start")
    worker.kill()
    worker.wait()
    inv = project.invocations()[0]
    os.killpg(inv["pgid"], signal.SIGKILL)  # what the coordinator does with the recorded group
    project.queue.recover_stale(worker_id="w1")
    (tmp_path / "never").touch()
    assert project.run_worker().returncode == 0
    t = project.task(tid)
    assert t.status == "completed" and t.attempts_used == 2


def test_idle_worker_wakes_when_work_arrives(project):
    worker = project.start_worker()
    wait_for(lambda: any(w["state"] == "idle" for w in project.queue.list_workers()), what="idle worker")
    tid = project.add("hello")
    wait_for(lambda: project.task(tid).status == "completed", timeout=10, what="pickup")
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=30) == 0


def test_prompt_tells_a_worktree_task_which_branch_it_is_on(queue):
    import claude_worker
    t = queue.get_task(queue.add_task("Do it"))
    plain = claude_worker.build_prompt(t, None, str(queue.cfg.root), 0)
    isolated = claude_worker.build_prompt(t, None, str(queue.cfg.root), 0, branch="klauss/job-1/task-1")
    assert "Other workers may be editing" in plain and "branch" not in plain
    assert "on branch klauss/job-1/task-1" in isolated and "do not switch branches" in isolated
    assert plain.endswith("## Task\nDo it\n") and isolated.endswith("## Task\nDo it\n")
