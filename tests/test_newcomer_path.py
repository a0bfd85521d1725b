"""The newcomer's path, walked as a user would (issues 11 and 12): Klauss in `klauss/` of a fresh
project, the README and the commands Klauss prints run from the project root, the fake CLI and the
real one. Each test here is something that walk found wrong."""

import json
import os
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest

import claude_coordinator
import hints
import messages_server as ms
import orchestrator
import real_cli
import task_report
from conftest import FAKE_CLAUDE, SubmoduleProject, copy_klauss, install_writer_claude

ROOT = Path(__file__).resolve().parent.parent


def test_a_paused_pool_does_not_print_a_progress_line_a_second_into_a_log(tmp_path, monkeypatch, capsys):
    # The pause's countdown ("in 1m55s") changes every second; into a log (stderr not a terminal)
    # only a change of state is worth a line, else 1,800 lines for a 30-minute pause.
    root = tmp_path / "proj"
    root.mkdir()
    (root / ".klauss.toml").write_text("[workers]\nauto_start = false\n")
    monkeypatch.chdir(root)
    orch = orchestrator.ClaudeOrchestrator("t")
    job, _ = orch.submit_plan("d", [{"prompt": "x"}])
    orch.queue.set_flag("coordinator", {"pid": os.getpid(), "workers": 1})  # this process stands in
    until = time.time() + 3600
    orch.queue.set_flag("paused", {"message": "usage limit reached"}, until=until)
    # Each look at the clock is a second later, so every progress line has a new countdown.
    ticks = iter(range(10**6))
    clock = types.SimpleNamespace(time=lambda: until - 1800 + next(ticks), strftime=time.strftime,
                                  localtime=time.localtime)
    monkeypatch.setattr(task_report, "time", clock)
    capsys.readouterr()
    assert orch.wait_and_collect(job, timeout=0.5, poll_interval=0.01, show_progress=True).timed_out
    progress = [line for line in capsys.readouterr().err.splitlines() if line.startswith(f"[{job}]")]
    assert len(progress) == 1, progress
    assert "paused until" in progress[0]


def test_run_of_one_task_says_1_task_queued(tmp_path, monkeypatch, capsys):
    root = tmp_path / "proj"
    root.mkdir()
    (root / ".klauss.toml").write_text("[workers]\nauto_start = false\n")
    (root / "plan.json").write_text('{"description": "one", "tasks": [{"id": "a", "prompt": "x"}]}')
    monkeypatch.chdir(root)
    orchestrator.cli(["run", "plan.json", "--yes", "--timeout", "0.1"])
    err = capsys.readouterr().err
    assert ": 1 task queued" in err, err


def test_show_keeps_a_space_after_the_longest_field_name(make_queue):
    q = make_queue()
    tid = q.add_task("x")
    t = q.claim_task("w")
    q.complete_task(t.id, "w", {"result": "done", "permission_denials": [{"tool_name": "Bash"}]}, attempt=t.attempt)
    lines = task_report.describe_task(q.get_task(tid), q.get_events(tid), [], None, time.time())
    assert "  Denied tools: Bash" in lines, lines  # was "Denied tools:Bash"
    assert "  Attempts:    1 of 3" in lines, lines  # the other fields line up as before


def test_status_of_a_stopped_pool_prints_a_start_command_that_runs(tmp_path, monkeypatch, capsys):
    # It printed "klauss/manage.sh start [N]", which start refuses ("invalid int value: '[N]'").
    monkeypatch.chdir(tmp_path)
    assert claude_coordinator.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "[N]" not in out, out
    assert f"start it with `{hints.command('start')}`" in out, out


@pytest.mark.parametrize("command", [["orchestrator.py", "run", "plan.json", "--yes"],
                                     ["submit_task.py", "submit", "hi", "--wait"]])
def test_a_failed_start_says_error_once(tmp_path, command):
    # "error: could not start workers: error: the pool did not start: ..." read as two errors.
    (tmp_path / "plan.json").write_text('{"description": "one", "tasks": [{"id": "a", "prompt": "x"}]}')
    env = {**os.environ, "KLAUSS_CLAUDE": str(tmp_path / "no-such-claude")}
    out = subprocess.run([sys.executable, str(ROOT / command[0]), *command[1:]], cwd=str(tmp_path), env=env,
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 1, out.stderr
    line = next(x for x in out.stderr.splitlines() if "could not start workers" in x)
    assert "workers: the pool did not start" in line and "error: the pool" not in line, line


# A claude whose first run writes a.txt and then hits a server error (retried), and whose second
# run writes nothing and succeeds: what the task changed is a.txt, from its first attempt.
FIRST_WRITES_THEN_FAILS = """#!{python}
import os, subprocess, sys
if "--version" in sys.argv:
    os.execv({python!r}, [{python!r}, {fake!r}, *sys.argv[1:]])
marker = os.path.join({tmp!r}, "first-run-done")
prompt = sys.stdin.read()
if os.path.exists(marker):
    actions = '@fake {{"text": "nothing left to do"}}\\n'
else:
    open(marker, "w").close()
    actions = '@fake {{"write": "a.txt", "content": "x"}}\\n@fake {{"error": "server_error"}}\\n'
sys.exit(subprocess.run([{python!r}, {fake!r}, *sys.argv[1:]], input=(prompt + "\\n" + actions).encode()).returncode)
"""


def test_the_synthesis_names_a_file_an_earlier_attempt_changed(tmp_path, monkeypatch):
    # Seen with the real CLI: attempt 1 wrote notes/hello.md and hit a 500, attempt 2 found the file
    # there; the synthesis of the completed task then listed no changed file at all.
    root = tmp_path / "proj"
    root.mkdir()
    claude = tmp_path / "claude"
    claude.write_text(FIRST_WRITES_THEN_FAILS.format(python=sys.executable, fake=str(FAKE_CLAUDE), tmp=str(tmp_path)))
    claude.chmod(0o755)
    (root / ".klauss.toml").write_text(f"[claude]\ncommand = {str(claude)!r}\n[workers]\nauto_start = false\n"
                                       "[queue]\nretry_backoff_seconds = 0\n")
    monkeypatch.chdir(root)
    orch = orchestrator.ClaudeOrchestrator("t")
    job, _ = orch.submit_plan("d", [{"prompt": "write a.txt"}])
    worker = subprocess.run([sys.executable, str(ROOT / "claude_worker.py"), "w1", "--exit-when-idle"], cwd=str(root),
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert worker.returncode == 0, worker.stdout + worker.stderr
    results = orch.collect(job)
    ((task_id, task),) = results.items()
    assert task["status"] == "completed", task
    assert [e["event"] for e in orch.queue.get_events(task_id)].count("claimed") == 2
    assert task["files_changed"] == ["a.txt"], task
    synthesis = orch.synthesize_results(results)
    assert "Files changed: `a.txt`" in synthesis, synthesis


def test_real_cli_job_from_a_project_root_names_the_file_and_sums_the_cost(tmp_path):
    """The newcomer's real run: Klauss in `klauss/`, `klauss/manage.sh run plan.json --yes` from the
    project root, the REAL claude writing a file with its Write tool on the second attempt after a
    500 on the first: the synthesis names the file and its total is the sum of both runs' costs."""
    if os.environ.get("KLAUSS_SKIP_REAL_CLI") == "1":
        pytest.skip("KLAUSS_SKIP_REAL_CLI=1")
    try:
        exe = real_cli.find_or_install_real_claude()
    except real_cli.RealCliUnavailable as exc:
        pytest.skip(f"real claude CLI unavailable: {exc}")
    root = tmp_path / "proj"
    root.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    copy_klauss(root / "klauss")
    (root / ".klauss.toml").write_text(f"[claude]\ncommand = {json.dumps(str(exe))}\n[workers]\nidle_timeout = 0\n"
                                       "[queue]\nretry_backoff_seconds = 0\n")
    (root / "plan.json").write_text(json.dumps({"description": "real write", "tasks": [
        {"id": "hello", "prompt": "Write notes/hello.md with a heading Hello."}]}))
    target = root / "notes" / "hello.md"
    server = ms.MessagesServer(script=[ms.tool_use("Write", {"file_path": str(target), "content": "# Hello\n"}),
                                       ms.error(500), ms.text("notes/hello.md is there")],
                               input_tokens=1000, output_tokens=200)
    server.start()
    env = real_cli.real_claude_env(server.url, tmp_path / "home")
    try:
        out = subprocess.run(["klauss/manage.sh", "run", "plan.json", "--yes"], cwd=root, env=env, capture_output=True,
                             text=True, timeout=300, stdin=subprocess.DEVNULL)
    finally:
        subprocess.run(["klauss/manage.sh", "kill"], cwd=root, env=env, capture_output=True, timeout=60)
        server.stop()
    assert out.returncode == 0, out.stdout + out.stderr
    assert target.read_text() == "# Hello\n"
    costs = []
    for transcript in sorted((root / ".klauss" / "logs" / "tasks").glob("task-1-attempt-*.jsonl")):
        for line in transcript.read_text().splitlines():
            event = json.loads(line) if line.startswith("{") else {}
            if event.get("type") == "result":
                costs.append(event["total_cost_usd"])
    assert len(costs) == 2 and all(costs), costs
    assert f"Total cost {task_report.fmt_cost(sum(costs))}" in out.stdout, out.stdout
    assert "Files changed: `notes/hello.md`" in out.stdout, out.stdout
    assert "changed notes/hello.md" in out.stdout, out.stdout


def test_readme_says_how_to_run_the_quick_start_from_a_project_root(tmp_path):
    # From a project root, the quick start's `python3 orchestrator.py run ...` is "can't open file".
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Adding Klauss to a project")[0]
    command = "klauss/manage.sh run klauss/examples/quickstart_plan.json --yes"
    assert f"`{command}`" in quick_start
    project = SubmoduleProject(tmp_path)
    bindir = tmp_path / "writer-bin"
    install_writer_claude(bindir)
    project.env["PATH"] = f"{bindir}:{project.env['PATH']}"
    try:
        out = project.manage(*command.split()[1:])
    finally:
        project.manage("kill")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (project.root / "examples" / "out" / "README.md").exists()


def test_a_worktree_job_that_merged_nothing_prints_no_review_command(tmp_path):
    # It printed `git diff HEAD...klauss/<job>/merged` ("unknown revision": no merge made the branch)
    # and `manage.sh merge JOB` ("nothing to merge") after a job whose only task failed.
    job = {"id": "job-x", "metadata": {"isolation": "worktree", "merge": "auto"}}
    failed = {7: {"status": "failed", "merge": None}}
    text = " ".join(orchestrator.ClaudeOrchestrator._isolation_summary(job, failed))
    assert "git diff" not in text and "manage.sh merge" not in text, text
    assert "no task's work was merged" in text
    done = {7: {"status": "completed", "merge": "merged"}}
    assert "git diff HEAD...klauss/job-x/merged" in " ".join(orchestrator.ClaudeOrchestrator._isolation_summary(job, done))


@pytest.mark.parametrize("args, expected", [
    (["list", "--status", "bogus"], "manage.sh list: error: argument --status"),
    (["submit"], "manage.sh submit: error: the following arguments are required: PROMPT"),
    (["dashboard", "--bogus"], "manage.sh dashboard: error: unrecognized arguments: --bogus"),
    (["wait"], "manage.sh wait: error: the following arguments are required: JOB|TASK"),
])
def test_usage_errors_through_manage_sh_name_manage_sh(tmp_path, args, expected):
    # They named the script manage.sh runs ("submit_task.py list: error: ..."), not what the user typed.
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    out = subprocess.run([str(ROOT / "manage.sh"), *args], cwd=str(tmp_path), env=env, capture_output=True, text=True,
                         timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2, out.stderr
    assert expected in out.stderr, out.stderr
    assert "submit_task.py" not in out.stderr and "orchestrator.py" not in out.stderr, out.stderr
    assert "claude_dashboard.py" not in out.stderr, out.stderr


def test_the_manage_sh_mark_is_not_passed_on(tmp_path, monkeypatch):
    # A program manage.sh ran starts others (a pool, its workers, claude): none of them was run by manage.sh.
    monkeypatch.setenv("KLAUSS_VIA", "manage.sh")
    out = subprocess.run([sys.executable, "-c", "import hints, os; print(hints.prog('x.py'), os.environ.get('KLAUSS_VIA'))"],
                         cwd=str(ROOT), capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["manage.sh", "None"], out.stdout + out.stderr


def test_the_synthesis_retry_hint_takes_up_what_did_not_complete(tmp_path, monkeypatch):
    # A job whose task was cancelled said "Retry failed tasks with `... retry --failed --job JOB`",
    # which answers "no failed tasks" and leaves the cancelled task as it was.
    (tmp_path / ".klauss.toml").write_text("[workers]\nauto_start = false\n")
    monkeypatch.chdir(tmp_path)
    orch = orchestrator.ClaudeOrchestrator("t")
    job, (failing, cancelled) = orch.submit_plan("d", [{"prompt": "a", "max_attempts": 1}, {"prompt": "b"}])
    t = orch.queue.claim_task("w")
    orch.queue.fail_task(t.id, "w", "boom", attempt=t.attempt)
    orch.queue.cancel_task(cancelled)
    text = orch.synthesize_results(orchestrator.JobResults(job, orch.collect(job)))
    assert f"Retry failed tasks with `{hints.command('retry', '--failed', '--job', job)}`" in text, text
    assert f"run the cancelled ones again with `{hints.command('retry', cancelled)}`" in text, text
    only_cancelled, (tid,) = orch.submit_plan("e", [{"prompt": "c"}])
    orch.queue.cancel_task(tid)
    text = orch.synthesize_results(orchestrator.JobResults(only_cancelled, orch.collect(only_cancelled)))
    assert "--failed" not in text and f"Run the cancelled ones again with `{hints.command('retry', tid)}`" in text, text
