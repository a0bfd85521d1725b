"""Worktree isolation: each task runs in its own git worktree, on its own branch, and its work is
merged back when it is done.

With `[isolation] mode = "worktree"` (or `isolation="worktree"` per job or per task):

- at submit time the job records its base commit (`HEAD`) and repository; a directory outside git,
  or (with `dirty_policy = "refuse"`) uncommitted changes the tasks would not see, is refused
  before anything is written;
- the worker runs each task in `<state dir>/worktrees/task-<id>` on a new branch
  `klauss/<job>/task-<id>`, started from the base commit, or from the branches of the tasks it
  depends on, so a dependent task sees their work; `copy_files` are copied in and
  `setup_command` runs before Claude starts;
- when Claude finishes (however it ends) everything it changed is committed on the task branch;
- with `merge = "auto"` each completed task is merged into the job branch `klauss/<job>/merged`
  (in a worktree of its own, never in the user's checkout); a conflict keeps the task's branch
  and lists the files; `merge = "branch"` leaves one branch per task for review;
- `merge_job` brings the job's work into the user's current branch when they say so;
  `list_worktrees` and `clean_worktrees` show and remove the worktrees (and branches).

With `[isolation] remote` (several hosts, each with its own clone), edits travel through that git
remote, never a shared disk, all under refs/klauss/ there (no user branch is touched): the base
commit is pushed at submit (`publish_base`, to `refs/klauss/base/<sha>`), a host fetches it before
making a worktree (`ensure_base`), the task branch is pushed whatever the outcome
(`refs/klauss/jobs/<job>/task-<id>`), dependents and later attempts on another host fetch it, and
the job branch lives there too (`refs/klauss/jobs/<job>/merged`, advanced by compare-and-swap:
`push_ref` with `expect`; a host whose push lost the race fetches and merges again). `merge_job`
fetches the job's work first. The building blocks (`fetch_ref`, `push_ref`, `ensure_base`,
`sync_branch`) are for the merge queue too. While several hosts share the queue (`multi_host`), a
task that would edit files in place is refused at submit (`refuse_shared_edits`).

Every git call goes through `_run` with an argv list (never a shell). Klauss's own commits use the
identity "Klauss <klauss@localhost>", so they work whether or not the user configured one, and run
no hooks and no signing; the user's own merge (`merge_job`) uses the user's identity when set.
Problems are `WorktreeError`s whose message says what to do; problems found at submit time are
`ValueError`s, like every other validation error.
"""

import fcntl
import os
import re
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import claude_queue
import config
import gitroot
import hints
import task_report

MODES = ("none", "worktree")
MERGE_MODES = ("auto", "branch")
PREFIX = "klauss"
DIRNAME = "worktrees"
IDENTITY = ("-c", "user.name=Klauss", "-c", "user.email=klauss@localhost")
# Klauss's bookkeeping commits and merges: no signing prompt, and no user hooks (a failing
# pre-commit hook must not lose a task's work; hooks run when the user merges the job).
QUIET = ("-c", "commit.gpgsign=false", "-c", "core.hooksPath=/dev/null")
GIT_TIMEOUT = 600
KEEPALIVE_SECONDS = 5.0
MAX_LISTED = 10
TAIL_CHARS = 1500
# Where a branch goes when it is deleted with its work unmerged, and a removed worktree's uncommitted
# changes when they cannot go on a branch: kept refs, so no Klauss command makes a commit unreachable.
ARCHIVE = f"refs/{PREFIX}/archive"
# In a task worktree's own git dir: what copy_files and the setup command made (never the task's work).
EXCLUDE_FILE = "klauss-exclude"
# A git repository location inherited from a hook or a wrapper would point every call elsewhere.
_GIT_ENV_DROP = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_COMMON_DIR",
                 "GIT_PREFIX", "GIT_NAMESPACE", "GIT_ALTERNATE_OBJECT_DIRECTORIES")


class WorktreeError(RuntimeError):
    """A worktree operation that failed; the message says what to do. `retryable` tells the worker
    whether running the task again may help."""

    def __init__(self, message, retryable=False):
        super().__init__(message)
        self.retryable = retryable


# --- running git ---------------------------------------------------------------------------------

def _git_env():
    env = {k: v for k, v in os.environ.items() if k not in _GIT_ENV_DROP}
    env.update(GIT_TERMINAL_PROMPT="0", LC_ALL="C", LANGUAGE="C")
    return env


def _tail(text, chars=TAIL_CHARS):
    text = (text or "").strip()
    return text if len(text) <= chars else "…" + text[-chars:]


def _kill(proc, group):
    try:
        if group:
            os.killpg(proc.pid, 9)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError):
        pass


def _lost(keepalive):
    """True when the worker's keepalive says the task is no longer its own (a database that stays
    busy is not a reason to stop: the heartbeat thread would only log it, too)."""
    if keepalive is None:
        return False
    try:
        return keepalive() is False
    except claude_queue.QueueError:
        return False


def _run(argv, cwd, timeout=GIT_TIMEOUT, keepalive=None, every=KEEPALIVE_SECONDS, env=None, group=False):
    """Run argv (a list, no shell) in cwd: a CompletedProcess with text output. While it runs,
    `keepalive()` is called every `every` seconds; when it returns False the command is stopped."""
    try:
        proc = subprocess.Popen([str(a) for a in argv], cwd=str(cwd), env=_git_env() if env is None else env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, errors="replace", start_new_session=group)
    except OSError as exc:
        raise WorktreeError(f"cannot run {argv[0]} in {cwd}: {exc.strerror or exc}") from None
    deadline = time.monotonic() + timeout
    while True:
        try:
            out, err = proc.communicate(timeout=max(0.05, min(every, deadline - time.monotonic())))
            return subprocess.CompletedProcess(argv, proc.returncode, out, err)
        except subprocess.TimeoutExpired:
            why = None
            if time.monotonic() >= deadline:
                why = f"timed out after {timeout:g}s"
            elif _lost(keepalive):
                why = "was stopped: this worker no longer holds the task"
            if why:
                _kill(proc, group)
                out, err = proc.communicate()
                detail = _tail((out or "") + (err or ""))
                raise WorktreeError(f"`{' '.join(map(str, argv))}` {why}" + (f"; output: {detail}" if detail else ""),
                                    retryable=True) from None


def git(cwd, *args, check=True, **kwargs):
    """`git -C cwd args...`; with `check`, a non-zero exit raises WorktreeError quoting git."""
    cp = _run(["git", *args], cwd, **kwargs)
    if check and cp.returncode != 0:
        shown = " ".join(a for i, a in enumerate(args) if a != "-c" and (i == 0 or args[i - 1] != "-c"))
        raise WorktreeError(f"git {shown} failed in {cwd}: {_tail(cp.stderr or cp.stdout) or f'exit {cp.returncode}'}")
    return cp


def toplevel(path):
    """The git top level of `path` (resolved), or None outside git. WorktreeError when git is missing."""
    path = Path(path)
    if not path.is_dir():
        return None
    top = gitroot.fast_toplevel(path)
    if top is not gitroot.ASK_GIT:
        return top
    cp = git(path, "rev-parse", "--show-toplevel", check=False, timeout=60)
    top = cp.stdout.strip()
    return Path(top).resolve() if cp.returncode == 0 and top else None


def _rev(repo, name):
    cp = git(repo, "rev-parse", "--verify", "-q", f"{name}^{{commit}}", check=False, timeout=60)
    return cp.stdout.strip() if cp.returncode == 0 and cp.stdout.strip() else None


def _z(text):
    return [p for p in (text or "").split("\0") if p]


def _status_paths(cwd, excludes=(), untracked="normal"):
    """Paths `git status` reports (modified, staged, untracked; untracked dirs collapsed)."""
    cp = git(cwd, "status", "--porcelain", "-z", f"--untracked-files={untracked}", "--", ".",
             *(f":(exclude,literal){p}" for p in excludes), timeout=300)
    items, paths = _z(cp.stdout), []
    skip = False
    for item in items:
        if skip:  # the source path of a rename or copy
            skip = False
            continue
        code, path = item[:2], item[3:]
        paths.append(path)
        skip = code[0] in "RC"
    return paths


def _relative_inside(path, repo):
    """`path` relative to `repo` (posix), or None when it is not strictly inside it."""
    if path is None:
        return None
    try:
        rel = Path(os.path.abspath(path)).resolve().relative_to(Path(repo).resolve())
    except ValueError:
        return None
    return None if str(rel) in ("", ".") else rel.as_posix()


def _listed(paths):
    shown = ", ".join(paths[:MAX_LISTED])
    return shown + (f" (and {len(paths) - MAX_LISTED} more)" if len(paths) > MAX_LISTED else "")


def _warn(message):
    print(f"klauss: warning: {message}", file=sys.stderr, flush=True)


# --- names and places ----------------------------------------------------------------------------

def task_branch(task_id, job_id=None):
    return f"{PREFIX}/{job_id}/task-{task_id}" if job_id else f"{PREFIX}/task-{task_id}"


def job_branch(job_id):
    return f"{PREFIX}/{job_id}/merged"


def worktrees_dir(cfg, create=False):
    path = Path(cfg.state_dir) / DIRNAME
    if create:
        config.ensure_private_dir(path)
        ignore = path / ".gitignore"
        if not ignore.exists():
            # The worktrees live inside the project: keep `git add -A` there from taking them in.
            ignore.write_text("*\n")
    return path


def _klauss_files(cfg, repo):
    """Klauss's own files inside the repository (state dir, config file): never "changes"."""
    return [p for p in (_relative_inside(cfg.state_dir, repo), _relative_inside(cfg.config_file, repo)) if p]


def dirty_files(cfg, repo):
    """Uncommitted changes in the user's checkout (Klauss's own state and config left out)."""
    return _status_paths(repo, _klauss_files(cfg, repo))


# --- several hosts: edits travel through a git remote ----------------------------------------------

# On the remote (and mirrored under the same names in each clone), never a user's branch: a base
# commit is kept by its id (pushed before the job is written, so it has no job id yet, and a lone
# task has a base too), a task branch and a job branch under the job.
BASE_REFS = f"refs/{PREFIX}/base"
JOB_REFS = f"refs/{PREFIX}/jobs"
PUSH_RETRIES = 20


def base_ref(commit):
    return f"{BASE_REFS}/{commit}"


def remote_ref(job_id, name):
    """The remote ref of a job's branch `name` ("task-<id>" or "merged")."""
    return f"{JOB_REFS}/{job_id}/{name}"


def job_remote(cfg, *metadata):
    """The git remote a job's (or task's) edits travel through: this host's `[isolation] remote`,
    else the one recorded in the metadata when the work was submitted; None for a one-host job."""
    if not any(isinstance(m, dict) and m.get("remote") for m in metadata):
        return None
    if cfg["isolation"]["remote"]:
        return cfg["isolation"]["remote"]
    recorded = next(m["remote"] for m in metadata if isinstance(m, dict) and m.get("remote"))
    if not config.remote_ok(recorded):  # it reaches git's command line
        raise WorktreeError(f"metadata.remote: expected the name or URL of a git remote, got {recorded!r}; set "
                            "[isolation] remote in .klauss.toml on this host")
    return recorded


def fetch_ref(repo, remote, ref, into=None, **kwargs):
    """Fetch `ref` from `remote` into the local ref `into` (default: the same name; it is a mirror,
    so it is overwritten). Returns the commit it names, or None when the remote has no such ref.
    WorktreeError (retryable) when the remote cannot be reached."""
    into = into or ref
    common = Path(repo) / git(repo, "rev-parse", "--git-common-dir", timeout=60).stdout.strip()  # absolute wins
    # One fetch at a time per clone: workers starting tasks of one job all want the same refs, and
    # git refuses to update a ref another fetch holds locked.
    with _locked(common / "klauss-fetch.lock", keepalive=kwargs.get("keepalive"),
                 every=kwargs.get("every", KEEPALIVE_SECONDS)):
        cp = git(repo, "fetch", "-q", "--no-tags", "--no-write-fetch-head", remote, f"+{ref}:{into}", check=False,
                 **kwargs)
    if cp.returncode != 0:
        text = cp.stderr or cp.stdout
        if "couldn't find remote ref" in text or "could not find remote ref" in text:
            return None
        raise WorktreeError(f"git fetch {remote} {ref} failed in {repo}: {_tail(text) or f'exit {cp.returncode}'}",
                            retryable=True)
    return _rev(repo, into)


ANY = object()


def push_ref(repo, remote, commit, ref, expect=ANY, **kwargs):
    """Set `ref` on `remote` to `commit`, pushing the objects it needs. With `expect` it is a
    compare-and-swap (`--force-with-lease`): the remote ref must still be `expect` (None: must not
    exist yet), and then it is set whatever it was; without it only a fast-forward (or a new ref) is
    accepted. Returns True when the ref is set, False when it moved (another host advanced it, or
    the update is not a fast-forward): fetch and try again. WorktreeError (retryable) otherwise
    (unreachable remote, a remote hook refused it)."""
    args = ["push", "--porcelain", "--no-verify"]
    if expect is not ANY:
        args.append(f"--force-with-lease={ref}:{expect or ''}")
    cp = git(repo, *args, remote, f"{commit}:{ref}", check=False, **kwargs)
    if cp.returncode == 0:
        return True
    for line in (cp.stdout or "").splitlines():
        flag, _, rest = line.partition("\t")
        if flag == "!" and rest.split("\t", 1)[-1].startswith("[rejected]"):
            return False
    raise WorktreeError(f"git push {remote} {ref} failed in {repo}: "
                        f"{_tail((cp.stderr or '') + (cp.stdout or '')) or f'exit {cp.returncode}'}", retryable=True)


def ensure_base(repo, remote, commit, **kwargs):
    """Make the base commit present in this clone, fetching its ref from `remote` when it is not
    (a commit another host made). WorktreeError when the remote does not have it either."""
    if _rev(repo, commit) is None:
        if fetch_ref(repo, remote, base_ref(commit), **kwargs) is None or _rev(repo, commit) is None:
            raise WorktreeError(f"base commit {commit[:12]} is neither in {repo} nor on the remote {remote} "
                                f"({base_ref(commit)}); submit the task again", retryable=False)
    return commit


def publish_base(cfg, repo, commit):
    """At submit: push the base commit to `[isolation] remote`, so every host can start from it
    (even an unpushed local commit). ValueError names the setting when it cannot be pushed."""
    remote = cfg["isolation"]["remote"]
    try:
        push_ref(repo, remote, commit, base_ref(commit), timeout=300)
    except WorktreeError as exc:
        why = " ".join(str(exc).split())  # git's lines, on the one line of the error
        raise ValueError(f"isolation.remote: cannot push the base commit {commit[:12]} to {remote!r} (so other "
                         f"hosts could start from it): {why}; check the remote, or remove [isolation] remote "
                         "from .klauss.toml to run on this host only") from None
    return remote


def sync_branch(repo, branch, commit):
    """Point the local branch at `commit` (a fetched tip) when that loses nothing: the branch is
    missing, or its tip is already in `commit`. Returns False when the branch has commits of its
    own (it is left as it is)."""
    ref = f"refs/heads/{branch}"
    tip = _rev(repo, ref)
    if tip == commit:
        return True
    if tip is not None and git(repo, "merge-base", "--is-ancestor", tip, commit, check=False).returncode != 0:
        return False
    git(repo, "update-ref", "-m", "klauss: fetched from the remote", ref, commit, tip or "")
    return True


def multi_host(cfg, queue):
    """Why the queue counts as shared by several hosts, or None. Observable from here, whatever the
    backend: the remote is configured (`[isolation] remote`: the user says edits travel between
    machines), or workers registered in the queue name another host than this one. A database
    server alone does not count: one machine may well use a team's PostgreSQL."""
    if cfg["isolation"]["remote"]:
        return f"[isolation] remote = {cfg['isolation']['remote']!r} is set"
    here = cfg.host  # as this host's workers record it (KLAUSS_HOST, [pool] host or the hostname, made safe)
    try:
        others = sorted({w["info"].get("host") for w in queue.list_workers() if isinstance(w.get("info"), dict)}
                        - {None, "", here})
    except claude_queue.QueueError:
        others = []
    if others:
        return f"workers of other hosts ({', '.join(map(str, others[:MAX_LISTED]))}) take tasks from this queue"
    return None


def refuse_shared_edits(cfg, queue, entries, job_metadata=None, get_job=None):
    """A task that would edit files in place (no worktree isolation) while several hosts share the
    queue is refused: it would run in whichever host's checkout claims it, and its edits would stay
    on that machine. Read-only tasks (`permission_mode = "plan"`) are fine."""
    if not isinstance(entries, (list, tuple)) or cfg["claude"]["permission_mode"] == "plan":
        return
    why = False  # not looked at yet: only when a task would edit in place
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not isinstance(entry.get("metadata") or {}, dict):
            continue
        jmeta = job_metadata
        if jmeta is None and entry.get("job_id") and get_job is not None:
            job = get_job(entry["job_id"])
            jmeta = job["metadata"] if job else None
        if effective_isolation(cfg, entry.get("metadata") or {}, jmeta) == "worktree":
            continue
        if why is False:
            why = multi_host(cfg, queue)
        if why:
            prefix = f"task {index}: " if len(entries) > 1 else ""
            raise ValueError(f"{prefix}isolation: this task would edit files in place, but several hosts share this "
                             f"queue ({why}): it would run in whichever host's checkout claims it and its edits "
                             "would stay there; use worktree isolation ([isolation] mode = \"worktree\" with "
                             "[isolation] remote, or --isolation worktree), or permission_mode = \"plan\" for "
                             "read-only tasks")


# --- submit time ---------------------------------------------------------------------------------

def _choice(name, value, allowed):
    if value is not None and value not in allowed:
        raise ValueError(f"{name}: expected one of {', '.join(allowed)}, got {value!r}")
    return value


def effective_isolation(cfg, task_metadata=None, job_metadata=None):
    """The task's own choice, else its job's, else `[isolation] mode`."""
    for meta in (task_metadata, job_metadata):
        mode = (meta or {}).get("isolation") if isinstance(meta, dict) else None
        if mode is not None:
            return mode
    return cfg["isolation"]["mode"]


def repo_and_head(cfg):
    """(git top level, HEAD sha) of the project. ValueError when worktree isolation cannot work here."""
    root = Path(cfg.root)
    try:
        top = toplevel(root)
    except WorktreeError as exc:
        raise ValueError(f"isolation: worktree needs git: {exc}") from None
    if top is None:
        raise ValueError(f"isolation: worktree needs a git repository and {root} is not in one; run `git init` "
                         "and commit your files, or use isolation \"none\"")
    head = _rev(top, "HEAD")
    if head is None:
        raise ValueError(f"isolation: the git repository {top} has no commit yet; commit your files first "
                         "(worktree tasks start from HEAD)")
    return top, head


def check_own_repo(cfg, repo, field_name="metadata.repo", top=None):
    """A task works in the project's own git repository, never in another one (where Klauss would
    make worktrees, branches and commits). Returns the repository; ValueError names the field."""
    top = top or toplevel(Path(cfg.root))
    if top is None or not isinstance(repo, str) or Path(repo).resolve() != top:
        raise ValueError(f"{field_name}: {repo!r} is not this project's git repository ({top or 'none'}); a task "
                         f"works only in its project's repository: leave {field_name} out and Klauss fills it in")
    return top


def check_dirty(cfg, repo, head):
    """Apply `[isolation] dirty_policy` to uncommitted changes the worktree tasks would not see."""
    files = dirty_files(cfg, repo)
    if not files:
        return []
    what = (f"{repo} has uncommitted changes that worktree tasks will not see (they start from HEAD "
            f"{head[:12]}): {_listed(files)}")
    if cfg["isolation"]["dirty_policy"] == "refuse":
        raise ValueError(f"isolation: {what}; commit or stash them first, or set [isolation] dirty_policy = "
                         "\"warn\" in .klauss.toml")
    _warn(what + "; commit them first if the tasks need them")
    return files


def job_isolation(cfg, isolation=None, merge=None, metadata=None):
    """The metadata a new job records for its isolation (checked before anything is written):
    {} when the job edits the working tree like the default, else {"isolation", "merge",
    "base_commit", "repo"}. ValueError when worktree isolation cannot work here."""
    metadata = metadata if isinstance(metadata, dict) else {}
    isolation = _choice("isolation", isolation if isolation is not None else metadata.get("isolation"), MODES)
    merge = _choice("merge", merge if merge is not None else metadata.get("merge"), MERGE_MODES)
    mode = isolation or cfg["isolation"]["mode"]
    if mode != "worktree":
        return {"isolation": "none"} if isolation is not None else {}
    repo, head = repo_and_head(cfg)
    check_dirty(cfg, repo, head)
    extra = {"isolation": "worktree", "merge": merge or cfg["isolation"]["merge"], "base_commit": head,
             "repo": str(repo)}
    if cfg["isolation"]["remote"]:
        extra["remote"] = publish_base(cfg, repo, head)
    return extra


def annotate_tasks(cfg, entries, job_metadata=None, get_job=None, cwd=None):
    """Task entries ready to queue: each worktree task whose job does not give it a base commit gets
    its own (`metadata` isolation, base_commit, repo), and every worktree task's working dir must be
    inside the repository. `job_metadata` is the job's (a job being created with the tasks);
    otherwise `get_job(job_id)` looks it up. ValueError names the task and the field."""
    if not isinstance(entries, (list, tuple)):
        return entries
    result, lone, top = [], None, None
    for index, entry in enumerate(entries):
        prefix = f"task {index}: " if len(entries) > 1 else ""
        meta = entry.get("metadata") if isinstance(entry, dict) else None
        if not isinstance(entry, dict) or (meta is not None and not isinstance(meta, dict)):
            result.append(entry)  # the queue's validation names what is wrong
            continue
        meta = meta or {}
        if isinstance(meta.get("repo"), str):
            try:
                top = check_own_repo(cfg, meta["repo"], top=top)
            except (ValueError, WorktreeError) as exc:
                raise ValueError(f"{prefix}{exc}") from None
        own = meta.get("isolation")
        if own is not None and own not in MODES:
            raise ValueError(f"{prefix}metadata.isolation: expected one of {', '.join(MODES)}, got {own!r}")
        jmeta = job_metadata
        if jmeta is None and entry.get("job_id") and get_job is not None:
            job = get_job(entry["job_id"])
            jmeta = job["metadata"] if job else None
        if effective_isolation(cfg, meta, jmeta) != "worktree":
            result.append(entry)
            continue
        if meta.get("repo") and meta.get("base_commit"):
            repo = meta["repo"]
        elif (jmeta or {}).get("isolation") == "worktree" and (jmeta or {}).get("repo"):
            repo = jmeta["repo"]
        else:
            try:
                if lone is None:
                    lone = repo_and_head(cfg)
                    check_dirty(cfg, *lone)
                if cfg["isolation"]["remote"] and len(lone) == 2:
                    lone = (*lone, publish_base(cfg, *lone))
            except ValueError as exc:
                raise ValueError(f"{prefix}{exc}") from None
            repo = str(lone[0])
            extra = {"remote": lone[2]} if len(lone) == 3 else {}
            entry = {**entry, "metadata": {**meta, "isolation": "worktree", "base_commit": lone[1], "repo": repo,
                                           **extra}}
        wd = entry.get("working_dir")
        wd = Path(cfg.root) if wd is None else Path(cwd or os.getcwd()) / Path(str(wd)).expanduser()
        if wd.exists() and wd.resolve() != Path(repo).resolve() and _relative_inside(wd, repo) is None:
            raise ValueError(f"{prefix}working_dir: {entry.get('working_dir')} is outside the git repository {repo}; "
                             "a worktree task can only work inside it (or give it metadata isolation \"none\")")
        result.append(entry)
    return result


# --- in the worker -------------------------------------------------------------------------------

@contextmanager
def _locked(path, keepalive=None, timeout=GIT_TIMEOUT, every=KEEPALIVE_SECONDS):
    """An exclusive lock on `path` (flock), for the merges several workers make at once."""
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        next_beat = time.monotonic() + every
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                now = time.monotonic()
                if now >= deadline:
                    raise WorktreeError(f"waited {timeout:g}s for the merge lock {path}; is a git merge stuck?",
                                        retryable=True) from None
                if now >= next_beat:
                    next_beat = now + every
                    if _lost(keepalive):
                        raise WorktreeError("stopped waiting for the merge lock: this worker no longer holds "
                                            "the task", retryable=True) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _registered(repo):
    """{resolved path: entry} of the repository's worktrees (`git worktree list --porcelain`)."""
    cp = git(repo, "worktree", "list", "--porcelain", timeout=120)
    entries, current = {}, None
    for line in cp.stdout.splitlines() + [""]:
        if not line:
            if current:
                entries[str(Path(current["worktree"]).resolve())] = current
            current = None
            continue
        key, _, value = line.partition(" ")
        if key == "worktree":
            current = {"worktree": value}
        elif current is not None:
            current[key] = value or True
    return entries


def _remove_worktree(repo, path):
    """Remove a worktree (registered, stale or half-made) and prune what git still records of it."""
    path = Path(path)
    git(repo, "worktree", "remove", "--force", "--force", str(path), check=False, timeout=300)
    if path.exists() or path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    git(repo, "worktree", "prune", check=False, timeout=120)


def archive_ref(job_id, name):
    """A new, unique ref under refs/klauss/archive/<job>/ for `name` (a branch's name without its
    klauss/<job>/ prefix)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    return f"{ARCHIVE}/{job_id or 'no-job'}/{name}-{stamp}-{os.urandom(3).hex()}"


def _short_name(branch, job_id):
    for prefix in ((f"{PREFIX}/{job_id}/",) if job_id else ()) + (f"{PREFIX}/",):
        if branch.startswith(prefix):
            return branch[len(prefix):]
    return branch


def save_uncommitted(cfg, repo, path, job_id, onto_branch=True, why="clean-up"):
    """Commit what the worktree at `path` has not committed (tracked and untracked files, .gitignore
    respected, what copy_files and the setup command made left out) before it is removed, so that
    removing it loses nothing. The commit goes on the worktree's branch (`onto_branch`), else (or on
    a detached HEAD) under a new ref in refs/klauss/archive/. Neither the worktree nor its index is
    touched. Returns None when there is nothing to save, else {"path", "commit", "branch", "ref"}.
    WorktreeError when the changes are there and cannot be saved: the worktree must then be kept."""
    path = Path(path)
    entry = _registered(repo).get(str(path.resolve()))
    locked = (entry or {}).get("locked")
    if locked and locked != "initializing":
        raise WorktreeError(f"{path} is locked ({'`git worktree lock`' if locked is True else locked}); "
                            f"unlock it (`git worktree unlock {path}`) to let Klauss remove it")
    # Unregistered, gone, or still being made by `git worktree add` (locked "initializing"): there is
    # no checkout whose changes are the task's (a half-checked-out tree would look like deletions).
    if entry is None or entry.get("prunable") or locked or not (path / ".git").exists():
        return None
    head = _rev(path, "HEAD")
    if head is None:
        return None
    gitdir = Path(git(path, "rev-parse", "--absolute-git-dir").stdout.strip())
    excludes = [n for n in cfg["isolation"]["copy_files"] if not os.path.isabs(n)]
    try:
        excludes += _z((gitdir / EXCLUDE_FILE).read_text())
    except OSError:
        pass
    # A private index: the worktree's own (and whatever a git running there holds) stays as it is.
    index = gitdir / f"klauss-save-{os.getpid()}.index"
    env = {**_git_env(), "GIT_INDEX_FILE": str(index)}
    try:
        if (gitdir / "index").exists():
            shutil.copyfile(gitdir / "index", index)
        else:
            git(path, "read-tree", head, env=env)
        git(path, "add", "-A", "--", ".", *(f":(exclude,literal){p}" for p in excludes), env=env, timeout=300)
        tree = git(path, "write-tree", env=env).stdout.strip()
    except OSError as exc:
        raise WorktreeError(f"cannot read the changes in {path}: {exc}") from None
    finally:
        index.unlink(missing_ok=True)
    if tree == git(path, "rev-parse", f"{head}^{{tree}}").stdout.strip():
        return None
    branch = git(path, "symbolic-ref", "-q", "HEAD", check=False).stdout.strip() or None
    files = _z(git(path, "diff", "--name-only", "-z", "--no-renames", head, tree).stdout)
    commit = git(path, *IDENTITY, *QUIET, "commit-tree", tree, "-p", head,
                 "-m", f"klauss: uncommitted changes saved at {why}",
                 "-m", f"Worktree: {path}\nFiles: {_listed(files)}").stdout.strip()
    if onto_branch and branch:
        git(repo, "update-ref", "-m", f"klauss: uncommitted changes saved at {why}", branch, commit, head)
        return {"path": str(path), "commit": commit, "branch": branch[len("refs/heads/"):], "ref": branch,
                "files": files}
    name = _short_name(branch[len("refs/heads/"):], job_id) if branch else f"{path.name}-uncommitted"
    ref = archive_ref(job_id, name)
    git(repo, "update-ref", "-m", f"klauss: uncommitted changes saved at {why}", ref, commit, "")
    return {"path": str(path), "commit": commit, "branch": None, "ref": ref, "files": files}


def _unmerged(cwd):
    return _z(git(cwd, "diff", "--name-only", "-z", "--diff-filter=U", check=False).stdout)


def prepare_task(cfg, queue, task, job, working_dir, keepalive=None, setup_env=None):
    """Set up the task's worktree when it runs isolated: returns a TaskTree whose `working_dir` is
    where Claude runs, or None when the task edits the working tree directly. `setup_env` goes into
    the setup command's environment (the worker's run marker)."""
    meta = task.metadata or {}
    jmeta = (job or {}).get("metadata") or {}
    mode = effective_isolation(cfg, meta, jmeta)
    if mode == "none":
        return None
    if mode != "worktree":
        raise WorktreeError(f"metadata.isolation: expected none or worktree, got {mode!r}; fix the task and "
                            "submit it again")
    remote = None
    if meta.get("repo") and meta.get("base_commit"):
        repo, base, merge, jbranch = meta["repo"], meta["base_commit"], "branch", None
        where, remote = "metadata", job_remote(cfg, meta)
    elif jmeta.get("isolation") == "worktree" and jmeta.get("repo") and jmeta.get("base_commit"):
        repo, base = jmeta["repo"], jmeta["base_commit"]
        merge = jmeta.get("merge") or "auto"
        jbranch = job_branch(job["id"])
        where, remote = "the job's metadata", job_remote(cfg, jmeta)
    else:
        where = None
        # Isolated by configuration alone (queued without going through Klauss's submit checks):
        # start from the repository's HEAD now, and leave the branch for review.
        try:
            top, base = repo_and_head(cfg)
        except ValueError as exc:
            raise WorktreeError(str(exc)) from None
        repo, merge, jbranch = str(top), "branch", None
    submitted = None
    if where is not None and remote:
        # Edits travel through the remote: each host works in its own clone of the project, and the
        # recorded repository is the submitting host's (only its paths are read against it).
        submitted, top = repo, toplevel(cfg.root)
        if top is None:
            raise WorktreeError(f"{cfg.root} is not a git repository: clone the project here to run its tasks")
        repo = str(top)
    elif where is not None:  # checked at submit; again here for whatever was queued some other way
        try:
            check_own_repo(cfg, repo, f"{where}.repo")
        except ValueError as exc:
            raise WorktreeError(f"{exc}; submit the task again from the project") from None
        if not isinstance(base, str) or not re.fullmatch(r"[0-9a-f]{7,64}", base):
            raise WorktreeError(f"{where}.base_commit: expected a commit id (hex), got {base!r}; submit the task "
                                "again from the project")
    tree = TaskTree(cfg, queue, task, Path(repo), base, merge, jbranch, keepalive)
    tree.remote, tree.submitted_repo = remote, submitted
    tree.setup_env = dict(setup_env or {})
    try:
        return tree.create(working_dir)
    except OSError as exc:
        raise WorktreeError(f"could not set up the worktree {tree.path}: {exc}", retryable=True) from None


class TaskTree:
    """One task's worktree for the length of a run: made by `create`, committed by `finish`,
    merged by `merge`."""

    def __init__(self, cfg, queue, task, repo, base, merge, jbranch, keepalive=None):
        self.cfg, self.queue, self.task = cfg, queue, task
        self.repo, self.base, self.merge_mode, self.job_branch = repo, base, merge, jbranch
        self.keepalive = keepalive
        self.every = max(0.05, cfg.heartbeat_interval)
        self.dir = worktrees_dir(cfg)
        self.path = self.dir / f"task-{task.id}"
        self.branch = task_branch(task.id, task.job_id)
        self.starts = [base]  # the task's own work is what its branch has beyond these commits
        self.exclude = []     # what copy_files and the setup command made: never committed
        self.working_dir = None
        self.setup_env = {}
        self.error = None
        self.commit = None
        self.remote = None          # the git remote the work travels through (several hosts)
        self.submitted_repo = None  # with a remote: the submitting host's clone, where paths were recorded
        self.remote_tip = None      # the task branch on the remote when this attempt started

    def _git(self, cwd, *args, **kwargs):
        kwargs.setdefault("keepalive", self.keepalive)
        kwargs.setdefault("every", self.every)
        return git(cwd, *args, **kwargs)

    def create(self, working_dir):
        repo, tid = self.repo, self.task.id
        if not repo.is_dir() or toplevel(repo) is None:
            raise WorktreeError(f"the job's git repository {repo} is gone or no longer a repository; "
                                "submit the task again from the project")
        if self.remote:
            ensure_base(repo, self.remote, self.base, keepalive=self.keepalive, every=self.every)
        if _rev(repo, self.base) is None:
            raise WorktreeError(f"base commit {self.base[:12]} is not in {repo}; submit the task again")
        rel = _relative_inside(working_dir, repo)
        if rel is None and self.submitted_repo and Path(working_dir).resolve() != repo.resolve():
            # A path of the submitting host's clone: the same place in this one.
            rel = _relative_inside(working_dir, self.submitted_repo)
            if rel is None and Path(working_dir).resolve() == Path(self.submitted_repo).resolve():
                working_dir = repo
        if rel is None and Path(working_dir).resolve() != repo.resolve():
            raise WorktreeError(f"working dir {working_dir} is outside the git repository {repo}; give the task "
                                "a working dir inside it, or metadata isolation \"none\"")
        worktrees_dir(self.cfg, create=True)
        # A crashed attempt may have left its worktree (or half of one): start clean, its uncommitted
        # edits kept under refs/klauss/archive/ (this attempt starts from the branch, as before).
        saved = save_uncommitted(self.cfg, repo, self.path, self.task.job_id, onto_branch=False,
                                 why=f"the start of attempt {self.task.attempt} of task {tid}")
        if saved:
            _warn(f"task {tid}: the previous attempt's uncommitted changes in {self.path} are saved as "
                  f"{saved['ref']} ({_listed(saved['files'])})")
        _remove_worktree(repo, self.path)
        if self.remote and self.task.attempt > 1:
            self._continue_from_remote()
        existing = _rev(repo, f"refs/heads/{self.branch}")
        deps = self._dependency_commits()
        start = self._integration_start()
        if start is not None:  # a fix-up or resolution task of the merge queue (integration.py)
            deps = [(None, start["commit"])]
        self.starts += [c for _, c in deps]
        if existing is not None:
            if self.task.attempt <= 1:
                raise WorktreeError(f"branch {self.branch} already exists but task {tid} has not run before (left "
                                    f"from another database?); delete it (`git branch -D {self.branch}`) or rename "
                                    f"it, then retry the task (`{hints.command('retry', tid, cwd=self.cfg.root)}`)")
            # An earlier attempt's work is on the branch: this attempt goes on from there.
            self._add(repo, "worktree", "add", str(self.path), self.branch)
        elif len(deps) == 1:
            self._add(repo, "worktree", "add", "-b", self.branch, str(self.path), deps[0][1])
        else:
            self._add(repo, "worktree", "add", "-b", self.branch, str(self.path), self.base)
            for dep_id, commit in deps:
                self._merge_dependency(dep_id, commit, deps)
        self.working_dir = self.path / rel if rel else self.path
        self.working_dir.mkdir(parents=True, exist_ok=True)
        self._copy_files()
        self._setup()
        self.exclude = sorted(set(self.exclude) | set(_status_paths(self.path)))
        gitdir = Path(self._git(self.path, "rev-parse", "--absolute-git-dir").stdout.strip())
        (gitdir / EXCLUDE_FILE).write_text("".join(f"{p}\0" for p in self.exclude))  # for save_uncommitted
        if start is not None and start.get("merge") and existing is None:
            # A resolution task works in the conflicted merge: `finish` commits it as the merge commit.
            self._git(self.path, *IDENTITY, *QUIET, "merge", "--no-ff", "--no-commit", start["merge"], check=False)
        return self

    def _integration_start(self):
        """{"commit", "merge"} where the merge queue starts a fix-up or resolution task, or None."""
        start = (self.task.metadata or {}).get("klauss_start")
        if not isinstance(start, dict):
            return None
        for key in ("commit", "merge"):
            value = start.get(key)
            if value is not None and (not isinstance(value, str) or not re.fullmatch(r"[0-9a-f]{7,64}", value)):
                raise WorktreeError(f"metadata.klauss_start.{key}: {value!r} is not a commit of {self.repo}")
            if value is not None and self.remote and _rev(self.repo, value) is None:
                # Made by the merge queue on another host, which pushed it under refs/klauss/base/.
                fetch_ref(self.repo, self.remote, base_ref(value), keepalive=self.keepalive, every=self.every)
            if value is not None and _rev(self.repo, value) is None:
                raise WorktreeError(f"metadata.klauss_start.{key}: {value!r} is not a commit of {self.repo}")
        return start if start.get("commit") else None

    def _continue_from_remote(self):
        """An earlier attempt may have run on another host: its work (pushed whatever its outcome)
        is where this attempt goes on from. Local commits the remote lacks are kept under
        refs/klauss/archive/ when the two have gone separate ways."""
        name = remote_ref(self.task.job_id or "no-job", f"task-{self.task.id}")
        tip = fetch_ref(self.repo, self.remote, name, keepalive=self.keepalive, every=self.every)
        self.remote_tip = tip
        if tip is None or sync_branch(self.repo, self.branch, tip):
            return
        ref = f"refs/heads/{self.branch}"
        mine = _rev(self.repo, ref)
        if git(self.repo, "merge-base", "--is-ancestor", tip, mine, check=False).returncode == 0:
            return  # this clone is ahead (its last push did not get through): go on from it
        kept = archive_ref(self.task.job_id, _short_name(self.branch, self.task.job_id))
        self._git(self.repo, "update-ref", "-m", "klauss: kept before taking the remote's attempt", kept, mine, "")
        self._git(self.repo, "update-ref", "-m", "klauss: the remote's attempt", ref, tip, mine)
        _warn(f"task {self.task.id}: {self.branch} here and on {self.remote} went separate ways; going on from the "
              f"remote's, this clone's kept as {kept}")

    def publish(self, outcome):
        """Push the task branch to the remote (whatever the run's outcome), so other hosts see the
        work. A remote branch that moved meanwhile (another attempt pushed) is not overwritten: this
        attempt's work goes to an archive ref there instead. Records `remote_error` on failure."""
        if not self.remote or not self.commit:
            return True
        name = remote_ref(self.task.job_id or "no-job", f"task-{self.task.id}")
        try:
            if push_ref(self.repo, self.remote, self.commit, name, expect=self.remote_tip,
                        keepalive=self.keepalive, every=self.every):
                self.remote_tip = self.commit
                outcome["remote_ref"] = name
                return True
            kept = archive_ref(self.task.job_id, f"task-{self.task.id}")
            push_ref(self.repo, self.remote, self.commit, kept, expect=None, keepalive=self.keepalive, every=self.every)
            outcome["remote_ref"] = kept
            outcome.setdefault("warnings", []).append(
                f"{name} on {self.remote} moved while this attempt ran; its work is pushed as {kept}")
            return True
        except WorktreeError as exc:
            outcome["remote_error"] = (f"could not push {self.branch} to {self.remote}: {exc}; the work is safe on "
                                       f"branch {self.branch} in {self.repo}")
            return False

    def _add(self, repo, *args):
        try:
            self._git(repo, *args)
        except WorktreeError as exc:
            hint = ""
            if "already checked out" in str(exc) or "is already used by worktree" in str(exc):
                hint = (f"; branch {self.branch} is checked out elsewhere: switch that checkout to another "
                        f"branch, then retry task {self.task.id}")
            raise WorktreeError(f"could not create the worktree {self.path}: {exc}{hint}",
                                retryable=exc.retryable) from None

    def _dependency_commits(self):
        """[(task id, commit)] of the dependencies that ran in worktrees of this repository."""
        full = self.queue.get_task(self.task.id)
        found = []
        for dep_id in (full.depends_on if full else None) or []:
            dep = self.queue.get_task(dep_id)
            outcome = (dep.outcome if dep else None) or {}
            commit = None
            recorded = outcome.get("commit")
            if self.remote and (outcome.get("branch") or recorded):
                # It may have run on another host: the commit it recorded, fetched when not here yet
                # (this clone's branch of the same name may be an older attempt's).
                if not (recorded and _rev(self.repo, recorded)):
                    fetched = fetch_ref(self.repo, self.remote, outcome.get("remote_ref")
                                        or remote_ref(dep.job_id or "no-job", f"task-{dep_id}"),
                                        keepalive=self.keepalive, every=self.every)
                    commit = fetched if not recorded else None
            elif outcome.get("branch"):
                commit = _rev(self.repo, f"refs/heads/{outcome['branch']}")
            if commit is None and outcome.get("commit"):
                commit = _rev(self.repo, outcome["commit"])
            if commit is not None:
                found.append((dep_id, commit))
        return found

    def _merge_dependency(self, dep_id, commit, deps):
        cp = self._git(self.path, *IDENTITY, *QUIET, "merge", "--no-edit", "-m",
                       f"klauss: task {self.task.id}: start from dependency #{dep_id}", commit, check=False)
        if cp.returncode == 0:
            return
        files = _unmerged(self.path)
        git(self.path, "merge", "--abort", check=False)
        _remove_worktree(self.repo, self.path)
        # Safe: the branch was made just now, from commits its dependencies' branches still reach.
        git(self.repo, "branch", "-D", self.branch, check=False)
        names = " and ".join(f"#{d} ({task_branch(d, self.task.job_id)})" for d, _ in deps)
        if not files:
            raise WorktreeError(f"could not merge dependency #{dep_id} into {self.branch}: "
                                f"{_tail(cp.stderr or cp.stdout)}", retryable=True)
        raise WorktreeError(f"the work of dependencies {names} conflicts in {_listed(files)}; merge them by hand "
                            f"into a branch named {self.branch} (e.g. `git branch {self.branch} "
                            f"{task_branch(deps[0][0], self.task.job_id)}`, check it out and `git merge` the "
                            f"others), then retry task {self.task.id} "
                            f"(`{hints.command('retry', self.task.id, cwd=self.cfg.root)}`)")

    def _copy_files(self):
        for name in self.cfg["isolation"]["copy_files"]:
            src = self.repo / name
            # Checked by name, not resolved: an .env that is a symlink to a file kept elsewhere is fine
            # (its content is copied).
            rel = os.path.relpath(os.path.normpath(src), os.path.normpath(self.repo))
            if os.path.isabs(name) or rel == "." or rel == ".." or rel.startswith(".." + os.sep):
                raise WorktreeError(f"[isolation] copy_files: {name} is not inside the repository {self.repo}; "
                                    "list paths relative to the project root")
            if not src.exists():
                continue  # e.g. an .env that only some checkouts have
            dst = self.path / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                if src.is_dir():
                    shutil.copytree(src, dst, symlinks=True, dirs_exist_ok=True)
                else:
                    shutil.copy2(src, dst)
            except OSError as exc:
                raise WorktreeError(f"[isolation] copy_files: cannot copy {name} into {self.path}: "
                                    f"{exc.strerror or exc}", retryable=True) from None
            self.exclude.append(rel)

    def _setup(self):
        argv = list(self.cfg["isolation"]["setup_command"])
        if not argv:
            return
        env = {**os.environ, **self.setup_env, "KLAUSS_TASK_ID": str(self.task.id), "KLAUSS_WORKTREE": str(self.path)}
        timeout = self.task.timeout or self.cfg["claude"]["timeout"]
        shown = " ".join(argv)
        try:
            # Named where `status`, the dashboard and a dead worker's task error can show it.
            self.queue.set_activity(self.task.id, self.task.worker_id, f"[isolation] setup_command `{shown}`",
                                    attempt=self.task.attempt)
        except claude_queue.QueueError:
            pass
        try:
            cp = _run(argv, self.path, timeout=timeout, keepalive=self.keepalive, every=self.every, env=env,
                      group=True)
        except WorktreeError as exc:
            retryable = "cannot run" not in str(exc)
            raise WorktreeError(f"[isolation] setup_command `{shown}` failed in {self.path}: {exc}; fix it in "
                                ".klauss.toml", retryable=retryable) from None
        if cp.returncode != 0:
            output = _tail((cp.stdout or "") + (cp.stderr or ""))
            raise WorktreeError(f"[isolation] setup_command `{shown}` exited with {cp.returncode} in {self.path}"
                                + (f"; output: {output}" if output else "") + "; fix the command or the project "
                                "so it succeeds in a fresh checkout", retryable=True)

    def finish(self, outcome):
        """Commit everything the run changed on the task branch (if anything did) and record the
        worktree fields in `outcome`. A failure is recorded, not raised (see `merge`)."""
        fields = {"worktree": str(self.path), "branch": self.branch, "commit": None, "files_changed": [],
                  "merge": "none", "conflicts": []}
        try:
            gitdir = Path(self._git(self.path, "rev-parse", "--absolute-git-dir").stdout.strip())
            lock = gitdir / "index.lock"
            if lock.exists():  # left by a git command Claude ran; its whole process group is gone now
                lock.unlink()
            self._git(self.path, "add", "-A", "--", ".", *(f":(exclude,literal){p}" for p in self.exclude))
            if self._git(self.path, "diff", "--cached", "--quiet", check=False).returncode == 1:
                title = task_report.shorten(task_report.opening_line(self.task.prompt), 72)
                body = (f"Job: {self.task.job_id}\n" if self.task.job_id else "") + f"Attempt: {self.task.attempt}"
                self._git(self.path, *IDENTITY, *QUIET, "commit", "-q", "--no-verify",
                          "-m", f"klauss: task {self.task.id}: {title}", "-m", body)
            self.commit = self._git(self.path, "rev-parse", "HEAD").stdout.strip()
            fields["commit"] = self.commit
            names = self._git(self.path, "log", "--format=", "--name-only", "-z", "--no-renames", self.commit,
                              "--not", *self.starts, "--").stdout
            fields["files_changed"] = sorted(set(_z(names.replace("\n", "\0"))))
        except (WorktreeError, OSError) as exc:
            self.error = f"could not commit the task's changes in {self.path}: {exc}"
            fields["worktree_error"] = self.error
        outcome.update(fields)
        self.publish(outcome)

    def merge(self, outcome):
        """After a successful run: merge the task branch into the job branch (merge = "auto") or
        leave it for review. Returns an error message when the work could not be committed (the
        task should not count as done), else None; a merge conflict still counts as done."""
        if self.error:
            return self.error
        if outcome.get("remote_error"):
            return outcome["remote_error"]  # done only once the other hosts can see it: run it again
        if self.merge_mode != "auto" or not self.job_branch:
            outcome["merge"] = "branch"
            return None
        title = task_report.shorten(task_report.opening_line(self.task.prompt), 72)
        try:
            with _locked(self.dir / ".merge.lock", keepalive=self.keepalive, every=self.every):
                try:
                    outcome.update(self._merge_into_job_branch(f"klauss: merge task {self.task.id}: {title}"))
                except WorktreeError:
                    # Once more from a fresh merge worktree: whatever an interrupted git left in the
                    # old one must not fail every later merge of the job.
                    _remove_worktree(self.repo, self.dir / f"merged-{self.task.job_id}")
                    outcome.update(self._merge_into_job_branch(f"klauss: merge task {self.task.id}: {title}"))
        except WorktreeError as exc:
            outcome["merge"] = "error"
            outcome.setdefault("warnings", []).append(
                f"could not merge into {self.job_branch}: {exc}; the work is safe on branch {self.branch}")
        return None

    def _clear_stale_locks(self, mpath):
        """Remove the lock files a git killed mid-command (with its worker) left in the job's merge
        worktree and on the job branch. Only called under the merge flock: every git that works
        there is ours and runs under that lock, so none is alive now."""
        gitdir = Path(self._git(mpath, "rev-parse", "--absolute-git-dir").stdout.strip())
        common = mpath / self._git(mpath, "rev-parse", "--git-common-dir").stdout.strip()  # absolute wins in /
        for lock in (gitdir / "index.lock", gitdir / "HEAD.lock", common / "refs" / "heads" / f"{self.job_branch}.lock"):
            try:
                lock.unlink()
                _warn(f"removed {lock}, left by an interrupted git")
            except FileNotFoundError:
                pass

    def _merge_into_job_branch(self, message):
        if not self.remote:
            return self._merge_at(message, None)
        # The job branch lives on the remote; hosts advance it by compare-and-swap, and one that
        # lost the race fetches the new tip and merges again.
        name = remote_ref(self.task.job_id, "merged")
        for _ in range(PUSH_RETRIES):
            tip = fetch_ref(self.repo, self.remote, name, keepalive=self.keepalive, every=self.every)
            result = self._merge_at(message, tip, name)
            if result is not None:
                return result
        raise WorktreeError(f"{name} on {self.remote} moved at each of {PUSH_RETRIES} tries", retryable=True)

    def _merge_at(self, message, remote_tip, remote_name=None):
        """Merge the task's commit into the job branch at its tip (with a remote: `remote_tip`, the
        fetched one, and the result pushed there). None when the remote branch moved meanwhile."""
        repo, ref = self.repo, f"refs/heads/{self.job_branch}"
        tip = remote_tip if remote_name else _rev(repo, ref)
        if tip is None and not remote_name:
            self._git(repo, "update-ref", "-m", "klauss: job branch", ref, self.base, "")
        tip = tip or self.base
        mpath = self.dir / f"merged-{self.task.job_id}"
        entry = _registered(repo).get(str(mpath.resolve()))
        if entry is None or entry.get("prunable") or not (mpath / ".git").exists():
            _remove_worktree(repo, mpath)
            # Detached: the job branch is moved by update-ref, so it is never "checked out" and the
            # user can look at it, or check it out, freely.
            self._git(repo, "worktree", "add", "--detach", str(mpath), tip)
        self._clear_stale_locks(mpath)
        self._git(mpath, "merge", "--abort", check=False)
        self._git(mpath, "reset", "-q", "--hard")
        self._git(mpath, "clean", "-qfd")
        self._git(mpath, "checkout", "-q", "--detach", tip)
        cp = self._git(mpath, *IDENTITY, *QUIET, "merge", "--no-ff", "--no-edit", "-m", message, self.commit,
                       check=False)
        if cp.returncode == 0:
            new = self._git(mpath, "rev-parse", "HEAD").stdout.strip()
            if remote_name:
                if (new != tip or remote_tip is None) and not push_ref(
                        repo, self.remote, new, remote_name, expect=remote_tip, keepalive=self.keepalive,
                        every=self.every):
                    return None
                # This clone's copy follows the remote's (it is only moved here, under the merge lock).
                self._git(repo, "update-ref", "-m", message, ref, new)
            elif new != tip:
                self._git(repo, "update-ref", "-m", message, ref, new, tip)
            return {"merge": "merged", "merged_into": self.job_branch, "merge_commit": new, "conflicts": []}
        files = _unmerged(mpath)
        self._git(mpath, "merge", "--abort", check=False)
        self._git(mpath, "reset", "-q", "--hard")
        if not files:
            raise WorktreeError(f"git merge failed: {_tail(cp.stderr or cp.stdout)}")
        return {"merge": "conflict", "conflicts": files, "merged_into": None}


# --- after the job: merge, list, clean -----------------------------------------------------------

def _user_identity(repo):
    """-c options for the user's own merge commit, only where the user has no identity set."""
    args = []
    for key, env_names, fallback in (("user.name", ("GIT_COMMITTER_NAME",), "Klauss"),
                                     ("user.email", ("GIT_COMMITTER_EMAIL", "EMAIL"), "klauss@localhost")):
        if any(os.environ.get(n) for n in env_names):
            continue
        if git(repo, "config", key, check=False).stdout.strip():
            continue
        args += ["-c", f"{key}={fallback}"]
    return args


def merge_job(cfg, queue, job_id, force=False):
    """Merge a worktree job's work into the user's current branch: the job branch (merge = "auto"),
    or each completed task's branch in task order, stopping at the first conflict (merge = "branch").
    A conflict is aborted, leaving the user's tree as it was. Returns a report dict with `status`
    "merged", "conflict" or "nothing"."""
    job = queue.get_job(job_id)
    if job is None:
        raise ValueError(f"job_id: unknown job {job_id!r}")
    meta = job["metadata"]
    if meta.get("isolation") != "worktree":
        raise ValueError(f"job {job_id} does not use worktree isolation: its tasks edited the working tree "
                         "directly, so there is nothing to merge")
    remote = job_remote(cfg, meta)
    repo = Path(meta["repo"]) if not remote else _project_repo(cfg)
    if toplevel(repo) is None:
        raise WorktreeError(f"the job's git repository {repo} is gone")
    if not remote:
        check_own_repo(cfg, meta["repo"], "the job's metadata.repo")
    tasks = queue.list_tasks(job_id=job_id, order="asc")
    running = [t.id for t in tasks if t.status in ("pending", "in_progress")]
    if running and not force:
        raise WorktreeError(f"job {job_id} is not finished ({len(running)} task(s) pending or running: "
                            f"{', '.join('#%d' % t for t in running[:MAX_LISTED])}); wait for it, or use --force "
                            "to merge what is done so far")
    into = git(repo, "symbolic-ref", "-q", "--short", "HEAD", check=False).stdout.strip()
    if not into:
        raise WorktreeError(f"HEAD in {repo} is detached; check out the branch to merge into, then merge again")
    # Only changes to tracked files would mix with the merge; an untracked file is left alone,
    # unless the merge brings a file of the same name (checked below, once the sources are known).
    dirty = _status_paths(repo, _klauss_files(cfg, repo), untracked="no")
    if dirty:
        raise WorktreeError(f"{repo} has uncommitted changes: {_listed(dirty)}; commit or stash them first, so "
                            "the merge does not mix with them")
    merge_mode = meta.get("merge") or "auto"
    not_merged = []
    if remote:
        _fetch_job(repo, remote, job_id, merge_mode, tasks)
    if merge_mode == "auto":
        jb = job_branch(job_id)
        sources = [(jb, None)] if _rev(repo, f"refs/heads/{jb}") else []
        for t in tasks:
            o = t.outcome or {}
            if t.status == "completed" and o.get("branch") and o.get("merge") != "merged":
                not_merged.append({"task": t.id, "branch": o["branch"], "merge": o.get("merge"),
                                   "conflicts": o.get("conflicts") or []})
    else:
        sources = []
        for t in tasks:
            o = t.outcome or {}
            if t.status == "completed" and o.get("branch"):
                if _rev(repo, f"refs/heads/{o['branch']}"):
                    sources.append((o["branch"], t.id))
                else:
                    not_merged.append({"task": t.id, "branch": o["branch"], "merge": "branch deleted",
                                       "conflicts": []})
    in_the_way = _untracked_overwritten(repo, [ref for ref, _ in sources])
    if in_the_way:
        raise WorktreeError(f"the merge would overwrite untracked files in {repo}: {_listed(in_the_way)}; "
                            "move them away (or commit them) first, then merge again")
    identity = _user_identity(repo)
    title = task_report.shorten(task_report.opening_line(job["description"]), 72)
    report = {"job_id": job_id, "repo": str(repo), "into": into, "status": "nothing", "merged": [],
              "conflict_branch": None, "conflicts": [], "not_merged": not_merged}
    for ref, tid in sources:
        what = f"task {tid} of job {job_id}" if tid else f"job {job_id}"
        cp = git(repo, *identity, "merge", "--no-ff", "--no-edit", "-m", f"klauss: merge {what}: {title}", ref,
                 check=False)
        if cp.returncode == 0:
            report["merged"].append(ref)
            report["status"] = "merged"
            continue
        files = _unmerged(repo)
        if git(repo, "merge", "--abort", check=False).returncode != 0:
            git(repo, "reset", "-q", "--merge", check=False)
        if not files:
            raise WorktreeError(f"git merge {ref} into {into} failed (your branch is as it was): "
                                f"{_tail(cp.stderr or cp.stdout)}")
        report.update(status="conflict", conflict_branch=ref, conflicts=files)
        break
    report["head"] = _rev(repo, "HEAD")
    if report["merged"]:
        queue.update_job_metadata(job_id, {"merged_into": into, "merged_at": time.time(),
                                           "merged_head": report["head"]})
    return report


def _fetch_job(repo, remote, job_id, merge_mode, tasks):
    """Bring a job's branches from the remote (where the hosts pushed them) into this clone: the
    job branch (merge = "auto"), or each completed task's branch. A local branch with commits of
    its own is left as it is, and the fetched work stays reachable under refs/klauss/jobs/."""
    if merge_mode == "auto":
        wanted = [(remote_ref(job_id, "merged"), job_branch(job_id))]
    else:
        wanted = [((t.outcome or {}).get("remote_ref") or remote_ref(job_id, f"task-{t.id}"), t.outcome["branch"])
                  for t in tasks if t.status == "completed" and (t.outcome or {}).get("branch")]
    for name, branch in wanted:
        try:
            tip = fetch_ref(repo, remote, name)
        except WorktreeError as exc:
            raise WorktreeError(f"cannot fetch job {job_id}'s work from {remote}: {exc}") from None
        if tip is not None and not sync_branch(repo, branch, tip):
            _warn(f"{branch} here has commits that {name} on {remote} lacks; merging this clone's {branch}")


def _untracked_overwritten(repo, refs):
    """Untracked (not ignored) files that merging `refs` would write over, which git refuses."""
    incoming = set()
    for ref in refs:
        incoming.update(_z(git(repo, "diff", "--name-only", "-z", "--no-renames", f"HEAD...{ref}", check=False).stdout))
    if not incoming:
        return []
    untracked = _z(git(repo, "ls-files", "-z", "--others", "--exclude-standard", check=False).stdout)
    return sorted(incoming.intersection(untracked))


def describe_merge(report):
    """(lines, ok) telling the user what `merge_job` did and what is left to do by hand."""
    into, lines = report["into"], []
    if report["status"] == "nothing" and not report["not_merged"]:
        lines.append(f"nothing to merge: job {report['job_id']} has no completed work on a branch")
    for ref in report["merged"]:
        lines.append(f"merged {ref} into {into}")
    if report["status"] == "conflict":
        lines.append(f"error: merging {report['conflict_branch']} into {into} conflicts in "
                     f"{_listed(report['conflicts'])}; the merge was aborted and {into} is as it was. Merge it by "
                     f"hand (`git merge {report['conflict_branch']}`, resolve the conflicts, commit), then run "
                     f"`{hints.command('merge', report['job_id'])}` again for the rest")
    for t in report["not_merged"]:
        why = t["merge"] + (f" in {_listed(t['conflicts'])}" if t["conflicts"] else "")
        lines.append(f"task #{t['task']} is not in the job branch ({why}); its work is on {t['branch']}: merge it "
                     f"by hand (`git merge {t['branch']}`) and resolve the conflicts")
    return lines, report["status"] != "conflict"


_TASK_DIR = re.compile(r"task-(\d+)")
_MERGE_DIR = re.compile(r"merged-(.+)")


def _project_repo(cfg):
    try:
        top = toplevel(cfg.root)
    except WorktreeError as exc:
        raise ValueError(f"worktrees need git: {exc}") from None
    if top is None:
        raise ValueError(f"{cfg.root} is not in a git repository, so it has no worktrees")
    return top


def list_worktrees(cfg, queue, job_id=None):
    """Klauss's worktrees of this project (task worktrees and job merge worktrees), oldest task
    first: dicts with kind, path, branch, head, task_id, job_id, status, registered."""
    repo = _project_repo(cfg)
    base = worktrees_dir(cfg).resolve() if worktrees_dir(cfg).exists() else worktrees_dir(cfg)
    found = {}
    for path, entry in _registered(repo).items():
        if Path(path).parent == base:
            found[path] = entry
    if base.is_dir():
        for child in base.iterdir():
            if child.is_dir() and str(child.resolve()) not in found and (
                    _TASK_DIR.fullmatch(child.name) or _MERGE_DIR.fullmatch(child.name)):
                found[str(child.resolve())] = None
    rows = []
    for path, entry in found.items():
        name = Path(path).name
        row = {"path": path, "registered": entry is not None, "prunable": bool(entry and entry.get("prunable")),
               "head": (entry or {}).get("HEAD"), "branch": None, "task_id": None, "job_id": None}
        ref = (entry or {}).get("branch")
        if isinstance(ref, str):
            row["branch"] = ref[len("refs/heads/"):] if ref.startswith("refs/heads/") else ref
        task_match, merge_match = _TASK_DIR.fullmatch(name), _MERGE_DIR.fullmatch(name)
        if task_match:
            task = queue.get_task(int(task_match.group(1)))
            row.update(kind="task", task_id=int(task_match.group(1)), job_id=task.job_id if task else None,
                       status=task.status if task else "unknown")
        elif merge_match:
            job = queue.get_job(merge_match.group(1))
            stats = job["stats"] if job else None
            row.update(kind="merge", job_id=merge_match.group(1), branch=job_branch(merge_match.group(1)),
                       status="unknown" if job is None else (
                           "running" if stats["pending"] + stats["in_progress"] else "finished"))
        else:
            continue
        if not row["registered"]:
            row["status"] += " (stale)"
        if job_id is None or row["job_id"] == job_id:
            rows.append(row)
    rows.sort(key=lambda r: (r["kind"] != "task", r["task_id"] or 0, r["path"]))
    return rows


_BRANCHES = (re.compile(rf"{PREFIX}/(?P<job>[^/]+)/task-(?P<task>\d+)"), re.compile(rf"{PREFIX}/(?P<job>[^/]+)/merged"),
             re.compile(rf"{PREFIX}/task-(?P<task>\d+)"))


def _branch_owner_finished(queue, name, job_id):
    """(finished?, reason kept) for a Klauss branch name, or None when it is not one of this database's."""
    for pattern in _BRANCHES:
        m = pattern.fullmatch(name)
        if not m:
            continue
        groups = m.groupdict()
        job = groups.get("job")
        if job_id is not None and job != job_id:
            return None
        if groups.get("task"):
            task = queue.get_task(int(groups["task"]))
            if task is not None and task.job_id != job:
                return None  # the same id in another database
            if task is None:
                return (True, None) if job and queue.get_job(job) else None
            return (task.status in claude_queue.FINISHED, f"task #{task.id} is {task.status}")
        record = queue.get_job(job)
        if record is None:
            return None
        stats = record["stats"]
        return (stats["pending"] + stats["in_progress"] == 0, f"job {job} is still running")
    return None


def _branch_job(name):
    for pattern in _BRANCHES:
        m = pattern.fullmatch(name)
        if m:
            return m.groupdict().get("job")
    return None


def clean_worktrees(cfg, queue, job_id=None, branches=False, force=False):
    """Remove the worktrees of finished tasks (and the merge worktrees of finished jobs), their
    uncommitted changes first committed on their branch; with `branches`, also delete the branches
    whose work is in the current branch or in their job branch. An unmerged branch is kept, or with
    `force` archived under refs/klauss/archive/ and then deleted: no commit is lost either way.
    Returns {"removed", "kept", "saved", "branches_deleted", "branches_archived", "branches_kept"}."""
    repo = _project_repo(cfg)
    report = {"removed": [], "kept": [], "saved": [], "branches_deleted": [], "branches_archived": [],
              "branches_kept": []}
    for row in list_worktrees(cfg, queue, job_id):
        status = row["status"].replace(" (stale)", "")
        done = status in (*claude_queue.FINISHED, "unknown", "finished")
        if not done:
            owner = f"task #{row['task_id']}" if row["task_id"] else f"job {row['job_id']}"
            report["kept"].append({"path": row["path"], "reason": f"{owner} is {status}"})
            continue
        try:
            saved = save_uncommitted(cfg, repo, row["path"], row["job_id"], onto_branch=row["kind"] == "task")
        except WorktreeError as exc:
            report["kept"].append({"path": row["path"], "reason": f"its uncommitted changes could not be saved "
                                   f"({exc}); commit or copy them, then clean again"})
            continue
        if saved:
            report["saved"].append(saved)
        _remove_worktree(repo, row["path"])
        report["removed"].append(row["path"])
    git(repo, "worktree", "prune", check=False)
    if not branches:
        return report
    head = _rev(repo, "HEAD")
    checked_out = {e.get("branch") for e in _registered(repo).values() if isinstance(e.get("branch"), str)}
    refs = git(repo, "for-each-ref", "--format=%(refname)", f"refs/heads/{PREFIX}/").stdout.split()
    for ref in refs:
        name = ref[len("refs/heads/"):]
        owner = _branch_owner_finished(queue, name, job_id)
        if owner is None:
            continue
        finished, why = owner
        if not finished:
            report["branches_kept"].append({"branch": name, "reason": why})
            continue
        if ref in checked_out:
            report["branches_kept"].append({"branch": name, "reason": "checked out in a worktree"})
            continue
        tip = _rev(repo, ref)
        if tip is None:
            continue
        job = _branch_job(name)
        # Merged = reached by the user's branch, or by the job branch (kept, or archived below when
        # it is not merged itself), so deleting the name loses no commit.
        keepers = [(head, "your current branch")]
        jb = job_branch(job) if job else None
        if jb and jb != name:
            keepers.append((_rev(repo, f"refs/heads/{jb}"), jb))
        merged = any(k is not None and git(repo, "merge-base", "--is-ancestor", tip, k, check=False).returncode == 0
                     for k, _ in keepers)
        archived = None
        if not merged:
            if not force:
                where = " nor in ".join(w for k, w in keepers if k is not None) or "any kept branch"
                cmd = hints.command("clean-worktrees", *(("--job", job) if job else ()), "--branches", "--force",
                                    cwd=cfg.root)
                report["branches_kept"].append({
                    "branch": name, "reason": f"its work is not in {where}; merge it, or delete it anyway with "
                    f"`{cmd}` (it is archived under {ARCHIVE}/ first)", "command": cmd})
                continue
            archived = archive_ref(job, _short_name(name, job))
            cp = git(repo, "update-ref", "-m", f"klauss: archived {name} before deleting it", archived, tip, "",
                     check=False)
            if cp.returncode != 0:
                report["branches_kept"].append({"branch": name, "reason": "could not archive it: "
                                                + _tail(cp.stderr, 200)})
                continue
        # Deleted only if it still points where it was checked (a branch that moved meanwhile stays).
        cp = git(repo, "update-ref", "-m", "klauss: clean-worktrees", "-d", ref, tip, check=False)
        if cp.returncode == 0:
            report["branches_deleted"].append(name)
            if archived:
                report["branches_archived"].append({"branch": name, "commit": tip, "archive": archived})
        else:
            report["branches_kept"].append({"branch": name, "reason": _tail(cp.stderr, 200)})
    return report
