"""Never lose work: cleaning worktrees and branches keeps every commit reachable from a kept ref, and
commits a worktree's uncommitted edits before removing it. Real git repositories, the real worker
and the fake `claude` (the `repo` fixture of tests/test_worktrees.py)."""

import json
import sys

from test_worktrees import ORCH, SETTINGS, git, repo  # noqa: F401  (repo is a fixture)

import worktrees
from conftest import fake
from orchestrator import ClaudeOrchestrator


def reachable(root):
    return set(git(root, "rev-list", "--all").split())


def finished_task(project, name, filename):
    """A one-task worktree job (merge = "branch") whose task wrote `filename` and finished:
    (job, task id, the task's branch, its worktree)."""
    job, (tid,) = ClaudeOrchestrator("t").submit_plan(
        name, [{"prompt": fake("write", filename, content=filename.split(".")[0] + "\n")}],
        isolation="worktree", merge="branch")
    project.run_worker()
    return job, tid, f"klauss/{job}/task-{tid}", project.cfg.state_dir / "worktrees" / f"task-{tid}"


def test_clean_commits_uncommitted_edits_to_the_task_branch_first(repo):  # noqa: F811
    (repo.root / ".klauss.toml").write_text(
        SETTINGS + f"[isolation]\nsetup_command = [{json.dumps(sys.executable)}, \"-c\", "
        "\"open('built.txt', 'w').write('setup')\"]\n")
    job, tid, branch, wt = finished_task(repo, "edits", "a.txt")
    done = git(repo.root, "rev-parse", branch)
    # Edits made after the task finished (by the user, or a process it left): tracked, untracked, ignored.
    (wt / "a.txt").write_text("edited\n")
    (wt / "notes").mkdir()
    (wt / "notes" / "new.txt").write_text("new\n")
    (wt / ".klauss").mkdir()
    (wt / ".klauss" / "ignored.txt").write_text("ignored\n")

    out = repo.cli("clean-worktrees", "--job", job)
    assert out.returncode == 0, out.stderr
    assert f"saved the uncommitted changes in {wt.resolve()}" in out.stdout and branch in out.stdout
    assert not wt.exists()
    saved = git(repo.root, "rev-parse", branch)
    assert saved != done and git(repo.root, "rev-parse", f"{saved}^") == done
    assert repo.show(branch, "a.txt") == "edited" and repo.show(branch, "notes/new.txt") == "new"
    assert git(repo.root, "log", "-1", "--format=%an <%ae>", saved) == "Klauss <klauss@localhost>"
    files = git(repo.root, "show", "--name-only", "--format=", saved).split()
    # .gitignore is respected, and what the setup command made is not the task's work.
    assert sorted(files) == ["a.txt", "notes/new.txt"]
    # The user's checkout is untouched.
    assert repo.status() == "M .klauss.toml" and not (repo.root / "a.txt").exists()


def test_unmerged_branch_is_kept_without_force_and_archived_with_it(repo):  # noqa: F811
    job, tid, branch, wt = finished_task(repo, "unmerged", "b.txt")
    commit = git(repo.root, "rev-parse", branch)
    before = reachable(repo.root)

    out = repo.cli("clean-worktrees", "--branches")
    assert out.returncode == 0
    assert branch in repo.branches()
    line = next(x for x in out.stderr.splitlines() if x.startswith(f"kept branch {branch}"))
    assert "not in your current branch" in line
    assert f"manage.sh clean-worktrees --job {job} --branches --force" in line
    report = json.loads(repo.cli("clean-worktrees", "--branches", "--json").stdout)
    kept = {k["branch"]: k for k in report["branches_kept"]}
    assert kept[branch]["command"].endswith(f"manage.sh clean-worktrees --job {job} --branches --force")
    assert report["branches_deleted"] == [] and report["branches_archived"] == []

    out = repo.cli("clean-worktrees", "--job", job, "--branches", "--force", "--json")
    report = json.loads(out.stdout)
    assert report["branches_deleted"] == [branch]
    (archived,) = report["branches_archived"]
    assert archived["branch"] == branch and archived["commit"] == commit
    assert archived["archive"].startswith(f"refs/klauss/archive/{job}/task-{tid}-")
    assert branch not in repo.branches()
    # The archive ref reaches the commit, and no commit of the repository became unreachable.
    assert git(repo.root, "rev-parse", archived["archive"]) == commit
    assert repo.show(archived["archive"], "b.txt") == "b"
    assert before <= reachable(repo.root)


def test_force_says_where_the_archive_is(repo):  # noqa: F811
    job, tid, branch, wt = finished_task(repo, "say", "c.txt")
    out = repo.cli("clean-worktrees", "--branches", "--force")
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith(f"deleted branch {branch}"))
    ref = line.split("archived as ", 1)[1].split(";", 1)[0]
    assert ref.startswith(f"refs/klauss/archive/{job}/") and f"git branch {branch} {ref}" in line
    git(repo.root, "branch", branch, ref)  # the printed way back works
    assert repo.show(branch, "c.txt") == "c"


def test_merged_branches_are_deleted_without_an_archive(repo):  # noqa: F811
    orch = ClaudeOrchestrator("t")
    job, ids = orch.submit_plan("merged", [{"prompt": fake("write", f"m{i}.txt", content=f"{i}\n")}
                                           for i in range(2)], isolation="worktree")
    repo.run_worker()
    before = reachable(repo.root)
    # The task branches are in the job branch: they go without --force; the job branch is kept.
    report = json.loads(repo.cli("clean-worktrees", "--branches", "--json").stdout)
    assert sorted(report["branches_deleted"]) == sorted(f"klauss/{job}/task-{t}" for t in ids)
    assert report["branches_archived"] == []
    assert [k["branch"] for k in report["branches_kept"]] == [f"klauss/{job}/merged"]
    assert before <= reachable(repo.root)
    # Once the job branch is in the user's branch, it goes too.
    assert repo.cli("merge", job).returncode == 0
    report = json.loads(repo.cli("clean-worktrees", "--branches", "--json").stdout)
    assert report["branches_deleted"] == [f"klauss/{job}/merged"] and report["branches_archived"] == []
    assert repo.branches() == ["main"]
    assert git(repo.root, "for-each-ref", "refs/klauss/") == ""


def test_a_crashed_attempts_edits_are_archived_before_its_worktree_is_replaced(repo):  # noqa: F811
    job, tid, branch, wt = finished_task(repo, "crash", "d.txt")
    tip = git(repo.root, "rev-parse", branch)
    (wt / "half.txt").write_text("half done\n")  # as a worker killed mid-run leaves it
    saved = worktrees.save_uncommitted(repo.cfg, repo.root, wt, job, onto_branch=False, why="a test")
    # The branch does not move (the next attempt starts where it was); the edits are kept elsewhere.
    assert git(repo.root, "rev-parse", branch) == tip
    assert saved["ref"].startswith(f"refs/klauss/archive/{job}/task-{tid}-") and saved["files"] == ["half.txt"]
    assert repo.show(saved["ref"], "half.txt") == "half done"
    assert (wt / "half.txt").exists() and git(wt, "status", "--porcelain") == "?? half.txt"
    assert worktrees.save_uncommitted(repo.cfg, repo.root, repo.root / "nowhere", job) is None


def test_run_of_a_job_whose_merge_conflicted_exits_1_and_says_what_to_do(repo):  # noqa: F811
    # Both tasks change the same line from the same base: whichever merges second conflicts.
    plan = {"description": "conflict", "isolation": "worktree", "tasks": [
        {"prompt": "Say A\n" + fake("edit", "shared.txt", old="hello", new="from A")},
        {"prompt": "Say B\n" + fake("edit", "shared.txt", old="hello", new="from B")}]}
    (repo.root / "plan.json").write_text(json.dumps(plan))
    out = repo.cli("run", "plan.json", "--yes", script=ORCH)
    assert out.returncode == 1, out.stdout + out.stderr
    q = repo.queue
    (job,) = [j["id"] for j in q.list_jobs()]
    tasks = q.list_tasks(job_id=job)
    assert all(t.status == "completed" for t in tasks)
    (bad,) = [t for t in tasks if t.outcome["merge"] == "conflict"]
    assert f"error: task #{bad.id} conflicts with the job branch in shared.txt; its work is safe on branch " \
           f"klauss/{job}/task-{bad.id}" in out.stderr
    assert f"manage.sh merge {job}`), then merge each branch above by hand" in out.stderr
    # `wait` says the same, with the same exit code.
    again = repo.cli("wait", job, script=ORCH)
    assert again.returncode == 1 and f"error: task #{bad.id} conflicts" in again.stderr


def test_a_worktree_the_user_locked_is_kept(repo):  # noqa: F811
    job, tid, branch, wt = finished_task(repo, "locked", "e.txt")
    (wt / "mine.txt").write_text("mine\n")
    git(repo.root, "worktree", "lock", "--reason", "mine", str(wt))
    out = repo.cli("clean-worktrees", "--job", job)
    assert out.returncode == 0 and wt.exists() and (wt / "mine.txt").read_text() == "mine\n"
    assert f"kept {wt.resolve()}" in out.stderr and f"git worktree unlock {wt.resolve()}" in out.stderr
    git(repo.root, "worktree", "unlock", str(wt))
    out = repo.cli("clean-worktrees", "--job", job)
    assert not wt.exists() and repo.show(f"klauss/{job}/task-{tid}", "mine.txt") == "mine"
