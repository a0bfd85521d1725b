"""Integration: the verified merge queue that hands back one green job branch.

With a verify command (`[integration] verify_command`, or a job's own `verify`) a worktree job with
merge = "auto" no longer merges a finished task's branch from the worker that ran it. Instead:

- the worker queues an *integration task* (metadata `klauss_integration: {"task": id}`), which
  depends on the task, so it is claimed by any worker once the task completed, under the same
  leases, fencing, retries and history as every task; the worker runs `run()` below for it instead
  of claude;
- under a per-job lock, in the job's merge worktree (`<state>/worktrees/merged-<job>`, detached),
  the task's branch (with up to `[integration] batch` other ready branches, in id order, which is
  dependency order) is merged onto the job branch's head, the verify command runs there with its
  timeout, and `klauss/<job>/merged` advances only when it passes, by a compare-and-swap
  `git update-ref <ref> <new> <old>`: a worker killed mid-merge or mid-verify leaves the branch at
  its last verified commit, and the integration task runs again once its lease is recovered;
- a batch that fails is bisected down to the branch that broke it; the rest merge;
- a failed verification keeps the change out and queues a *fix-up task* (Claude, in a worktree that
  starts from the task's work merged onto the job branch, told the task, its diff summary and the
  tail of the verify output), up to `[integration] fix_attempts`; then the task is
  `integration_failed`, its log kept;
- a conflict queues a *resolution task* (Claude in a worktree holding the conflicted merge, told
  both sides and the files); it must leave no conflict markers and pass the verify command, else
  the task is reported as a conflict with both branches kept, as without a verify command.

Fix-up and resolution tasks are ordinary tasks of the job (metadata `klauss_fix`), so their cost
counts toward the job's budget and the budget stops them. Every verify run's log is kept under
`<logs>/integration/<job>/`. What happened is in the job's metadata `integration`; read it with
`job_report`.

With `[isolation] remote` (several hosts, each with its own clone) the job branch lives on the
remote (`refs/klauss/jobs/<job>/merged`): an integration task on any host fetches it and the
task's branch, merges and verifies in that host's own merge worktree, and advances the remote
branch by a compare-and-swap push (a host that lost the race fetches the new head and merges and
verifies again), then its local copy. The start commits of fix-up and resolution tasks are pushed
under `refs/klauss/base/` so a worker on any host finds them; hosts merge their entries into the
job's `integration` state rather than overwrite it.
"""

import os
import shutil
import time
from pathlib import Path

import claude_queue
import config
import hints
import processes
import task_report
import worktrees

KIND = "klauss_integration"   # metadata of an integration task: {"task": id}
FIX = "klauss_fix"            # metadata of a fix-up or resolution task: {"of", "kind", "attempt", "files"}
START = "klauss_start"        # metadata: {"commit": sha, "merge": sha or None}: where the worktree starts
VERIFY_MARK = "KLAUSS_VERIFY"  # in the environment of a verify run: found and killed after a crash
OUTPUT_TAIL = 3000
DIFFSTAT_CHARS = 3000
_MARKERS = r"^(<<<<<<<|>>>>>>>)( |$)"


def verify_command(cfg, job):
    """The argv that gates the job's branch, or [] when the job merges as without integration."""
    meta = (job or {}).get("metadata") or {}
    if meta.get("isolation") != "worktree" or (meta.get("merge") or "auto") != "auto":
        return []
    if "verify" in meta:
        try:
            return config.verify_argv(meta["verify"] or [], "verify")
        except ValueError:
            return []  # refused at submit (submission.check_job); whatever else got stored gates nothing
    return list(cfg["integration"]["verify_command"])


def job_verify(verify, metadata):
    """The metadata a job records for its own verify command (`create_job(..., verify=...)`, a plan's
    "verify"): {} when none is given. ValueError names the field when it is bad or the job has no
    job branch to verify."""
    if verify is None:
        return {}
    argv = config.verify_argv(verify, "verify")
    meta = metadata or {}
    if argv and (meta.get("isolation") != "worktree" or (meta.get("merge") or "auto") != "auto"):
        raise ValueError("verify: a verify command needs worktree isolation with merge \"auto\" (it gates the job "
                         "branch klauss/<job>/merged); add isolation \"worktree\" or leave verify out")
    return {"verify": argv}


def is_integration(task):
    return isinstance(task.metadata, dict) and isinstance(task.metadata.get(KIND), dict)


class CannotVerify(worktrees.WorktreeError):
    """The verify command cannot start at all: a configuration problem, not a failing branch."""


class _Moved(Exception):
    """The job branch on the remote moved while this host merged and verified (another host won)."""


# --- in the worker that ran a task ---------------------------------------------------------------

def enqueue(cfg, queue, task, job, tree, outcome):
    """Instead of merging a successful task's branch: queue its integration. Returns (handled,
    problem): handled False when the job has no verify command (merge as before)."""
    if tree.merge_mode != "auto" or not tree.job_branch or not verify_command(cfg, job):
        return False, None
    if tree.error:
        return True, tree.error
    if outcome.get("remote_error"):
        return True, outcome["remote_error"]  # the other hosts' integration could not fetch it: run it again
    tasks = queue.list_tasks(job_id=task.job_id, order="asc")
    full = queue.get_task(task.id)
    deps = set((full.depends_on if full else None) or [])
    # Dependency order: a task's integration waits for its dependencies' integrations.
    after = [t.id for t in tasks if is_integration(t) and t.metadata[KIND].get("task") in deps]
    try:
        _add_integration(queue, task, tree, after)
    except (ValueError, claude_queue.QueueError) as exc:
        return True, f"could not queue the integration of its branch {tree.branch}: {exc}"
    outcome.update(merge="queued", merged_into=None, conflicts=[])
    return True, None


def _add_integration(queue, task, tree, after):
    queue.add_tasks([{
        "prompt": f"integrate task #{task.id} into {tree.job_branch}",
        # The task's own priority: ready branches pile up while the job's other tasks run, and a
        # batch takes them together.
        "job_id": task.job_id, "depends_on": [task.id, *after], "priority": task.priority,
        "metadata": {KIND: {"task": task.id}, "isolation": "none"},
    }])


def run(worker, task):
    """Run one claimed integration task to a recorded outcome (the worker's `process` for it)."""
    q = worker.queue
    job = q.get_job(task.job_id) if task.job_id else None
    target = task.metadata[KIND].get("task")
    if job is None or not isinstance(target, int):
        worker.finish("fail", task, error="integration: not an integration task of a job", retryable=False)
        return None
    try:
        def activity(text):
            try:
                q.set_activity(task.id, worker.worker_id, text, attempt=task.attempt)
            except claude_queue.QueueError:
                pass  # a courtesy for status and the dashboard

        summary = Integrator(worker.cfg, q, job, lambda: worker._keepalive(task), activity).integrate(target)
    except worktrees.WorktreeError as exc:
        # A git failure here may be passing (another worker pruning worktrees, a lock): the queue's
        # attempts bound the retries. A verify command that cannot start needs the user.
        worker.finish("fail", task, error=f"integration: {exc}", retryable=not isinstance(exc, CannotVerify))
        return None
    except OSError as exc:  # a verify log or the worktree could not be written: try again
        if claude_queue.is_disk_full(exc):
            q.release_task(task.id, worker.worker_id, reason="disk full", attempt=task.attempt)
            raise claude_queue.DiskFull(f"disk full during the integration of task #{target}: {exc}") from None
        worker.finish("fail", task, error=f"integration: {exc}", retryable=True)
        return None
    worker.finish("complete", task, result={"result": summary})
    return summary


# --- the merge queue -----------------------------------------------------------------------------

class Integrator:
    """One job's merge queue, worked under its lock by whichever worker holds an integration task."""

    def __init__(self, cfg, queue, job, keepalive=None, activity=None):
        self.cfg, self.queue, self.job = cfg, queue, job
        self.activity = activity or (lambda text: None)
        self.job_id = job["id"]
        self.keepalive = keepalive
        self.every = max(0.05, cfg.heartbeat_interval)
        self.remote = worktrees.job_remote(cfg, job["metadata"])
        # With a remote, the recorded repository is the submitting host's: this host works in its own clone.
        top = worktrees.toplevel(cfg.root) if self.remote else None
        if self.remote and top is None:
            raise worktrees.WorktreeError(f"{cfg.root} is not a git repository: clone the project here to integrate "
                                          "its jobs")
        self.repo = top or Path(job["metadata"]["repo"])
        self.remote_name = worktrees.remote_ref(self.job_id, "merged")
        self.remote_head = None  # the job branch on the remote when this host fetched it
        self.touched, self.runs_before = set(), 0
        self.base = job["metadata"]["base_commit"]
        self.branch = worktrees.job_branch(self.job_id)
        self.ref = f"refs/heads/{self.branch}"
        self.dir = worktrees.worktrees_dir(cfg, create=True)
        self.path = self.dir / f"merged-{self.job_id}"
        self.argv = verify_command(cfg, job)
        icfg = cfg["integration"]
        self.timeout, self.fix_attempts, self.batch = icfg["verify_timeout"], icfg["fix_attempts"], icfg["batch"]
        self.logs = cfg.logs_dir / "integration" / self.job_id
        self.state = None
        self.head = None
        self.tasks = {}

    def _git(self, cwd, *args, **kwargs):
        kwargs.setdefault("keepalive", self.keepalive)
        kwargs.setdefault("every", self.every)
        return worktrees.git(cwd, *args, **kwargs)

    # state kept in the job's metadata (written only under the job's integration lock)

    def _load(self):
        meta = (self.queue.get_job(self.job_id) or {}).get("metadata") or {}
        state = meta.get("integration") or {}
        self.state = {"tasks": dict(state.get("tasks") or {}), "head": state.get("head"),
                      "verify_runs": int(state.get("verify_runs") or 0)}
        self.touched, self.runs_before = set(), self.state["verify_runs"]

    def _save(self):
        if self.remote:
            self._save_merged()
            return
        self.queue.update_job_metadata(self.job_id, {"integration": self.state})

    def _save_merged(self):
        """Another host may have saved since this one loaded: keep its entries, write only ours. Its
        head stays unless ours descends from it (a head this clone lacks was pushed after ours).
        The write is a compare-and-swap on what was read, retried when another host saved in
        between, so neither host's entries are lost."""
        while True:
            meta = (self.queue.get_job(self.job_id) or {}).get("metadata") or {}
            stored = meta.get("integration")
            merged = self._merged_with(stored or {})
            if self.queue.update_job_metadata(self.job_id, {"integration": merged},
                                              expect={"integration": stored}) is not None:
                break
        tasks, head, runs = merged["tasks"], merged["head"], merged["verify_runs"]
        self.state = {"tasks": {**tasks, **{k: v for k, v in self.state["tasks"].items() if k not in tasks}},
                      "head": head, "verify_runs": runs}
        self.runs_before = runs

    def _merged_with(self, stored):
        """The integration state to write over `stored` (another host's latest save): its entries
        with ours on top, the later head, and the verify runs of both."""
        tasks = dict(stored.get("tasks") or {})
        tasks.update({k: v for k, v in self.state["tasks"].items() if k in self.touched})
        head, mine = stored.get("head"), self.state.get("head")
        if mine and (not head or head.get("commit") == mine.get("commit") or self._git(
                self.repo, "merge-base", "--is-ancestor", head.get("commit") or "", mine["commit"],
                check=False).returncode == 0):
            head = mine
        runs = int(stored.get("verify_runs") or 0) + self.state["verify_runs"] - self.runs_before
        return {"tasks": tasks, "head": head, "verify_runs": runs}

    def _set(self, tid, **entry):
        self.touched.add(str(tid))
        self.state["tasks"][str(tid)] = entry

    def _get(self, tid):
        return self.state["tasks"].get(str(tid)) or {}

    def _task(self, tid):
        if tid not in self.tasks:
            self.tasks[tid] = self.queue.get_task(tid)
        return self.tasks[tid]

    def _origin(self, tid):
        fix = (self._task(tid).metadata or {}).get(FIX)
        return fix["of"] if isinstance(fix, dict) and isinstance(fix.get("of"), int) else tid

    def _fix(self, tid):
        fix = (self._task(tid).metadata or {}).get(FIX)
        return fix if isinstance(fix, dict) else {}

    def _decided(self, tid):
        return self._get(tid).get("state") not in (None, "pending")

    # the worktree

    def _prepare(self):
        """The job's merge worktree, clean, and no verify run left over from a killed worker."""
        processes.kill_env_processes(VERIFY_MARK, self._mark())
        repo = self.repo
        self.head = worktrees._rev(repo, self.ref)
        if self.remote:
            self.head = self._fetch_head()
        elif self.head is None:
            self._git(repo, "update-ref", "-m", "klauss: job branch", self.ref, self.base, "")
            self.head = self.base
        entry = worktrees._registered(repo).get(str(self.path.resolve()))
        ready = self.dir / f".integrate-{self.job_id}.ready"  # made once copy_files and setup_command are done
        if entry is None or entry.get("prunable") or not (self.path / ".git").exists() or not ready.exists():
            ready.unlink(missing_ok=True)
            worktrees._remove_worktree(repo, self.path)
            self._git(repo, "worktree", "add", "--detach", str(self.path), self.head)
            self._setup()
            ready.touch()
        gitdir = Path(self._git(self.path, "rev-parse", "--absolute-git-dir").stdout.strip())
        common = self.path / self._git(self.path, "rev-parse", "--git-common-dir").stdout.strip()
        # Under the job's lock nothing else works here: a lock file is what a killed git left.
        for lock in (gitdir / "index.lock", gitdir / "HEAD.lock", common / "refs" / "heads" / f"{self.branch}.lock"):
            try:
                lock.unlink()
            except FileNotFoundError:
                pass
        self._reset(self.head)

    def _setup(self):
        """What a fresh checkout needs before the verify command can run: `[isolation] copy_files` and
        `setup_command`, as for a task's worktree. What they make is ignored or cleaned, never merged."""
        icfg = self.cfg["isolation"]
        for name in icfg["copy_files"]:
            src, dst = self.repo / name, self.path / name
            if os.path.isabs(name) or not src.exists() or self.repo.resolve() not in src.resolve().parents:
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dst)
        argv = list(icfg["setup_command"])
        if not argv:
            return
        self.activity(f"[isolation] setup_command `{' '.join(argv)}` in the merge worktree")
        env = {**os.environ, VERIFY_MARK: self._mark(), "KLAUSS_WORKTREE": str(self.path)}
        try:
            cp = worktrees._run(argv, self.path, timeout=self.timeout, keepalive=self.keepalive, every=self.every,
                                env=env, group=True)
        except worktrees.WorktreeError as exc:
            raise worktrees.WorktreeError(f"[isolation] setup_command in {self.path}: {exc}", retryable=True) from None
        if cp.returncode != 0:
            raise worktrees.WorktreeError(f"[isolation] setup_command `{' '.join(argv)}` exited with {cp.returncode} in "
                                          f"{self.path}: {worktrees._tail((cp.stdout or '') + (cp.stderr or ''))}",
                                          retryable=True)

    def _fetch_head(self):
        """The job branch's head on the remote (the base before its first merge), and the local
        branch made to follow it. A local branch with commits the remote lacks is kept under
        refs/klauss/archive/ first."""
        kw = {"keepalive": self.keepalive, "every": self.every}
        worktrees.ensure_base(self.repo, self.remote, self.base, **kw)
        self.remote_head = worktrees.fetch_ref(self.repo, self.remote, self.remote_name, **kw)
        head = self.remote_head or self.base
        if not worktrees.sync_branch(self.repo, self.branch, head):
            kept = worktrees.archive_ref(self.job_id, "merged")
            mine = worktrees._rev(self.repo, self.ref)
            self._git(self.repo, "update-ref", "-m", "klauss: kept before following the remote", kept, mine)
            self._git(self.repo, "update-ref", "-m", "klauss: the remote's job branch", self.ref, head, mine)
            worktrees._warn(f"{self.branch} here had commits {self.remote_name} on {self.remote} lacks; kept as {kept}")
        return head

    def _fetch_commits(self, tids):
        """Bring the candidates' commits (pushed by whichever host ran them) into this clone."""
        for tid in tids:
            commit = self._commit(tid)
            if not commit or worktrees._rev(self.repo, commit):
                continue
            task = self._task(tid)
            name = (task.outcome or {}).get("remote_ref") or worktrees.remote_ref(self.job_id, f"task-{tid}")
            worktrees.fetch_ref(self.repo, self.remote, name, keepalive=self.keepalive, every=self.every)
            if worktrees._rev(self.repo, commit) is None:
                raise worktrees.WorktreeError(f"task #{tid}'s commit {commit[:12]} is neither in {self.repo} nor on "
                                              f"{self.remote} ({name})", retryable=True)

    def _publish_start(self, *commits):
        """Push where a fix-up or resolution task starts, so a worker on another host can fetch it."""
        for commit in commits:
            if self.remote and commit:
                worktrees.push_ref(self.repo, self.remote, commit, worktrees.base_ref(commit),
                                   keepalive=self.keepalive, every=self.every)

    def _mark(self):
        # Per host: two hosts' pools may share a machine (and /proc), and each must find only its own
        # verify runs; and it goes into the verify command's environment, so never a URL's password.
        return f"{config.shown_db(self.queue.db_path)}:{self.cfg.host}:{self.job_id}"

    def _reset(self, commit):
        # reset --hard also ends a merge left half done (MERGE_HEAD and the rest go with it).
        self._git(self.path, "reset", "-q", "--hard")
        # Ignored files (what setup_command built) and copy_files stay for the next run.
        self._git(self.path, "clean", "-qfd", *(f"--exclude=/{n}" for n in self.cfg["isolation"]["copy_files"]))
        self._git(self.path, "checkout", "-q", "--detach", commit)

    def _merge(self, cands):
        """Merge the candidates' commits onto the head, one by one, skipping each that conflicts.
        Returns (top commit, merged ids, {conflicting id: files})."""
        self._reset(self.head)
        merged, conflicts = [], {}
        for tid in cands:
            task = self._task(tid)
            title = " ".join((task.prompt.strip().splitlines() or [""])[0].split())[:72]
            cp = self._git(self.path, *worktrees.IDENTITY, *worktrees.QUIET, "merge", "--no-ff", "--no-edit", "-m",
                           f"klauss: merge task {tid}: {title}", self._commit(tid), check=False)
            if cp.returncode == 0:
                merged.append(tid)
                continue
            files = worktrees._unmerged(self.path)
            self._git(self.path, "reset", "-q", "--hard")  # the conflicted merge undone
            if not files:
                raise worktrees.WorktreeError(f"git merge of task {tid} failed: {worktrees._tail(cp.stderr or cp.stdout)}",
                                              retryable=True)
            conflicts[tid] = files
        return self._git(self.path, "rev-parse", "HEAD").stdout.strip(), merged, conflicts

    def _commit(self, tid):
        return (self._task(tid).outcome or {}).get("commit")

    # verification

    def _verify(self, commit, tids):
        """Run the verify command on the merge worktree: {"passed", "exit_status", "duration", "log", ...}."""
        if not self.argv:  # the verify command was removed since the task was queued: merge as without one
            return {"passed": True, "exit_status": None, "duration": 0.0, "log": None, "commit": commit, "tail": ""}
        self.state["verify_runs"] += 1
        n = self.state["verify_runs"]
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"verify-{n}.log"
        env = {**os.environ, VERIFY_MARK: self._mark(), "KLAUSS_JOB_ID": self.job_id}
        self.activity(f"verifying {', '.join('#%d' % t for t in tids)} on {commit[:12]}: `{' '.join(self.argv)}`")
        started = time.monotonic()
        status, output = None, ""
        try:
            cp = worktrees._run(self.argv, self.path, timeout=self.timeout, keepalive=self.keepalive, every=self.every,
                                env=env, group=True)
            status, output = cp.returncode, (cp.stdout or "") + (cp.stderr or "")
        except worktrees.WorktreeError as exc:
            if "no longer holds" in str(exc):
                raise
            if not exc.retryable:  # the command cannot start at all: Claude cannot fix that, the user can
                raise CannotVerify(f"[integration] verify_command: {exc}; fix the command (in .klauss.toml, or the "
                                   "job's verify) and retry this task") from None
            output = str(exc)
        duration = round(time.monotonic() - started, 3)
        log.write_text(f"# verify run {n} of job {self.job_id}: {' '.join(self.argv)}\n# commit {commit}, tasks "
                       f"{', '.join('#%d' % t for t in tids)}\n# exit status {status}, {duration:.2f}s\n\n{output}")
        processes.kill_env_processes(VERIFY_MARK, self._mark())  # what the command left running
        return {"passed": status == 0, "exit_status": status, "duration": duration, "log": str(log),
                "commit": commit, "tail": output[-OUTPUT_TAIL:]}

    def _advance(self, top, merged, run):
        if self.remote:
            # The remote's branch is the job branch: compare-and-swap, then this clone's copy follows.
            if top != self.remote_head and not worktrees.push_ref(
                    self.repo, self.remote, top, self.remote_name, expect=self.remote_head,
                    keepalive=self.keepalive, every=self.every):
                self._save()  # the verify runs so far count (and their logs keep their numbers)
                raise _Moved()
            self.remote_head = top
            self._git(self.repo, "update-ref", "-m", f"klauss: verified {', '.join('#%d' % t for t in merged)}",
                      self.ref, top)
            cp = None
        else:
            cp = self._git(self.repo, "update-ref", "-m", f"klauss: verified {', '.join('#%d' % t for t in merged)}",
                       self.ref, top, self.head, check=False)
        if cp is not None and cp.returncode != 0:
            raise worktrees.WorktreeError(f"{self.branch} moved while it was being verified; integrating again",
                                          retryable=True)
        self.head = top
        self.state["head"] = {"commit": top, "verify_command": self.argv, "exit_status": run["exit_status"],
                              "duration": run["duration"], "log": run["log"], "at": time.time()}
        for tid in merged:
            self._merged(tid, log=run["log"])

    def _merged(self, tid, log=None):
        self._set(tid, state="merged", log=log)
        origin = self._origin(tid)
        if origin != tid:
            self._set(origin, **{**self._get(origin), "state": "fixed_and_merged", "fix_task": tid,
                                 "fix_kind": self._fix(tid).get("kind")})

    # the queue's work

    def integrate(self, tid):
        """Integrate task `tid` (and, with batch > 1, other ready branches). Returns a summary."""
        lock_wait = self.timeout * (2 * self.batch + 2) + worktrees.GIT_TIMEOUT
        with worktrees._locked(self.dir / f".integrate-{self.job_id}.lock", keepalive=self.keepalive,
                               timeout=lock_wait, every=self.every):
            for _ in range(worktrees.PUSH_RETRIES):
                try:
                    return self._integrate_locked(tid)
                except _Moved:
                    # Another host advanced the job branch on the remote meanwhile: fetch its new head,
                    # then merge and verify what is still undecided on top of it.
                    self.activity(f"{self.remote_name} on {self.remote} moved; integrating again on its new head")
            raise worktrees.WorktreeError(f"{self.remote_name} on {self.remote} moved at each of "
                                          f"{worktrees.PUSH_RETRIES} tries", retryable=True)

    def _integrate_locked(self, tid):
        self._load()
        if self._decided(tid):
            return f"task #{tid}: already {self._get(tid)['state']}"
        task = self._task(tid)
        if task is None or task.status != "completed" or not self._commit(tid):
            self._set(tid, state="integration_failed", why="the task has no committed work to integrate")
            self._save()
            return f"task #{tid}: nothing to integrate"
        try:
            self._prepare()
        except worktrees.WorktreeError:
            # Once more from a fresh merge worktree: whatever an interrupted git left in the old
            # one must not fail every later integration of the job.
            (self.dir / f".integrate-{self.job_id}.ready").unlink(missing_ok=True)
            worktrees._remove_worktree(self.repo, self.path)
            self._prepare()
        cands = [tid]
        if self.batch > 1:
            for other in self.queue.list_tasks(job_id=self.job_id, status="completed", order="asc"):
                if len(cands) >= self.batch:
                    break
                self.tasks.setdefault(other.id, other)
                if other.id != tid and (other.outcome or {}).get("merge") == "queued" and not self._decided(other.id):
                    cands.append(other.id)
        cands.sort()
        if self.remote:
            self._fetch_commits(cands)
        # A run killed after the branch moved: what is already in it is merged.
        for c in list(cands):
            if self._git(self.repo, "merge-base", "--is-ancestor", self._commit(c), self.head,
                         check=False).returncode == 0 and self._fix(c).get("kind") != "resolution":
                self._merged(c)
                cands.remove(c)
        for c in list(cands):
            if self._fix(c).get("kind") == "resolution" and self._markers(c):
                self._unresolved(c, "its resolution left conflict markers in " + worktrees._listed(self._markers(c)))
                cands.remove(c)
        self._save()
        self._integrate(cands)
        self._save()
        self._reset(self.head)
        return "; ".join(f"task #{c}: {self._get(c).get('state', 'pending')}" for c in sorted({tid, *cands}))

    def _integrate(self, cands):
        """Merge the candidates onto the head and verify them at once. On a failure, bisect for the
        first branch that breaks it (the longest passing prefix is merged, that branch is kept out),
        then integrate the rest together again."""
        if not cands:
            return
        top, merged, conflicts = self._merge(cands)
        for c, files in conflicts.items():
            self._conflict(c, files)
        self._save()
        if not merged:
            return
        run = self._verify(top, merged)
        if run["passed"]:
            self._advance(top, merged, run)
            self._save()
            return
        # merged[:good] passed (good_top, good_run), merged[:bad] failed (bad_run).
        good, bad, good_top, good_run, bad_run = 0, len(merged), None, None, run
        while bad - good > 1:
            mid = (good + bad) // 2
            prefix_top, prefix, _ = self._merge(merged[:mid])  # merged together before: merges again
            prefix_run = self._verify(prefix_top, prefix)
            if prefix_run["passed"]:
                good, good_top, good_run = mid, prefix_top, prefix_run
            else:
                bad, bad_run = mid, prefix_run
        if good:
            self._advance(good_top, merged[:good], good_run)
        self._failed(merged[bad - 1], bad_run)
        self._save()
        self._integrate(merged[bad:])

    def _failed(self, tid, run):
        """Verification failed with this branch: keep it out, queue a fix-up or give up."""
        origin, fix = self._origin(tid), self._fix(tid)
        if fix.get("kind") == "resolution":
            self._unresolved(tid, f"its resolution failed verification (exit status {run['exit_status']})", run)
            return
        attempt = fix.get("attempt", 0) if origin != tid else 0
        if origin != tid:
            self._set(tid, state="integration_failed", why=f"verification failed (exit status {run['exit_status']})",
                      log=run["log"])
        if attempt < self.fix_attempts:
            top, merged, _ = self._merge([tid])
            if merged:
                fid = self._queue_fix(origin, tid, attempt + 1, top, run)
                self._set(origin, state="fixing", fix_task=fid, fix_kind="fix", attempts=attempt + 1, log=run["log"])
                return
        self._set(origin, state="integration_failed", log=run["log"],
                  why=f"verification failed (exit status {run['exit_status']})"
                      + (f" after {attempt} fix-up attempt(s)" if attempt else ""), attempts=attempt)

    def _conflict(self, tid, files):
        origin, fix = self._origin(tid), self._fix(tid)
        if origin == tid and not fix:
            rid = self._queue_resolution(tid, files)
            self._set(tid, state="resolving", fix_task=rid, fix_kind="resolution", files=files)
            return
        self._set(tid, state="conflict", files=files, why="its merge conflicts with the job branch")
        self._set(origin, state="conflict", files=self._get(origin).get("files") or files,
                  why=f"the work of task #{tid} conflicts with the job branch")

    def _unresolved(self, tid, why, run=None):
        origin = self._origin(tid)
        files = self._fix(tid).get("files") or []
        self._set(tid, state="integration_failed", why=why, log=(run or {}).get("log"))
        self._set(origin, state="conflict", files=files, why=f"resolution task #{tid}: {why}",
                  log=(run or {}).get("log"))

    def _markers(self, tid):
        files = self._fix(tid).get("files") or []
        if not files:
            return []
        cp = self._git(self.repo, "grep", "-l", "-E", _MARKERS, self._commit(tid), "--", *files, check=False)
        return sorted({line.split(":", 1)[1] for line in cp.stdout.splitlines() if ":" in line})

    # fix-up and resolution tasks

    def _existing(self, origin, kind, attempt):
        for t in self.queue.list_tasks(job_id=self.job_id, order="asc"):
            fix = (t.metadata or {}).get(FIX)
            if isinstance(fix, dict) and fix.get("of") == origin and fix.get("kind") == kind \
                    and fix.get("attempt") == attempt:
                return t.id
        return None

    def _queue_task(self, origin, kind, attempt, prompt, start, merge=None, files=None):
        """A Claude task of the job (a retried integration finds the one it queued before)."""
        found = self._existing(origin, kind, attempt)
        if found is not None:
            return found
        task = self._task(origin)
        [tid] = self.queue.add_tasks([{
            "prompt": prompt, "job_id": self.job_id, "working_dir": task.working_dir, "priority": task.priority,
            "metadata": {**{k: v for k, v in (task.metadata or {}).items() if k in ("model", "max_turns")},
                         FIX: {"of": origin, "kind": kind, "attempt": attempt, "files": files or []},
                         START: {"commit": start, "merge": merge}},
        }])
        return tid

    def _queue_fix(self, origin, tid, attempt, start, run):
        task = self._task(origin)
        stat = self._git(self.repo, "diff", "--stat", f"{self.head}...{self._commit(tid)}", check=False).stdout
        prompt = (f"Fix-up {attempt} of {self.fix_attempts} for task #{origin} of job {self.job_id}.\n\n"
                  f"Your worktree holds that task's work merged onto the job branch {self.branch}, and the "
                  f"verify command `{' '.join(self.argv)}` fails there (exit status {run['exit_status']}). Make it "
                  "pass while keeping what the task set out to do. Change only what that needs.\n\n"
                  f"## The original task (#{origin})\n{task.prompt.strip()}\n\n"
                  f"## Its changes (diff summary)\n```\n{worktrees._tail(stat, DIFFSTAT_CHARS)}\n```\n\n"
                  f"## The end of the verify output\n```\n{run['tail'].strip()}\n```\n")
        self._publish_start(start)
        return self._queue_task(origin, "fix", attempt, prompt, start)

    def _queue_resolution(self, tid, files):
        task = self._task(tid)
        merged = [self._task(int(t)) for t, e in self.state["tasks"].items() if e.get("state") == "merged"]
        merged = [t for t in merged if t is not None]
        # The other side: the merged tasks that changed the conflicting files (all of them, if none says so).
        touching = [t for t in merged if set((t.outcome or {}).get("files_changed") or []) & set(files)]
        merged = touching or merged
        others = "\n".join(f"- #{t.id}: {' '.join(t.prompt.strip().splitlines()[0].split())[:200]}"
                           for t in merged) or "- (the job's base commit)"
        prompt = (f"Resolve a merge conflict for task #{tid} of job {self.job_id}.\n\n"
                  f"Your worktree holds the merge of that task's branch into the job branch {self.branch}, "
                  f"stopped with conflicts in: {', '.join(files)}. Resolve them so both sides' intent is kept, and "
                  "leave no conflict markers (<<<<<<<, =======, >>>>>>>). Do not commit; Klauss commits for you. "
                  f"The result must pass `{' '.join(self.argv)}`.\n\n"
                  f"## The task being merged (#{tid})\n{task.prompt.strip()}\n\n"
                  f"## Already in the job branch\n{others}\n")
        self._publish_start(self.head, self._commit(tid))
        return self._queue_task(tid, "resolution", 1, prompt, self.head, merge=self._commit(tid), files=files)


# --- what happened ---------------------------------------------------------------------------------

_FAILED = ("failed", "cancelled", "skipped")


def job_report(queue, job_id):
    """What the merge queue did for a job, for the reports (status, wait_and_collect, dashboard, MCP).

    Returns None when the job does not exist, else:

        {"job_id": str, "branch": "klauss/<job>/merged",
         "verify_command": [argv] or [] (none: the job merges without verification),
         "verify_runs": int (verify runs so far),
         "head": None, or the verified head {"commit", "verify_command", "exit_status", "duration" (s),
                 "log" (path), "at" (epoch s)},
         "tasks": [{"task": id, "kind": "task" | "fix" | "resolution", "of": id or None (for fix/resolution),
                    "state": one of
                      "pending"            not integrated yet (running, queued, or being fixed/resolved:
                                           see "fix_task"),
                      "merged"             in the job branch as it was,
                      "fixed_and_merged"   in the job branch through "fix_task" (a fix-up or, with
                                           "fix_kind" "resolution", a resolution task),
                      "integration_failed" kept out: "why", "log" (the verify log of the last failure),
                      "conflict"           kept out, its branch kept: "files", "why",
                      "not_completed"      the task itself did not complete ("why" says how it ended),
                    "why": str or None, "log": path or None, "files": [str], "fix_task": id or None,
                    "fix_kind": "fix" | "resolution" | None, "branch": the task's branch or None}, ...]}

    Integration tasks themselves are left out (tell them apart with `is_integration(task)`). In a job
    without a verify command, "merged" and "conflict" come from the worker's own merge, as before.
    """
    job = queue.get_job(job_id)
    if job is None:
        return None
    meta = job["metadata"]
    state = meta.get("integration") or {}
    entries = state.get("tasks") or {}
    tasks = queue.list_tasks(job_id=job_id, order="asc")
    by_id = {t.id: t for t in tasks}
    argv = verify_command(queue.cfg, job)
    rows = []
    for t in tasks:
        if is_integration(t):
            continue
        fix = (t.metadata or {}).get(FIX)
        fix = fix if isinstance(fix, dict) else {}
        e = entries.get(str(t.id)) or {}
        row = {"task": t.id, "kind": fix.get("kind", "task"), "of": fix.get("of"), "state": e.get("state") or "pending",
               "why": e.get("why"), "log": e.get("log"), "files": list(e.get("files") or []),
               "fix_task": e.get("fix_task"), "fix_kind": e.get("fix_kind"),
               "branch": (t.outcome or {}).get("branch")}
        outcome = t.outcome or {}
        if row["state"] == "pending" and t.status == "completed" and outcome.get("merge") in ("merged", "conflict"):
            # Merged by its worker, without verification (no verify command when it finished).
            row.update(state=outcome["merge"], files=list(outcome.get("conflicts") or []))
        elif row["state"] == "pending" and t.status in _FAILED:
            row.update(state="not_completed", why=f"the task {t.status}" + (f": {t.error}" if t.error else ""))
        elif row["state"] in ("fixing", "resolving"):
            helper = by_id.get(row["fix_task"])
            final = "conflict" if row["state"] == "resolving" else "integration_failed"
            if helper is not None and helper.status in _FAILED:
                row.update(state=final, why=f"{'resolution' if final == 'conflict' else 'fix-up'} task #{helper.id} "
                                            f"{helper.status}" + (f": {helper.error}" if helper.error else ""))
            else:
                row["state"] = "pending"
        elif row["state"] == "pending" and t.status == "completed":
            for other in tasks:
                if is_integration(other) and other.metadata[KIND].get("task") == t.id and other.status in _FAILED:
                    row.update(state="integration_failed", log=None,
                               why=f"integration task #{other.id} {other.status}"
                                   + (f": {other.error}" if other.error else ""))
        rows.append(row)
    return {"job_id": job_id, "branch": worktrees.job_branch(job_id), "verify_command": argv,
            "verify_runs": int(state.get("verify_runs") or 0), "head": state.get("head"), "tasks": rows}



def gated(queue, job):
    """Whether a job's views must tell the merge queue apart: it has a verify command, or integrated
    with one (the command may have been removed from the config since)."""
    return bool(job) and (bool(verify_command(queue.cfg, job)) or "integration" in (job.get("metadata") or {}))


def user_stats(queue, job):
    """The job's stats as the user counts them (task_report.without_integration): the merge queue's
    own integration tasks are not the user's tasks (left out of every count) but what they cost is
    the job's (kept in `cost_usd`). Adds "integrating": how many integration tasks are still to
    run, and "integration_tasks": how many there are. A job without a verify command keeps its
    stats as they are."""
    if not gated(queue, job):
        return dict(job["stats"])
    return task_report.without_integration(job["stats"], queue.integration_counts(job["id"]))


def queue_user_stats(queue, job=None):
    """queue.get_stats() as the user counts them (see user_stats): of one job (a queue.get_job()),
    or of the whole queue (task_report.queue_user_stats), every job's integration tasks left out."""
    if job is not None:
        return user_stats(queue, job)
    return task_report.queue_user_stats(queue)


def recent_user_tasks(queue, status=None, job_id=None, limit=None):
    """queue.recent_tasks() without the merge queue's integration tasks: the user's newest `limit`
    (None: all) tasks of that status and job."""
    if limit is None:
        return [t for t in queue.recent_tasks(status, job_id, None) if not is_integration(t)]
    found, offset = [], 0
    while len(found) < limit:
        page = queue.recent_tasks(status, job_id, limit, offset)
        found += [t for t in page if not is_integration(t)]
        if len(page) < limit:
            break
        offset += len(page)
    return found[:limit]


def task_row(queue, task):
    """What the merge queue says about one task, for `show`: the job_report row of a task of a gated
    job, with "job": the report's job part ("branch", "verify_command", "verify_runs", "head");
    {"integrates": id} for an integration task; or None."""
    if is_integration(task):
        return {"integrates": task.metadata[KIND].get("task")}
    job = queue.get_job(task.job_id) if task.job_id else None
    if not gated(queue, job):
        return None
    report = job_report(queue, task.job_id)
    row = next((r for r in report["tasks"] if r["task"] == task.id), None)
    return row and {**row, "job": {k: v for k, v in report.items() if k != "tasks"}}


def merge_job(cfg, queue, job_id, force=False):
    """`manage.sh merge JOB` behind the verification gate: a job with a verify command brings its
    branch into the user's branch only when the branch's head is the commit that passed verification
    (or holds no work yet); `force` merges it all the same (and, as for worktrees.merge_job, an
    unfinished job). WorktreeError says why it refused and the command with --force. Jobs without a
    verify command merge as worktrees.merge_job does. The report's `not_merged` lists the tasks the
    merge queue kept out (state: integration_failed, conflict, pending)."""
    job = queue.get_job(job_id)
    if job is None or not gated(queue, job) or job["metadata"].get("isolation") != "worktree":
        return worktrees.merge_job(cfg, queue, job_id, force=force)
    report = job_report(queue, job_id)
    tip = worktrees._rev(Path(job["metadata"]["repo"]), f"refs/heads/{report['branch']}")
    head = report["head"] or {}
    if tip and tip != job["metadata"].get("base_commit") and tip != head.get("commit") and not force:
        why = (f"no commit of it has passed verification (`{' '.join(report['verify_command'])}`)" if not head else
               f"its head {tip[:12]} is not the commit that passed verification ({head['commit'][:12]})")
        raise worktrees.WorktreeError(
            f"job {job_id}: {report['branch']} is not verified: {why}, so it stays out of your branch; "
            f"`{hints.command('wait', job_id)}` tells what the merge queue did, or merge it all the same with "
            f"`{hints.command('merge', job_id, '--force')}`")
    result = worktrees.merge_job(cfg, queue, job_id, force=force)
    result["not_merged"] = [
        {"task": r["task"], "branch": r["branch"], "merge": r["state"], "conflicts": r["files"], "why": r["why"]}
        for r in report["tasks"]
        if r["kind"] == "task" and r["branch"] and r["state"] in ("integration_failed", "conflict", "pending")]
    result["verified_head"] = report["head"]
    return result
