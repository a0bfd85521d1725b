"""orchestrator.py: the API and CLI Claude Code uses, with the fake `claude` and a real pool."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import claude_queue
import config
from conftest import fake, wait_for
from conftest import pid_alive as _alive
from orchestrator import ClaudeOrchestrator, OrchestratorError

ROOT = Path(__file__).resolve().parent.parent
ORCH = ROOT / "orchestrator.py"


@pytest.fixture
def project(pool_project):
    return pool_project


def run_cli(root, *args, stdin=None, timeout=120):
    return subprocess.run([sys.executable, str(ORCH), *args], cwd=root, capture_output=True, text=True,
                          input=stdin, timeout=timeout, stdin=None if stdin is not None else subprocess.DEVNULL)


def counts(root):
    q = claude_queue.TaskQueue(cfg=config.load_config(cwd=root, env={}))
    return len(q.list_jobs()), q.get_stats()["total"]


def test_the_seed_example_runs_exactly_as_written(project):
    from orchestrator import ClaudeOrchestrator
    orch = ClaudeOrchestrator("claude_main")
    job = orch.create_job("Build authentication system")
    orch.add_subtask(job, "Implement login endpoint", priority=10)
    orch.add_subtask(job, "Implement registration endpoint", priority=10)
    orch.add_subtask(job, "Create JWT middleware", priority=9)
    orch.add_subtask(job, "Write auth tests", priority=5)
    results = orch.wait_and_collect(job)

    assert len(results) == 4 and results.all_completed and not results.timed_out
    for r in results.values():
        assert r["status"] == "completed" and r["session_id"] and r["cost_usd"] > 0 and r["attempts"] == 1
        assert r["result"].startswith("fake claude did:")
    synthesis = orch.synthesize_results(results)
    for prompt in ("Implement login endpoint", "Implement registration endpoint", "Create JWT middleware",
                   "Write auth tests"):
        assert prompt in synthesis
    assert "4 completed" in synthesis and "Total cost $" in synthesis
    status = orch.get_worker_status()
    assert status["running"] and status["process_count"] >= 1, "the pool was started on demand"
    orch.stop_workers()
    assert not orch.get_worker_status()["running"]


def test_dependencies_and_priorities_are_respected(project):
    orch = ClaudeOrchestrator("t")
    job = orch.create_job("ordered")
    low = orch.add_subtask(job, "low", priority=1)
    high = orch.add_subtask(job, "high", priority=9)
    base = orch.add_subtask(job, "interface (but writes nothing)", priority=0, expected_outputs=["api.py"])
    dep = orch.add_subtask(job, "use the interface", priority=100, depends_on=[base])
    assert orch.start_workers(1, confirm=True)  # one worker, started after queueing: claims follow priority
    results = orch.wait_and_collect(job, timeout=120)
    assert results[base]["status"] == "failed", "no file was written, so the contract failed"
    assert results[dep]["status"] == "skipped" and f"#{base}" in results[dep]["error"]
    q = orch.queue
    claims = sorted((q.get_task(t).started_at, t) for t in (low, high))
    assert [t for _, t in claims] == [high, low]
    orch.stop_workers()


def test_dependent_starts_after_its_dependency_completed(project):
    orch = ClaudeOrchestrator("t")
    job, ids = orch.submit_plan("two steps", [
        {"ref": "a", "prompt": fake("write", "api.py", content="x = 1\n"), "expected_outputs": ["api.py"]},
        {"ref": "b", "prompt": fake("run", [sys.executable, "-c", "import os, sys; sys.exit(0 if os.path.exists('api.py') else 3)"]),
         "depends_on": ["a"]},
    ])
    results = orch.wait_and_collect(job, timeout=120)
    assert results.all_completed, results
    a, b = (orch.queue.get_task(i) for i in ids)
    assert b.started_at >= a.finished_at
    assert results[ids[0]]["outputs"] == ["api.py"]


def test_suggest_workers_is_the_width_of_the_graph(project):
    orch = ClaudeOrchestrator("t")
    job, _ = orch.submit_plan("graph", [
        {"ref": "a", "prompt": "a"}, {"ref": "b", "prompt": "b"}, {"ref": "c", "prompt": "c"},
        {"ref": "d", "prompt": "d", "depends_on": ["a", "b", "c"]},
        {"ref": "e", "prompt": "e", "depends_on": ["d"]},
    ])
    assert orch.suggest_workers(job) == 3
    assert orch.suggest_workers(job, max_workers=2) == 2
    wide, _ = orch.submit_plan("wide", [{"prompt": f"t{i}"} for i in range(10)])
    assert orch.suggest_workers(wide) == 4, "capped by [workers] max_workers"


def test_add_subtask_validates_like_the_cli(project, tmp_path):
    orch = ClaudeOrchestrator("t")
    job = orch.create_job("j")
    with pytest.raises(ValueError, match="priority"):
        orch.add_subtask(job, "x", priority="high")
    with pytest.raises(ValueError, match="outside the project"):
        orch.add_subtask(job, "x", working_dir=str(tmp_path))
    with pytest.raises(ValueError, match="unknown job"):
        orch.add_subtask("job-nope", "x")
    assert orch.queue.get_stats()["total"] == 0


def test_without_auto_start_waiting_fails_at_once_with_advice(project, monkeypatch):
    orch = ClaudeOrchestrator("t", **{"workers.auto_start": False})
    job = orch.create_job("j")
    orch.add_subtask(job, "x")

    def waited(*_args, **_kw):
        raise AssertionError("wait_and_collect waited instead of failing at once")
    monkeypatch.setattr(claude_queue.Waker, "wait", waited)
    with pytest.raises(OrchestratorError, match="manage.sh start"):
        orch.wait_and_collect(job)


def test_non_interactive_start_never_blocks_on_input(project):
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from orchestrator import ClaudeOrchestrator\n"
            "o = ClaudeOrchestrator('t')\n"
            "print(o.start_workers(2))\n") % str(ROOT)
    env = dict(os.environ, KLAUSS_AUTO_START="0")
    out = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False" and "Start 2" not in out.stdout
    env["KLAUSS_AUTO_START"] = "1"
    out = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, stdin=subprocess.DEVNULL,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
    assert ClaudeOrchestrator("t").get_worker_status()["process_count"] == 2


def test_timeout_returns_partial_results_flagged_and_marks_nothing(project, tmp_path):
    orch = ClaudeOrchestrator("t")
    job = orch.create_job("slow")
    tid = orch.add_subtask(job, "\n".join(["slow", fake("wait_for_file", str(tmp_path / "go"))]))
    results = orch.wait_and_collect(job, timeout=1)
    assert results.timed_out and results[tid]["status"] in ("pending", "in_progress")
    assert orch.queue.get_task(tid).status in ("pending", "in_progress")
    (tmp_path / "go").touch()
    assert orch.wait_and_collect(job, timeout=60).all_completed


def test_budget_stops_the_rest_of_the_job(project):
    orch = ClaudeOrchestrator("t")
    assert orch.start_workers(1, confirm=True)
    job = orch.create_job("budgeted", max_budget_usd=0.02)
    ids = [orch.add_subtask(job, "\n".join([f"step {i}", fake("tool", "Read", input={"file_path": "x"})]),
                            priority=10 - i) for i in range(4)]
    results = orch.wait_and_collect(job, timeout=120)
    statuses = [results[i]["status"] for i in ids]
    assert statuses[0] == "completed" and "skipped" in statuses
    skipped = [results[i] for i in ids if results[i]["status"] == "skipped"]
    assert all("budget" in r["error"] for r in skipped)


def test_retry_failed_and_cancel(project, tmp_path):
    orch = ClaudeOrchestrator("t")
    job, (bad, after) = orch.submit_plan("j", [
        {"ref": "bad", "prompt": fake("error", "max_turns")},
        {"ref": "after", "prompt": "after", "depends_on": ["bad"]}])
    results = orch.wait_and_collect(job, timeout=120)
    assert results[bad]["status"] == "failed" and results[after]["status"] == "skipped"
    assert "max turns" in orch.synthesize_results(results)
    assert orch.retry_failed(job) == [bad, after]
    assert orch.queue.get_task(after).status == "pending"
    assert set(orch.cancel_job(job).values()) <= {"cancelled", "cancel_requested", "skipped"}


def test_stop_workers_leaves_no_process_behind(project, tmp_path):
    orch = ClaudeOrchestrator("t")
    job = orch.create_job("j")
    started = tmp_path / "started"
    tid = orch.add_subtask(job, "\n".join([fake("touch_file", str(started)), fake("hang", child=True,
                                                                                   pidfile=str(tmp_path / "p.json"))]))
    orch.ensure_workers(job, confirm=True)
    wait_for((tmp_path / "p.json").exists, what="the fake's child to start")
    pids = json.loads((tmp_path / "p.json").read_text())
    workers = [w["pid"] for w in orch.get_worker_status()["workers"]]
    coordinator = orch.get_worker_status()["coordinator_pid"]
    orch.stop_workers()
    # A SIGKILLed process takes a moment to be gone; what counts is that none is left 5 s later.
    ours = [pids["pid"], pids["child_pid"], coordinator, *workers]
    wait_for(lambda: not any(_alive(pid) for pid in ours), timeout=5,
             what=lambda: f"our processes to end: {[p for p in ours if _alive(p)]} still alive")
    assert orch.queue.get_task(tid).status == "pending", "released for a later pool"


# --- the CLI -------------------------------------------------------------------------------------

def write_plan(root, plan):
    path = root / "plan.json"
    path.write_text(json.dumps(plan))
    return path


def test_run_plan_happy_path(project):
    plan = write_plan(project, {"description": "Docs", "context": "Project uses Markdown.", "tasks": [
        {"id": "intro", "prompt": fake("write", "docs/intro.md", content="# Intro\n"), "expected_outputs": ["docs/intro.md"]},
        {"id": "usage", "prompt": fake("write", "docs/usage.md", content="# Usage\n"), "expected_outputs": ["docs/usage.md"]},
        {"id": "index", "prompt": "Link the pages", "depends_on": ["intro", "usage"], "priority": 1},
    ]})
    out = run_cli(project, "run", str(plan), "--yes")
    assert out.returncode == 0, out.stderr
    assert "# Docs" in out.stdout and "3 completed" in out.stdout
    assert "docs/intro.md" in out.stdout
    assert "3/3 done" in out.stderr, "progress goes to stderr"
    job = out.stdout.split("(", 1)[1].split(")", 1)[0]
    status = run_cli(project, "status", job, "--json")
    assert json.loads(status.stdout)["finished"] is True
    collected = run_cli(project, "collect", job, "--json")
    assert len(json.loads(collected.stdout)) == 3
    assert (project / "docs" / "usage.md").exists()
    transcript = json.loads(collected.stdout)
    assert all(t["status"] == "completed" for t in transcript.values())


def test_run_plan_json_output_and_failure_exit_code(project):
    plan = write_plan(project, {"description": "fails", "tasks": [{"prompt": fake("error", "prompt_too_long")}]})
    out = run_cli(project, "run", str(plan), "--yes", "--json")
    assert out.returncode == 1
    data = json.loads(out.stdout)
    [task] = data["tasks"].values()
    assert task["status"] == "failed" and "prompt too long" in task["error"]


@pytest.mark.parametrize("plan, message", [
    ("{not json", "invalid JSON"),
    ("[]", "expected a JSON object"),
    (json.dumps({"tasks": [{"prompt": "x"}]}), "plan.description"),
    (json.dumps({"description": "d", "tasks": []}), "plan.tasks"),
    (json.dumps({"description": "d", "tasks": [{"prompt": "x", "priorty": 1}]}), r"unknown field\(s\) priorty"),
    (json.dumps({"description": "d", "tasks": [{"prompt": ""}]}), "prompt"),
    (json.dumps({"description": "d", "tasks": [{"prompt": "x", "depends_on": ["nope"]}]}), "'nope' is not the id"),
    (json.dumps({"description": "d", "tasks": [{"id": "a", "prompt": "x", "depends_on": ["b"]},
                                               {"id": "b", "prompt": "y", "depends_on": ["a"]}]}), "cycle"),
    (json.dumps({"description": "d", "tasks": [{"prompt": "x", "working_dir": "/"}]}), "outside the project"),
    (json.dumps({"description": "d", "tasks": [{"prompt": "x", "timeout": -5}]}), "timeout"),
])
def test_bad_plans_are_refused_and_nothing_is_queued(project, plan, message):
    (project / "plan.json").write_text(plan)
    out = run_cli(project, "run", "plan.json", "--yes")
    assert out.returncode == 2, out.stderr
    assert out.stderr.startswith("error: ") and len(out.stderr.strip().splitlines()) == 1
    import re
    assert re.search(message, out.stderr), out.stderr
    assert counts(project) == (0, 0)


def test_unknown_job_and_missing_plan(project):
    assert run_cli(project, "status", "job-nope").returncode == 1
    out = run_cli(project, "run", "missing.json")
    assert out.returncode == 2 and "cannot read" in out.stderr


def test_nested_orchestration_grows_the_pool_instead_of_deadlocking(project, tmp_path):
    """A task that submits a sub-job and waits for it holds a worker; with a pool of one, the
    children could never run unless the pool grows for the wait."""
    sub = write_plan(project, {"description": "children", "tasks": [
        {"prompt": fake("write", "child1.txt", content="1"), "expected_outputs": ["child1.txt"]},
        {"prompt": fake("write", "child2.txt", content="2"), "expected_outputs": ["child2.txt"]}]})
    orch = ClaudeOrchestrator("t")
    assert orch.start_workers(1, confirm=True)
    job = orch.create_job("parent")
    parent = orch.add_subtask(job, "\n".join([
        "delegate", fake("run", [sys.executable, str(ORCH), "run", str(sub), "--yes", "--timeout", "120"], timeout=180),
        fake("text", "children done")]), timeout=200)
    results = orch.wait_and_collect(job, timeout=200)
    assert results[parent]["status"] == "completed", results[parent]
    children = [t for t in orch.queue.list_tasks() if t.parent_id == parent]
    assert len(children) == 2 and all(t.status == "completed" for t in children)
    assert (project / "child1.txt").exists() and (project / "child2.txt").exists()


def test_nested_wait_through_the_api_borrows_a_worker(project, tmp_path):
    """The same through the Python API, which never calls start_workers: the waiting parent
    borrows a slot, the pool grows to 2 for the wait and shrinks back afterwards."""
    child = tmp_path / "child.py"
    child.write_text(
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from orchestrator import ClaudeOrchestrator\n"
        "o = ClaudeOrchestrator('nested')\n"
        "job = o.create_job('children')\n"
        "for i in range(2):\n"
        "    o.add_subtask(job, f'child {i}')\n"
        "r = o.wait_and_collect(job, timeout=120)\n"
        "sys.exit(0 if r.all_completed else 1)\n")
    orch = ClaudeOrchestrator("t")
    assert orch.start_workers(1, confirm=True)
    job = orch.create_job("parent")
    parent = orch.add_subtask(job, "\n".join(["delegate", fake("run", [sys.executable, str(child)], timeout=180),
                                              fake("text", "children done")]), timeout=200)
    results = orch.wait_and_collect(job, timeout=200)
    assert results[parent]["status"] == "completed", results[parent]
    children = [t for t in orch.queue.list_tasks() if t.parent_id == parent]
    assert len(children) == 2 and all(t.status == "completed" for t in children)
    assert orch.queue.list_flags("borrow:") == {}, "the borrowed slot is given back"
