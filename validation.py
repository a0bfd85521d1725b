"""What may be submitted, checked in one place below the queue: a task's fields, its text and the
metadata that reaches claude's flags (claude_cli.check_task_metadata), a job's fields, the project
boundary (`[safety]`, PathPolicy) and a batch's order (refs, cycles). ValueError names the field.

TaskQueue's add_task, add_tasks, create_job and submit_job check through here, so every producer,
the bare Python API included, is checked before anything is written; submission.py, the front ends'
path, first annotates worktree isolation and then hands the tasks to those same methods. This
module imports neither the queue nor the front ends (the queue imports it).
"""

import json
import os
import re
from pathlib import Path

import claude_cli
import config
import gitroot

# Keys `add_task` accepts (and `add_tasks` entries may carry, plus `ref`).
TASK_FIELDS = ("prompt", "working_dir", "context_files", "expected_outputs", "metadata", "priority",
               "job_id", "parent_id", "depends_on", "max_attempts", "timeout")
MAX_INT = 2 ** 63 - 1  # SQLite's largest integer


def prepare(cfg, entries, cwd=None):
    """A batch checked completely before any write: (normalized tasks, insertion order) for
    `TaskQueue.insert_prepared`. ValueError names the task (in a batch) and the field."""
    if not isinstance(entries, (list, tuple)):
        raise ValueError(f"tasks: expected a list, got {type(entries).__name__}")
    default_attempts = cfg["queue"]["max_attempts"]
    policy = PathPolicy(cfg, cwd)
    tasks = []
    for index, entry in enumerate(entries):
        try:
            tasks.append(policy.portable(policy.check_repo(policy.check(validate_task(entry, default_attempts)))))
        except ValueError as exc:
            raise ValueError(f"task {index}: {exc}" if len(entries) > 1 else str(exc)) from None
    return tasks, _batch_order(tasks)


def require_int(name, value, minimum=None, allow_none=True):
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name}: required")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    if value > MAX_INT:
        raise ValueError(f"{name}: {value} is too large (at most {MAX_INT})")
    return value


def check_job(description, orchestrator_id, metadata, max_budget_usd):
    if not isinstance(description, str) or not description.strip():
        raise ValueError("description: expected a non-empty string")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError(f"metadata: expected a JSON object, got {metadata!r}")
    check_text({"description": description, "metadata": metadata, "orchestrator_id": orchestrator_id})
    if metadata is not None and metadata.get("verify") is not None:
        config.verify_argv(metadata["verify"], "metadata.verify")  # the merge queue's gate (integration.py)
    if max_budget_usd is not None and (isinstance(max_budget_usd, bool) or
                                       not isinstance(max_budget_usd, (int, float)) or max_budget_usd <= 0):
        raise ValueError(f"max_budget_usd: expected a number > 0, got {max_budget_usd!r}")


def _require_str_list(name, value):
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ValueError(f"{name}: expected a list of strings, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{name}: expected a list of non-empty strings, got item {item!r}")
    return list(value)


_COMMIT = re.compile(r"[0-9a-f]{7,64}")


def _check_repo_metadata(metadata):
    """The shape of a worktree task's own `repo` and `base_commit` (where it lies is PathPolicy's
    and the worktree code's to check): both reach git's command line."""
    repo, base = metadata.get("repo"), metadata.get("base_commit")
    if repo is not None and (not isinstance(repo, str) or not os.path.isabs(repo) or "\x00" in repo):
        raise ValueError(f"metadata.repo: expected the absolute path of the project's git repository, got {repo!r}; "
                         "leave it out and Klauss fills it in")
    if base is not None and (not isinstance(base, str) or not _COMMIT.fullmatch(base)):
        raise ValueError(f"metadata.base_commit: expected a commit id (hex), got {base!r}; leave it out and Klauss "
                         "fills it in")


def _shown(text):
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return ascii(text)


def check_text(fields):
    """Every string in `fields` (a dict of field name -> value, walked into lists and objects) must
    be real text: a lone surrogate (a JSON "\\ud800" escape, or bytes that were not UTF-8 in argv)
    can be neither stored nor sent to claude. ValueError names the field."""
    stack = list(fields.items())[::-1]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"{where}: character {exc.start + 1} is {ascii(value[exc.start])}, a lone surrogate "
                                 "that is not text (a broken \\u escape or undecodable input); fix it and submit "
                                 "again") from None
        elif isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                stack.append((f"{where}.{_shown(key)}", item))
                stack.append((f"{where} (a key)", key))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(value))))


def validate_task(entry, default_max_attempts):
    """Check one task's fields; returns a normalized dict. Raises ValueError naming the field."""
    if not isinstance(entry, dict):
        raise ValueError(f"task: expected an object, got {type(entry).__name__}")
    unknown = sorted(set(entry) - set(TASK_FIELDS) - {"ref"})
    if unknown:
        raise ValueError(f"unknown field(s): {', '.join(unknown)} (known: {', '.join(TASK_FIELDS)})")
    check_text(entry)
    prompt = entry.get("prompt")
    if not isinstance(prompt, str):
        raise ValueError("prompt: required, expected a non-empty string" if prompt is None
                         else f"prompt: expected a string, got {type(prompt).__name__}")
    if not prompt.strip():
        raise ValueError("prompt: must not be empty")
    if "\x00" in prompt:
        raise ValueError("prompt: contains a NUL byte; remove it")
    size = len(prompt.encode("utf-8", "surrogatepass"))
    if size > config.MAX_PROMPT_BYTES:
        raise ValueError(f"prompt: {size} bytes is over the limit of {config.MAX_PROMPT_BYTES} bytes; "
                         "put the material in a context file instead")
    working_dir = entry.get("working_dir")
    if working_dir is not None and (not isinstance(working_dir, str) or not working_dir):
        raise ValueError(f"working_dir: expected a non-empty string, got {working_dir!r}")
    metadata = entry.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise ValueError(f"metadata: expected a JSON object, got {metadata!r}")
    try:
        json.dumps(metadata, separators=(",", ":"), sort_keys=True)  # as the queue stores it
    except (TypeError, ValueError) as exc:
        raise ValueError(f"metadata: not JSON-serialisable: {exc}") from None
    claude_cli.check_task_metadata(metadata)
    _check_repo_metadata(metadata)
    timeout = entry.get("timeout")
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < float("inf"):
            raise ValueError(f"timeout: expected a number of seconds > 0, got {timeout!r}")
    job_id = entry.get("job_id")
    if job_id is not None and not isinstance(job_id, str):
        raise ValueError(f"job_id: expected a string, got {job_id!r}")
    ref = entry.get("ref")
    if ref is not None and not isinstance(ref, str):
        raise ValueError(f"ref: expected a string, got {ref!r}")
    depends_on = entry.get("depends_on") or []
    if not isinstance(depends_on, (list, tuple)):
        raise ValueError(f"depends_on: expected a list of task ids, got {depends_on!r}")
    for dep in depends_on:
        if isinstance(dep, bool) or not isinstance(dep, (int, str)):
            raise ValueError(f"depends_on: expected task ids, got {dep!r}")
    max_attempts = require_int("max_attempts", entry.get("max_attempts"), minimum=1)
    return {
        "prompt": prompt,
        "working_dir": working_dir,
        "context_files": _require_str_list("context_files", entry.get("context_files")),
        "expected_outputs": _require_str_list("expected_outputs", entry.get("expected_outputs")),
        "metadata": metadata,
        "priority": require_int("priority", 0 if entry.get("priority") is None else entry.get("priority"), minimum=0),
        "job_id": job_id,
        "parent_id": require_int("parent_id", entry.get("parent_id"), minimum=1),
        "depends_on": list(dict.fromkeys(depends_on)),
        "max_attempts": max_attempts if max_attempts is not None else default_max_attempts,
        "timeout": timeout,
        "ref": ref,
    }


def _glob_base(pattern):
    """The part of a glob pattern before its first wildcard (what the pattern can reach)."""
    parts = []
    for part in Path(pattern).parts:
        if any(ch in part for ch in "*?["):
            break
        parts.append(part)
    return Path(*parts) if parts else Path(".")


def git_toplevel(path):
    """The git top level of `path` (resolved), or None outside git or without git."""
    return gitroot.toplevel(path, timeout=60)


class PathPolicy:
    """The project boundary (`[safety]`): working dirs, context files and expected outputs must
    resolve (symlinks and `..` included) inside the project root or an allowed directory, and a
    task's own `metadata.repo` must be the project's git repository (Klauss makes worktrees,
    branches and commits there). One policy checks a whole batch, resolving each distinct
    directory once."""

    HINT = "or set [safety] allow_external_dirs = true in .klauss.toml"

    def __init__(self, cfg, cwd=None):
        self.cfg = cfg
        self.cwd = Path(cwd or os.getcwd())
        self.root = Path(cfg.root).resolve()
        self.allow_all = cfg["safety"]["allow_external_dirs"]
        self.roots = [self.root] + [Path(d).expanduser().resolve() for d in cfg["safety"]["allowed_dirs"]]
        self._dirs = {}
        self._top = False  # not looked up yet

    def inside(self, path):
        return self.allow_all or any(path == r or r in path.parents for r in self.roots)

    def _working_dir(self, working_dir):
        if working_dir not in self._dirs:
            if working_dir is None:
                self._dirs[working_dir] = self.root
            else:
                wd = (self.cwd / Path(working_dir).expanduser()).resolve()
                if not wd.exists():
                    raise ValueError(f"working_dir: {working_dir} does not exist")
                if not wd.is_dir():
                    raise ValueError(f"working_dir: {working_dir} is not a directory")
                if not self.inside(wd):
                    raise ValueError(f"working_dir: {working_dir} is outside the project {self.cfg.root}; "
                                     f"use a directory inside it, {self.HINT}")
                self._dirs[working_dir] = wd
        return self._dirs[working_dir]

    def check(self, task):
        """The task with `working_dir` made absolute; ValueError naming the field otherwise."""
        wd = self._working_dir(task["working_dir"])
        for field_name in ("context_files", "expected_outputs"):
            for item in task[field_name]:
                target = (wd / _glob_base(item)) if field_name == "context_files" else (wd / item)
                if not self.inside(target.resolve()):
                    raise ValueError(f"{field_name}: {item} resolves outside the project {self.cfg.root}; "
                                     f"{self.HINT.replace('or ', '', 1)}")
        return {**task, "working_dir": str(wd)}

    def check_repo(self, task):
        """The task, when its own `metadata.repo` (if any) is the project's git repository."""
        repo = task["metadata"].get("repo")
        if repo is not None:
            if self._top is False:
                self._top = git_toplevel(self.root)
            if self._top is None or Path(repo).resolve() != self._top:
                raise ValueError(f"metadata.repo: {repo!r} is not this project's git repository ({self._top or 'none'}); "
                                 "a task works only in its project's repository: leave metadata.repo out and Klauss "
                                 "fills it in")
        return task

    def portable(self, task):
        """The task as stored: paths inside the project relative to its root (the working dir; a
        context file or output given as an absolute path, relative to the working dir), so that
        every host resolves them against its own clone (Task.from_row, with the reader's root).
        Paths outside the project (allowed by [safety]) stay absolute."""
        wd = Path(task["working_dir"])
        if not (wd == self.root or self.root in wd.parents):
            return task

        def relative(item):
            path = Path(item)
            if path.is_absolute() and (path == self.root or self.root in path.parents):
                return os.path.relpath(item, wd)
            return item

        return {**task, "working_dir": os.path.relpath(wd, self.root),
                "context_files": [relative(i) for i in task["context_files"]],
                "expected_outputs": [relative(i) for i in task["expected_outputs"]]}


def check_task_paths(task, cfg, cwd=None):
    """Check one task against the project boundary (see PathPolicy); returns it with an absolute
    working dir."""
    return PathPolicy(cfg, cwd).check(task)


def _batch_order(tasks):
    """Insertion order for a batch so every in-batch dependency is inserted first; ValueError on
    unknown refs, duplicate refs and cycles."""
    refs = {}
    for index, t in enumerate(tasks):
        if t["ref"] is not None:
            if t["ref"] in refs:
                raise ValueError(f"task {index}: ref {t['ref']!r} is used twice")
            refs[t["ref"]] = index
    for index, t in enumerate(tasks):
        for dep in t["depends_on"]:
            if isinstance(dep, str) and dep not in refs:
                raise ValueError(f"task {index}: depends_on: unknown task {dep!r} (not an id, nor a ref in this batch)")
            if isinstance(dep, str) and refs[dep] == index:
                raise ValueError(f"task {index}: depends_on: a task cannot depend on itself ({dep!r})")
    # A depth-first walk with its own stack: chains thousands deep must not hit the recursion limit.
    order, state = [], {}  # state: 1 on the current path, 2 done

    def deps(index):
        return iter([refs[d] for d in tasks[index]["depends_on"] if isinstance(d, str)])

    for start in range(len(tasks)):
        if state.get(start):
            continue
        state[start] = 1
        path, stack = [start], [deps(start)]
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                done = path.pop()
                stack.pop()
                state[done] = 2
                order.append(done)
            elif state.get(dep) == 1:
                cycle = [str(tasks[i]["ref"]) for i in path[path.index(dep):] + [dep]]
                if len(cycle) > 12:  # the error stays one readable line
                    cycle = cycle[:5] + [f"… ({len(cycle) - 10} more)"] + cycle[-5:]
                raise ValueError(f"depends_on: dependency cycle {' -> '.join(cycle)}")
            elif not state.get(dep):
                state[dep] = 1
                path.append(dep)
                stack.append(deps(dep))
    return order
