"""The verified merge queue (integration.py) end to end: real git repositories, the real worker, the
fake `claude` editing files, and verify commands that are small scripts written here.

The fake runs every `@fake` line of its prompt, and a fix-up or resolution task's prompt quotes the
original task's: so each task here is a Python snippet that looks at the tree it finds (a fresh one,
or the failed merge, or the conflicted merge) and does what a task, a fix-up or a resolution would.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
from test_worktrees import ORCH, SETTINGS, WORKER, describe, git
from test_worktrees import repo as worktree_repo  # noqa: F401  (a fixture)

import config
import integration
import orchestrator
from conftest import all_dead, fake, py, wait_for
from orchestrator import ClaudeOrchestrator


@pytest.fixture
def repo(worktree_repo):  # noqa: F811
    """test_worktrees' git project: fake claude on PATH, no git identity anywhere."""
    return worktree_repo


# Passes unless a tracked *.txt file holds the word BROKEN; counts its runs in runs.log.
VERIFY = """import pathlib, sys, os
log = pathlib.Path({runs!r})
with log.open("a") as fh:
    fh.write(os.getcwd() + "\\n")
bad = sorted(p.name for p in pathlib.Path(".").glob("*.txt") if "BROKEN" in p.read_text())
print("broken files:", bad)
sys.exit(1 if bad else 0)
"""


# Two tasks that both write shared.txt. Each writes its own line; a run that finds conflict
# markers there (a resolution task) writes both lines.
_RESOLVE = ("text = open('shared.txt').read()\n"
            "if '<<<<<<<' in text:\n    open('shared.txt', 'w').write('one\\ntwo\\n')\n"
            "else:\n    open('shared.txt', 'w').write({mine!r})\n")
RESOLVING_CLASH = [{"prompt": "first\n" + py(_RESOLVE.format(mine="one\n"))},
                   {"prompt": "second\n" + py(_RESOLVE.format(mine="two\n"))}]
# The same clash, but the second task leaves conflict markers in place: its resolution fails.
KEPT_CLASH = [
    {"prompt": "first\n" + py("import os\nif not os.path.exists('x'): open('shared.txt', 'w').write('one\\n')")},
    {"prompt": "second\n" + py("import os\nif '<<<' not in open('shared.txt').read(): "
                               "open('shared.txt', 'w').write('two\\n')")},
]


def write_once(name, first, later):
    """A task writing `first` into a fresh tree, and `later` where the file already is (a fix-up)."""
    return py(f"import os\np = {name!r}\ntext = {later!r} if os.path.exists(p) else {first!r}\nopen(p, 'w').write(text)")


def setup_verify(repo, batch=1, fix_attempts=2, extra=""):
    script = repo.tmp / "verify.py"
    script.write_text(VERIFY.format(runs=str(repo.tmp / "runs.log")))
    (repo.root / ".klauss.toml").write_text(
        SETTINGS + f"[integration]\nverify_command = {json.dumps([sys.executable, str(script)])}\n"
                   f"batch = {batch}\nfix_attempts = {fix_attempts}\n" + extra)


def verify_runs(repo):
    log = repo.tmp / "runs.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def states(report):
    return {r["task"]: r["state"] for r in report["tasks"]}


def job_branch(repo, job):
    return git(repo.root, "rev-parse", f"klauss/{job}/merged")


def green(repo, job):
    """The job branch's tree passes the verify script."""
    tree = repo.tmp / "check"
    if tree.exists():
        git(repo.root, "worktree", "remove", "--force", str(tree))
    git(repo.root, "worktree", "add", "--detach", str(tree), f"klauss/{job}/merged")
    return all("BROKEN" not in p.read_text() for p in tree.glob("*.txt"))


def test_config_and_job_verify_are_checked():
    cfg = config.load_config(overrides={"integration.verify_command": "python3 -m 'pytest -q'"}, env={})
    assert cfg["integration"] == {"verify_command": ["python3", "-m", "pytest -q"], "verify_timeout": 1800,
                                  "fix_attempts": 2, "batch": 1}
    for key, value, says in (("batch", 0, "integration.batch"), ("fix_attempts", -1, "integration.fix_attempts"),
                             ("verify_command", "a 'b", "integration.verify_command"),
                             ("verify_command", [1], "integration.verify_command"),
                             ("verify_timeout", 0, "integration.verify_timeout")):
        with pytest.raises(config.ConfigError, match=says):
            config.load_config(overrides={f"integration.{key}": value}, env={})
    assert integration.job_verify(None, {}) == {}
    assert integration.job_verify("make test", {"isolation": "worktree"}) == {"verify": ["make", "test"]}
    with pytest.raises(ValueError, match="^verify: a verify command needs worktree isolation"):
        integration.job_verify(["make"], {"isolation": "none"})
    with pytest.raises(ValueError, match="^verify: "):
        integration.job_verify([""], {"isolation": "worktree"})


def test_plan_verify_is_recorded_and_checked(repo):
    plan = {"description": "d", "isolation": "worktree", "verify": "python3 -c pass",
            "tasks": [{"id": "a", "prompt": "x"}]}
    checked, entries = orchestrator.check_plan(plan)
    orch = ClaudeOrchestrator("t")
    job, _ = orch.submit_plan("d", entries, isolation="worktree", verify=checked["verify"])
    assert orch.queue.get_job(job)["metadata"]["verify"] == ["python3", "-c", "pass"]
    with pytest.raises(ValueError, match="^verify: "):
        orch.submit_plan("d", entries, verify=["make"])  # no worktree isolation here
    with pytest.raises(ValueError, match="plan.verify"):
        orchestrator.check_plan({**plan, "verify": 3})


def test_a_breaking_task_is_kept_out_then_fixed_and_merged(repo):
    setup_verify(repo)
    orch = ClaudeOrchestrator("t")
    job, (good, bad) = orch.submit_plan("two", [
        {"prompt": "good\n" + fake("write", "a.txt", content="fine\n")},
        {"prompt": "bad\n" + write_once("b.txt", "BROKEN\n", "fixed\n")},
    ], isolation="worktree")
    repo.run_worker()
    report = integration.job_report(orch.queue, job)
    assert states(report)[good] == "merged", report
    row = next(r for r in report["tasks"] if r["task"] == bad)
    assert row["state"] == "fixed_and_merged" and row["fix_kind"] == "fix", report
    fix = orch.queue.get_task(row["fix_task"])
    assert fix.job_id == job and fix.status == "completed"
    assert "bad" in fix.prompt and "broken files: ['b.txt']" in fix.prompt and "b.txt" in fix.prompt
    head = report["head"]
    assert head["commit"] == job_branch(repo, job) and head["exit_status"] == 0
    assert head["verify_command"][-1].endswith("verify.py") and head["duration"] >= 0
    assert repo.show(f"klauss/{job}/merged", "b.txt") == "fixed" and repo.show(f"klauss/{job}/merged", "a.txt") == "fine"
    assert green(repo, job)
    # Every verify run left its log; the failing one says why.
    logs = sorted((repo.cfg.logs_dir / "integration" / job).glob("verify-*.log"))
    assert len(logs) == report["verify_runs"] == verify_runs(repo) == 3
    assert any("broken files: ['b.txt']" in p.read_text() for p in logs)


def test_a_task_whose_fixes_fail_twice_is_integration_failed_and_the_rest_merge(repo):
    setup_verify(repo)
    orch = ClaudeOrchestrator("t")
    job, (bad, good1, good2) = orch.submit_plan("three", [
        {"prompt": "hopeless\n" + write_once("b.txt", "BROKEN\n", "BROKEN still\n")},
        {"prompt": "one\n" + fake("write", "c.txt", content="c\n")},
        {"prompt": "two\n" + fake("write", "d.txt", content="d\n")},
    ], isolation="worktree")
    repo.run_worker()
    report = integration.job_report(orch.queue, job)
    row = next(r for r in report["tasks"] if r["task"] == bad)
    assert row["state"] == "integration_failed" and "after 2 fix-up attempt(s)" in row["why"], report
    assert os.path.exists(row["log"]) and "BROKEN" not in open(row["log"]).read().split("\n\n", 1)[0]
    assert "broken files: ['b.txt']" in open(row["log"]).read()
    assert states(report)[good1] == states(report)[good2] == "merged"
    fixes = [r for r in report["tasks"] if r["kind"] == "fix"]
    assert [r["of"] for r in fixes] == [bad, bad] and all(r["state"] == "integration_failed" for r in fixes)
    assert green(repo, job) and report["head"]["commit"] == job_branch(repo, job)
    assert git(repo.root, "rev-parse", "--verify", "-q", f"klauss/{job}/task-{bad}")  # its work is kept


def test_a_conflict_is_resolved_by_a_resolution_task(repo):
    setup_verify(repo)
    orch = ClaudeOrchestrator("t")
    job, (first, second) = orch.submit_plan("clash", RESOLVING_CLASH, isolation="worktree")
    repo.run_worker()
    report = integration.job_report(orch.queue, job)
    assert states(report)[first] == "merged", report
    row = next(r for r in report["tasks"] if r["task"] == second)
    assert row["state"] == "fixed_and_merged" and row["fix_kind"] == "resolution", report
    resolution = orch.queue.get_task(row["fix_task"])
    assert "shared.txt" in resolution.prompt and "first" in resolution.prompt and "second" in resolution.prompt
    assert repo.show(f"klauss/{job}/merged", "shared.txt") == "one\ntwo"
    # The resolution is a merge of the task's own commit: its branch is in the job branch's history.
    assert git(repo.root, "merge-base", "--is-ancestor", f"klauss/{job}/task-{second}", f"klauss/{job}/merged",
               check=False) == ""


def test_a_resolution_that_leaves_markers_is_a_conflict_with_both_branches_kept(repo):
    setup_verify(repo)
    orch = ClaudeOrchestrator("t")
    job, (first, second) = orch.submit_plan("clash", KEPT_CLASH, isolation="worktree")
    repo.run_worker()
    report = integration.job_report(orch.queue, job)
    row = next(r for r in report["tasks"] if r["task"] == second)
    assert row["state"] == "conflict" and row["files"] == ["shared.txt"] and "markers" in row["why"], report
    assert repo.show(f"klauss/{job}/merged", "shared.txt") == "one"
    for tid in (first, second):
        assert git(repo.root, "rev-parse", "--verify", "-q", f"klauss/{job}/task-{tid}")


def test_batching_isolates_the_one_bad_branch_of_four(repo):
    setup_verify(repo, batch=4, fix_attempts=0)
    orch = ClaudeOrchestrator("t")
    # The four finish before any integration runs (integration tasks queue behind them), so one
    # integration takes all four.
    job, ids = orch.submit_plan("four", [
        {"prompt": f"t{i}\n" + fake("write", f"f{i}.txt", content=("BROKEN\n" if i == 2 else f"{i}\n"))}
        for i in range(4)], isolation="worktree")
    repo.run_worker()
    report = integration.job_report(orch.queue, job)
    st = states(report)
    assert st[ids[2]] == "integration_failed" and [st[ids[i]] for i in (0, 1, 3)] == ["merged"] * 3, report
    assert green(repo, job)
    for i in (0, 1, 3):
        assert repo.show(f"klauss/{job}/merged", f"f{i}.txt") == str(i)
    # Four together fail; the first two pass; the first three fail: the third is the one; the fourth passes.
    assert verify_runs(repo) == report["verify_runs"] == 4


@pytest.mark.parametrize("where", ["verify", "merge"])
def test_a_worker_killed_mid_integration_leaves_the_job_branch_verified(repo, where):
    started, go = repo.tmp / "started", repo.tmp / "go"
    setup_verify(repo)
    if where == "verify":
        hold = repo.tmp / "hold.py"
        hold.write_text(f"import os, pathlib, time, sys\nif not pathlib.Path({str(go)!r}).exists():\n"
                        f"    pathlib.Path({str(started)!r}).write_text(str(os.getpid()))\n    time.sleep(120)\n"
                        f"sys.exit(os.system({sys.executable!r} + ' ' + {str(repo.tmp / 'verify.py')!r}) >> 8)\n")
        (repo.root / ".klauss.toml").write_text((repo.root / ".klauss.toml").read_text().replace(
            str(repo.tmp / "verify.py"), str(hold)))
    orch = ClaudeOrchestrator("t")
    job, (tid,) = orch.submit_plan("one", [{"prompt": "one\n" + fake("write", "a.txt", content="a\n")}],
                                   isolation="worktree")
    base = orch.queue.get_job(job)["metadata"]["base_commit"]
    if where == "merge":
        # A git that hangs in the middle of the merge: the merge worktree's post-merge step never ends.
        wrapper = repo.tmp / "gitbin" / "git"
        wrapper.parent.mkdir()
        real = subprocess.run(["which", "git"], capture_output=True, text=True).stdout.strip()
        # Killed with the merge made in the merge worktree but not yet verified or recorded.
        wrapper.write_text(f"#!/bin/sh\ncase \"$*\" in *'merge --no-ff --no-edit -m klauss: merge task'*)\n"
                           f"  if [ ! -e {go} ]; then {real} \"$@\"; echo $$ > {started}; exec sleep 120; fi;;\n"
                           f"esac\nexec {real} \"$@\"\n")
        wrapper.chmod(0o755)
    env = {**os.environ}
    if where == "merge":
        env["PATH"] = f"{wrapper.parent}:{env['PATH']}"
    proc = subprocess.Popen([sys.executable, str(WORKER), "w1", "--exit-when-idle"], cwd=repo.root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(started.exists, 60, what=lambda: describe(orch.queue, [tid]))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    # The branch is where it was verified last: at the base, never half-merged.
    assert git(repo.root, "rev-parse", f"klauss/{job}/merged") == base
    inflight = [t for t in orch.queue.list_tasks(job_id=job) if integration.is_integration(t)]
    assert [t.status for t in inflight] == ["in_progress"]
    # What the dead worker started in a session of its own is found and stopped by the retry.
    go.touch()
    assert orch.queue.recover_stale(worker_id="w1") == [inflight[0].id]
    repo.run_worker("w2")
    report = integration.job_report(orch.queue, job)
    assert states(report) == {tid: "merged"}, report
    assert report["head"]["commit"] == job_branch(repo, job) != base
    assert repo.show(f"klauss/{job}/merged", "a.txt") == "a"
    assert orch.queue.get_task(inflight[0].id).status == "completed"
    if where == "verify":  # the dead worker's verify run, in a session of its own, was stopped
        assert all_dead([int(started.read_text())])


def test_without_a_verify_command_tasks_merge_as_before(repo):
    orch = ClaudeOrchestrator("t")
    job, (tid,) = orch.submit_plan("one", [{"prompt": fake("write", "a.txt", content="BROKEN\n")}],
                                   isolation="worktree")
    repo.run_worker()
    assert orch.queue.get_task(tid).outcome["merge"] == "merged"
    assert [t.id for t in orch.queue.list_tasks(job_id=job)] == [tid]
    report = integration.job_report(orch.queue, job)
    assert report["verify_command"] == [] and states(report) == {tid: "merged"} and report["head"] is None


def test_the_job_budget_stops_fix_ups_but_not_the_integration_of_paid_work(repo):
    setup_verify(repo)
    orch = ClaudeOrchestrator("t")
    # One turn of the fake costs more than the whole budget.
    job, (bad,) = orch.submit_plan("costly", [{"prompt": "bad\n" + write_once("b.txt", "BROKEN\n", "fixed\n")}],
                                   isolation="worktree", max_budget_usd=0.001)
    repo.run_worker()
    report = integration.job_report(orch.queue, job)
    row = next(r for r in report["tasks"] if r["task"] == bad)
    assert row["state"] == "integration_failed" and "budget" in row["why"], report
    fix = orch.queue.get_task(row["fix_task"])
    assert fix.status == "skipped" and fix.job_id == job and "budget" in fix.error
    assert [t.status for t in orch.queue.list_tasks(job_id=job) if integration.is_integration(t)] == ["completed"]
    assert verify_runs(repo) == 1 and job_branch(repo, job) == orch.queue.get_job(job)["metadata"]["base_commit"]


def test_run_verify_option_is_checked_before_anything_is_queued(repo):
    plan = repo.tmp / "plan.json"
    plan.write_text(json.dumps({"description": "d", "isolation": "worktree", "tasks": [{"id": "a", "prompt": "x"}]}))
    out = repo.cli("run", str(plan), "--verify", "make 'test", "--yes", script=ORCH)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 and "--verify: cannot split" in out.stderr, out.stderr
    assert repo.queue.list_jobs() == []


def test_a_verify_command_that_times_out_fails_the_branch_and_is_stopped(repo):
    hang = repo.tmp / "hang.py"
    pidfile = repo.tmp / "verify.pid"
    hang.write_text(f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(60)\n")
    (repo.root / ".klauss.toml").write_text(
        SETTINGS + f"[integration]\nverify_command = {json.dumps([sys.executable, str(hang)])}\nverify_timeout = 0.5\n"
                   "fix_attempts = 0\n")
    orch = ClaudeOrchestrator("t")
    job, (tid,) = orch.submit_plan("one", [{"prompt": fake("write", "a.txt", content="a\n")}], isolation="worktree")
    repo.run_worker()
    row = integration.job_report(orch.queue, job)["tasks"][0]
    assert row["state"] == "integration_failed" and "exit status None" in row["why"], row
    assert "timed out after 0.5s" in open(row["log"]).read()
    assert all_dead([int(pidfile.read_text())])
    assert job_branch(repo, job) == orch.queue.get_job(job)["metadata"]["base_commit"]


def test_integration_follows_dependency_order(repo):
    setup_verify(repo)
    orch = ClaudeOrchestrator("t")
    job, (a, b) = orch.submit_plan("chain", [
        {"ref": "a", "prompt": "a\n" + fake("write", "a.txt", content="a\n")},
        {"ref": "b", "prompt": "b\n" + py("open('b.txt', 'w').write(open('a.txt').read())"), "depends_on": ["a"]},
    ], isolation="worktree")
    repo.run_worker()
    merges = {t.metadata[integration.KIND]["task"]: t for t in orch.queue.list_tasks(job_id=job, order="asc")
              if integration.is_integration(t)}
    assert merges[a].depends_on == [a] and merges[b].depends_on == sorted([b, merges[a].id])
    assert states(integration.job_report(orch.queue, job)) == {a: "merged", b: "merged"}
    assert repo.show(f"klauss/{job}/merged", "b.txt") == "a"


def test_the_merge_worktree_is_set_up_once_like_a_task_worktree(repo):
    setups = repo.tmp / "setups.log"
    setup = [sys.executable, "-c", f"import os; os.makedirs('built', exist_ok=True); open('built/ok', 'w').close(); "
                                   f"open({str(setups)!r}, 'a').write('x')"]
    check = [sys.executable, "-c", "import os, sys; sys.exit(0 if os.path.exists('built/ok') and "
                                   "open('.env').read() == 'secret' else 1)"]
    repo.commit("ignore the build", **{".gitignore": ".klauss/\nbuilt/\n"})
    (repo.root / ".env").write_text("secret")
    (repo.root / ".klauss.toml").write_text(
        SETTINGS + f"[isolation]\ncopy_files = [\".env\"]\nsetup_command = {json.dumps(setup)}\n"
                   f"[integration]\nverify_command = {json.dumps(check)}\n")
    orch = ClaudeOrchestrator("t")
    job, ids = orch.submit_plan("two", [{"prompt": f"t{i}\n" + fake("write", f"f{i}.txt", content="x\n")}
                                        for i in range(2)], isolation="worktree")
    repo.run_worker()
    assert states(integration.job_report(orch.queue, job)) == {ids[0]: "merged", ids[1]: "merged"}
    # Once per task worktree, once for the merge worktree: not once per verify run.
    assert setups.read_text() == "xxx"


def test_a_verify_command_that_cannot_start_fails_the_integration_without_fix_ups(repo):
    (repo.root / ".klauss.toml").write_text(
        SETTINGS + f"[integration]\nverify_command = [{json.dumps(str(repo.tmp / 'no-such-tool'))}]\n")
    orch = ClaudeOrchestrator("t")
    job, (tid,) = orch.submit_plan("one", [{"prompt": fake("write", "a.txt", content="a\n")}], isolation="worktree")
    repo.run_worker()
    [row] = integration.job_report(orch.queue, job)["tasks"]
    assert row["state"] == "integration_failed" and "[integration] verify_command: cannot run" in row["why"], row
    assert [t.id for t in orch.queue.list_tasks(job_id=job) if not integration.is_integration(t)] == [tid]


def test_a_bad_verify_in_job_metadata_is_refused_at_submit(repo):
    queue = repo.queue
    with pytest.raises(ValueError, match="^metadata.verify: expected a command"):
        queue.submit_job("d", [{"prompt": "x"}], metadata={"verify": [1]})
    with pytest.raises(ValueError, match="^metadata.verify: cannot split"):
        queue.create_job("d", metadata={"verify": "a 'b"})
    assert queue.list_jobs() == []
