"""The synthesis says what changed and names tasks as the plan did: every file each task changed is
listed by name (from git with worktrees, from the stream's edit tool calls without), headings use
the plan's task ids, `collect --json` carries them, titles are cut at a word, and counts agree in
number ("1 task")."""

import json
import os
import subprocess
import sys
from pathlib import Path

from test_worktrees import py, repo  # noqa: F401 - `repo` is a fixture

import claude_cli
import claude_queue
import config
from conftest import fake, install_fake_claude
from orchestrator import ClaudeOrchestrator, JobResults, check_plan

ROOT = Path(__file__).resolve().parent.parent


def worker(root, env=None):
    out = subprocess.run([sys.executable, str(ROOT / "claude_worker.py"), "w1", "--exit-when-idle"], cwd=root,
                         env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr


def plain_project(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    install_fake_claude(tmp_path / "bin")
    (root / ".klauss.toml").write_text("[queue]\nretry_backoff_seconds = 0\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    env["PATH"] = f"{tmp_path / 'bin'}:{os.environ['PATH']}"
    return root, env


def test_without_worktrees_the_files_come_from_the_edit_tool_calls(tmp_path, monkeypatch):
    root, env = plain_project(tmp_path)
    (root / "b.txt").write_text("old text\n")
    q = claude_queue.TaskQueue(cfg=config.load_config(cwd=root, env={}))
    job, [tid] = q.submit_job("edits", [{"prompt": "\n".join([
        fake("write", "a.txt", content="new\n"),
        fake("edit", "b.txt", old="old", new="new"),
        fake("deny", "Write", path="c.txt", content="x"),
        fake("text", "Done.")])}])
    worker(root, env)
    task = q.get_task(tid)
    assert task.status == "completed" and task.outcome["files_changed"] == ["a.txt", "b.txt"]
    monkeypatch.chdir(root)
    orch = ClaudeOrchestrator("t")
    results = orch.wait_and_collect(job, timeout=5)
    synthesis = orch.synthesize_results(results)
    assert "Files changed: `a.txt`, `b.txt`" in synthesis and "changed a.txt, b.txt" in synthesis
    assert "c.txt" not in synthesis.split("## ")[1].split("**Warning")[0], "a denied Write changed nothing"
    shown = subprocess.run([sys.executable, str(ROOT / "submit_task.py"), "show", str(tid)], cwd=root, env=env,
                           capture_output=True, text=True, timeout=60).stdout
    assert "Changed:     a.txt, b.txt" in shown


def test_with_worktrees_every_changed_file_is_named_from_git(repo):  # noqa: F811
    orch = ClaudeOrchestrator("t")
    # One file through an edit tool, one through a command: git sees both, the stream only one.
    job, [tid] = orch.submit_plan("two files", [{"ref": "both", "prompt": "\n".join([
        fake("write", "a.txt", content="a\n"),
        py("open('shared.txt', 'a').write('more\\n')"),
        fake("text", "Done.")])}], isolation="worktree")
    repo.run_worker()
    results = orch.wait_and_collect(job, timeout=5)
    assert results[tid]["files_changed"] == ["a.txt", "shared.txt"]
    synthesis = orch.synthesize_results(results)
    assert "changed a.txt, shared.txt" in synthesis and "Files changed: `a.txt`, `shared.txt`" in synthesis
    assert "file(s) changed" not in synthesis


def test_the_stream_record_skips_failed_calls_and_stays_small():
    state = claude_cli.StreamState()
    state.feed({"type": "assistant", "message": {"content": [
        {"type": "tool_use", "id": "1", "name": "Write", "input": {"file_path": "/w/a.py"}},
        {"type": "tool_use", "id": "2", "name": "NotebookEdit", "input": {"notebook_path": "/w/n.ipynb"}},
        {"type": "tool_use", "id": "3", "name": "MultiEdit", "input": {"file_path": "/elsewhere/x.py"}},
        {"type": "tool_use", "id": "4", "name": "Edit", "input": {"file_path": "/w/denied.py"}},
        {"type": "tool_use", "id": "5", "name": "Read", "input": {"file_path": "/w/read.py"}}]}})
    state.feed({"type": "user", "message": {"content": [
        {"type": "tool_result", "tool_use_id": "4", "is_error": True, "content": "denied"}]}})
    assert state.files_changed("/w") == ["/elsewhere/x.py", "a.py", "n.ipynb"]
    for i in range(claude_cli.MAX_FILES_CHANGED + 50):
        state.feed({"type": "assistant", "message": {"content": [
            {"type": "tool_use", "id": f"m{i}", "name": "Write", "input": {"file_path": f"/w/f{i}"}}]}})
    assert len(state.files_changed("/w")) <= claude_cli.MAX_FILES_CHANGED
    json.dumps(state.files_changed())


def test_headings_use_the_plans_task_ids_and_collect_carries_them(tmp_path):
    root, env = plain_project(tmp_path)
    long_line = "Write a friendly greeting for every new contributor " * 4
    plan = root / "plan.json"
    plan.write_text(json.dumps({"description": "hello", "tasks": [
        {"id": "greet", "prompt": long_line.strip() + "\n" + fake("text", "Hello!")}]}))

    # Queued as `run` queues a plan; one worker does the work, and `collect` reads the job.
    def orch(*args):
        return subprocess.run([sys.executable, str(ROOT / "orchestrator.py"), *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    q = claude_queue.TaskQueue(cfg=config.load_config(cwd=root, env={}))
    _, entries = check_plan(json.loads(plan.read_text()))
    job, [tid] = q.submit_job("hello", entries)
    worker(root, env)
    out = orch("collect", job)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "**1 task: 1 completed.**" in text and "1 tasks" not in text
    [heading] = [line for line in text.splitlines() if line.startswith("## ")]
    assert heading.startswith("## greet: Write a friendly greeting") and heading.endswith("— completed")
    title = heading[len("## greet: "):heading.index(" — ")]
    assert title.endswith("…") and len(title) <= 101
    assert long_line.startswith(title[:-1]) and long_line[len(title) - 1] == " ", "cut at a word boundary"
    assert f"task #{tid}" in text
    data = json.loads(orch("collect", job, "--json").stdout)
    assert data[str(tid)]["plan_id"] == "greet"


def test_tasks_without_a_plan_id_keep_their_number(make_queue):
    q = make_queue()
    _, entries = check_plan({"description": "d", "tasks": [{"prompt": "one"}, {"prompt": "two"}]})
    job, ids = q.submit_job("d", entries)
    assert [q.get_task(i).ref for i in ids] == ["#0", "#1"]
    orch = ClaudeOrchestrator("t", db_path=str(q.db_path))
    results = JobResults(job, orch.collect(job))
    assert [r["plan_id"] for r in results.values()] == [None, None]
    text = orch.synthesize_results(results)
    assert f"## Task {ids[0]}: one — pending" in text and "**2 tasks:" in text
