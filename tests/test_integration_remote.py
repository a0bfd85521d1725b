"""The verified merge queue across hosts: with a verify command and `[isolation] remote`, an
integration task on any host fetches the task's branch and the job branch from the remote, merges
and verifies in its own clone, and advances the job branch there by compare-and-swap; fix-up tasks
find their start commits on the remote; `merge` on any host brings the verified head in.

Two "hosts" on this machine (tests/test_remote.py's fixture: a bare remote, two clones, one shared
database), the fake `claude`, and a verify script that fails when a tracked *.txt holds BROKEN.
Where a test needs to say which host runs which task, it drives the real worker's `process` in this
process, one claimed task at a time, routed to a Worker of that host's configuration."""

import sys

import pytest
from test_integration import RESOLVING_CLASH
from test_remote import git, on_remote, py
from test_remote import hosts as two_hosts  # noqa: F401  (a fixture)

import claude_cli
import claude_queue
import claude_worker
import integration
import worktrees
from conftest import fake
from orchestrator import ClaudeOrchestrator

VERIFY = """import pathlib, sys
bad = sorted(p.name for p in pathlib.Path(".").glob("*.txt") if "BROKEN" in p.read_text())
print("broken files:", bad)
sys.exit(1 if bad else 0)
"""
WID = "mix-w1"


@pytest.fixture
def hosts(two_hosts, tmp_path):  # noqa: F811
    """(alpha, beta, bare remote, verify argv); fix-ups off unless a test turns them on."""
    alpha, beta, remote = two_hosts
    script = tmp_path / "verify.py"
    script.write_text(VERIFY)
    for host in (alpha, beta):
        fix_attempts(host, 0)
    return alpha, beta, remote, [sys.executable, str(script)]


def fix_attempts(host, n):
    path = host.root / ".klauss.toml"
    text = path.read_text().split("[integration]")[0]
    path.write_text(text + f"[integration]\nfix_attempts = {n}\n")


def states(report):
    return {r["task"]: r["state"] for r in report["tasks"]}


def write_once(name, first, later):
    """A task writing `first` into a fresh tree, and `later` where the file already is (a fix-up)."""
    return py(f"import os\np = {name!r}\ntext = {later!r} if os.path.exists(p) else {first!r}\nopen(p, 'w').write(text)")


def worker(host):
    cfg = host.cfg
    w = claude_worker.Worker(WID, claude_queue.TaskQueue(cfg=cfg), cfg)
    w.executable = claude_cli.resolve_command(cfg["claude"]["command"])
    return w


def kind(task):
    if integration.is_integration(task):
        return "integration"
    return "fix" if (task.metadata or {}).get(integration.FIX) else "task"


def drive(route):
    """Claim tasks one at a time and run each with the real worker of the host `route(task)` names
    (as `kind -> host`); stop (the task released, untouched) at the first kind routed nowhere."""
    workers, task, ran = {}, None, []
    while True:
        if task is None:
            task = claude_queue.TaskQueue(cfg=next(iter(route.values())).cfg).claim_task(WID)
        if task is None:
            return ran
        host = route.get(kind(task))
        if host is None:
            claude_queue.TaskQueue(cfg=next(iter(route.values())).cfg).release_task(task.id, WID, attempt=task.attempt)
            return ran
        w = workers.get(host.name) or workers.setdefault(host.name, worker(host))
        w._next = None
        w.process(w.queue.get_task(task.id))
        ran.append((task.id, kind(task), host.name))
        task = w._next  # the commit that recorded its end claimed the next one


def test_tasks_and_their_integration_run_on_another_host_and_merge_brings_the_verified_head_in(hosts):
    alpha, beta, remote, verify = hosts
    orch = ClaudeOrchestrator("t")
    job, (one, two, bad) = orch.submit_plan("verified elsewhere", [
        {"prompt": fake("write", "one.txt", content="one\n")},
        {"prompt": fake("write", "two.txt", content="two\n")},
        {"prompt": fake("write", "bad.txt", content="BROKEN\n")},
    ], isolation="worktree", verify=verify)

    beta.run_workers(2)  # beta runs the tasks and their integration, two workers at once
    tasks = orch.queue.list_tasks(job_id=job)
    assert all(t.status == "completed" for t in tasks), [(t.id, t.status, t.error) for t in tasks]
    assert len([t for t in tasks if integration.is_integration(t)]) == 3
    report = integration.job_report(orch.queue, job)
    assert states(report) == {one: "merged", two: "merged", bad: "integration_failed"}, report
    name = worktrees.remote_ref(job, "merged")
    head = on_remote(remote, name)
    assert head and report["head"]["commit"] == head and report["head"]["exit_status"] == 0
    assert on_remote(remote, name, "one.txt") == "one" and on_remote(remote, name, "two.txt") == "two"
    assert on_remote(remote, name, "bad.txt") is None, "the failing task is kept out of the verified head"
    bad_commit = orch.queue.get_task(bad).outcome["commit"]
    assert on_remote(remote, worktrees.remote_ref(job, f"task-{bad}")) == bad_commit, "its work is kept"
    assert git(beta.root, "rev-parse", worktrees.job_branch(job)) == head, "beta's copy follows the remote"
    assert not (alpha.root / ".klauss" / "worktrees" / f"merged-{job}").exists()
    assert not alpha.has(head)

    out = alpha.cli("merge", job)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (alpha.root / "one.txt").read_text() == "one\n" and (alpha.root / "two.txt").read_text() == "two\n"
    assert not (alpha.root / "bad.txt").exists()
    assert git(alpha.root, "rev-parse", "HEAD^2") == head
    assert not (beta.root / "one.txt").exists(), "beta's checkout is never touched"


def test_integration_on_one_host_and_its_fix_up_on_the_other(hosts):
    alpha, beta, remote, verify = hosts
    for host in (alpha, beta):
        fix_attempts(host, 1)
    orch = ClaudeOrchestrator("t")
    job, (good, bad) = orch.submit_plan("mixed", [
        {"prompt": "good\n" + fake("write", "a.txt", content="fine\n")},
        {"prompt": "bad\n" + write_once("b.txt", "BROKEN\n", "fixed\n")},
    ], isolation="worktree", verify=verify)

    ran = drive({"task": alpha, "fix": alpha, "integration": beta})
    assert {(k, h) for _, k, h in ran} == {("task", "alpha"), ("fix", "alpha"), ("integration", "beta")}, ran
    tasks = orch.queue.list_tasks(job_id=job)
    assert all(t.status == "completed" for t in tasks), [(t.id, t.status, t.error) for t in tasks]
    report = integration.job_report(orch.queue, job)
    row = next(r for r in report["tasks"] if r["task"] == bad)
    assert states(report)[good] == "merged" and row["state"] == "fixed_and_merged", report
    fix = orch.queue.get_task(row["fix_task"])
    start = fix.metadata[integration.START]["commit"]
    # The fix-up started from beta's merge of the failing work, which alpha found on the remote.
    assert on_remote(remote, worktrees.base_ref(start)) == start
    assert git(alpha.root, "merge-base", "--is-ancestor", start, fix.outcome["commit"]) == ""
    name = worktrees.remote_ref(job, "merged")
    assert report["head"]["commit"] == on_remote(remote, name)
    assert on_remote(remote, name, "a.txt") == "fine" and on_remote(remote, name, "b.txt") == "fixed"

    out = alpha.cli("merge", job)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (alpha.root / "b.txt").read_text() == "fixed\n" and (alpha.root / "a.txt").read_text() == "fine\n"


def test_an_integration_that_lost_the_race_merges_and_verifies_again_on_the_new_head(hosts, monkeypatch):
    alpha, beta, remote, verify = hosts
    orch = ClaudeOrchestrator("t")
    job, (tid,) = orch.submit_plan("race", [{"prompt": fake("write", "mine.txt", content="mine\n")}],
                                   isolation="worktree", verify=verify)
    base = orch.queue.get_job(job)["metadata"]["base_commit"]
    assert drive({"task": alpha}) == [(tid, "task", "alpha")]
    # What another host verified and pushed while beta was merging and verifying: a side commit.
    git(alpha.root, "checkout", "-q", "-b", "side", base)
    (alpha.root / "theirs.txt").write_text("theirs\n")
    git(alpha.root, "add", "theirs.txt")
    git(alpha.root, "commit", "-qm", "theirs")
    theirs = git(alpha.root, "rev-parse", "HEAD")
    git(alpha.root, "checkout", "-q", "main")
    name = worktrees.remote_ref(job, "merged")
    real, fetched = worktrees.fetch_ref, []

    def racing_fetch(repo, remote_name, ref, *args, **kwargs):
        tip = real(repo, remote_name, ref, *args, **kwargs)
        if ref == name:
            fetched.append(tip)
            if len(fetched) == 1:
                assert worktrees.push_ref(alpha.root, "origin", theirs, name, expect=tip) is True
        return tip

    monkeypatch.setattr(worktrees, "fetch_ref", racing_fetch)
    ran = drive({"integration": beta})
    assert [k for _, k, _ in ran] == ["integration"]
    assert fetched == [None, theirs], "the compare-and-swap push failed, the new head was fetched"
    report = integration.job_report(orch.queue, job)
    assert states(report) == {tid: "merged"} and report["verify_runs"] == 2, report
    head = on_remote(remote, name)
    assert report["head"]["commit"] == head == git(beta.root, "rev-parse", worktrees.job_branch(job))
    assert git(beta.root, "rev-parse", f"{head}^1") == theirs, "merged onto the other host's head, nothing lost"
    assert on_remote(remote, name, "theirs.txt") == "theirs" and on_remote(remote, name, "mine.txt") == "mine"


def test_what_another_host_recorded_meanwhile_is_kept(hosts):
    """Two hosts integrate one job's tasks at once: each writes its own entries, not the other's."""
    alpha, beta, remote, verify = hosts
    orch = ClaudeOrchestrator("t")
    job, (good, bad) = orch.submit_plan("both", [
        {"prompt": fake("write", "good.txt", content="good\n")},
        {"prompt": fake("write", "bad.txt", content="BROKEN\n")},
    ], isolation="worktree", verify=verify)
    drive({"task": alpha})
    q = claude_queue.TaskQueue(cfg=beta.cfg)
    on_beta = integration.Integrator(beta.cfg, q, q.get_job(job))
    real_verify = on_beta._verify

    def verify_while_alpha_integrates(commit, tids):
        # Beta has loaded the job's state; alpha keeps the bad task out before beta saves.
        on_alpha = integration.Integrator(alpha.cfg, claude_queue.TaskQueue(cfg=alpha.cfg), q.get_job(job))
        assert on_alpha.integrate(bad) == f"task #{bad}: integration_failed"
        return real_verify(commit, tids)

    on_beta._verify = verify_while_alpha_integrates
    assert on_beta.integrate(good) == f"task #{good}: merged"
    report = integration.job_report(orch.queue, job)
    assert states(report) == {good: "merged", bad: "integration_failed"}, report
    name = worktrees.remote_ref(job, "merged")
    assert report["head"]["commit"] == on_remote(remote, name) and report["verify_runs"] == 2
    assert on_remote(remote, name, "good.txt") == "good" and on_remote(remote, name, "bad.txt") is None


def test_a_conflict_found_on_one_host_is_resolved_on_the_other(hosts):
    alpha, beta, remote, verify = hosts
    orch = ClaudeOrchestrator("t")
    job, (first, second) = orch.submit_plan("clash", RESOLVING_CLASH, isolation="worktree", verify=verify)

    ran = drive({"task": beta, "integration": beta, "fix": alpha})
    assert ("fix", "alpha") in {(k, h) for _, k, h in ran}, ran
    report = integration.job_report(orch.queue, job)
    row = next(r for r in report["tasks"] if r["task"] == second)
    assert states(report)[first] == "merged" and row["state"] == "fixed_and_merged", report
    assert row["fix_kind"] == "resolution"
    resolution = orch.queue.get_task(row["fix_task"])
    assert resolution.status == "completed" and alpha.has(orch.queue.get_task(first).outcome["commit"])
    name = worktrees.remote_ref(job, "merged")
    assert report["head"]["commit"] == on_remote(remote, name)
    assert on_remote(remote, name, "shared.txt") == "one\ntwo"
    second_commit = orch.queue.get_task(second).outcome["commit"]
    assert git(remote, "merge-base", "--is-ancestor", second_commit, name, check=False) == "", \
        "the resolution merges the task's own commit: its work is in the job branch's history"


def test_a_task_whose_branch_did_not_reach_the_remote_is_not_queued_for_integration(hosts):
    """Another host's integration could not fetch it: the task runs again instead (its work is safe here)."""
    alpha, beta, remote, verify = hosts
    orch = ClaudeOrchestrator("t")
    job_id, (tid,) = orch.submit_plan("unpushed", [{"prompt": "x"}], isolation="worktree", verify=verify)
    job = orch.queue.get_job(job_id)
    tree = worktrees.TaskTree(alpha.cfg, orch.queue, orch.queue.get_task(tid), alpha.root,
                              job["metadata"]["base_commit"], "auto", worktrees.job_branch(job_id))
    outcome = {"remote_error": "could not push it"}
    assert integration.enqueue(alpha.cfg, orch.queue, orch.queue.get_task(tid), job, tree, outcome) == \
        (True, "could not push it")
    assert [t.id for t in orch.queue.list_tasks(job_id=job_id)] == [tid], "no integration task"
