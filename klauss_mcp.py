#!/usr/bin/env python3
"""Klauss as an MCP server: Claude Code delegates to the worker pool through native tools.

    python3 klauss_mcp.py [--db PATH] [--project DIR] [--trace FILE]     serve MCP over stdio
    python3 klauss_mcp.py register [--project DIR] [--absolute]          add it to <project>/.mcp.json

Protocol: MCP over stdio, i.e. newline-delimited JSON-RPC 2.0, handled by mcp_server.py (framing,
error codes, batches, cancellation); this module holds Klauss's tools, their schemas and the
entry point. Claude Code 2.1.329 first probes with `server/discover`, for which -32601 is the
expected answer; it then goes on with `initialize` as 2.1.197 does from the start.
`notifications/cancelled` stops a running `wait_job`.

Tool calls run on their own threads, so `ping` and cancellation are answered while `wait_job`
blocks. A tool that fails on bad input (a bad plan, an unknown job) returns a result with
`isError: true` and the same one-line message as the command line; an unexpected exception does
the same, with where it happened. stdout carries the protocol only: the real stdout is kept for
it and file descriptor 1 is pointed at stderr, so nothing else (a stray print, a child process)
can corrupt it. Logs go to stderr; `--trace FILE` (or KLAUSS_MCP_TRACE) also appends every
message in and out to FILE as JSON lines.

Jobs are submitted as orchestrator "mcp" (KLAUSS_ORCHESTRATOR_ID overrides). The project and its
database are found from the current directory, as for every Klauss program (`--project`,
`--db`, KLAUSS_DB override).
"""

import math
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import claude_queue
import cli_args
import config
import exits
import hints
import integration
import mcp_server
import orchestrator
import states
import task_report
import worktrees

HERE = Path(__file__).resolve().parent
SERVER_NAME = orchestrator.MCP_SERVER_NAME
SERVER_VERSION = "1.0.0"
DEFAULT_ORCHESTRATOR_ID = "mcp"
WAIT_DEFAULT_SECONDS = 60
WAIT_MAX_SECONDS = 600
WAIT_POLL_SECONDS = 1.0  # how often a waiting wait_job looks for cancellation
LIST_JOBS_DEFAULT = 20
MAX_TASK_LINES = 40  # job_status and wait_job list at most this many tasks

INSTRUCTIONS = (
    "Klauss runs parts of a large coding job on a pool of parallel Claude Code workers. Use it when "
    "a job splits into three or more independent pieces of real work: submit_job with one "
    "self-contained task per piece (each owning its files, listed in expected_outputs), then "
    "wait_job until it returns the synthesis (call it again while it says the job is still "
    "running), then check the produced files yourself.")


ToolError = mcp_server.ToolError
CallContext = mcp_server.CallContext


def _log(message):
    mcp_server.log(message, "klauss-mcp")


# --- the tools ----------------------------------------------------------------------------------

_STR = {"type": "string"}
_STR_LIST = {"type": "array", "items": {"type": "string"}}
_JOB_ID = {"type": "string", "description": "The job id submit_job returned, e.g. job-20261121-a1b2c3."}

TASK_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "Local id, unique in this job; what depends_on refers to."},
        "prompt": {"type": "string", "description": "Self-contained instructions: the worker sees nothing of "
                                                    "this conversation, only the job's context and this prompt."},
        "depends_on": {**_STR_LIST, "description": "Local ids of tasks that must complete before this one starts."},
        "priority": {"type": "integer", "minimum": 0, "description": "Higher runs first (default 0)."},
        "expected_outputs": {**_STR_LIST, "description": "Files the task must write (relative to its working dir); "
                                                         "it only completes when they were written."},
        "context_files": {**_STR_LIST, "description": "Globs of files whose text is given to the worker."},
        "working_dir": {"type": "string", "description": "Directory inside the project (default: the project root)."},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "description": "Seconds one attempt may run."},
        "max_attempts": {"type": "integer", "minimum": 1},
        "metadata": {"type": "object", "description": "Per-task overrides: model, max_turns, max_budget_usd, "
                                                      "allowed_tools."},
    },
    "required": ["prompt"],
    "additionalProperties": False,
}

TOOLS = [
    {
        "name": "submit_job",
        "title": "Submit a job to the Klauss workers",
        "description": (
            "Queue a job of tasks for parallel Claude workers and return its job id at once (it does not wait). "
            "The whole plan is checked first: on any error nothing is queued and the error names the task and "
            "field. By default a pool sized for the job is started if none is running. Then call wait_job."),
        "inputSchema": {
            "type": "object",
            "properties": {
                "description": {"type": "string", "description": "What the whole job is."},
                "context": {"type": "string", "description": "Shared text every task's prompt includes "
                                                             "(conventions, interfaces)."},
                "max_budget_usd": {"type": "number", "exclusiveMinimum": 0,
                                   "description": "Stop starting tasks once the job has cost this much."},
                "metadata": {"type": "object"},
                "tasks": {"type": "array", "minItems": 1, "items": TASK_SCHEMA},
                "start_workers": {"type": "boolean", "default": True,
                                  "description": "Make sure a pool sized for the job is running (default true)."},
                "workers": {"type": "integer", "minimum": 1,
                            "description": "Pool size to ensure (default: as many as the job can keep busy)."},
            },
            "required": ["description", "tasks"],
            "additionalProperties": False,
        },
    },
    {
        "name": "job_status",
        "title": "Progress of a Klauss job",
        "description": "A job's progress now (no waiting): counts, cost, and each task's status.",
        "inputSchema": {"type": "object", "properties": {"job_id": _JOB_ID}, "required": ["job_id"],
                        "additionalProperties": False},
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": "wait_job",
        "title": "Wait for a Klauss job",
        "description": (
            "Wait up to timeout_seconds (default %d, at most %d) for a job to finish. When it has, returns the "
            "synthesis in markdown: what each task did, what failed and why, files produced, cost. Otherwise "
            "returns the progress so far and says it is still running: call wait_job again. Never cancels "
            "anything. Starts workers if none run (unless [workers] auto_start is off)."
            % (WAIT_DEFAULT_SECONDS, WAIT_MAX_SECONDS)),
        "inputSchema": {
            "type": "object",
            "properties": {"job_id": _JOB_ID,
                           "timeout_seconds": {"type": "number", "minimum": 0, "maximum": WAIT_MAX_SECONDS,
                                               "default": WAIT_DEFAULT_SECONDS}},
            "required": ["job_id"],
            "additionalProperties": False,
        },
    },
    {
        "name": "list_jobs",
        "title": "List Klauss jobs",
        "description": "The newest jobs with their progress and cost.",
        "inputSchema": {"type": "object",
                        "properties": {"limit": {"type": "integer", "minimum": 1, "default": LIST_JOBS_DEFAULT}},
                        "additionalProperties": False},
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": "show_task",
        "title": "Show one Klauss task",
        "description": "One task in full: status, prompt, result, error, outputs, cost, attempts, history.",
        "inputSchema": {"type": "object",
                        "properties": {"task_id": {"type": "integer", "minimum": 1,
                                                   "description": "The task number, e.g. 12 for #12."}},
                        "required": ["task_id"], "additionalProperties": False},
        "annotations": {"readOnlyHint": True},
    },
    {
        "name": "cancel_job",
        "title": "Cancel a Klauss job",
        "description": "Cancel a job's unfinished tasks: pending ones at once, running ones are stopped by their worker.",
        "inputSchema": {"type": "object", "properties": {"job_id": _JOB_ID}, "required": ["job_id"],
                        "additionalProperties": False},
        "annotations": {"destructiveHint": True},
    },
    {
        "name": "retry_failed",
        "title": "Retry a Klauss job's failed tasks",
        "description": ("Put a job's failed and cancelled tasks (and the dependents skipped because of them) back "
                        "to pending, and by default make sure workers run. Then call wait_job."),
        "inputSchema": {"type": "object",
                        "properties": {"job_id": _JOB_ID,
                                       "start_workers": {"type": "boolean", "default": True}},
                        "required": ["job_id"], "additionalProperties": False},
    },
    {
        "name": "start_workers",
        "title": "Start Klauss workers",
        "description": "Start a pool of workers for this project, or grow the running one to `count`.",
        "inputSchema": {"type": "object",
                        "properties": {"count": {"type": "integer", "minimum": 1,
                                                 "description": "Workers (default: [workers] count; capped by "
                                                                "[workers] max_workers)."}},
                        "additionalProperties": False},
    },
    {
        "name": "stop_workers",
        "title": "Stop Klauss workers",
        "description": ("Stop this project's pool gracefully: running tasks are released (they run again when "
                        "workers next start). Waits up to timeout_seconds (default 60)."),
        "inputSchema": {"type": "object",
                        "properties": {"timeout_seconds": {"type": "number", "exclusiveMinimum": 0,
                                                           "maximum": WAIT_MAX_SECONDS, "default": 60}},
                        "additionalProperties": False},
    },
    {
        "name": "worker_status",
        "title": "Klauss worker status",
        "description": "Whether a pool runs, each worker's state and task, pauses and configuration errors.",
        "inputSchema": {"type": "object", "properties": {}, "additionalProperties": False},
        "annotations": {"readOnlyHint": True},
    },
]
TOOL_NAMES = {t["name"] for t in TOOLS}

# Plans may choose git-worktree isolation, as plan files can.
TOOLS[0]["inputSchema"]["properties"].update({
    "isolation": {"type": "string", "enum": list(worktrees.MODES),
                  "description": "\"worktree\" runs each task in its own git worktree and branch "
                                 "(default: [isolation] mode in .klauss.toml)."},
    "merge": {"type": "string", "enum": list(worktrees.MERGE_MODES),
              "description": "With worktree isolation: \"auto\" merges finished tasks into one job "
                             "branch, \"branch\" leaves one branch per task."},
    "verify": {"type": "array", "items": {"type": "string"},
               "description": "With worktree isolation and merge \"auto\": a command (argv, no shell) that must "
                              "pass before a task's work enters the job branch, e.g. [\"python3\", \"-m\", "
                              "\"pytest\", \"-q\"]; a failure queues fix-up tasks (default: [integration] "
                              "verify_command)."},
})


def _title(prompt, width=80):
    return task_report.shorten(prompt, width, first_line=True)


class KlaussTools:
    """The MCP tools over ClaudeOrchestrator. Methods take the arguments dict and a CallContext and
    return markdown text; ToolError, ValueError and the Klauss errors become isError results."""

    def __init__(self, db_path=None, orchestrator_id=None):
        self.db_path = db_path
        self.orchestrator_id = orchestrator_id or os.environ.get("KLAUSS_ORCHESTRATOR_ID") or DEFAULT_ORCHESTRATOR_ID
        self._orch = None
        self._orch_lock = threading.Lock()
        self._pool_lock = threading.Lock()

    @property
    def orch(self):
        # Made on first use, not at start-up: a configuration error is then a tool error the
        # model can report (and fixing the file fixes the next call), not a server that won't start.
        with self._orch_lock:
            if self._orch is None:
                self._orch = orchestrator.ClaudeOrchestrator(self.orchestrator_id, db_path=self.db_path)
            return self._orch

    def call(self, name, args, ctx=None):
        return getattr(self, "tool_" + name)(args, ctx or CallContext())

    # --- argument helpers (messages name the argument, like the queue's) ---

    @staticmethod
    def _known(args, allowed):
        unknown = sorted(set(args) - set(allowed))
        if unknown:
            raise ToolError(f"unknown argument(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed)) or 'none'})")

    def _job_id(self, args):
        job_id = args.get("job_id")
        if not isinstance(job_id, str) or not job_id.strip():
            raise ToolError("job_id: required, a job id string (see list_jobs)")
        job_id = job_id.strip()
        if self.orch.queue.get_job(job_id) is None:
            raise ToolError(f"job: unknown job {job_id!r} (see list_jobs)")
        return job_id

    @staticmethod
    def _number(args, name, default, minimum=0.0, maximum=None, exclusive=False):
        value = args.get(name, default)
        if value is None:
            value = default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise ToolError(f"{name}: expected a number, got {value!r}")
        if value < minimum or (exclusive and value == minimum):
            raise ToolError(f"{name}: expected a number {'>' if exclusive else '>='} {minimum:g}, got {value!r}")
        return min(value, maximum) if maximum is not None else value

    @staticmethod
    def _int(args, name, default=None, minimum=1):
        value = args.get(name, default)
        if value is None:
            return None
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ToolError(f"{name}: expected an integer >= {minimum}, got {value!r}")
        return value

    @staticmethod
    def _bool(args, name):
        value = args.get(name)
        if value is not None and not isinstance(value, bool):
            raise ToolError(f"{name}: expected true or false, got {value!r}")
        return value

    # --- pool ---

    def _ensure_pool(self, job_id, start, workers=None):
        """One line on the pool after making sure it runs for the job (if `start` allows)."""
        orch = self.orch
        confirm = orch.cfg["workers"]["auto_start"] if start is None else start
        if not confirm:
            status = orch.get_worker_status()
            if status["running"]:
                return f"Workers: a pool of {status['process_count']} is running."
            why = "start_workers: false" if start is False else "[workers] auto_start is off"
            return f"Workers: none running and none started ({why}); call start_workers before wait_job."
        count = workers or orch.suggest_workers(job_id)
        try:
            with self._pool_lock:
                before = orch.get_worker_status()
                orch.start_workers(count, confirm=True)
                after = orch.get_worker_status()
        except orchestrator.OrchestratorError as exc:
            return f"**Workers could not be started:** {exc}. The job is queued; fix that, then call start_workers."
        if not before["running"]:
            return f"Workers: started a pool of {after['process_count'] or count}."
        if after["process_count"] > before["process_count"]:
            return f"Workers: grew the pool to {after['process_count']}."
        return f"Workers: a pool of {after['process_count']} is running."

    # --- tools ---

    def tool_submit_job(self, args, ctx):
        start = self._bool(args, "start_workers")
        workers = self._int(args, "workers")
        plan = {k: v for k, v in args.items() if k not in ("start_workers", "workers")}
        plan, entries = orchestrator.check_plan(plan)
        orch = self.orch
        options = {k: plan[k] for k in ("isolation", "merge", "verify") if plan.get(k) is not None}
        job_id, ids = orch.submit_plan(plan["description"], entries, context=plan.get("context"),
                                       max_budget_usd=plan.get("max_budget_usd"), metadata=plan.get("metadata"),
                                       **options)
        _log(f"submitted {job_id}: {len(ids)} task(s)")
        by_ref = {e["ref"]: tid for e, tid in zip(entries, ids)}
        lines = [f"Job `{job_id}` queued: {len(ids)} task{'s' if len(ids) != 1 else ''} — {plan['description'].strip()}",
                 ""]
        for entry, tid in list(zip(entries, ids))[:MAX_TASK_LINES]:
            local = entry["ref"]
            extra = []
            if entry.get("priority"):
                extra.append(f"priority {entry['priority']}")
            if entry["depends_on"]:
                extra.append("after " + ", ".join(f"#{by_ref[d]}" for d in entry["depends_on"]))
            if entry.get("expected_outputs"):
                extra.append("writes " + ", ".join(entry["expected_outputs"]))
            name = f"`{local}` → " if not local.startswith("#") else ""
            lines.append(f"- {name}task #{tid}" + (f" ({'; '.join(extra)})" if extra else "")
                         + f": {_title(entry['prompt'], 60)}")
        if len(ids) > MAX_TASK_LINES:
            lines.append(f"- … and {len(ids) - MAX_TASK_LINES} more (job_status lists them)")
        try:
            pool = self._ensure_pool(job_id, start, workers)
        except Exception as exc:  # the job is queued: reporting an error would make a retry queue it twice
            pool = f"**Workers could not be started:** {exc}. The job is queued; fix that, then call start_workers."
        lines += ["", pool,
                  f"Next: call wait_job with job_id \"{job_id}\" for the synthesis (job_status shows progress)."]
        return "\n".join(lines)

    def _task_lines(self, job_id):
        q = self.orch.queue
        tasks = q.list_tasks(job_id=job_id, order="asc")
        report = integration.job_report(q, job_id) if integration.gated(q, q.get_job(job_id)) else None
        rows = {r["task"]: r for r in (report or {}).get("tasks", [])}
        tasks = [t for t in tasks if not integration.is_integration(t)]  # the merge queue's, not the user's
        hidden = 0
        if len(tasks) > MAX_TASK_LINES:  # a big job: list what still needs attention, count the rest
            shown = [t for t in tasks if t.status != "completed" or t.denied][:MAX_TASK_LINES]
            hidden = len(tasks) - len(shown)
            tasks = shown
        lines = ["- " + task_report.verified_head_text(report)] if report else []
        for t in tasks:
            lines.append(task_report.task_markdown_line(t, rows.get(t.id)))
        if hidden:
            lines.append(f"- … and {hidden} more (completed ones are not listed; show_task gives any task in full)")
        return lines

    def _progress(self, job_id):
        status = self.orch.get_job_status(job_id)
        pool_text = None if status["finished"] else self._pool_state()["text"]
        return status, task_report.job_status_line(status, pool_text)

    def _pool_state(self):
        return task_report.pool_state(self.orch.queue, start="call the start_workers tool",
                                      restart="Then call start_workers and wait_job again (the job is still queued)")

    def tool_job_status(self, args, ctx):
        self._known(args, {"job_id"})
        job_id = self._job_id(args)
        status, line = self._progress(job_id)
        lines = [f"Job `{job_id}` — {status['description']}", line, ""] + self._task_lines(job_id) + [""]
        if status["finished"]:
            lines.append(f"Finished: call wait_job with job_id \"{job_id}\" for the synthesis.")
        else:
            lines.append(f"Still running: call wait_job with job_id \"{job_id}\" to wait for it.")
        return "\n".join(lines)

    def tool_wait_job(self, args, ctx):
        self._known(args, {"job_id", "timeout_seconds"})
        job_id = self._job_id(args)
        timeout = self._number(args, "timeout_seconds", WAIT_DEFAULT_SECONDS, maximum=WAIT_MAX_SECONDS)
        orch = self.orch
        started = time.monotonic()
        finished = orch.get_job_status(job_id)["finished"]
        looked = []

        def report(_status):
            status, line = self._progress(job_id)
            ctx.progress(status["done"], status["total"], line)
            # The workers stopped on a configuration problem (not logged in, billing): waiting cannot
            # help. Not looked at on the first report, which comes once wait_and_collect has started
            # a pool if none ran: a starting worker clears an old flag.
            pool = self._pool_state() if looked else None
            looked.append(True)
            if pool and pool["state"] == states.POOL_CONFIG_ERROR:
                raise ToolError(pool["text"])

        if not finished and not ctx.cancelled():
            try:
                # One wait: it ends when the job does, at the deadline, or once the request is cancelled.
                results = orch.wait_and_collect(job_id, timeout=timeout, poll_interval=WAIT_POLL_SECONDS,
                                                 on_progress=report, show_progress=False, should_stop=ctx.cancelled)
            except orchestrator.OrchestratorError as exc:
                raise ToolError(f"{exc} (or call the start_workers tool)" if "manage.sh start" in str(exc)
                                else str(exc)) from None
            finished = not results.timed_out
        waited = time.monotonic() - started
        if finished:
            results = orchestrator.JobResults(job_id, orch.collect(job_id), False, self._wall_time(job_id))
            text = orch.synthesize_results(results).rstrip("\n")
            try:
                summary = orch.write_summary(results)
            except OSError as exc:
                return text + f"\n\n(The summary file could not be written: {exc}.)"
            return text + (f"\n\nA summary for a pull request is in `{summary}`." if summary else "")
        _, line = self._progress(job_id)
        lines = [f"Job `{job_id}` is still running after waiting {waited:.0f}s: {line}", ""]
        lines += self._task_lines(job_id)
        lines += ["", f"Still running; call wait_job again with job_id \"{job_id}\" (nothing was cancelled)."]
        return "\n".join(lines)

    def _wall_time(self, job_id):
        job = self.orch.queue.get_job(job_id)
        ends = [t.finished_at for t in self.orch.queue.list_tasks(job_id=job_id, order="asc") if t.finished_at]
        return max(ends) - job["created_at"] if job and ends else 0.0

    def tool_list_jobs(self, args, ctx):
        self._known(args, {"limit"})
        limit = self._int(args, "limit", LIST_JOBS_DEFAULT)
        jobs = self.orch.queue.list_jobs(limit=limit)
        if not jobs:
            return "No jobs yet. Submit one with submit_job."
        lines = [f"{len(jobs)} newest job{'s' if len(jobs) != 1 else ''}:"]
        now = time.time()
        for j in jobs:
            j["stats"] = integration.user_stats(self.orch.queue, j)  # integration tasks are not the user's
            lines.append(task_report.job_markdown_line(j, now))
        return "\n".join(lines)

    def tool_show_task(self, args, ctx):
        self._known(args, {"task_id"})
        raw = args.get("task_id")
        task_id = raw
        if isinstance(raw, str) and raw.strip().lstrip("#").isdigit():
            task_id = int(raw.strip().lstrip("#"))
        if isinstance(task_id, float) and math.isfinite(task_id) and task_id == int(task_id):
            task_id = int(task_id)
        if isinstance(task_id, bool) or not isinstance(task_id, int) or task_id < 1:
            raise ToolError(f"task_id: expected a task number >= 1, got {raw!r}")
        q = self.orch.queue
        task = q.get_task(task_id)
        if task is None:
            raise ToolError(f"task {task_id} not found")
        lines = task_report.describe_task(task, q.get_events(task.id), q.get_dependents(task.id),
                                          task_report.find_transcript(q.cfg, task), time.time(),
                                          integration=integration.task_row(q, task))
        return "\n".join(lines)

    def tool_cancel_job(self, args, ctx):
        self._known(args, {"job_id"})
        job_id = self._job_id(args)
        changed = self.orch.cancel_job(job_id)
        if not changed:
            return f"Job `{job_id}` has no pending or running tasks; nothing to cancel."
        words = {"cancelled": "cancelled", "cancel_requested": "cancel requested (its worker stops it)"}
        lines = [f"Cancelled {len(changed)} unfinished task(s) of job `{job_id}`:"]
        lines += [f"- #{tid} {words.get(st, st)}" for tid, st in changed.items()]
        return "\n".join(lines)

    def tool_retry_failed(self, args, ctx):
        self._known(args, {"job_id", "start_workers"})
        job_id = self._job_id(args)
        start = self._bool(args, "start_workers")
        revived = self.orch.retry_failed(job_id)
        if not revived:
            return f"Job `{job_id}` has no failed or cancelled tasks; nothing to retry."
        lines = [f"{len(revived)} task(s) of job `{job_id}` back to pending: " + ", ".join(f"#{t}" for t in revived),
                 self._ensure_pool(job_id, True if start is None else start),
                 f"Next: call wait_job with job_id \"{job_id}\"."]
        return "\n".join(lines)

    def tool_start_workers(self, args, ctx):
        self._known(args, {"count"})
        orch = self.orch
        count = self._int(args, "count") or orch.cfg["workers"]["count"]
        with self._pool_lock:
            orch.start_workers(count, confirm=True)
        return self._status_text()

    def tool_stop_workers(self, args, ctx):
        self._known(args, {"timeout_seconds"})
        timeout = self._number(args, "timeout_seconds", 60, maximum=WAIT_MAX_SECONDS, exclusive=True)
        orch = self.orch
        with self._pool_lock:
            was = orch.get_worker_status()
            stopped = orch.stop_workers(timeout=timeout)
        if not was["running"]:
            return "No pool was running; nothing to stop."
        if not stopped:
            raise ToolError(f"the pool is still stopping after {timeout:g}s; call worker_status to check, "
                            f"or run `{hints.command('kill')}`")
        return "Pool stopped; running tasks were released and run again when workers next start."

    def tool_worker_status(self, args, ctx):
        self._known(args, set())
        return self._status_text()

    def _status_text(self):
        orch = self.orch
        st = orch.get_worker_status()
        lines = []
        if st["running"]:
            lines.append(f"Pool running (coordinator pid {st['coordinator_pid']}): {st['process_count']} worker(s).")
            for w in st["workers"]:
                task = f", task #{w['current_task']}" if w["current_task"] else ""
                lines.append(f"- {w['worker_id']} (pid {w['pid']}, host {w['host']}): {w['state']}{task}")
        else:
            lines.append("No pool running. Call start_workers (submit_job and wait_job start one when needed).")
        for w in st.get("other_workers") or []:
            task = f", task #{w['current_task']}" if w["current_task"] else ""
            lines.append(f"- {w['worker_id']} (host {w['host']}): {w['state']}{task}")
        if st["paused"]:
            value, until = st["paused"]["value"], st["paused"]["until"]
            when = time.strftime("%H:%M:%S", time.localtime(until)) if until else "further notice"
            lines.append(f"**Paused** until {when}: {value.get('message') or value.get('reason')}")
        if st["config_error"]:
            value = st["config_error"]["value"]
            lines.append(f"**Configuration error:** {value.get('message')}. To fix: {value.get('fix')}")
        stats = integration.queue_user_stats(orch.queue)  # the merge queue's own tasks are not the user's
        lines.append(f"Queue: {stats['pending']} pending, {stats['in_progress']} running, "
                     f"{stats['completed']} completed, {stats['failed']} failed"
                     + (f", {stats['integrating']} integrating." if stats.get("integrating") else "."))
        return "\n".join(lines)


# --- the protocol -------------------------------------------------------------------------------

class MCPServer(mcp_server.MCPServer):
    """The MCP session serving Klauss's tools."""

    tool_list = TOOLS
    server_info = {"name": SERVER_NAME, "title": "Klauss", "version": SERVER_VERSION}
    instructions = INSTRUCTIONS
    log_name = "klauss-mcp"

    def error_text(self, exc):
        if isinstance(exc, (orchestrator.OrchestratorError, claude_queue.QueueError)):
            return str(exc) or type(exc).__name__
        if isinstance(exc, sqlite3.DatabaseError):
            return f"database error: {exc}"
        return super().error_text(exc)


# --- the command line ---------------------------------------------------------------------------

def main(argv=None):
    ap = cli_args.Parser(prog=hints.prog("klauss_mcp.py", "mcp"), command=("mcp",),
                         description="Klauss as an MCP server (stdio).")
    ap.add_argument("command", nargs="?", choices=["serve", "register"], default="serve",
                    help="serve MCP on stdin/stdout (default), or register it in the project's .mcp.json")
    ap.add_argument("--db", help="the database (default: the project's .klauss/claude_tasks.db)")
    ap.add_argument("--project", help="the project directory (default: the current directory's project)")
    ap.add_argument("--absolute", action="store_true",
                    help="register: name the script by its absolute path (works when claude starts in a subdirectory)")
    ap.add_argument("--trace", default=os.environ.get("KLAUSS_MCP_TRACE"),
                    help="append every message in and out to this file (JSON lines)")
    try:
        args = ap.parse_args(argv)
    except cli_args.CliError as exc:
        print(exc, file=sys.stderr)
        return exc.code
    if args.command == "register":
        try:
            root = Path(args.project) if args.project else config.find_project_root()
            path, what = orchestrator.register_mcp(root, absolute=args.absolute)
        except (ValueError, OSError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return exits.EXIT_USAGE
        print(f"{what}: {path}")
        return exits.EXIT_OK
    if args.project:
        try:
            os.chdir(args.project)
        except OSError as exc:
            print(f"error: --project {args.project}: {exc.strerror}", file=sys.stderr)
            return exits.EXIT_USAGE
    db = str(Path(args.db).resolve()) if args.db else None
    trace = str(Path(args.trace).resolve()) if args.trace else None
    instream, outstream = mcp_server.protocol_streams()
    server = MCPServer(KlaussTools(db_path=db), instream, outstream, trace=trace)
    _log(f"serving MCP on stdio (pid {os.getpid()}, project {Path.cwd()})")
    try:
        server.serve()
    except KeyboardInterrupt:
        pass
    _log("end of input; exiting")
    return exits.EXIT_OK


if __name__ == "__main__":
    sys.exit(exits.run(main))
