"""What the user is told about a job with a verify command (issue 15, "What the user gets"): every view
(wait_and_collect and the synthesis, `run`/`wait`, `status`, `show`, `jobs`, the dashboard, MCP) says
per task merged / fixed and merged / integration failed (why, log) / conflict (files), and for the job
the verified head; the merge queue's own integration tasks are not counted as the user's tasks.

One job, run once by a real worker with the fake `claude` and a small verify script, holds every state.
It is built once for the module; each test that reads it gets the project back exactly as the run left it
(its folder restored at the same path, so the paths in the database and in git still hold).
"""

import json
import os
import shutil
import sys

import pytest
from test_integration import KEPT_CLASH, VERIFY, write_once
from test_worktrees import ORCH, SETTINGS, Repo, git, project
from test_worktrees import repo as worktree_repo  # noqa: F401  (a fixture)

import claude_dashboard
import hints
import integration
import klauss_mcp
import task_report
from conftest import fake
from orchestrator import ClaudeOrchestrator, JobResults


@pytest.fixture
def repo(request):
    """The project: for a test of the finished job, the one `done_job` restored; else a new one."""
    return request.getfixturevalue("done_repo" if "done_job" in request.fixturenames else "worktree_repo")


def setup_verify(repo, fix_attempts=1):
    script = repo.tmp / "verify.py"
    script.write_text(VERIFY.format(runs=str(repo.tmp / "runs.log")))
    argv = [sys.executable, str(script)]
    (repo.root / ".klauss.toml").write_text(
        SETTINGS + f"[integration]\nverify_command = {json.dumps(argv)}\nfix_attempts = {fix_attempts}\n")
    return argv


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """The finished job, run once: its folder, a pristine copy of it, the environment it ran in, and
    what `done_job` tells about it."""
    tmp = tmp_path_factory.mktemp("views")
    with pytest.MonkeyPatch.context() as mp:
        steps = project(tmp, mp)
        repo = next(steps)
        env = dict(os.environ)
        try:
            orch, *data = run_done_job(repo)
            orch.queue.close()
        finally:
            next(steps, None)  # the fixture's teardown: nothing of the run may be left alive
    pristine = tmp.parent / (tmp.name + "-pristine")
    shutil.copytree(tmp, pristine, symlinks=True)
    return tmp, pristine, env, data


@pytest.fixture
def done_repo(finished, monkeypatch):
    tmp, pristine, env, data = finished
    shutil.rmtree(tmp)
    shutil.copytree(pristine, tmp, symlinks=True)
    for var in set(os.environ) - set(env):
        monkeypatch.delenv(var)
    for var, value in env.items():
        if var != "PYTEST_CURRENT_TEST":
            monkeypatch.setenv(var, value)
    monkeypatch.chdir(tmp / "proj")
    return Repo(tmp / "proj", tmp)


@pytest.fixture
def done_job(finished, done_repo):
    """A finished job whose five tasks end merged, fixed and merged, integration failed (after one
    fix-up), merged, and conflict (its resolution left markers): a copy of the one `finished` ran."""
    return (ClaudeOrchestrator("t"), *finished[3])


def run_done_job(repo):
    argv = setup_verify(repo)
    orch = ClaudeOrchestrator("t")
    job, ids = orch.submit_plan("every state", [
        {"prompt": "good\n" + fake("write", "a.txt", content="fine\n")},
        {"prompt": "fixable\n" + write_once("c.txt", "BROKEN\n", "fixed\n")},
        {"prompt": "hopeless\n" + write_once("b.txt", "BROKEN\n", "BROKEN still\n")},
        *KEPT_CLASH,
    ], isolation="worktree")
    repo.run_worker()
    report = integration.job_report(orch.queue, job)
    states = {r["task"]: r["state"] for r in report["tasks"]}
    good, fixable, hopeless, first, second = ids
    assert [states[t] for t in ids] == ["merged", "fixed_and_merged", "integration_failed", "merged", "conflict"], report
    rows = {r["task"]: r for r in report["tasks"]}
    return orch, job, ids, rows, report, argv


def user_tasks(orch, job):
    return [t for t in orch.queue.list_tasks(job_id=job, order="asc") if not integration.is_integration(t)]


def test_collect_and_the_synthesis_tell_each_state_and_the_verified_head(done_job):
    orch, job, (good, fixable, hopeless, first, second), rows, report, argv = done_job
    q = orch.queue
    mine = user_tasks(orch, job)
    merging = [t for t in q.list_tasks(job_id=job, order="asc") if integration.is_integration(t)]
    assert merging  # the merge queue did run tasks of its own

    results = JobResults(job, orch.collect(job))
    # Integration tasks are not the user's: only the tasks, fix-ups and resolutions are collected.
    assert sorted(results) == [t.id for t in mine]
    assert results[good]["merge"] == "merged" and results[first]["merge"] == "merged"
    assert results[fixable]["merge"] == "fixed_and_merged"
    assert results[fixable]["integration"]["fix_task"] == rows[fixable]["fix_task"]
    assert results[hopeless]["merge"] == "integration_failed"
    assert results[hopeless]["integration"]["log"] == rows[hopeless]["log"]
    assert results[second]["merge"] == "conflict" and results[second]["conflicts"] == ["shared.txt"]
    fix = rows[fixable]["fix_task"]
    assert results[fix]["integration"]["kind"] == "fix" and results[fix]["integration"]["of"] == fixable
    assert results.needs_attention

    text = orch.synthesize_results(results)
    head = report["head"]
    assert head["exit_status"] == 0 and head["commit"] == git(".", "rev-parse",
                                                                f"klauss/{job}/merged")
    assert (f"Verified head of klauss/{job}/merged: {head['commit'][:12]}, `{' '.join(argv)}` exited 0 in "
            f"{task_report.fmt_duration(head['duration'])}; {report['verify_runs']} verify runs in all.") in text
    assert f"## Task {good}: good — completed, merged\n" in text
    assert f"## Task {fixable}: fixable — completed, fixed and merged (by fix-up task #{fix})\n" in text
    assert (f"## Task {hopeless}: hopeless — completed, integration failed: verification failed (exit status 1) "
            f"after 1 fix-up attempt(s) (log {rows[hopeless]['log']})\n") in text
    assert f"## Task {second}: second — completed, conflict in shared.txt: " in text
    assert f"## Task {fix} (fix-up of task #{fixable}): Fix-up 1 of 1 for task #{fixable}" in text
    resolution = next(r["task"] for r in rows.values() if r["kind"] == "resolution")
    assert f"conflict in shared.txt: resolution task #{resolution}: its resolution left conflict markers" in text
    assert f"## Task {resolution} (resolution of task #{second}):" in text
    assert "merge queued" not in text and ", merge queued" not in text
    assert f"**{len(mine)} tasks: " in text  # the integration tasks are not counted
    total = sum(t.cost_usd or 0 for t in q.list_tasks(job_id=job))
    assert f"Total cost {task_report.fmt_cost(total)}" in text  # but what they cost is the job's
    assert "**Integration failed**" in text and f"task #{hopeless}: integration failed" in text
    assert f"**Merge conflicts** (each task's work is safe on its branch): task #{second} in shared.txt" in text
    assert "3 task(s) merged into branch" in text  # good, fixable (through its fix-up), first

    status = orch.get_job_status(job)
    assert status["total"] == len(mine) and status["done"] == len(mine) and status["finished"]
    assert status["integrating"] == 0 and status["stats"]["total"] == len(mine)
    assert status["cost_usd"] == round(total, 6)


def test_run_wait_and_status_on_the_command_line(done_job, repo):
    orch, job, (good, fixable, hopeless, first, second), rows, report, argv = done_job
    out = repo.cli("wait", job, script=ORCH)
    assert out.returncode == 1, out.stderr  # needs attention
    assert "verify runs in all." in out.stdout and "completed, fixed and merged (by fix-up task" in out.stdout
    err = out.stderr
    assert (f"error: task #{hopeless} was kept out of the job branch: integration failed: verification failed "
            f"(exit status 1) after 1 fix-up attempt(s) (log {rows[hopeless]['log']}); its work is safe on branch "
            f"klauss/{job}/task-{hopeless}") in err
    assert f"error: task #{second} was kept out of the job branch: conflict in shared.txt: " in err
    assert f"error: task #{fixable}" not in err and f"error: task #{rows[fixable]['fix_task']}" not in err
    assert (f"to finish job {job}: bring the job branch into yours (`{hints.command('merge', job)}`), then merge "
            "each branch above by hand (`git merge BRANCH`), resolve the conflicts, make the verify command pass "
            "and commit") in err

    data = json.loads(repo.cli("wait", job, "--json", script=ORCH).stdout)
    assert {int(k): v["merge"] for k, v in data["tasks"].items()}[hopeless] == "integration_failed"

    out = repo.cli("status", job, script=ORCH)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    mine = len(user_tasks(orch, job))
    assert lines[0].startswith(f"[{job}] {mine}/{mine} done")
    assert lines[1] == "  " + task_report.verified_head_text(report)
    assert f"  #{good}: merged" in lines
    assert f"  #{fixable}: fixed and merged (by fix-up task #{rows[fixable]['fix_task']})" in lines
    assert f"  #{rows[fixable]['fix_task']} (fix-up of task #{fixable}): merged" in lines
    assert any(x.startswith(f"  #{hopeless}: integration failed: verification failed") for x in lines)
    assert any(x.startswith(f"  #{second}: conflict in shared.txt") for x in lines)
    data = json.loads(repo.cli("status", job, "--json", script=ORCH).stdout)
    assert data["total"] == mine and data["integration"]["head"] == report["head"]


def test_show_jobs_dashboard_and_mcp(done_job, repo):
    orch, job, (good, fixable, hopeless, first, second), rows, report, argv = done_job
    q = orch.queue
    mine = len(user_tasks(orch, job))
    head = task_report.verified_head_text(report)

    out = repo.cli("show", str(hopeless))
    assert out.returncode == 0, out.stderr
    assert "  Merge:       integration failed: verification failed (exit status 1)" in out.stdout
    assert f"  Job head:    {head}" in out.stdout
    fix = rows[fixable]["fix_task"]
    out = repo.cli("show", str(fix)).stdout
    assert f"  Fix of:      fix-up of task #{fixable}" in out and "  Merge:       merged" in out
    step = next(t for t in q.list_tasks(job_id=job) if integration.is_integration(t))
    out = repo.cli("show", str(step.id)).stdout
    assert f"  Integrates:  task #{step.metadata['klauss_integration']['task']} (the merge queue's own task" in out
    data = json.loads(repo.cli("show", str(second), "--json").stdout)
    assert data["integration"]["state"] == "conflict" and data["integration"]["files"] == ["shared.txt"]

    jobs = json.loads(repo.cli("jobs", "--json").stdout)
    stats = next(j for j in jobs if j["id"] == job)["stats"]
    assert stats["total"] == mine and stats["integrating"] == 0
    assert f"{mine}/{mine}" in repo.cli("jobs").stdout

    dash = claude_dashboard.Dashboard(q)
    screen = "\n".join("".join(text for text, _ in line) for line in dash.frame(200))
    assert f"{mine}/{mine}" in screen
    dash.detail = hopeless
    screen = "\n".join("".join(text for text, _ in line) for line in dash.frame(200))
    assert "Merge:       integration failed: verification failed (exit status 1)" in screen
    assert "Job head:    " + head[:100] in screen  # a long field is cut to the screen

    tools = klauss_mcp.KlaussTools()
    text = tools.call("job_status", {"job_id": job})
    assert f"{mine}/{mine} done" in text and f"- {head}" in text
    assert f"- #{fixable} completed, fixed and merged (by fix-up task #{fix}): fixable" in text
    assert f"- #{fix} completed (fix-up of task #{fixable}), merged: Fix-up 1" in text
    assert f"- #{second} completed, conflict in shared.txt" in text
    assert "integrate task #" not in text
    text = tools.call("show_task", {"task_id": hopeless})
    assert "Merge:       integration failed" in text and f"Job head:    {head}" in text
    text = tools.call("wait_job", {"job_id": job})
    assert "completed, integration failed: verification failed" in text and head[1:] in text
    text = tools.call("list_jobs", {})
    assert f"{mine}/{mine} done" in text


def test_progress_says_what_still_integrates():
    status = {"job_id": "j", "done": 2, "total": 2, "finished": False, "cost_usd": 0.5, "max_budget_usd": None,
              "integrating": 1, "stats": {k: 0 for k in ("in_progress", "pending", "completed", "failed", "skipped",
                                                         "cancelled")}}
    assert task_report.progress_line(status) == "[j] 2/2 done · 0 running · 1 integrating · $0.5000"
    assert task_report.job_status_line(status) == "2/2 done · 1 integrating · cost $0.5000"


def test_a_pr_ready_summary_is_written_next_to_the_synthesis(done_job, repo):
    orch, job, (good, fixable, hopeless, first, second), rows, report, argv = done_job
    out = repo.cli("wait", job, script=ORCH)
    folder = repo.root / ".klauss" / "jobs" / job
    path = folder / "summary.md"
    assert f"summary for a pull request: {path} (the synthesis is next to it)" in out.stderr
    assert (folder / "synthesis.md").read_text() == out.stdout
    text = path.read_text()
    head = report["head"]
    assert text.startswith(f"# every state\n\nJob `{job}`: the work of its tasks on branch `klauss/{job}/merged`.\n")
    assert f"- Verify command: `{' '.join(argv)}`\n" in text
    assert f"- Verified head: `{head['commit']}`\n" in text
    assert f"- Exit status: 0, in {task_report.fmt_duration(head['duration'])} (log `{head['log']}`)\n" in text
    assert f"- Verify runs: {report['verify_runs']}\n" in text
    changes = text.split("## Changes\n", 1)[1].split("## Not included\n", 1)[0]
    # Each merged task: title, files, verification, and the diffstat of its merge into the job branch.
    assert f"### good (task #{good})\n\n- Files: `a.txt`\n- Verification: passed, merged\n\n```\n a.txt | 1 +\n" \
        in changes
    assert (f"### fixable (task #{fixable})\n\n- Files: `c.txt`\n- Verification: passed, fixed and merged (by fix-up "
            f"task #{rows[fixable]['fix_task']})\n\n```\n c.txt | 1 +\n") in changes
    assert f"(task #{first})\n\n- Files: `shared.txt`" in changes
    assert f"task #{hopeless})" not in changes and f"task #{second})" not in changes
    assert f"#{rows[fixable]['fix_task']}" not in changes.replace(f"fix-up task #{rows[fixable]['fix_task']}", "")
    left = text.split("## Not included\n", 1)[1]
    assert (f"- Task #{hopeless} hopeless: integration failed: verification failed (exit status 1) after 1 fix-up "
            f"attempt(s) (log {rows[hopeless]['log']}); its work is on branch `klauss/{job}/task-{hopeless}`") in left
    assert f"- Task #{second} second: conflict in shared.txt: resolution task #" in left
    assert len(left.strip().splitlines()) == 2  # the failed fix-up is told with its task, not apart

    data = json.loads(repo.cli("wait", job, "--json", script=ORCH).stdout)
    assert data["summary"] == str(path)
    assert f"A summary for a pull request is in `{path}`." in klauss_mcp.KlaussTools().call("wait_job", {"job_id": job})


def test_a_job_without_a_verify_command_gets_a_summary_too(repo):
    orch = ClaudeOrchestrator("t")
    job, (tid,) = orch.submit_plan("plain", [{"prompt": "one\n" + fake("write", "a.txt", content="a\n")}],
                                   isolation="worktree")
    repo.run_worker()
    path = orch.write_summary(JobResults(job, orch.collect(job)))
    text = path.read_text()
    assert "## Verification" not in text and "## Not included" not in text
    assert f"### one (task #{tid})\n\n- Files: `a.txt`\n- Verification: none (the job has no verify command)\n" in text
    assert (path.parent / "synthesis.md").exists()


def test_merge_brings_in_the_job_branch_only_at_its_verified_head(done_job, repo):
    orch, job, (good, fixable, hopeless, first, second), rows, report, argv = done_job
    branch = f"klauss/{job}/merged"
    verified = report["head"]["commit"]
    # Someone moved the job branch past what was verified: refused, with why and the command with --force.
    tree = repo.tmp / "moved"
    git(repo.root, "worktree", "add", "-q", "--detach", str(tree), branch)
    (tree / "a.txt").write_text("BROKEN\n")
    git(tree, "commit", "-qam", "unverified")
    moved = git(tree, "rev-parse", "HEAD")
    git(repo.root, "update-ref", f"refs/heads/{branch}", moved)
    before = repo.head()
    for script in (None, ORCH):
        out = repo.cli("merge", job, **({"script": script} if script else {}))
        assert out.returncode == 1 and out.stderr.count("\n") == 1, out.stderr
        assert (f"job {job}: {branch} is not verified: its head {moved[:12]} is not the commit that passed "
                f"verification ({verified[:12]}), so it stays out of your branch; `{hints.command('wait', job)}` "
                f"tells what the merge queue did, or merge it all the same with "
                f"`{hints.command('merge', job, '--force')}`") in out.stderr
        assert repo.head() == before
    out = repo.cli("merge", job, "--force", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["merged"] == [branch] and repo.show("HEAD", "a.txt") == "BROKEN"
    # The merge queue's leftovers are named, not every task (their outcome said "queued").
    assert {t["task"]: t["merge"] for t in data["not_merged"]} == {hopeless: "integration_failed", second: "conflict"}


def test_merge_of_a_verified_head_goes_ahead(done_job, repo):
    orch, job, (good, fixable, hopeless, first, second), rows, report, argv = done_job
    out = repo.cli("merge", job)
    assert out.returncode == 0, out.stderr
    assert f"merged klauss/{job}/merged into main" in out.stdout
    assert git(repo.root, "merge-base", "--is-ancestor", report["head"]["commit"], "HEAD", check=False) == ""
    assert repo.show("HEAD", "c.txt") == "fixed" and repo.show("HEAD", "a.txt") == "fine"
    assert f"task #{hopeless} is not in the job branch (integration_failed)" in out.stdout
    assert f"task #{good} is not" not in out.stdout and f"task #{fixable} is not" not in out.stdout


def test_the_guide_and_the_skill_tell_how_to_ask_for_verification_and_read_it(tmp_path):
    from pathlib import Path

    import orchestrator
    root = Path(orchestrator.__file__).parent
    guide = (root / "ORCHESTRATOR_GUIDE.md").read_text()
    skill = orchestrator.skill_for((root / ".claude" / "skills" / "klauss" / "SKILL.md").read_text(), "klauss")
    for text in (" ".join(guide.split()), " ".join(skill.split())):
        assert '"verify": ["python3", "-m", "pytest", "-q"]' in text and "--verify" in text
        for word in ("merged", "fixed and merged", "integration failed", "conflict in"):
            assert word in text, word
        assert "summary.md" in text and "verified head" in text and "--force" in text
    assert "`klauss/manage.sh merge JOB_ID`" in skill
    assert "`.klauss/jobs/<job>/summary.md`" in guide and "`collect --json`" in guide
