"""Submission is one path (submission.py): every producer, the TaskQueue API included, gets the same
checks and the same worktree annotation, once; the job branch is derived, never stored."""

import subprocess

import pytest

import submission
import worktrees


def _git(root, *args):
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args], cwd=root, check=True,
                   capture_output=True)


@pytest.fixture
def git_project(tmp_path, monkeypatch):
    (tmp_path / ".gitignore").write_text("*.db*\n.klauss/\n")
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "add", ".gitignore")
    _git(tmp_path, "commit", "-q", "-m", "initial")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_every_front_end_door_annotates_worktree_tasks(git_project, make_queue):
    # Before, only some front ends called annotate_tasks themselves. Now submission.py does it for
    # all of them; the bare TaskQueue API checks (validation.py) but does not annotate: it sits
    # below git, and a worker starts such a task from HEAD when it runs.
    q = make_queue(**{"isolation.mode": "worktree"})
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=git_project, capture_output=True, text=True,
                          check=True).stdout.strip()
    [tid] = submission.add_tasks(q, [{"prompt": "p"}])
    meta = q.get_task(tid).metadata
    assert meta["isolation"] == "worktree" and meta["base_commit"] == head
    job, [jtid] = submission.submit_job(q, "j", [{"prompt": "p"}], metadata={"note": 1})
    assert q.get_task(jtid).metadata["base_commit"] == head
    assert q.get_task(submission.add_task(q, "one")).metadata["base_commit"] == head
    assert "base_commit" not in q.get_task(q.add_task("bare")).metadata


def test_a_worktree_job_stores_no_branch_name_every_reader_derives(git_project, make_queue):
    q = make_queue()
    extra = worktrees.job_isolation(q.cfg, "worktree", "auto")
    job, _ = q.submit_job("j", [{"prompt": "p"}], metadata=extra)
    assert "job_branch" not in q.get_job(job)["metadata"]
    assert worktrees.job_branch(job) == f"klauss/{job}/merged"


def test_prepare_checks_a_batch_before_anything_is_written(make_queue):
    q = make_queue()
    with pytest.raises(ValueError, match=r"^task 1: prompt: must not be empty"):
        submission.prepare(q, [{"prompt": "ok"}, {"prompt": " "}])
    with pytest.raises(ValueError, match="description"):
        q.create_job(" ")
    assert q.list_tasks() == [] and q.list_jobs() == []
    tasks, order = submission.prepare(q, [{"prompt": "b", "ref": "b", "depends_on": ["a"]}, {"prompt": "a", "ref": "a"}])
    assert order == [1, 0]
    ids = q.insert_prepared((tasks, order))
    assert ids[1] < ids[0]  # in entry order, the dependency inserted first
