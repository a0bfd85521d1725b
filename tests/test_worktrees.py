"""Worktree isolation end to end: real git repositories, the real worker and pool, and the fake
`claude` editing files (scenario lines `@fake {json}`, see tests/fake_claude.py).

Git runs without any global identity here (HOME points at an empty home, user.useConfigOnly is on),
so every commit Klauss makes must bring its own."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import claude_queue
import config
import orchestrator
import worktrees
from conftest import fake, install_fake_claude, kill_pool, wait_for
from orchestrator import ClaudeOrchestrator

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "claude_worker.py"
SUBMIT = ROOT / "submit_task.py"
ORCH = ROOT / "orchestrator.py"
TEST_IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
SETTINGS = ("[workers]\nlease_seconds = 10\nheartbeat_seconds = 0.2\nshutdown_grace_seconds = 1\nmax_workers = 4\n"
            "idle_timeout = 0\n[queue]\nretry_backoff_seconds = 0\n")


def py(code):
    """A fake `run` action running a Python snippet in the task's working dir."""
    return fake("run", [sys.executable, "-c", code])


def describe(queue, ids):
    """Where the tasks are, for a failure message."""
    return "; ".join(f"#{t.id} {t.status} {t.error or ''} {[e['event'] for e in queue.get_events(t.id)]}"
                     for t in map(queue.get_task, ids))


def git(cwd, *args, check=True):
    out = subprocess.run(["git", *TEST_IDENTITY, *args], cwd=str(cwd), capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out.stdout.strip()


class Repo:
    def __init__(self, root, tmp):
        self.root = root
        self.tmp = tmp

    @property
    def cfg(self):
        return config.load_config(cwd=self.root, env={})

    @property
    def queue(self):
        return claude_queue.TaskQueue(cfg=self.cfg)

    def commit(self, message="change", **files):
        for name, content in files.items():
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        git(self.root, "add", "-A")
        git(self.root, "commit", "-qm", message)
        return self.head()

    def head(self):
        return git(self.root, "rev-parse", "HEAD")

    def show(self, ref, path):
        return git(self.root, "show", f"{ref}:{path}")

    def branches(self):
        return sorted(git(self.root, "for-each-ref", "--format=%(refname:short)", "refs/heads/").split())

    def status(self):
        return git(self.root, "status", "--porcelain")

    def run_worker(self, name="w1", timeout=120):
        out = subprocess.run([sys.executable, str(WORKER), name, "--exit-when-idle"], cwd=self.root,
                             capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    def cli(self, *args, script=SUBMIT):
        out = subprocess.run([sys.executable, str(script), *args], cwd=self.root, capture_output=True, text=True,
                             timeout=120, stdin=subprocess.DEVNULL)
        assert "Traceback" not in out.stderr, out.stderr
        return out

    def claude_runs(self):
        """Ids of the tasks the fake claude ran for."""
        log = self.tmp / "fakelog" / "invocations.jsonl"
        runs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return [int(r["env"]["KLAUSS_TASK_ID"]) for r in runs if r["env"].get("KLAUSS_TASK_ID")]

    def registered(self):
        """Registered worktrees of the repository: {path: porcelain block}."""
        blocks = git(self.root, "worktree", "list", "--porcelain").split("\n\n")
        return {b.splitlines()[0].split(" ", 1)[1]: b for b in blocks if b.strip()}


def _isolated_git_env(monkeypatch, home):
    for var in list(os.environ):
        if var.startswith(("KLAUSS_", "GIT_")) or var == "EMAIL":
            monkeypatch.delenv(var)
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tuseConfigOnly = true\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git project (branch main, one commit, `.klauss/` ignored) with the fake claude on PATH, no git
    identity configured anywhere, and the current directory inside it."""
    yield from project(tmp_path, monkeypatch)


def project(tmp_path, monkeypatch):
    """The `repo` fixture's body, for a fixture of a wider scope (with its own MonkeyPatch)."""
    root = tmp_path / "proj"
    root.mkdir()
    bindir = tmp_path / "bin"
    install_fake_claude(bindir)  # from its bytecode, by this interpreter: not through a pyenv shim each time
    fakelog = tmp_path / "fakelog"
    fakelog.mkdir()
    _isolated_git_env(monkeypatch, tmp_path / "home")
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_CLAUDE_LOG", str(fakelog))
    monkeypatch.chdir(root)
    git(root, "init", "-q", "-b", "main")
    r = Repo(root, tmp_path)
    (root / ".klauss.toml").write_text(SETTINGS)
    r.commit("initial", **{".gitignore": ".klauss/\n", "README.md": "hello\n", "shared.txt": "hello\n"})
    yield r
    q = r.queue
    if q.get_flag(f"coordinator@{q.cfg.host}"):
        kill_pool(q.cfg, root)
    log = fakelog / "invocations.jsonl"
    for line in log.read_text().splitlines() if log.exists() else []:
        pgid = json.loads(line)["pgid"]
        if pgid != os.getpgid(0):
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


# --- the whole flow ------------------------------------------------------------------------------

def test_parallel_tasks_merge_into_the_job_branch_and_leave_the_user_branch_alone(repo):
    marks, go = repo.tmp / "marks", repo.tmp / "go"
    orch = ClaudeOrchestrator("t")
    base = repo.head()
    job, ids = orch.submit_plan("three files", [
        {"prompt": f"Write f{i}.txt\n" + "\n".join([fake("touch_file", str(marks / f"started-{i}")),
                                                    fake("wait_for_file", str(go)),
                                                    fake("write", f"f{i}.txt", content=f"{i}\n")]),
         "expected_outputs": [f"f{i}.txt"]} for i in range(3)], isolation="worktree")
    meta = orch.queue.get_job(job)["metadata"]
    assert meta["isolation"] == "worktree" and meta["merge"] == "auto" and meta["base_commit"] == base
    assert meta["repo"] == str(repo.root.resolve()) and "job_branch" not in meta  # derived, not stored

    assert orch.start_workers(3, confirm=True)
    wait_for(lambda: all((marks / f"started-{i}").exists() for i in range(3)),
             what=lambda: f"all three tasks running: {describe(orch.queue, ids)}; pool {orch.get_worker_status()}")
    # All three run at once, each in its own worktree; the user's checkout has not changed at all.
    for tid in ids:
        wt = repo.cfg.state_dir / "worktrees" / f"task-{tid}"
        assert git(wt, "rev-parse", "--abbrev-ref", "HEAD") == f"klauss/{job}/task-{tid}"
    assert repo.head() == base and repo.status() == "" and git(repo.root, "branch", "--show-current") == "main"
    go.touch()
    results = orch.wait_and_collect(job, timeout=60)

    assert results.all_completed, results
    for i, tid in enumerate(ids):
        r = results[tid]
        assert r["branch"] == f"klauss/{job}/task-{tid}" and r["merge"] == "merged" and r["conflicts"] == []
        assert r["files_changed"] == [f"f{i}.txt"] and r["outputs"] == [f"f{i}.txt"]
        assert git(repo.root, "rev-parse", r["branch"]) == r["commit"]
        assert git(repo.root, "log", "-1", "--format=%an <%ae>|%s", r["commit"]) == \
            f"Klauss <klauss@localhost>|klauss: task {tid}: Write f{i}.txt"
        assert repo.show(f"klauss/{job}/merged", f"f{i}.txt") == str(i)
    # Still untouched after the merges: the job branch is separate, and was never checked out.
    assert repo.head() == base and repo.status() == "" and not (repo.root / "f0.txt").exists()
    synthesis = orch.synthesize_results(results)
    assert f"klauss/{job}/merged" in synthesis and f"manage.sh merge {job}" in synthesis
    assert "3 task(s) merged" in synthesis

    show = repo.cli("show", str(ids[0]))
    assert show.returncode == 0
    assert f"klauss/{job}/task-{ids[0]}" in show.stdout and f"merged into klauss/{job}/merged" in show.stdout

    # The user says so: the job's work comes into their branch, with no git identity configured.
    report = orch.merge_job(job)
    assert report["status"] == "merged" and report["into"] == "main" and report["merged"] == [f"klauss/{job}/merged"]
    assert [(repo.root / f"f{i}.txt").read_text() for i in range(3)] == ["0\n", "1\n", "2\n"]
    assert git(repo.root, "rev-parse", "HEAD^1") == base and repo.status() == ""
    assert orch.queue.get_job(job)["metadata"]["merged_into"] == "main"
    orch.stop_workers()


def test_dependent_tasks_start_from_their_dependencies_work(repo):
    orch = ClaudeOrchestrator("t")
    copy = "import sys; open(sys.argv[2], 'w').write(''.join(open(p).read() for p in sys.argv[1].split(',')))"
    job, ids = orch.submit_plan("chain", [
        {"ref": "a", "prompt": fake("write", "api.py", content="x = 1\n"), "expected_outputs": ["api.py"]},
        {"ref": "b", "prompt": fake("run", [sys.executable, "-c", copy, "api.py", "b.txt"]), "depends_on": ["a"],
         "expected_outputs": ["b.txt"]},
        {"ref": "c", "prompt": fake("write", "c.txt", content="c\n"), "expected_outputs": ["c.txt"]},
        {"ref": "d", "prompt": fake("run", [sys.executable, "-c", copy, "api.py,b.txt,c.txt", "d.txt"]),
         "depends_on": ["b", "c"], "expected_outputs": ["d.txt"]},
    ], isolation="worktree")
    repo.run_worker()
    results = orch.collect(job)
    a, b, c, d = ids
    assert all(r["status"] == "completed" for r in results.values()), results
    # b started from a's branch, d from b's and c's merged: each sees what it depends on.
    assert repo.show(results[b]["branch"], "b.txt") == "x = 1"
    assert repo.show(results[d]["branch"], "d.txt") == "x = 1\nx = 1\nc"
    assert results[b]["files_changed"] == ["b.txt"] and results[d]["files_changed"] == ["d.txt"]
    assert all(r["merge"] == "merged" for r in results.values())
    for name in ("api.py", "b.txt", "c.txt", "d.txt"):
        repo.show(f"klauss/{job}/merged", name)


def test_a_conflict_is_reported_and_both_branches_are_kept(repo):
    orch = ClaudeOrchestrator("t")
    go = repo.tmp / "go-b"
    job, ids = orch.submit_plan("same lines", [
        {"ref": "a", "prompt": "Say A\n" + fake("edit", "shared.txt", old="hello", new="from A"), "priority": 9},
        {"ref": "b", "prompt": "Say B\n" + fake("wait_for_file", str(go)) + "\n"
         + fake("edit", "shared.txt", old="hello", new="from B"), "priority": 5},
        {"ref": "both", "prompt": "needs both", "depends_on": ["a", "b"]},
    ], isolation="worktree")
    a, b, both = ids
    q = orch.queue
    worker = subprocess.Popen([sys.executable, str(WORKER), "w1", "--exit-when-idle"], cwd=repo.root,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    worker2 = subprocess.Popen([sys.executable, str(WORKER), "w2", "--exit-when-idle"], cwd=repo.root,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # b waits until a has been merged, so the order (and which one conflicts) is fixed.
    wait_for(lambda: (q.get_task(a).outcome or {}).get("merge") == "merged", what="a merged")
    go.touch()
    for w in (worker, worker2):
        out, _ = w.communicate(timeout=120)
        assert w.returncode == 0, out
    results = orch.collect(job)
    assert results[a]["status"] == results[b]["status"] == "completed"
    assert results[a]["merge"] == "merged"
    assert results[b]["merge"] == "conflict" and results[b]["conflicts"] == ["shared.txt"]
    # Nothing is lost: both branches keep their work; the job branch has a's.
    assert repo.show(results[a]["branch"], "shared.txt") == "from A"
    assert repo.show(results[b]["branch"], "shared.txt") == "from B"
    assert repo.show(f"klauss/{job}/merged", "shared.txt") == "from A"
    # A task that depends on both cannot start from their merge: it fails, naming the file, for good.
    t = q.get_task(both)
    assert t.status == "failed" and t.attempts_used == 1
    assert "conflicts in shared.txt" in t.error and f"klauss/{job}/task-{both}" in t.error
    synthesis = orch.synthesize_results(orchestrator.JobResults(job, results))
    assert "Merge conflicts" in synthesis and f"task #{b} in shared.txt" in synthesis
    assert f"klauss/{job}/task-{b}" in synthesis

    # The user's branch moved on meanwhile, in the same line: merging the job conflicts, is aborted,
    # and leaves their checkout exactly as it was.
    user_head = repo.commit("user edit", **{"shared.txt": "from the user\n"})
    out = repo.cli("merge", job)
    assert out.returncode == 1 and "conflicts in shared.txt" in out.stderr and "aborted" in out.stderr
    assert f"task #{b} is not in the job branch (conflict in shared.txt)" in out.stderr
    assert repo.head() == user_head and repo.status() == ""
    assert not (repo.root / ".git" / "MERGE_HEAD").exists()


def test_a_crashed_worker_leaves_nothing_that_blocks_the_retry(repo):
    marker, started = repo.tmp / "crashed-once", repo.tmp / "started"
    hang_once = (f"import os, sys, time; p = {str(marker)!r}\n"
                 "if not os.path.exists(p):\n    open(p, 'w').close(); time.sleep(600)")
    orch = ClaudeOrchestrator("t")
    job, [tid] = orch.submit_plan("crash", [{"prompt": "\n".join([
        fake("write", "a.txt", content="written\n"), fake("touch_file", str(started)), py(hang_once),
        fake("write", "b.txt", content="done\n")]), "expected_outputs": ["b.txt"]}], isolation="worktree")
    q = orch.queue
    worker = subprocess.Popen([sys.executable, str(WORKER), "w1"], cwd=repo.root, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    wait_for(started.exists, what="the first attempt to be under way")
    wait_for(marker.exists, what="the first attempt to hang")
    worker.kill()
    worker.wait()
    claude_pgid = q.list_workers()[0]["info"]["claude_pgid"]
    os.killpg(claude_pgid, signal.SIGKILL)
    path = repo.cfg.state_dir / "worktrees" / f"task-{tid}"
    assert (path / "a.txt").exists(), "the crashed attempt left its worktree behind"
    # As if the crash came in the middle of a git command, too.
    Path(git(path, "rev-parse", "--absolute-git-dir"), "index.lock").write_text("")

    assert q.recover_stale(worker_id="w1") == [tid]  # what the coordinator does when a worker dies
    repo.run_worker("w2")
    t = q.get_task(tid)
    assert t.status == "completed" and t.attempts_used == 2, t.error
    assert t.outcome["merge"] == "merged" and repo.show(f"klauss/{job}/merged", "b.txt") == "done"
    assert [p for p in repo.registered() if p.endswith(f"task-{tid}")] == [str(path.resolve())]
    assert "prunable" not in repo.registered()[str(path.resolve())]
    assert git(path, "status", "--porcelain") == ""


# --- refusals at submit time ---------------------------------------------------------------------

def test_worktree_outside_a_git_repository_is_refused_at_submit(tmp_path, monkeypatch):
    _isolated_git_env(monkeypatch, tmp_path / "home")
    root = tmp_path / "plain"
    root.mkdir()
    (root / ".klauss.toml").write_text(SETTINGS)
    monkeypatch.chdir(root)
    orch = ClaudeOrchestrator("t")
    for call in (lambda: orch.create_job("x", isolation="worktree"),
                 lambda: orch.submit_plan("x", [{"prompt": "p"}], isolation="worktree")):
        with pytest.raises(ValueError, match=r"worktree needs a git repository .* is not in one; run `git init`"):
            call()
    with pytest.raises(ValueError, match="isolation: expected one of none, worktree"):
        orch.create_job("x", isolation="worktrees")
    with pytest.raises(ValueError, match=r"metadata.isolation: expected one of none, worktree, got 'yes'"):
        orch.submit_plan("x", [{"prompt": "p", "metadata": {"isolation": "yes"}}])
    (root / "bad.json").write_text(json.dumps({"description": "d", "merge": "squash", "tasks": [{"prompt": "p"}]}))
    with pytest.raises(ValueError, match="plan.merge: expected one of auto, branch, got 'squash'"):
        orchestrator.load_plan(str(root / "bad.json"))
    assert orch.queue.list_jobs() == [] and orch.queue.get_stats()["total"] == 0

    out = subprocess.run([sys.executable, str(SUBMIT), "submit", "do it", "--isolation", "worktree"], cwd=root,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "git repository" in out.stderr and len(out.stderr.splitlines()) == 1
    (root / "plan.json").write_text(json.dumps({"description": "d", "isolation": "worktree", "tasks": [{"prompt": "p"}]}))
    out = subprocess.run([sys.executable, str(ORCH), "run", "plan.json", "--yes"], cwd=root, capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and "git repository" in out.stderr and "Traceback" not in out.stderr
    # The configuration's default counts too.
    (root / ".klauss.toml").write_text(SETTINGS + "[isolation]\nmode = \"worktree\"\n")
    with pytest.raises(ValueError, match="git repository"):
        ClaudeOrchestrator("t").create_job("x")
    assert orch.queue.list_jobs() == [] and orch.queue.get_stats()["total"] == 0


def test_dirty_tree_policy(repo, capsys):
    (repo.root / "README.md").write_text("edited, not committed\n")
    (repo.root / "notes.txt").write_text("new\n")
    (repo.root / ".klauss.toml").write_text(SETTINGS + "[isolation]\ndirty_policy = \"refuse\"\n")
    orch = ClaudeOrchestrator("t")
    with pytest.raises(ValueError, match=r"uncommitted changes .*: README.md, notes.txt; commit or stash them "
                                         r"first, or set \[isolation\] dirty_policy"):
        orch.submit_plan("dirty", [{"prompt": "p"}], isolation="worktree")  # (.klauss.toml changed too: not counted)
    assert orch.queue.list_jobs() == []
    out = repo.cli("submit", "p", "--isolation", "worktree")
    assert out.returncode == 2 and "README.md" in out.stderr and orch.queue.get_stats()["total"] == 0

    (repo.root / ".klauss.toml").write_text(SETTINGS)  # dirty_policy = "warn", the default
    capsys.readouterr()
    job = ClaudeOrchestrator("t").create_job("dirty", isolation="worktree")
    err = capsys.readouterr().err
    assert "warning" in err and "README.md, notes.txt" in err and "will not see" in err
    assert orch.queue.get_job(job)["metadata"]["base_commit"] == repo.head()

    # Klauss's own state and an uncommitted .klauss.toml are not changes the tasks need.
    git(repo.root, "checkout", "-q", "--", "README.md")
    (repo.root / "notes.txt").unlink()
    (repo.root / ".gitignore").write_text("")
    repo.commit("do not ignore .klauss/")
    git(repo.root, "rm", "-q", "--cached", ".klauss.toml")
    git(repo.root, "commit", "-qm", "keep .klauss.toml out of git")
    assert (repo.cfg.state_dir / "claude_tasks.db").exists() and "?? .klauss.toml" in repo.status()
    assert worktrees.dirty_files(repo.cfg, repo.root) == []


# --- setup of a fresh worktree, single tasks, branch mode ----------------------------------------

def test_copy_files_and_setup_command_prepare_the_worktree_and_are_not_committed(repo):
    (repo.root / ".env").write_text("SECRET=1\n")
    (repo.root / ".klauss.toml").write_text(
        SETTINGS + "[isolation]\ncopy_files = [\".env\", \"not-here.txt\"]\n"
        f"setup_command = [{json.dumps(sys.executable)}, \"-c\", \"open('setup.out', 'w').write('ok')\"]\n")
    git(repo.root, "commit", "-qam", "config")  # .env stays untracked, as it would be
    orch = ClaudeOrchestrator("t")
    check = ("assert open('.env').read() == 'SECRET=1\\n' and open('setup.out').read() == 'ok'; "
             "open('seen.txt', 'w').write('yes')")
    job, [tid] = orch.submit_plan("setup", [{"prompt": py(check), "expected_outputs": ["seen.txt"]}],
                                  isolation="worktree")
    repo.run_worker()
    r = orch.collect(job)[tid]
    assert r["status"] == "completed", r["error"]
    assert r["files_changed"] == ["seen.txt"]
    assert sorted(git(repo.root, "ls-tree", "--name-only", r["commit"]).split()) == \
        sorted([".gitignore", ".klauss.toml", "README.md", "shared.txt", "seen.txt"])

    setup_fails = f"setup_command = [{json.dumps(sys.executable)}, \"-c\", \"print('boom'); raise SystemExit(3)\"]\n"
    (repo.root / ".klauss.toml").write_text(SETTINGS + "[isolation]\n" + setup_fails)
    git(repo.root, "commit", "-qam", "failing setup")
    job, [tid] = orch.submit_plan("setup fails", [{"prompt": "p", "max_attempts": 1}], isolation="worktree")
    repo.run_worker()
    t = orch.queue.get_task(tid)
    assert t.status == "failed" and "setup_command" in t.error and "exited with 3" in t.error and "boom" in t.error
    assert tid not in repo.claude_runs(), "claude never started"


def test_a_single_task_with_isolation_worktree_and_branch_mode(repo):
    out = repo.cli("submit", fake("write", "solo.txt", content="solo\n"), "--isolation", "worktree")
    assert out.returncode == 0, out.stderr
    tid = int(out.stdout)
    meta = repo.queue.get_task(tid).metadata
    assert meta["isolation"] == "worktree" and meta["base_commit"] == repo.head() and meta["repo"]
    repo.run_worker()
    t = repo.queue.get_task(tid)
    assert t.status == "completed" and t.outcome["branch"] == f"klauss/task-{tid}" and t.outcome["merge"] == "branch"
    assert repo.show(f"klauss/task-{tid}", "solo.txt") == "solo"

    # One task of a worktree job may opt out: it edits the checkout directly, as without isolation.
    orch = ClaudeOrchestrator("t")
    job = orch.create_job("mixed", isolation="worktree")
    direct = orch.add_subtask(job, fake("write", "direct.txt", content="direct\n"), metadata={"isolation": "none"})
    repo.run_worker()
    t = orch.queue.get_task(direct)
    assert t.status == "completed" and "branch" not in t.outcome
    assert (repo.root / "direct.txt").read_text() == "direct\n"
    (repo.root / "direct.txt").unlink()

    # merge = "branch": one branch per task; `merge` takes them in task order, stopping at a conflict.
    job, ids = orch.submit_plan("review each", [
        {"prompt": fake("write", "one.txt", content="1\n")},
        {"prompt": fake("edit", "shared.txt", old="hello", new="two")},
        {"prompt": fake("edit", "shared.txt", old="hello", new="three")},
    ], isolation="worktree", merge="branch")
    assert "job_branch" not in orch.queue.get_job(job)["metadata"]
    repo.run_worker()
    results = orch.collect(job)
    assert [r["merge"] for r in results.values()] == ["branch"] * 3
    assert f"klauss/{job}/merged" not in repo.branches()
    report = orch.merge_job(job)
    assert report["status"] == "conflict" and report["merged"] == [f"klauss/{job}/task-{ids[0]}",
                                                                   f"klauss/{job}/task-{ids[1]}"]
    assert report["conflict_branch"] == f"klauss/{job}/task-{ids[2]}" and report["conflicts"] == ["shared.txt"]
    assert (repo.root / "shared.txt").read_text() == "two\n" and repo.status() == ""


# --- merge refusals and cleanup ------------------------------------------------------------------

def test_merge_refuses_an_unfinished_job_and_a_dirty_checkout(repo):
    orch = ClaudeOrchestrator("t")
    job, [tid] = orch.submit_plan("pending", [{"prompt": fake("write", "x.txt", content="x\n")}],
                                  isolation="worktree")
    out = repo.cli("merge", job)
    assert out.returncode == 1 and "not finished" in out.stderr and "--force" in out.stderr
    out = repo.cli("merge", job, "--force")
    assert out.returncode == 0 and "nothing to merge" in out.stdout
    repo.run_worker()
    (repo.root / "README.md").write_text("mine\n")
    out = repo.cli("merge", job)
    assert out.returncode == 1 and "uncommitted changes: README.md" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    git(repo.root, "checkout", "-q", "--", "README.md")
    out = repo.cli("merge", job, script=ORCH)
    assert out.returncode == 0 and f"merged klauss/{job}/merged into main" in out.stdout
    assert (repo.root / "x.txt").read_text() == "x\n"
    out = repo.cli("merge", "job-nope")
    assert out.returncode == 1 and "not found" in out.stderr


def test_worktrees_are_listed_and_cleaned(repo):
    orch = ClaudeOrchestrator("t")
    job, (ok, bad) = orch.submit_plan("clean", [
        {"prompt": fake("write", "good.txt", content="good\n"), "expected_outputs": ["good.txt"]},
        {"prompt": fake("write", "partial.txt", content="half\n"), "expected_outputs": ["never.txt"],
         "max_attempts": 1},
    ], isolation="worktree")
    repo.run_worker()
    assert orch.queue.get_task(ok).status == "completed" and orch.queue.get_task(bad).status == "failed"
    # The failed task's work is not lost: it is committed on its branch.
    assert repo.show(f"klauss/{job}/task-{bad}", "partial.txt") == "half"

    out = repo.cli("worktrees", "--json")
    rows = json.loads(out.stdout)
    assert [(r["kind"], r["task_id"], r["status"], r["branch"]) for r in rows] == [
        ("task", ok, "completed", f"klauss/{job}/task-{ok}"), ("task", bad, "failed", f"klauss/{job}/task-{bad}"),
        ("merge", None, "finished", f"klauss/{job}/merged")]
    out = repo.cli("worktrees")
    assert out.returncode == 0 and f"#{ok}" in out.stdout and "task-%d" % bad in out.stdout

    out = repo.cli("clean-worktrees", "--job", job)
    assert out.returncode == 0 and out.stdout.count("removed ") == 3
    assert json.loads(repo.cli("worktrees", "--json").stdout) == []
    assert len(repo.registered()) == 1  # only the user's own checkout
    assert f"klauss/{job}/task-{ok}" in repo.branches(), "branches are kept without --branches"

    # Branches go only once their work is in the current branch or the job branch, unless --force.
    out = repo.cli("clean-worktrees", "--branches", "--json")
    report = json.loads(out.stdout)
    assert report["branches_deleted"] == [f"klauss/{job}/task-{ok}"]  # its work is in the job branch
    assert sorted(k["branch"] for k in report["branches_kept"]) == [f"klauss/{job}/merged", f"klauss/{job}/task-{bad}"]
    assert repo.cli("merge", job).returncode == 0
    report = json.loads(repo.cli("clean-worktrees", "--branches", "--json").stdout)
    assert report["branches_deleted"] == [f"klauss/{job}/merged"]
    assert [k["branch"] for k in report["branches_kept"]] == [f"klauss/{job}/task-{bad}"]
    report = json.loads(repo.cli("clean-worktrees", "--branches", "--force", "--json").stdout)
    assert report["branches_deleted"] == [f"klauss/{job}/task-{bad}"]
    assert repo.branches() == ["main"]
