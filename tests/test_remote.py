"""Edits travel through git, not a shared disk: two "hosts" on this machine (two clones of a test
project with a bare remote, each with its own `.klauss/` state and config and its own KLAUSS_HOST,
one shared database file), the real worker and the fake `claude` writing files.

Git runs without any global identity (HOME is an empty home), so every commit Klauss makes must
bring its own; the tests' own commits pass one with -c."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import claude_queue
import config
import submission
import worktrees
from conftest import fake, install_fake_claude, py
from orchestrator import ClaudeOrchestrator

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "claude_worker.py"
SUBMIT = ROOT / "submit_task.py"
IDENTITY = ["-c", "user.name=Test", "-c", "user.email=test@example.com"]
SETTINGS = ("[workers]\nlease_seconds = 10\nheartbeat_seconds = 0.2\nshutdown_grace_seconds = 1\nidle_timeout = 0\n"
            "auto_start = false\n[queue]\nretry_backoff_seconds = 0\n")


def git(cwd, *args, check=True):
    out = subprocess.run(["git", *IDENTITY, *args], cwd=str(cwd), capture_output=True, text=True, timeout=60)
    if check:
        assert out.returncode == 0, out.stderr
    return out.stdout.strip()


class Host:
    """One machine: its own clone of the project, `.klauss/` and config, the shared database."""

    def __init__(self, tmp, name, remote, db, others=(), isolation=True):
        self.name, self.db, self.remote = name, db, remote
        self.root = tmp / name
        git(tmp, "clone", "-q", str(remote), str(self.root))
        allowed = ", ".join(json.dumps(str(tmp / o)) for o in others)
        # allowed_dirs: the working dir is recorded as the submitting host's path until paths are
        # stored relative to the project (another change); the worktree code maps it either way.
        text = SETTINGS + f'[paths]\nstate_dir = ".klauss"\n[safety]\nallowed_dirs = [{allowed}]\n'
        if isolation:
            text += '[isolation]\nmode = "worktree"\nremote = "origin"\n'
        (self.root / ".klauss.toml").write_text(text)
        self.env = {**os.environ, "KLAUSS_DB": str(db), "KLAUSS_HOST": name}

    @property
    def cfg(self):
        return config.load_config(cwd=self.root, env={"KLAUSS_DB": str(self.db), "KLAUSS_HOST": self.name})

    def run_worker(self, timeout=120):
        out = subprocess.run([sys.executable, str(WORKER), f"{self.name}-w1", "--exit-when-idle"], cwd=self.root,
                             env=self.env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        assert out.returncode == 0, out.stdout + out.stderr
        return out

    def run_workers(self, n, timeout=120):
        """n workers at once (they race for the same refs), each until nothing is left to claim."""
        procs = [subprocess.Popen([sys.executable, str(WORKER), f"{self.name}-w{i}", "--exit-when-idle"],
                                  cwd=self.root, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, stdin=subprocess.DEVNULL) for i in range(1, n + 1)]
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, out

    def cli(self, *args):
        out = subprocess.run([sys.executable, str(SUBMIT), *args], cwd=self.root, env=self.env, capture_output=True,
                             text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert "Traceback" not in out.stderr, out.stderr
        return out

    def has(self, commit):
        return subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=str(self.root),
                              capture_output=True).returncode == 0


def on_remote(remote, ref, path=None):
    """The commit of `ref` in the bare remote (or a file's content there), or None."""
    out = subprocess.run(["git", "rev-parse", "--verify", "-q", ref] if path is None else
                         ["git", "show", f"{ref}:{path}"], cwd=str(remote), capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


@pytest.fixture
def hosts(tmp_path, monkeypatch):
    """(alpha, beta, bare remote): two clones of a project (branch main: README.md, shared.txt),
    the fake claude on PATH, cwd in alpha, KLAUSS_DB set for in-process calls made as alpha."""
    for var in list(os.environ):
        if var.startswith(("KLAUSS_", "GIT_")) or var == "EMAIL":
            monkeypatch.delenv(var)
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text("[user]\n\tuseConfigOnly = true\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / ".gitconfig"))
    bindir = tmp_path / "bin"
    install_fake_claude(bindir)  # from its bytecode, by this interpreter: not through a pyenv shim each time
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    remote = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(remote))
    seed = tmp_path / "seed"
    git(tmp_path, "clone", "-q", str(remote), str(seed))
    git(seed, "checkout", "-q", "-b", "main")
    for name, content in {".gitignore": ".klauss/\n", "README.md": "hello\n", "shared.txt": "hello\n"}.items():
        (seed / name).write_text(content)
    git(seed, "add", "-A")
    git(seed, "commit", "-qm", "initial")
    git(seed, "push", "-q", "origin", "main")
    db = tmp_path / "shared.db"
    alpha = Host(tmp_path, "alpha", remote, db, others=["beta"])
    beta = Host(tmp_path, "beta", remote, db, others=["alpha"])
    monkeypatch.chdir(alpha.root)
    monkeypatch.setenv("KLAUSS_DB", str(db))
    monkeypatch.setenv("KLAUSS_HOST", "alpha")
    return alpha, beta, remote


def commit(host, message, **files):
    for name, content in files.items():
        (host.root / name).write_text(content)
    git(host.root, "add", "--", *files)  # not the host's own .klauss.toml
    git(host.root, "commit", "-qm", message)
    return git(host.root, "rev-parse", "HEAD")


def test_a_job_spread_over_two_hosts_travels_through_the_remote(hosts):
    alpha, beta, remote = hosts
    # An unpushed local commit of alpha's: the tasks must still start from it, wherever they run.
    base = commit(alpha, "local work", **{"local.txt": "only on alpha\n"})
    orch = ClaudeOrchestrator("t")
    copy = "import sys; open(sys.argv[2], 'w').write(''.join(open(p).read() for p in sys.argv[1].split(',')))"
    job, (one, two) = orch.submit_plan("spread", [
        {"prompt": "\n".join([fake("write", "b1.txt", content="one\n"),
                              fake("run", [sys.executable, "-c", copy, "local.txt", "seen.txt"])]),
         "expected_outputs": ["b1.txt", "seen.txt"]},
        {"prompt": fake("write", "b2.txt", content="two\n"), "expected_outputs": ["b2.txt"]},
    ])
    meta = orch.queue.get_job(job)["metadata"]
    assert meta["isolation"] == "worktree" and meta["remote"] == "origin" and meta["base_commit"] == base
    assert on_remote(remote, worktrees.base_ref(base)) == base, "the base is pushed when the job is created"
    assert not beta.has(base)

    beta.run_workers(2)  # beta runs both, at once
    tasks = {t.id: t for t in orch.queue.list_tasks(job_id=job)}
    assert all(t.status == "completed" for t in tasks.values()), [(t.id, t.status, t.error) for t in tasks.values()]
    for tid in (one, two):
        o = tasks[tid].outcome
        assert o["merge"] == "merged", o
        assert on_remote(remote, worktrees.remote_ref(job, f"task-{tid}")) == o["commit"], "task branch pushed"
        assert (beta.root / ".klauss" / "worktrees" / f"task-{tid}").is_dir()
        assert not (alpha.root / ".klauss" / "worktrees" / f"task-{tid}").exists()
    assert on_remote(remote, worktrees.remote_ref(job, f"task-{one}"), "seen.txt") == "only on alpha"
    assert not alpha.has(tasks[one].outcome["commit"]), "alpha has nothing of beta's work yet"

    # A dependent task, run on alpha, sees beta's work.
    three = orch.add_subtask(job, py("open('a3.txt', 'w').write(open('b1.txt').read() + open('b2.txt').read())"),
                             depends_on=[one, two], expected_outputs=["a3.txt"])
    alpha.run_worker()
    t3 = orch.queue.get_task(three)
    assert t3.status == "completed", t3.error
    assert git(alpha.root, "show", f"{t3.outcome['commit']}:a3.txt") == "one\ntwo"
    merged = worktrees.remote_ref(job, "merged")
    for name, content in (("b1.txt", "one"), ("b2.txt", "two"), ("a3.txt", "one\ntwo"), ("local.txt", "only on alpha")):
        assert on_remote(remote, merged, name) == content, f"the job branch on the remote holds {name}"
    # No user branch on the remote was touched: only refs under refs/klauss/.
    assert on_remote(remote, "refs/heads/main") == git(alpha.root, "rev-parse", "origin/main") != base
    assert git(remote, "for-each-ref", "--format=%(refname)", "refs/heads/") == "refs/heads/main"

    # merge (on alpha, the only place the user's checkout is touched) fetches the job branch first.
    git(alpha.root, "update-ref", "-d", f"refs/heads/{worktrees.job_branch(job)}")  # as a fresh clone would be
    assert (alpha.root / "b1.txt").exists() is False
    out = alpha.cli("merge", job)
    assert out.returncode == 0, out.stdout + out.stderr
    assert [(alpha.root / n).read_text() for n in ("b1.txt", "b2.txt", "a3.txt")] == ["one\n", "two\n", "one\ntwo\n"]
    assert git(alpha.root, "rev-parse", "HEAD^1") == base and git(alpha.root, "branch", "--show-current") == "main"
    assert not (beta.root / "b1.txt").exists(), "beta's checkout is never touched"


def test_a_failed_task_loses_nothing_and_its_retry_on_another_host_goes_on_from_it(hosts):
    alpha, beta, remote = hosts
    orch = ClaudeOrchestrator("t")
    note = py("import os; open('log.txt', 'a').write(os.environ['KLAUSS_HOST'] + '\\n')")
    job, (tid,) = orch.submit_plan("fails", [{"prompt": "\n".join([note, fake("exit", 1)]), "max_attempts": 1}])
    beta.run_worker()
    task = orch.queue.get_task(tid)
    assert task.status == "failed" and task.outcome["commit"], task.error
    ref = worktrees.remote_ref(job, f"task-{tid}")
    assert on_remote(remote, ref, "log.txt") == "beta", "the failed attempt's work is on the remote"

    orch.queue.retry_task(tid)
    alpha.run_worker()
    task = orch.queue.get_task(tid)
    assert task.status == "failed" and task.attempt == 2
    assert on_remote(remote, ref, "log.txt") == "beta\nalpha", "attempt 2 (on alpha) went on from beta's attempt"
    assert git(alpha.root, "show", f"{task.outcome['commit']}:log.txt") == "beta\nalpha"


def test_a_push_rejected_because_the_job_branch_moved_is_fetched_and_retried(hosts, monkeypatch):
    alpha, beta, remote = hosts
    orch = ClaudeOrchestrator("t")
    job, (tid,) = orch.submit_plan("race", [{"prompt": fake("write", "mine.txt", content="mine\n")}])
    base = orch.queue.get_job(job)["metadata"]["base_commit"]
    name = worktrees.remote_ref(job, "merged")
    # Another host's merge, made in beta's clone: the job branch on the remote holds it.
    theirs = commit(beta, "theirs", **{"theirs.txt": "theirs\n"})
    assert worktrees.push_ref(beta.root, "origin", theirs, name, expect=None) is True
    # A compare-and-swap with a stale expectation is refused, and says so (False, not an error).
    assert worktrees.push_ref(beta.root, "origin", base, name, expect=base) is False
    assert worktrees.push_ref(beta.root, "origin", base, name, expect=None) is False
    assert on_remote(remote, name) == theirs

    # This host's merge fetches the tip, and a third host moves the branch before the push lands.
    git(alpha.root, "checkout", "-q", "-b", "work")
    mine = commit(alpha, "mine", **{"mine.txt": "mine\n"})
    git(alpha.root, "checkout", "-q", "main")
    later = commit(beta, "later", **{"later.txt": "later\n"})
    real, calls = worktrees.fetch_ref, []

    def racing_fetch(repo, remote_name, ref, *args, **kwargs):
        tip = real(repo, remote_name, ref, *args, **kwargs)
        calls.append(ref)
        if ref == name and len(calls) == 1:
            assert worktrees.push_ref(beta.root, "origin", later, name, expect=tip) is True
        return tip

    monkeypatch.setattr(worktrees, "fetch_ref", racing_fetch)
    cfg = alpha.cfg
    q = claude_queue.TaskQueue(cfg=cfg)
    tree = worktrees.TaskTree(cfg, q, q.get_task(tid), alpha.root, base, "auto", worktrees.job_branch(job))
    tree.remote, tree.commit = "origin", mine
    result = tree._merge_into_job_branch("klauss: merge task")
    assert result["merge"] == "merged" and calls == [name, name], calls
    tip = on_remote(remote, name)
    assert tip == result["merge_commit"] == git(alpha.root, "rev-parse", worktrees.job_branch(job))
    for path, content in (("theirs.txt", "theirs"), ("later.txt", "later"), ("mine.txt", "mine")):
        assert on_remote(remote, name, path) == content, "nothing another host merged is lost"


# --- what counts as several hosts, and what is refused then ---------------------------------------

def test_a_job_that_edits_in_place_is_refused_when_several_hosts_share_the_queue(hosts):
    alpha, beta, remote = hosts
    text = (alpha.root / ".klauss.toml").read_text()
    (alpha.root / ".klauss.toml").write_text(text.replace('mode = "worktree"', 'mode = "none"'))
    out = alpha.cli("submit", "edit something")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "would edit files in place" in out.stderr and "[isolation] remote = 'origin' is set" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert claude_queue.TaskQueue(cfg=alpha.cfg).list_tasks() == [], "nothing written"
    # With isolation for this job it is fine.
    assert alpha.cli("submit", "edit something", "--isolation", "worktree").returncode == 0


def test_workers_of_another_host_make_a_sqlite_queue_multi_host(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "q.db"
    cfg = config.load_config(db=str(db), cwd=tmp_path, env={"KLAUSS_HOST": "alpha"})
    monkeypatch.setenv("KLAUSS_HOST", "alpha")
    q = claude_queue.TaskQueue(str(db), cfg=cfg)
    assert worktrees.multi_host(cfg, q) is None
    q.register_worker("alpha-w1", info={"host": "alpha"})
    assert worktrees.multi_host(cfg, q) is None, "this host's own workers do not count"
    submission.add_task(q, "fine while alone")
    q.register_worker("beta-w1", info={"host": "beta"})
    assert "workers of other hosts (beta)" in worktrees.multi_host(cfg, q)
    with pytest.raises(ValueError, match=r"^isolation: this task would edit files in place, but several hosts"):
        submission.add_task(q, "edits in place")
    assert len(q.list_tasks()) == 1
    # A read-only task edits nothing: it may run anywhere.
    ro = config.load_config(db=str(db), cwd=tmp_path, env={}, overrides={"claude": {"permission_mode": "plan"}})
    submission.add_task(claude_queue.TaskQueue(str(db), cfg=ro), "just read")
    # Once the other host's workers are gone, this host is alone again.
    q.unregister_worker("beta-w1")
    assert worktrees.multi_host(cfg, q) is None
    submission.add_task(q, "alone again")


def test_the_remote_setting_is_checked(tmp_path):
    for bad in ("-uupload-pack=touch x", "", "two words"):
        (tmp_path / ".klauss.toml").write_text(f"[isolation]\nremote = {json.dumps(bad)}\n")
        with pytest.raises(config.ConfigError, match=r"isolation\.remote: expected the name or URL of a git remote"):
            config.load_config(cwd=tmp_path, env={})
    # A remote recorded in a task's metadata reaches git only on the same terms.
    (tmp_path / ".klauss.toml").write_text("")
    cfg = config.load_config(cwd=tmp_path, env={})
    assert worktrees.job_remote(cfg, {"remote": "origin"}) == "origin" and worktrees.job_remote(cfg, {}) is None
    with pytest.raises(worktrees.WorktreeError, match=r"^metadata\.remote: expected the name or URL"):
        worktrees.job_remote(cfg, {"remote": "--upload-pack=touch x"})


def test_a_remote_that_cannot_take_the_base_refuses_the_job_and_writes_nothing(hosts):
    alpha, beta, remote = hosts
    text = (alpha.root / ".klauss.toml").read_text()
    (alpha.root / ".klauss.toml").write_text(text.replace('remote = "origin"', 'remote = "nowhere"'))
    out = alpha.cli("submit", "edit something")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "error: isolation.remote: cannot push the base commit" in out.stderr and "'nowhere'" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert claude_queue.TaskQueue(cfg=alpha.cfg).list_tasks() == []


def test_branch_mode_merge_fetches_each_task_branch_from_the_remote(hosts):
    alpha, beta, remote = hosts
    orch = ClaudeOrchestrator("t")
    job, (one, two) = orch.submit_plan("review each", [
        {"prompt": fake("write", "x.txt", content="x\n")}, {"prompt": fake("write", "y.txt", content="y\n")},
    ], merge="branch")
    beta.run_worker()
    tasks = orch.queue.list_tasks(job_id=job)
    assert [t.outcome["merge"] for t in tasks] == ["branch", "branch"], [t.error for t in tasks]
    assert on_remote(remote, worktrees.remote_ref(job, "merged")) is None, "no job branch in branch mode"
    assert not alpha.has(tasks[0].outcome["commit"])
    out = alpha.cli("merge", job)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (alpha.root / "x.txt").read_text() == "x\n" and (alpha.root / "y.txt").read_text() == "y\n"
    for t in tasks:
        assert git(alpha.root, "rev-parse", t.outcome["branch"]) == t.outcome["commit"], "the branch is here for review"
