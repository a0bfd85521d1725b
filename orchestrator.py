#!/usr/bin/env python3
"""Orchestrator mode: the API a Claude Code session uses to delegate a large job to the pool.

    from orchestrator import ClaudeOrchestrator
    orch = ClaudeOrchestrator("claude_main")
    job = orch.create_job("Build authentication system")
    orch.add_subtask(job, "Implement login endpoint", priority=10)
    results = orch.wait_and_collect(job)
    print(orch.synthesize_results(results))

And the same without Python, for Claude Code's Bash tool (from a project root with Klauss in
klauss/; manage.sh runs this file for `run` and `wait`):

    klauss/manage.sh run PLAN.json [--workers N] [--yes] [--timeout S] [--json]
    klauss/manage.sh wait JOB|TASK [--timeout S] [--json]   wait again, then print the synthesis (a task: its result)
    klauss/orchestrator.py status JOB | collect JOB | cancel JOB | retry JOB | merge JOB   (run with python3)
    klauss/orchestrator.py install-claude [--project DIR]

The orchestrator submits through submission.py, reads tasks and jobs through the database and
controls the pool only through pool.py (start, resize, stop, borrowing a slot while a task waits on
its own sub-job). `install-claude` (and klauss_mcp.py's `register`) set a project up for Claude
Code: the MCP server entry in .mcp.json, the skill and the CLAUDE.md section.
"""

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import claude_queue
import cli_args
import config
import exits
import hints
import hosts
import integration
import processes
import states
import submission
import task_report
import worktrees

HERE = Path(__file__).resolve().parent
UNFINISHED = ("pending", "in_progress")
LOG_PROGRESS_SECONDS = 30  # into a log (stderr not a terminal): a progress line on change, else this often
COUNTDOWN = re.compile(r" \((?:in [0-9.dhms]+|[0-9.dhms]+ ago)\)")  # task_report.fmt_ago in a pool text


class OrchestratorError(RuntimeError):
    """Something the caller must act on; the message says what to do."""


class JobResults(dict):
    """{task_id: result dict}, plus whether the wait ended before the job did."""

    def __init__(self, job_id, items, timed_out=False, elapsed=0.0):
        super().__init__(items)
        self.job_id = job_id
        self.timed_out = timed_out
        self.elapsed = elapsed

    @property
    def all_completed(self):
        return bool(self) and all(r["status"] == "completed" for r in self.values())

    @property
    def needs_attention(self):
        """Something was not done as asked: a task did not complete, or completed although some of
        its tool calls were denied (with no expected outputs to miss, a denied Write looks clean), or
        its work did not make it into the job branch (a merge conflict or error, or, with a verify
        command, integration failed). A fix-up or resolution task's own state is told by its task's."""
        return not self.all_completed or any(
            r.get("denied") or r.get("merge") in ("conflict", "error", "integration_failed")
            and (r.get("integration") or {}).get("kind", "task") == "task" for r in self.values())


def _is_tty():
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except (ValueError, AttributeError):
        return False


class ClaudeOrchestrator:
    def __init__(self, orchestrator_id, db_path=None, **config_overrides):
        self.orchestrator_id = orchestrator_id
        self.cfg = config.load_config(db=db_path, overrides=config_overrides)
        claude_queue.warn_stray_database(db_path, self.cfg.db_path)
        self.queue = claude_queue.TaskQueue(str(self.cfg.db_path) if db_path else None, cfg=self.cfg)
        # Inside a Klauss worker, sub-jobs are children of the running task (and its pool is ours).
        parent = os.environ.get("KLAUSS_TASK_ID")
        self.parent_task = int(parent) if parent and parent.isdigit() else None

    # --- building a job ---

    def create_job(self, description, metadata=None, max_budget_usd=None, isolation=None, merge=None, verify=None):
        """A new job. `metadata["context"]` is shared text every subtask's prompt includes.
        `isolation="worktree"` (default: `[isolation] mode`) runs each task in its own git worktree
        and branch; `merge` ("auto": into branch klauss/<job>/merged, or "branch": one branch per
        task) says how the work comes back. A worktree job outside git is a ValueError. `verify` (an
        argv, or a string split like a shell would) gates the job branch: see integration.py."""
        extra = worktrees.job_isolation(self.cfg, isolation, merge, metadata)
        extra.update(integration.job_verify(verify, {**(metadata if isinstance(metadata, dict) else {}), **extra}))
        if extra and (metadata is None or isinstance(metadata, dict)):
            metadata = {**(metadata or {}), **extra}
        job = submission.create_job(self.queue, description, orchestrator_id=self.orchestrator_id,
                                    metadata=metadata, max_budget_usd=max_budget_usd)
        return job

    def add_subtask(self, job_id, prompt, priority=0, working_dir=None, context_files=None, expected_outputs=None,
                    depends_on=None, metadata=None, timeout=None, max_attempts=None):
        self._require_job(job_id)
        return submission.add_task(self.queue, prompt, working_dir=working_dir, context_files=context_files,
                                   expected_outputs=expected_outputs, metadata=metadata, priority=priority,
                                   job_id=job_id, parent_id=self._parent_if_present(), depends_on=depends_on,
                                   max_attempts=max_attempts, timeout=timeout)

    def add_subtasks(self, job_id, tasks):
        """Add several subtasks at once (all or nothing). Each may carry `ref`, and `depends_on`
        may name refs of the same batch as well as existing task ids."""
        self._require_job(job_id)
        parent = self._parent_if_present()
        return submission.add_tasks(self.queue, [{**t, "job_id": job_id, "parent_id": parent} for t in tasks])

    def submit_plan(self, description, tasks, context=None, max_budget_usd=None, metadata=None, isolation=None,
                    merge=None, plan_hash=None, verify=None):
        """Create a job with all its subtasks at once (nothing is written if any task is bad).
        Tasks may carry `ref` and refer to each other by it in `depends_on`. `isolation` and `merge`
        and `verify` are as for create_job. Returns (job_id, ids)."""
        metadata = dict(metadata or {})
        if context:
            metadata["context"] = context
        extra = worktrees.job_isolation(self.cfg, isolation, merge, metadata)
        metadata.update(extra)
        metadata.update(integration.job_verify(verify, metadata))
        parent = self._parent_if_present()
        if isinstance(tasks, (list, tuple)):
            tasks = [{**t, "parent_id": parent} if isinstance(t, dict) else t for t in tasks]
        job, ids = submission.submit_job(self.queue, description, tasks, orchestrator_id=self.orchestrator_id,
                                         metadata=metadata, max_budget_usd=max_budget_usd, plan_hash=plan_hash)
        return job, ids

    def _require_job(self, job_id):
        if self.queue.get_job(job_id) is None:
            raise ValueError(f"job_id: unknown job {job_id!r}")

    def _parent_if_present(self):
        if self.parent_task is not None and self.queue.get_task(self.parent_task) is not None:
            return self.parent_task
        return None

    # --- workers ---

    def suggest_workers(self, job_id, max_workers=None):
        """How many workers the job can keep busy: the widest level of its unfinished dependency
        graph, capped by `max_workers` and `[workers] max_workers`."""
        tasks = [t for t in self.queue.list_tasks(job_id=job_id) if t.status in UNFINISHED]
        cap = min(max_workers or self.cfg["workers"]["max_workers"], self.cfg["workers"]["max_workers"])
        if not tasks:
            return 1
        unfinished = {t.id: t for t in tasks}
        level, entered = {}, set()
        # Levels by an explicit stack: a chain thousands deep must not hit the recursion limit.
        for tid in unfinished:
            stack = [tid]
            while stack:
                top = stack[-1]
                if top in level:
                    stack.pop()
                    continue
                deps = [d for d in unfinished[top].depends_on or [] if d in unfinished]
                todo = [d for d in deps if d not in level]
                if todo and top not in entered:
                    entered.add(top)
                    stack.extend(todo)
                else:  # its dependencies are done (or, were the graph ever cyclic, never will be)
                    level[top] = 1 + max((level.get(d, 0) for d in deps), default=0)
                    stack.pop()

        widths = {}
        for d in level.values():
            widths[d] = widths.get(d, 0) + 1
        return max(1, min(cap, max(widths.values())))

    def get_worker_status(self):
        # pool (and the supervisor it imports) is imported where the pool is looked at or
        # controlled: `status`, `collect` and the MCP server's start do without them.
        import pool
        coordinator = pool.running(self.queue)
        running = coordinator is not None
        pid = coordinator["pid"] if running else None
        workers = [w for w in self.queue.list_workers()
                   if hosts.is_local(w, self.cfg.host) and processes.pid_alive(w["pid"])] if running else []
        return {
            "running": running,
            "coordinator_pid": pid if running else None,
            "process_count": len(workers),
            "workers": [{"worker_id": w["worker_id"], "host": hosts.host_of(w["worker_id"]) or self.cfg.host,
                         "pid": w["pid"], "state": w["state"], "current_task": w["current_task"],
                         "last_heartbeat": w["last_heartbeat"]} for w in workers],
            # Every host sharing the database: its coordinator, and any other host's workers.
            "host": self.cfg.host,
            "hosts": pool.hosts_status(self.queue),
            "other_workers": [{"worker_id": w["worker_id"], "host": hosts.host_of(w["worker_id"]), "state": w["state"],
                               "current_task": w["current_task"], "last_heartbeat": w["last_heartbeat"]}
                              for w in self.queue.list_workers() if not hosts.is_local(w, self.cfg.host)],
            "paused": hosts.pause_flag(self.queue, self.cfg.host, hosts.login_key(self.cfg)),
            "config_error": hosts.config_error_flag(self.queue, self.cfg.host),
        }

    def start_workers(self, count, confirm=None):
        """Start a detached pool of `count` workers (or grow a running one). Returns True if a pool
        is running afterwards. Asks only on an interactive terminal, unless `confirm` says."""
        count = max(1, min(int(count), self.cfg["workers"]["max_workers"]))
        status = self.get_worker_status()
        if status["running"] and status["process_count"] >= count:
            return True
        if confirm is None:
            if _is_tty():
                verb = "Grow the pool to" if status["running"] else "Start"
                answer = input(f"{verb} {count} Claude workers? (y/n) ").strip().lower()
                confirm = answer in ("y", "yes")
            else:
                confirm = self.cfg["workers"]["auto_start"]
        if not confirm:
            return status["running"]
        import pool
        try:
            if status["running"]:
                pool.resize(self.cfg, count)
            else:
                pool.start(self.cfg, count)
        except pool.PoolError as exc:
            raise OrchestratorError(f"could not start workers: {exc.reason}") from None
        return True

    def ensure_workers(self, job_id, confirm=None):
        """Make sure a pool big enough for the job is running (see start_workers)."""
        return self.start_workers(self.suggest_workers(job_id), confirm=confirm)

    def stop_workers(self, timeout=60):
        """Stop this project's pool (gracefully: running tasks are released) and wait for it."""
        import pool
        try:
            pool.stop(self.cfg, timeout=timeout)
        except pool.PoolError as exc:
            if exc.code == pool.EXIT_FAIL:
                return False  # still stopping after `timeout`
            raise OrchestratorError(f"could not stop workers: {exc.reason}") from None
        return True

    # --- waiting and results ---

    def get_job_status(self, job_id):
        job = self.queue.get_job(job_id)
        if job is None:
            raise ValueError(f"job_id: unknown job {job_id!r}")
        # The merge queue's integration tasks are not the user's tasks (counts), but the job is not
        # finished before they are, and their cost is the job's.
        raw = job["stats"]
        stats = integration.user_stats(self.queue, job)
        done = stats["total"] - stats["pending"] - stats["in_progress"]
        return {"job_id": job_id, "description": job["description"], "stats": stats,
                "done": done, "total": stats["total"], "finished": raw["pending"] + raw["in_progress"] == 0,
                "cost_usd": stats["cost_usd"], "max_budget_usd": job["max_budget_usd"],
                "integrating": stats.get("integrating", 0), "pool": task_report.pool_state(self.queue)}

    def wait_and_collect(self, job_id, timeout=None, poll_interval=None, on_progress=None, show_progress=None,
                         should_stop=None):
        """Wait for every task of the job to finish and return {task_id: result}. On timeout, or
        once `should_stop()` (looked at every `poll_interval`, default 1 s) says True, the results
        so far come back with `.timed_out` set; nothing is cancelled."""
        import pool
        status = self.get_job_status(job_id)
        if not status["finished"]:
            self._ensure_pool_for_wait(job_id)
        poll = poll_interval if poll_interval is not None else 1.0
        tty = sys.stderr.isatty()
        show = tty if show_progress is None else show_progress
        start = time.monotonic()
        deadline = None if timeout is None else start + timeout
        last_line, last_check_pool, last_borrow = None, start, start
        last_shown, shown_at = None, start
        borrowed = self._borrow_slot()
        waker = claude_queue.Waker(self.queue, f"orchestrator-{self.orchestrator_id}")
        down = None  # why the database cannot be read now: the wait goes on, as the pool does
        try:
            while True:
                try:
                    status = self.get_job_status(job_id)
                except claude_queue.DatabaseUnavailable as exc:
                    now = time.monotonic()
                    if deadline is not None and now >= deadline or should_stop is not None and should_stop():
                        raise  # what to report cannot be read; the job goes on, and waiting again resumes
                    if down is None and show:
                        sys.stderr.write(f"klauss: {exc}; still waiting for job {job_id} (the pool waits for the "
                                         f"database too)\n")
                        sys.stderr.flush()
                    down = exc
                    waker.wait(min(poll, deadline - now) if deadline is not None else poll)
                    continue
                if down is not None and show:
                    sys.stderr.write(f"klauss: the database is back; waiting for job {job_id}\n")
                down = None
                line = task_report.progress_line(status, time.monotonic() - start)
                if line != last_line:
                    if on_progress:
                        on_progress(status)
                    last_line = line
                    # A terminal shows every second; a log only what changed (the elapsed time and a
                    # pause's countdown aside: they change every second).
                    content = COUNTDOWN.sub("", line.rsplit(" · ", 1)[0])
                    if show and (tty or content != last_shown or time.monotonic() - shown_at >= LOG_PROGRESS_SECONDS):
                        # One write with its newline: a Ctrl-C between the text and the newline
                        # would glue "stopped waiting" onto the progress line.
                        sys.stderr.write(line + "\n")
                        sys.stderr.flush()
                        last_shown, shown_at = content, time.monotonic()
                if status["finished"]:
                    return JobResults(job_id, self.collect(job_id), False, time.monotonic() - start)
                now = time.monotonic()
                if deadline is not None and now >= deadline or should_stop is not None and should_stop():
                    return JobResults(job_id, self.collect(job_id), True, now - start)
                if now - last_check_pool >= 2.0:
                    last_check_pool = now
                    try:
                        self._check_pool_alive(job_id)
                    except claude_queue.DatabaseUnavailable:
                        continue  # the status read at the top says so, and waits
                if borrowed and now - last_borrow >= pool.BORROW_TTL_SECONDS / 4:
                    last_borrow = now
                    self._borrow_slot()
                # Woken by every state change in the queue; the timeout only paces the pool check.
                waker.wait(min(poll, deadline - now) if deadline is not None else poll)
        finally:
            waker.close()
            if borrowed:
                pool.give_back(self.queue, self.parent_task)

    def _borrow_slot(self):
        # A task that waits for its own sub-job holds a worker: the pool lends it a slot for the wait.
        if self.parent_task is None:
            return False
        import pool
        pool.borrow(self.queue, self.parent_task)
        return True

    def _ensure_pool_for_wait(self, job_id):
        status = self.get_worker_status()
        if status["running"]:
            return
        if not self.cfg["workers"]["auto_start"]:
            raise OrchestratorError("no workers are running and [workers] auto_start is off: start them with "
                                    f"`{hints.command('start', self.suggest_workers(job_id))}` or orch.start_workers(N)")
        count = self.suggest_workers(job_id)
        if not self.start_workers(count, confirm=True):
            raise OrchestratorError(f"workers could not be started; see `{hints.command('doctor')}`")

    def _check_pool_alive(self, job_id):
        pool = task_report.pool_state(self.queue)
        if pool["state"] == states.POOL_CONFIG_ERROR:
            raise OrchestratorError(pool["text"])
        if pool["state"] == states.POOL_STOPPED:
            self._ensure_pool_for_wait(job_id)

    def collect(self, job_id):
        """The job's tasks as result dicts, in id order (no waiting). With a verify command, the merge
        queue's integration tasks are left out, `merge` is the task's integration state (see
        integration.job_report) and `integration` its whole row."""
        results = {}
        job = self.queue.get_job(job_id)
        report = integration.job_report(self.queue, job_id) if integration.gated(self.queue, job) else None
        rows = {r["task"]: r for r in (report or {}).get("tasks", [])}
        for t in self.queue.list_tasks(job_id=job_id, order="asc"):
            if integration.is_integration(t):
                continue
            o = t.outcome or {}
            results[t.id] = {
                # The plan's own id for the task (check_plan names an id-less task "#<index>").
                "plan_id": t.ref if t.ref and not t.ref.startswith("#") else None,
                "status": t.status,
                "prompt": t.prompt,
                "result": t.result,
                "error": t.error,
                "cost_usd": t.cost_usd,
                "outputs": o.get("outputs_verified", []),
                "outputs_missing": o.get("outputs_missing", []),
                "session_id": o.get("session_id"),
                "attempts": t.attempts_used,
                "worker": t.worker_id,
                "depends_on": t.depends_on,
                "duration_s": (t.finished_at - t.started_at) if t.finished_at and t.started_at else None,
                "transcript": o.get("transcript"),
                "warnings": o.get("warnings", []),
                "denied": [str(d.get("tool_name", d)) if isinstance(d, dict) else str(d)
                           for d in o.get("permission_denials") or []],
                "branch": o.get("branch"),
                "commit": o.get("commit"),
                "files_changed": o.get("files_changed", []),
                "merge": o.get("merge"),
                "conflicts": o.get("conflicts", []),
            }
            row = rows.get(t.id)
            if row is not None:
                results[t.id].update(merge=row["state"], conflicts=row["files"] if row["state"] == "conflict" else [],
                                     integration={k: v for k, v in row.items() if k not in ("task", "branch")})
        return results

    def synthesize_results(self, results):
        """Markdown: what each task did, what failed and why, files produced, total cost and time."""
        results = results or {}
        job_id = getattr(results, "job_id", None)
        lines = []
        job = None
        if job_id:
            job = self.queue.get_job(job_id)
            lines.append(f"# {job['description'] if job else job_id} ({job_id})")
        counts = {}
        for r in results.values():
            counts[r["status"]] = counts.get(r["status"], 0) + 1
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no tasks"
        with_denials = sum(1 for r in results.values() if r["status"] == "completed" and r.get("denied"))
        summary += f" ({with_denials} with denied tool calls)" if with_denials else ""
        cost = sum(r["cost_usd"] or 0 for r in results.values())
        report = integration.job_report(self.queue, job_id) if job and integration.gated(self.queue, job) else None
        merging = 0.0
        if report:
            # The merge queue's integration tasks are no task of the user's, but their cost is the job's.
            merging = sum(t.cost_usd or 0 for t in self.queue.list_tasks(job_id=job_id, order="asc")
                          if integration.is_integration(t))
        elapsed = getattr(results, "elapsed", None)
        lines.append(f"**{len(results)} task{'' if len(results) == 1 else 's'}: {summary}.** "
                     f"Total cost {task_report.fmt_cost(cost + merging)}"
                     + (f" (of which {task_report.fmt_cost(merging)} integrating)" if merging else "")
                     + (f", {elapsed:.0f}s wall time" if elapsed else "")
                     + (". **Timed out before the job finished.**" if getattr(results, "timed_out", False) else "."))
        files = sorted({f for r in results.values() for f in r["outputs"]})
        if files:
            lines.append("Files produced: " + ", ".join(f"`{f}`" for f in files))
        changed = sorted({f for r in results.values() for f in r.get("files_changed") or []})
        if changed:
            lines.append("Files changed: " + ", ".join(f"`{f}`" for f in changed))
        lines += self._isolation_summary(job, results, report)
        for tid, r in results.items():
            status = r["status"] + (task_report.denied_note(len(r.get("denied") or []))
                                    if r["status"] == "completed" else "")
            row = r.get("integration")
            if row and r["status"] == "completed":
                status += f", {task_report.integration_text(row)}"
            label = row and task_report.helper_label(row)
            name = r.get("plan_id") or (f"Task {tid} ({label})" if label else f"Task {tid}")
            lines.append(f"\n## {name}: {_title(r['prompt'])} — {status}")
            if r["result"]:
                lines.append(r["result"].strip())
            if r["error"] and r["status"] != "completed":
                lines.append(f"**Why:** {r['error']}")
            details = ([f"task #{tid}"] if r.get("plan_id") else []) + [f"attempts {r['attempts']}"]
            if r["cost_usd"]:
                details.append(task_report.fmt_cost(r["cost_usd"]))
            if r["duration_s"]:
                details.append(f"{r['duration_s']:.0f}s")
            if r["outputs"]:
                details.append("outputs " + ", ".join(r["outputs"]))
            if r["outputs_missing"]:
                details.append("missing " + ", ".join(r["outputs_missing"]))
            if r.get("files_changed"):
                details.append("changed " + ", ".join(r["files_changed"]))
            elif r.get("branch") and r["status"] == "completed":
                details.append("changed nothing")  # git's word, with a worktree
            if r["session_id"]:
                details.append(f"session {r['session_id']}")
            if r.get("branch"):
                details.append(f"branch {r['branch']}" + (f" at {r['commit'][:12]}" if r.get("commit") else "")
                               + ("" if row else f", merge {r.get('merge')}"))
            lines.append("_" + "; ".join(details) + "_")
            for w in r.get("warnings") or []:
                lines.append(f"**Warning:** {w}")
        denied = [tid for tid, r in results.items() if r["status"] == "completed" and r.get("denied")]
        if denied:
            lines.append("\n**Needs attention:** " + "; ".join(
                f"task #{tid} completed but {len(results[tid]['denied'])} tool call(s) were denied "
                f"({', '.join(dict.fromkeys(results[tid]['denied']))})" for tid in denied)
                + ". Its work may be incomplete; its warning names the setting that allows those tools.")
        failed = [tid for tid, r in results.items() if r["status"] in ("failed", "skipped", "cancelled")]
        if failed:
            # `retry --failed` takes up failed tasks only: cancelled ones are named to `retry` one by one.
            again = []
            if any(results[t]["status"] == "failed" for t in failed):
                again.append(f"Retry failed tasks with `{hints.command('retry', '--failed', '--job', job_id)}`")
            cancelled = [t for t in failed if results[t]["status"] == "cancelled"]
            if cancelled:
                again.append(f"run the cancelled ones again with `{hints.command('retry', *cancelled)}`")
            lines.append(f"\nNot completed: {', '.join(f'#{t}' for t in failed)}."
                         + (" " + "; ".join(again)[0].upper() + "; ".join(again)[1:] if again and job_id else ""))
        # Task text (description, ids, prompts, claude's result) must not drive the reader's terminal.
        text = task_report.ANSI_ESCAPE.sub("", "\n".join(lines))
        return "".join(ch if ch.isprintable() or ch in "\n\t" else " " for ch in text) + "\n"

    @staticmethod
    def _isolation_summary(job, results, report=None):
        """What the synthesis says about worktree branches: where the work is, how to merge it, and
        which tasks conflicted; with a verify command (`report`: integration.job_report), the
        verified head and which tasks failed verification."""
        meta = (job or {}).get("metadata") or {}
        job_id = (job or {}).get("id")
        lines = []
        if report:
            head = task_report.verified_head_text(report)
            lines.append(head[0].upper() + head[1:] + ".")
        if meta.get("isolation") == "worktree" and meta.get("merge", "auto") == "auto":
            merged = sum(1 for r in results.values() if r.get("merge") in ("merged", "fixed_and_merged")
                         and (r.get("integration") or {}).get("kind", "task") == "task")
            branch = worktrees.job_branch(job_id)
            if not merged and not meta.get("merged_into"):
                # The job branch is made by the first merge: `git diff` and `merge` have nothing to act on.
                lines.append("Each task ran in its own git worktree; no task's work was merged, so there is nothing "
                             "to review or merge (a task's own work, if any, is on its branch, listed below).")
            else:
                lines.append(f"Each task ran in its own git worktree; {merged} task(s) merged into branch `{branch}`. "
                             + (f"That branch was merged into `{meta['merged_into']}`." if meta.get("merged_into") else
                                f"Your checked-out branch is untouched: review the work (`git diff HEAD...{branch}`), "
                                f"then bring it in with `{hints.command('merge', job_id)}`."))
        elif meta.get("isolation") == "worktree":
            lines.append(f"Each task's work is on its own branch (`klauss/{job_id}/task-<id>`); review them, "
                         f"then `{hints.command('merge', job_id)}` merges the completed ones in task order.")
        errors = [tid for tid, r in results.items() if r.get("status") == "completed" and r.get("merge") == "error"]
        if errors:
            # Completed, but their work is not on the job branch: never to be read as a clean job.
            lines.append(f"**Not merged:** {len(errors)} completed task(s) could not be merged into the job branch "
                         f"({', '.join(f'#{t}' for t in errors)}; see each task's warning); their work is safe on "
                         f"their own branches, and `{hints.command('merge', job_id)}` lists them.")
        failed = [(tid, r) for tid, r in results.items() if r.get("merge") == "integration_failed"
                  and r["integration"].get("kind") == "task"]
        if failed:
            lines.append("**Integration failed** (kept out of the job branch; each task's work is safe on its branch): "
                         + "; ".join(f"task #{tid}: {task_report.integration_text(r['integration'])} "
                                     f"(branch `{r['branch']}`)" for tid, r in failed)
                         + ". After merging the job, merge each of these branches by hand (`git merge BRANCH`), "
                           "make the verify command pass and commit.")
        conflicts = [(tid, r) for tid, r in results.items() if r.get("merge") == "conflict"
                     and (r.get("integration") or {}).get("kind", "task") == "task"]
        if conflicts:
            lines.append("**Merge conflicts** (each task's work is safe on its branch): "
                         + "; ".join(f"task #{tid} in {', '.join(r['conflicts'])} (branch `{r['branch']}`)"
                                     for tid, r in conflicts)
                         + ". After merging the job, merge each of these branches by hand (`git merge BRANCH`), "
                           "resolve the conflicts and commit.")
        return lines

    def write_summary(self, results):
        """Write the synthesis and a PR-ready summary of a worktree job (per task: title, files,
        diffstat, verification; the verified head; what did not make it and why) to
        `<state_dir>/jobs/<job>/synthesis.md` and `summary.md`. Returns the summary's path, or None
        for a job without worktree isolation (no branch to describe)."""
        job_id = getattr(results, "job_id", None)
        job = self.queue.get_job(job_id) if job_id else None
        if job is None or job["metadata"].get("isolation") != "worktree":
            return None
        report = integration.job_report(self.queue, job_id) if integration.gated(self.queue, job) else None
        repo = job["metadata"].get("repo")
        merges = {}  # task id -> the merge commit that brought its work into the job branch
        if repo and job["metadata"].get("merge", "auto") == "auto":
            cp = worktrees.git(repo, "log", "--first-parent", "--format=%H %s", worktrees.job_branch(job_id), "--",
                               check=False)
            for line in cp.stdout.splitlines():
                sha, _, subject = line.partition(" ")
                found = re.match(r"klauss: merge task (\d+):", subject)
                if found:
                    merges.setdefault(int(found.group(1)), sha)
        tasks = []
        for tid, r in results.items():
            row = r.get("integration")
            if row and row.get("kind") != "task":
                continue  # a fix-up or resolution is told with the task it fixed
            via = row.get("fix_task") if row and row.get("state") == "fixed_and_merged" else tid
            merge = merges.get(via)
            files, stat = r.get("files_changed") or [], ""
            if merge:
                files = worktrees.git(repo, "diff", "--name-only", f"{merge}^1", merge, check=False).stdout.split()
                stat = worktrees.git(repo, "diff", "--stat", "--no-color", f"{merge}^1", merge, check=False).stdout
            tasks.append({"id": tid, "title": r.get("plan_id") and f"{r['plan_id']}: {_title(r['prompt'])}"
                          or _title(r["prompt"]), "state": r.get("merge"), "files": files, "diffstat": stat,
                          "row": row, "status": r["status"], "error": r.get("error"), "branch": r.get("branch")})
        folder = Path(self.cfg.state_dir) / "jobs" / job_id
        config.ensure_private_dir(folder)
        (folder / "synthesis.md").write_text(self.synthesize_results(results), encoding="utf-8")
        path = folder / "summary.md"
        path.write_text(task_report.ANSI_ESCAPE.sub("", task_report.pr_summary(job, report, tasks)), encoding="utf-8")
        return path

    def merge_job(self, job_id, force=False):
        """Bring a worktree job's work into the current branch of the project checkout: the job branch
        (merge "auto") or each completed task's branch in task order (merge "branch"). Refuses an
        unfinished job or, with a verify command, a job branch whose head did not pass verification
        (unless `force`), or a checkout with uncommitted changes; a conflict is aborted,
        leaving the checkout as it was. Returns a report: `status` "merged" | "conflict" | "nothing",
        `merged` (branches), `conflicts` (files), `not_merged` (tasks whose branch needs a hand merge)."""
        self._require_job(job_id)
        try:
            return integration.merge_job(self.cfg, self.queue, job_id, force=force)
        except worktrees.WorktreeError as exc:
            raise OrchestratorError(str(exc)) from None

    # --- after the fact ---

    def retry_failed(self, job_id):
        """Put the job's failed and cancelled tasks (and their skipped dependents) back to pending."""
        revived = []
        for t in self.queue.list_tasks(job_id=job_id, status=["failed", "cancelled"], order="asc"):
            if t.id not in revived:
                revived += self.queue.retry_task(t.id)
        return revived

    def cancel_job(self, job_id):
        self._require_job(job_id)
        return self.queue.cancel_job(job_id)


def _title(prompt, width=100):
    """The prompt's first line, cut at a word boundary (never mid-word) when longer than `width`."""
    return task_report.shorten(prompt, width, first_line=True, at_word=True)


# --- Claude Code integration --------------------------------------------------------------------

SKILL_TEMPLATE = HERE / ".claude" / "skills" / "klauss" / "SKILL.md"
INSTALLED_MARK = "<!-- installed by Klauss (manage.sh install-claude); delete this line to keep your own edits -->"
CLAUDE_MD_BEGIN = "<!-- klauss:begin -->"
CLAUDE_MD_END = "<!-- klauss:end -->"
CLAUDE_MD_SECTION = """{begin}
## Parallel work with Klauss
For a job that splits into three or more independent pieces, delegate them to parallel Claude
workers with Klauss (skill `klauss`; guide: `{klauss}/ORCHESTRATOR_GUIDE.md`): use the MCP tools
`mcp__klauss__submit_job` and then `mcp__klauss__wait_job` when they are available; otherwise write a
plan and run `python3 {klauss}/orchestrator.py run plan.json --yes`.
{end}
"""


MCP_SERVER_NAME = "klauss"


def mcp_entry(project_root, klauss_dir=HERE, absolute=False):
    """The .mcp.json server entry. The script path is relative to the project when Klauss is inside
    it (the file can be committed and works in any clone), else absolute. Claude Code starts the
    server in the directory it was started in, so a relative path needs `claude` started at the
    project root; `absolute=True` works from anywhere (but only on this machine)."""
    project_root, klauss_dir = Path(project_root).resolve(), Path(klauss_dir).resolve()
    script = klauss_dir / "klauss_mcp.py"
    if not absolute and (project_root == klauss_dir or project_root in klauss_dir.parents):
        script = Path(os.path.relpath(script, project_root)).as_posix()
    return {"type": "stdio", "command": "python3", "args": [str(script)]}


def register_mcp(project_root, klauss_dir=HERE, absolute=False):
    """Merge the klauss server into <project>/.mcp.json, keeping every other server and key (and any
    extra keys of an existing klauss entry, such as "env"). Idempotent. Refuses, leaving the file
    untouched, when it is not a JSON object. Returns (path, "created" | "updated" | "unchanged")."""
    path = Path(project_root).resolve() / ".mcp.json"
    entry = mcp_entry(project_root, klauss_dir, absolute)
    if path.exists():
        text = path.read_text(encoding="utf-8")
        try:
            data = json.loads(text) if text.strip() else {}
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc}); fix it (or move it away) and run install-claude "
                             "again; it was left untouched") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object with \"mcpServers\"; it was left untouched")
        servers = data.get("mcpServers", {})
        if not isinstance(servers, dict):
            raise ValueError(f"{path}: \"mcpServers\" must be an object; it was left untouched")
        what = "updated"
    else:
        text, data, servers, what = None, {}, {}, "created"
    current = servers.get(MCP_SERVER_NAME)
    merged = {**current, **entry} if isinstance(current, dict) else entry
    if current == merged:
        return path, "unchanged"
    new_data = dict(data)
    new_data["mcpServers"] = {**servers, MCP_SERVER_NAME: merged}
    tmp = path.with_name(f".mcp.json.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(new_data, indent=2) + "\n", encoding="utf-8")
    if path.exists():
        os.chmod(tmp, path.stat().st_mode & 0o7777)
    os.replace(tmp, path)
    return path, what


def skill_for(text, rel):
    """The checked-in skill, written for Klauss's own checkout (its paths start with `./`), with
    those paths pointing at `rel`, where Klauss is in the project (`{KLAUSS}` is also accepted)."""
    text = text.replace("{KLAUSS}", rel)
    return re.sub(r"(?<![\w./])\./(?=[\w.-]*(?:\.py|\.sh|\.md)\b|`)", lambda _m: rel + "/", text)


def install_claude(project_root, klauss_dir=HERE):
    """Install the Klauss MCP server (.mcp.json), skill and CLAUDE.md section into the project,
    idempotently, without overwriting a skill the user has made their own. Returns a list of
    (path, what happened)."""
    project_root, klauss_dir = Path(project_root).resolve(), Path(klauss_dir).resolve()
    if project_root == klauss_dir:
        raise ValueError("install-claude: this is Klauss's own checkout; run it from the project that "
                         "contains Klauss (e.g. as the klauss/ submodule)")
    rel = os.path.relpath(klauss_dir, project_root)
    # The MCP server first: an .mcp.json we cannot merge stops the install before anything is written.
    done = [register_mcp(project_root, klauss_dir)]
    front, body = SKILL_TEMPLATE.read_text().split("\n---\n", 1)
    skill = front + "\n---\n" + INSTALLED_MARK + "\n" + skill_for(body, rel)
    target = project_root / ".claude" / "skills" / "klauss" / "SKILL.md"
    if target.exists():
        current = target.read_text()
        if current == skill:
            done.append((target, "unchanged"))
        elif INSTALLED_MARK not in current:
            done.append((target, "kept (edited by you; delete it to get the current version)"))
        else:
            target.write_text(skill)
            done.append((target, "updated"))
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(skill)
        done.append((target, "created"))

    section = CLAUDE_MD_SECTION.format(begin=CLAUDE_MD_BEGIN, end=CLAUDE_MD_END, klauss=rel)
    claude_md = project_root / "CLAUDE.md"
    text = claude_md.read_text() if claude_md.exists() else ""
    if CLAUDE_MD_BEGIN in text and CLAUDE_MD_END in text:
        start = text.index(CLAUDE_MD_BEGIN)
        end = text.index(CLAUDE_MD_END) + len(CLAUDE_MD_END)
        new = text[:start] + section.rstrip("\n") + text[end:]
    else:
        new = text + ("\n" if text and not text.endswith("\n") else "") + ("\n" if text else "") + section
    if new == text:
        done.append((claude_md, "unchanged"))
    else:
        claude_md.write_text(new)
        done.append((claude_md, "updated" if text else "created"))
    return done


# --- the command line ---------------------------------------------------------------------------

PLAN_FIELDS = {"id", "prompt", "working_dir", "context_files", "expected_outputs", "metadata", "priority",
               "depends_on", "max_attempts", "timeout"}


def load_plan(path):
    """Read and check a plan file: {"description", "context"?, "max_budget_usd"?, "isolation"?, "merge"?,
    "verify"?, "tasks": [...]}.
    Task `id`s are local to the plan and are what `depends_on` refers to."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise ValueError(f"plan: cannot read {path}: {exc.strerror}") from None
    try:
        plan = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"plan: invalid JSON in {path}: {exc}") from None
    # The original Klauss format, a task or a list of tasks, is what submit-file queues.
    if (isinstance(plan, list) and plan) or (isinstance(plan, dict) and "prompt" in plan and "tasks" not in plan):
        raise ValueError(f"plan: {path} holds {'a list of tasks' if isinstance(plan, list) else 'one task'}, "
                         f"not a plan; queue it as it is with {hints.command('submit-file', path)}, or run it as "
                         'a job by making it a plan: {"description": "...", "tasks": [...]}')
    return check_plan(plan)


def check_plan(plan):
    """Check a parsed plan; returns (plan, entries) with entries ready for submit_plan (each task's
    local id becomes its `ref`). Raises ValueError naming the field."""
    if not isinstance(plan, dict):
        raise ValueError("plan: expected a JSON object with \"description\" and \"tasks\"")
    unknown = sorted(set(plan) - {"description", "context", "max_budget_usd", "metadata", "tasks", "isolation", "merge",
                                "verify"})
    if unknown:
        raise ValueError(f"plan: unknown field(s) {', '.join(unknown)}")
    if not isinstance(plan.get("description"), str) or not plan["description"].strip():
        raise ValueError("plan.description: required, a non-empty string")
    for key, allowed in (("isolation", worktrees.MODES), ("merge", worktrees.MERGE_MODES)):
        if plan.get(key) is not None and plan[key] not in allowed:
            raise ValueError(f"plan.{key}: expected one of {', '.join(allowed)}, got {plan[key]!r}")
    if plan.get("verify") is not None:
        plan = {**plan, "verify": config.verify_argv(plan["verify"], "plan.verify")}
    tasks = plan.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        raise ValueError("plan.tasks: required, a non-empty list of tasks")
    entries, ids = [], set()
    for i, t in enumerate(tasks):
        if not isinstance(t, dict):
            raise ValueError(f"plan.tasks[{i}]: expected an object")
        unknown = sorted(set(t) - PLAN_FIELDS)
        if unknown:
            raise ValueError(f"plan.tasks[{i}]: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(PLAN_FIELDS))})")
        local = t.get("id", f"#{i}")
        if not isinstance(local, (str, int)) or isinstance(local, bool):
            raise ValueError(f"plan.tasks[{i}].id: expected a string")
        local = str(local)
        if local in ids:
            raise ValueError(f"plan.tasks[{i}].id: {local!r} is used twice")
        ids.add(local)
        deps = t.get("depends_on") or []
        if not isinstance(deps, list):
            raise ValueError(f"plan.tasks[{i}].depends_on: expected a list of task ids from this plan")
        entry = {k: v for k, v in t.items() if k != "id"}
        entry["ref"] = local
        entry["depends_on"] = [str(d) for d in deps]
        entries.append(entry)
    for i, e in enumerate(entries):
        for d in e["depends_on"]:
            if d not in ids:
                raise ValueError(f"plan.tasks[{i}].depends_on: {d!r} is not the id of a task in this plan")
    return plan, entries


def _fail(message, code=exits.EXIT_USAGE):
    print(f"error: {message}", file=sys.stderr)
    return code


def cli(argv=None):
    ap = cli_args.Parser(prog=hints.prog("orchestrator.py"), description="Delegate a planned job to Klauss workers.")
    ap.add_argument("--db", help="the database (default: the project's .klauss/claude_tasks.db)")
    # --db also after the command (`manage.sh wait JOB --db PATH`, as every manage.sh command takes
    # it); SUPPRESS keeps the command's unset copy from overwriting one given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, help="the database (default: the project's .klauss/claude_tasks.db)")
    sub = ap.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common], help="queue a plan, make sure workers run, wait, print the synthesis")
    run.add_argument("plan", help="plan JSON file, or - for stdin")
    run.add_argument("--workers", type=int, help="pool size (default: suggested from the plan)")
    run.add_argument("--yes", action="store_true", help="start workers without asking")
    run.add_argument("--timeout", type=float, help="stop waiting after S seconds (tasks keep running)")
    run.add_argument("--json", action="store_true", help="print the results as JSON")
    run.add_argument("--verify", metavar="CMD",
                     help="a command that must pass before each task's work enters the job branch, e.g. "
                          "\"python3 -m pytest -q\" (split like a shell would, never run by one; needs worktree "
                          "isolation; overrides the plan's \"verify\")")
    run.add_argument("--new", action="store_true",
                     help="queue a new job even if the same plan's job is still unfinished (default: resume that one)")
    wait = sub.add_parser("wait", parents=[common], help="wait for a job to finish, then print the synthesis (as run does); "
                                       "for a task id, its result (as submit --wait does)")
    wait.add_argument("job", metavar="JOB|TASK")
    wait.add_argument("--timeout", type=float, help="stop waiting after S seconds (tasks keep running)")
    wait.add_argument("--json", action="store_true", help="print the results as JSON")
    for name, text in (("status", "progress of a job"), ("collect", "results of a job so far"),
                       ("cancel", "cancel a job's unfinished tasks"), ("retry", "retry a job's failed tasks"),
                       ("merge", "merge a worktree job's work into your current branch")):
        p = sub.add_parser(name, parents=[common], help=text)
        p.add_argument("job")
        p.add_argument("--json", action="store_true")
        if name == "merge":
            p.add_argument("--force", action="store_true", help="merge even though tasks are still pending or running, "
                                                                "or the job branch's head did not pass verification")
    inst = sub.add_parser("install-claude", help="install the Klauss skill and CLAUDE.md section into the project")
    inst.add_argument("--project", help="the project root (default: the one this directory belongs to)")
    try:
        args = ap.parse_args(argv)
    except cli_args.CliError as exc:
        print(exc, file=sys.stderr)
        return exc.code

    if args.command == "install-claude":
        try:
            root = Path(args.project) if args.project else config.find_project_root()
            for path, what in install_claude(root):
                print(f"{what}: {path}")
            return exits.EXIT_OK
        except (ValueError, OSError) as exc:
            return _fail(str(exc))
    try:
        orch = ClaudeOrchestrator(os.environ.get("KLAUSS_ORCHESTRATOR_ID", "cli"), db_path=args.db)
        if args.command == "run":
            return _run_plan(orch, args)
        if args.command == "wait" and orch.queue.get_job(args.job) is None and args.job.lstrip("#").isdigit():
            return _wait_task(orch, int(args.job.lstrip("#")), args)
        if orch.queue.get_job(args.job) is None:
            return _fail(f"job: unknown job {args.job!r} (see `{hints.command('jobs')}`)", exits.EXIT_FAIL)
        if args.command == "wait":
            try:
                return _wait_and_report(orch, args.job, args)
            except OrchestratorError as exc:
                raise _still_queued(exc, args.job) from None
        if args.command == "status":
            data = orch.get_job_status(args.job)
            job = orch.queue.get_job(args.job)
            report = integration.job_report(orch.queue, args.job) if integration.gated(orch.queue, job) else None
            if args.json:
                print(json.dumps({**data, "integration": report} if report else data, indent=2))
            else:
                print("\n".join([task_report.progress_line(data)] + (task_report.integration_lines(report, "  ")
                                                                       if report else [])))
            return exits.EXIT_OK
        if args.command == "collect":
            results = JobResults(args.job, orch.collect(args.job))
            print(json.dumps(results, indent=2) if args.json else orch.synthesize_results(results), end="")
            return exits.EXIT_OK
        if args.command == "merge":
            report = orch.merge_job(args.job, force=args.force)
            lines, ok = worktrees.describe_merge(report)
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                print("\n".join(lines), file=sys.stdout if ok else sys.stderr)
            return exits.EXIT_OK if ok else exits.EXIT_FAIL
        if args.command == "cancel":
            data = orch.cancel_job(args.job)
            print(json.dumps(data) if args.json else f"cancelled {len(data)} unfinished task(s) of {args.job}")
            return exits.EXIT_OK
        revived = orch.retry_failed(args.job)
        print(json.dumps(revived) if args.json else f"{len(revived)} task(s) back to pending")
        return exits.EXIT_OK
    except (ValueError, config.ConfigError, claude_queue.DriverMissing) as exc:
        return _fail(str(exc))
    except (OrchestratorError, claude_queue.QueueError) as exc:
        return _fail(str(exc), exits.EXIT_FAIL)


def plan_hash(plan):
    """The plan's content, whatever its layout or key order: the same plan run twice is one job."""
    # ASCII escapes keep a lone surrogate hashable; the plan's own check names it afterwards.
    canonical = json.dumps(plan, sort_keys=True, separators=(",", ":"))
    return hosts.sha256(canonical.encode("utf-8")).hexdigest()


def _run_plan(orch, args):
    plan, entries = load_plan(args.plan)
    digest = plan_hash(plan)
    if getattr(args, "verify", None) is not None:
        plan = {**plan, "verify": config.verify_argv(args.verify, "--verify")}
    job = None if args.new else orch.queue.unfinished_job(digest)
    if job:
        status = orch.get_job_status(job)
        print(f"job {job}: the same plan is still unfinished ({status['done']}/{status['total']} done); resuming it "
              "instead of queueing it again (--new queues another)", file=sys.stderr)
    else:
        job, ids = orch.submit_plan(plan["description"], entries, context=plan.get("context"),
                                    max_budget_usd=plan.get("max_budget_usd"), metadata=plan.get("metadata"),
                                    isolation=plan.get("isolation"), merge=plan.get("merge"), plan_hash=digest,
                                    verify=plan.get("verify"))
        print(f"job {job}: {len(ids)} task{'' if len(ids) == 1 else 's'} queued", file=sys.stderr)
    count = args.workers or orch.suggest_workers(job)
    try:
        if not orch.start_workers(count, confirm=True if args.yes else None):
            raise OrchestratorError(f"no workers running; start them with `{hints.command('start', count)}`")
        return _wait_and_report(orch, job, args)
    except KeyboardInterrupt:
        return _stopped_waiting(job)
    except OrchestratorError as exc:
        raise _still_queued(exc, job) from None


def _still_queued(exc, job):
    # A failed start (claude missing, not logged in, no credit) leaves the job queued: say so, and
    # how to go on, so that running the same command again is not the only idea (it would resume).
    return OrchestratorError(f"{exc}; job {job} is still queued: once that is fixed, run it with "
                             f"`{hints.command('wait', job)}`, or cancel it with `{hints.command('cancel', '--job', job)}`")


def _stopped_waiting(job, what="job"):
    # Ctrl-C ends the wait, not the job: the pool runs in a session of its own and keeps going.
    cancel = hints.command("cancel", "--job", job) if what == "job" else hints.command("cancel", job)
    print(("\n" if sys.stderr.isatty() else "") + f"stopped waiting; {what} {job} keeps running: "
          f"`{hints.command('wait', job)}`, `{cancel}`", file=sys.stderr, flush=True)
    return exits.EXIT_INTERRUPTED


def _wait_task(orch, task_id, args):
    """`wait ID` for one task, which `submit --wait` waited for: its result, exit 0 if it completed."""
    import pool
    q = orch.queue
    if q.get_task(task_id) is None:
        return _fail(f"task {task_id} not found (see `{hints.command('list')}`)", exits.EXIT_FAIL)
    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    waker = claude_queue.Waker(q, f"wait-task-{task_id}")
    try:
        print(f"waiting for task {task_id} (Ctrl-C stops waiting; the task keeps running)", file=sys.stderr, flush=True)
        # As wait_and_collect: a pool first (its starting workers clear an old configuration error).
        if q.get_task(task_id).status not in claude_queue.FINISHED and pool.running(q) is None \
                and not orch.start_workers(1, confirm=orch.cfg["workers"]["auto_start"]):
            return _fail(f"no workers are running and [workers] auto_start is off: start them with "
                         f"`{hints.command('start')}`; task {task_id} stays queued", exits.EXIT_FAIL)
        checked = time.monotonic()
        while True:
            task = q.get_task(task_id)
            if task is None:
                return _fail(f"task {task_id} disappeared from the queue (purged?)", exits.EXIT_FAIL)
            if task.status in claude_queue.FINISHED:
                break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return _fail(f"task {task_id} is still {task.status} after {args.timeout:g}s; it keeps running: "
                             f"`{hints.command('wait', task_id)}`", exits.EXIT_FAIL)
            if now - checked >= 2.0:  # the pool, as wait_and_collect looks at it
                checked = now
                state = task_report.pool_state(q)
                if state["state"] == states.POOL_CONFIG_ERROR:
                    return _fail(f"{state['text']}; task {task_id} stays queued", exits.EXIT_FAIL)
                if state["state"] == states.POOL_STOPPED and not orch.start_workers(1, confirm=orch.cfg["workers"]["auto_start"]):
                    return _fail(f"{state['text']}; task {task_id} stays queued", exits.EXIT_FAIL)
            waker.wait(1.0 if deadline is None else max(0.0, min(1.0, deadline - now)))
    except KeyboardInterrupt:
        return _stopped_waiting(task_id, "task")
    finally:
        waker.close()
    if args.json:
        print(json.dumps(task.to_dict(), indent=2, default=str))
    elif task.result:
        print(task.result)
    if task.status == "completed":
        return exits.EXIT_OK
    return _fail(f"task {task_id} {task.status}: {task.error or 'no error recorded'}", exits.EXIT_FAIL)


def _wait_and_report(orch, job, args):
    """Wait for the job, then print the synthesis (or JSON): the end of both `run` and `wait`."""
    try:
        print(f"waiting for job {job} (Ctrl-C stops waiting; the job keeps running)", file=sys.stderr, flush=True)
        results = orch.wait_and_collect(job, timeout=args.timeout, show_progress=True)
    except KeyboardInterrupt:
        return _stopped_waiting(job)
    summary = None
    if not results.timed_out:
        try:
            summary = orch.write_summary(results)
        except OSError as exc:  # the results are printed all the same
            print(f"warning: could not write the job's summary: {exc}", file=sys.stderr, flush=True)
    if args.json:
        print(json.dumps({"job_id": job, "timed_out": results.timed_out, "tasks": results,
                          **({"summary": str(summary)} if summary else {})}, indent=2))
    else:
        print(orch.synthesize_results(results), end="")
    for line in _not_merged(job, results):
        print(line, file=sys.stderr, flush=True)
    if summary:
        print(f"summary for a pull request: {summary} (the synthesis is next to it)", file=sys.stderr, flush=True)
    _say_pool_stays(orch)
    return exits.EXIT_FAIL if results.needs_attention else exits.EXIT_OK


def _not_merged(job, results):
    """Error lines for the completed tasks whose work is not on the job branch, and what to do."""
    left = [(tid, r) for tid, r in sorted(results.items())
            if r.get("status") == "completed" and r.get("merge") in ("conflict", "error", "integration_failed")
            and (r.get("integration") or {}).get("kind", "task") == "task"]
    lines = []
    for tid, r in left:
        if r.get("integration"):
            why = f"was kept out of the job branch: {task_report.integration_text(r['integration'])}"
        else:
            why = (f"conflicts with the job branch in {', '.join(r.get('conflicts') or [])}" if r["merge"] == "conflict"
                   else "could not be merged into the job branch")
        lines.append(f"error: task #{tid} {why}; its work is safe on branch {r.get('branch')}")
    if left:
        lines.append(f"to finish job {job}: bring the job branch into yours (`{hints.command('merge', job)}`), "
                     "then merge each branch above by hand (`git merge BRANCH`), resolve the conflicts"
                     + (", make the verify command pass" if any(r.get("integration") for _, r in left) else "")
                     + " and commit")
    return lines


def _say_pool_stays(orch):
    # Idle workers cost nothing, but a user should know they are there and how to end them.
    if not orch.get_worker_status()["running"]:
        return
    idle = orch.cfg["workers"]["idle_timeout"]
    stays = f"for {task_report.fmt_duration(idle)} without work (idle_timeout)" if idle else \
        "until stopped (idle_timeout = 0)"
    print(f"the pool stays up {stays} for the next job; stop it now with `{hints.command('stop')}`",
          file=sys.stderr, flush=True)


def main():
    sys.exit(exits.run(cli))


if __name__ == "__main__":
    main()
