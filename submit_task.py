#!/usr/bin/env python3
"""Queue tasks for the Klauss workers, and inspect or manage them.

    submit_task.py submit PROMPT [options]       queue one task ("-" reads the prompt from stdin)
    submit_task.py submit-file FILE              queue a JSON file of tasks, all or nothing
    submit_task.py list | show ID | stats | jobs
    submit_task.py cancel ID... | --job ID
    submit_task.py retry ID... | --failed [--job ID]
    submit_task.py purge --older-than DAYS [--status S...]
    submit_task.py merge JOB [--force] | worktrees [--job J] | clean-worktrees [--job J] [--branches]

Every command takes --db PATH (default: the project's database, see README) and --json.
Exit codes: 0 ok; 1 the operation failed (a task not found, a waited-for task that failed);
2 bad input, usage or configuration, in which case nothing was changed.
"""

import argparse
import json
import math
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

import claude_queue
import cli_args
import config
import exits
import hints
import integration
import processes
import queues
import states
import submission
import task_report
import worktrees
from exits import EXIT_FAIL, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

PROG = hints.prog("submit_task.py")
WAIT_POLL_SECONDS = 0.25
POOL_CHECK_POLLS = 8  # --wait looks at the pool every this many polls
INT64_MAX = cli_args.INT64_MAX

FILE_HELP = """\
FILE (or "-" for stdin) holds one JSON object (one task) or a list of them. Fields:
  prompt (required), working_dir, context_files [globs], expected_outputs [paths], metadata {},
  priority, job_id, parent_id, depends_on [ids], max_attempts, timeout, ref.
Dependencies: give an entry a "ref" (any string unique in the file) and list that string in another
entry's depends_on; integers in depends_on are ids of tasks already in the queue. An entry may
depend on any other entry of the file, earlier or later; cycles are refused.
Example:
  [{"ref": "api", "prompt": "Write the API", "expected_outputs": ["api.py"]},
   {"prompt": "Write tests for api.py", "depends_on": ["api"], "priority": 2}]
Every entry is checked before anything is inserted: one bad entry inserts nothing, and the error
names the entry ("task 3: priority: ...")."""


CliError = cli_args.CliError
_Parser = cli_args.Parser
_int, _number, _statuses, _task_id = cli_args.int_arg, cli_args.number_arg, cli_args.statuses_arg, cli_args.task_id_arg


# --- opening the queue -------------------------------------------------------------------------

def open_queue(args, create=True, empty_ok=False):
    """The project's queue (or --db's), by queues.open_queue's rule. Read-only commands pass
    create=False; with empty_ok, a fresh project's missing database reads as an empty queue."""
    cfg = config.load_config(db=args.db)
    explicit = args.db or os.environ.get("KLAUSS_DB")
    return queues.open_queue(cfg, create=create, must_exist=bool(explicit) or not empty_ok)


def coordinator_up(q):
    # pool (and the supervisor it imports) only where a command controls the pool: list, show and
    # the other views start without them.
    import pool
    return pool.running(q) is not None


# --- formatting --------------------------------------------------------------------------------

def emit_json(data):
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def one_line(text, width):
    return task_report.shorten(text, width, ellipsis="...")


def table(headers, rows, last_width=None):
    """Left-aligned columns; the last column is cut to fit the terminal."""
    rows = [[task_report.clean(c) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]
    lines = []
    for row in [headers, *rows]:
        cells = [str(c).ljust(widths[i]) for i, c in enumerate(row[:-1])]
        prefix = "  ".join(cells) + ("  " if cells else "")
        room = (last_width or 10 ** 6) - len(prefix)
        lines.append((prefix + one_line(str(row[-1]), max(room, 20))).rstrip())
    return "\n".join(lines)


def terminal_width():
    return shutil.get_terminal_size((120, 24)).columns


def task_row(t, now):
    return ["#%d" % t.id, task_report.status_label(t), t.priority, f"{t.attempts_used}/{t.max_attempts}", t.worker_id or "-",
            task_report.fmt_cost(t.cost_usd), task_report.fmt_ago(t.updated_at, now), t.prompt]


TASK_HEADERS = ["ID", "STATUS", "PRI", "TRIES", "WORKER", "COST", "UPDATED", "PROMPT"]


# --- reading input -----------------------------------------------------------------------------

def read_stdin(what):
    stream = getattr(sys.stdin, "buffer", None)
    if stream is None:
        raise CliError(f"{what}: stdin is closed")
    if sys.stdin.isatty():
        print(f"reading the {what} from stdin; end it with Ctrl-D", file=sys.stderr)
    return _decode(stream.read(), f"{what} (stdin)")


def _decode(data, where):
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CliError(f"{where}: not valid UTF-8 text (byte {exc.start}); save it as UTF-8") from None


def _no_duplicate_keys(pairs):
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _no_constants(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(text, where):
    """JSON as the standard defines it: NaN, Infinity and repeated keys are errors, not surprises."""
    try:
        return json.loads(text, object_pairs_hook=_no_duplicate_keys, parse_constant=_no_constants)
    except json.JSONDecodeError as exc:
        raise CliError(f"{where}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except ValueError as exc:
        raise CliError(f"{where}: invalid JSON: {exc}") from None
    except RecursionError:
        raise CliError(f"{where}: invalid JSON: nested too deeply") from None


def load_task_file(path):
    """The file's entries as a list, and whether it held a single object."""
    if path == "-":
        where, text = "stdin", read_stdin("task file")
    else:
        where = path
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CliError(f"{path}: cannot read: {exc.strerror or exc}") from None
        text = _decode(data, path)
    if not text.strip():
        raise CliError(f"{where}: the file is empty; expected a JSON object or a list of tasks")
    data = parse_json(text, where)
    if isinstance(data, dict) and "tasks" in data and "prompt" not in data:
        raise CliError(f"{where}: this is a plan (an object with \"tasks\"), which runs as one job: "
                       f"{hints.command('run', path)}; submit-file takes a task or a list of tasks")
    if isinstance(data, dict):
        return [data], True
    if not isinstance(data, list):
        raise CliError(f"{where}: expected a JSON object (one task) or a list of tasks, got {_json_type(data)}")
    if not data:
        raise CliError(f"{where}: the list is empty; nothing to submit")
    return data, False


def _json_type(value):
    return {str: "a string", int: "a number", float: "a number", bool: "true/false",
            type(None): "null", list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def check_ranges(entry):
    """What SQLite cannot store, named by field (validation.validate_task checks the types and minimums)."""
    for key in ("priority", "max_attempts", "parent_id"):
        value = entry.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INT64_MAX:
            raise ValueError(f"{key}: {value} is too large")
    deps = entry.get("depends_on")
    for dep in deps if isinstance(deps, list) else ():
        if isinstance(dep, int) and not isinstance(dep, bool) and abs(dep) > INT64_MAX:
            raise ValueError(f"depends_on: {dep} is not a task id")
    timeout = entry.get("timeout")
    if isinstance(timeout, float) and not math.isfinite(timeout):
        raise ValueError(f"timeout: expected a finite number of seconds, got {timeout!r}")


def check_entry(entry):
    """What a task file gets wrong that the queue's own messages would not explain."""
    if not isinstance(entry, dict):
        raise ValueError(f"expected a JSON object with a prompt, got {_json_type(entry)}")
    if "id" in entry:
        raise ValueError('id: ids are given by the queue; to depend on this entry, name it with "ref" '
                         'and list that name in the other entry\'s depends_on')
    check_ranges(entry)


def check_references(q, task):
    """A checked task's references to other rows, named by field (the insert would refuse them
    without saying which entry)."""
    missing = [d for d in task["depends_on"] if isinstance(d, int) and q.get_task(d) is None]
    if missing:
        raise ValueError(f"depends_on: unknown task id(s) {', '.join(map(str, missing))}")
    if task["job_id"] is not None and q.get_job(task["job_id"]) is None:
        raise ValueError(f"job_id: unknown job {task['job_id']!r}")
    if task["parent_id"] is not None and q.get_task(task["parent_id"]) is None:
        raise ValueError(f"parent_id: unknown task id {task['parent_id']}")


# --- commands ----------------------------------------------------------------------------------

def cmd_submit(args):
    if args.timeout_wait is not None and not args.wait:
        raise CliError("--timeout-wait goes with --wait")
    prompt = read_stdin("prompt") if args.prompt == "-" else args.prompt
    metadata = {}
    if args.metadata is not None:
        metadata = parse_json(args.metadata, "--metadata")
        if not isinstance(metadata, dict):
            raise CliError(f"--metadata: expected a JSON object, got {_json_type(metadata)}")
    if args.model is not None:
        if not args.model.strip():
            raise CliError("--model: expected a model name, got an empty string")
        metadata["model"] = args.model
    if args.isolation is not None:
        metadata["isolation"] = args.isolation
    entry = {"prompt": prompt, "working_dir": args.dir, "context_files": args.context,
             "expected_outputs": args.outputs, "metadata": metadata, "priority": args.priority,
             "job_id": args.job, "depends_on": args.depends_on, "max_attempts": args.max_attempts,
             "timeout": args.timeout}
    q = open_queue(args)
    [task_id] = submission.add_tasks(q, [entry])
    if args.wait:
        return wait_for(q, task_id, args.timeout_wait, args.json)
    if args.json:
        emit_json({"id": task_id})
    else:
        print(task_id)
    return EXIT_OK


def wait_for(q, task_id, timeout=None, as_json=False, sleep=None, clock=None):
    """Poll until the task finishes; print its result (0) or its error (1)."""
    sleep, clock = sleep or time.sleep, clock or time.monotonic
    try:
        print(f"task {task_id} queued; waiting for it to finish (Ctrl-C stops waiting, not the task)",
              file=sys.stderr, flush=True)
        if not coordinator_up(q) and not any(processes.pid_alive(w["pid"]) for w in q.list_workers()):
            start_pool_for(q, task_id)
        deadline = None if timeout is None else clock() + timeout
        polls = 0
        down = None  # why the database cannot be read now: the wait goes on, as the pool does
        while True:
            try:
                task = q.get_task(task_id)
                polls += 1
                if task is not None and task.status not in claude_queue.FINISHED and polls % POOL_CHECK_POLLS == 0:
                    check_pool(q, task_id)
            except claude_queue.DatabaseUnavailable as exc:
                if down is None:
                    print(f"{PROG}: {exc}; still waiting for task {task_id} (Ctrl-C stops waiting, not the task)",
                          file=sys.stderr, flush=True)
                down = exc
                if deadline is not None and clock() >= deadline:
                    # Submitted already: the hint waits for it again, where "run the command again"
                    # would submit it twice.
                    raise CliError(f"task {task_id} stays queued, but the database could not be read when the "
                                   f"{timeout:g}s of waiting ran out ({down}); once it is back, "
                                   f"`{hints.command('wait', task_id)}` waits again", EXIT_FAIL) from None
                sleep(WAIT_POLL_SECONDS)
                continue
            if down is not None:
                print(f"{PROG}: the database is back; waiting for task {task_id}", file=sys.stderr, flush=True)
                down = None
            if task is None:
                raise CliError(f"task {task_id} disappeared from the queue (purged?)", EXIT_FAIL)
            if task.status in claude_queue.FINISHED:
                break
            if deadline is not None and clock() >= deadline:
                raise CliError(f"task {task_id} is still {task.status} after {timeout:g}s; it stays queued "
                               f"(see {hints.command('show', task_id)})", EXIT_FAIL)
            sleep(WAIT_POLL_SECONDS)
    except KeyboardInterrupt:
        raise CliError(f"stopped waiting; task {task_id} keeps running: `{hints.command('wait', task_id)}`, "
                       f"`{hints.command('cancel', task_id)}`", EXIT_INTERRUPTED) from None
    if as_json:
        emit_json(task.to_dict())
    elif task.result:
        print(task.result)
    if task.status == "completed":
        return EXIT_OK
    raise CliError(f"task {task_id} {task.status}: {task.error or 'no error recorded'}", EXIT_FAIL)


def check_pool(q, task_id):
    """While --wait waits: workers stopped by a configuration error end the wait (waiting cannot
    help); a pool that went away is started again as at the start."""
    pool = task_report.pool_state(q)
    if pool["state"] == states.POOL_CONFIG_ERROR:
        raise CliError(f"{pool['text']}; task {task_id} stays queued (`{hints.command('cancel', task_id)}` "
                       "cancels it)", EXIT_FAIL)
    if pool["state"] == states.POOL_STOPPED and q.cfg["workers"]["auto_start"]:
        start_pool_for(q, task_id)


def start_pool_for(q, task_id):
    """No pool runs: start one as `run` does when [workers] auto_start is on; otherwise say how."""
    if not q.cfg["workers"]["auto_start"]:
        print(f"note: no Klauss workers are running and [workers] auto_start is off; start some with "
              f"`{hints.command('start')}`", file=sys.stderr, flush=True)
        return
    print("no Klauss workers are running; starting 1 ([workers] auto_start)", file=sys.stderr, flush=True)
    import pool
    try:
        pool.start(q.cfg, 1)
    except pool.PoolError as exc:
        why = " ".join(exc.reason.split())
        raise CliError(f"could not start workers: {why}; task {task_id} stays queued: start workers with "
                       f"`{hints.command('start')}`, or cancel it with `{hints.command('cancel', task_id)}`",
                       EXIT_FAIL) from None


def cmd_submit_file(args):
    entries, single = load_task_file(args.file)
    if args.job is not None:
        entries = [{"job_id": args.job, **e} if isinstance(e, dict) else e for e in entries]
    if args.isolation is not None:
        entries = [{**e, "metadata": {"isolation": args.isolation, **(e.get("metadata") or {})}}
                   if isinstance(e, dict) and isinstance(e.get("metadata") or {}, dict) else e for e in entries]
    q = open_queue(args)
    for index, entry in enumerate(entries):
        try:
            check_entry(entry)
        except ValueError as exc:
            raise CliError(str(exc) if single else f"task {index}: {exc}") from None
    try:
        prepared = submission.prepare(q, entries)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    for index, task in enumerate(prepared[0]):
        try:
            check_references(q, task)
        except ValueError as exc:
            raise CliError(str(exc) if single else f"task {index}: {exc}") from None
    ids = q.insert_prepared(prepared)
    if args.json:
        emit_json({"ids": ids})
    else:
        print("\n".join(map(str, ids)))
    return EXIT_OK


def cmd_list(args):
    q = open_queue(args, create=False, empty_ok=True)
    statuses = [s for group in args.status or () for s in group] or None
    limit = args.limit or None
    job = None
    if args.job is not None:
        job = q.get_job(args.job)
        if job is None:
            raise CliError(f"job {args.job} not found", EXIT_FAIL)
    # The merge queue's integration tasks are not the user's tasks (as in `jobs` and `status JOB`):
    # listed, and marked, only with --all.
    if args.all:
        tasks = q.recent_tasks(status=statuses, job_id=args.job, limit=limit)
    else:
        tasks = integration.recent_user_tasks(q, statuses, args.job, limit)
    if args.json:
        emit_json([{**t.to_dict(), **({"integration": integration.task_row(q, t)} if integration.is_integration(t) else {})}
                   for t in tasks])
        return EXIT_OK
    counts = q.get_stats(args.job)
    mine = counts if args.all else integration.queue_user_stats(q, job)
    wanted = list(claude_queue.STATUSES) if statuses is None else sorted(set(statuses))
    total = sum(mine[s] for s in wanted)
    hidden = sum(counts[s] - mine[s] for s in wanted)
    note = (f"{hidden} integration task{'' if hidden == 1 else 's'} of the merge queue not listed; --all lists "
            f"{'it' if hidden == 1 else 'them'}") if hidden else None
    if not tasks:
        print("no tasks" + (" match" if statuses or args.job else "") + (f" ({note})" if note else ""), file=sys.stderr)
        return EXIT_OK
    now = time.time()
    rows = [task_row(t, now) for t in tasks]
    for row, t in zip(rows, tasks):
        if integration.is_integration(t):
            row[-1] = "[merge queue] " + row[-1]
    print(table(TASK_HEADERS, rows, terminal_width()))
    if limit is not None and total > len(tasks):
        print(f"showing the newest {len(tasks)} of {total}; --limit 0 shows all", file=sys.stderr)
    if note:
        print(note, file=sys.stderr)
    return EXIT_OK


def cmd_show(args):
    q = open_queue(args, create=False, empty_ok=True)
    task = q.get_task(args.id)
    if task is None:
        raise CliError(f"task {args.id} not found", EXIT_FAIL)
    events = q.get_events(task.id)
    dependents = q.get_dependents(task.id)
    transcript = task_report.find_transcript(q.cfg, task)
    merging = integration.task_row(q, task)
    if args.json:
        emit_json({**task.to_dict(), "events": events, "dependents": dependents, "transcript": transcript,
                   "host": task_report.ran_on(task, events), **({"integration": merging} if merging else {})})
        return EXIT_OK
    print("\n".join(map(task_report.clean, task_report.describe_task(task, events, dependents, transcript,
                                                                      time.time(), here=q.cfg.host,
                                                                      integration=merging))))
    return EXIT_OK


def cmd_stats(args):
    q = open_queue(args, create=False, empty_ok=True)
    job = None
    if args.job is not None:
        job = q.get_job(args.job)
        if job is None:
            raise CliError(f"job {args.job} not found", EXIT_FAIL)
    # The user's tasks, as `jobs` and `status JOB` count them; the merge queue's cost is counted.
    stats = integration.queue_user_stats(q, job)
    if args.json:
        emit_json({**stats, "job_id": args.job} if args.job else stats)
        return EXIT_OK
    if job:
        print(f"{job['id']}: {job['description']}")
    done = sum(stats[s] for s in claude_queue.FINISHED)
    for status in claude_queue.STATUSES:
        print(f"{task_report.status_word(status):<12}{stats[status]:>9,}")
    print(f"{'total':<12}{stats['total']:>9,}" + (f"  ({done * 100 // stats['total']}% finished)" if stats["total"] else ""))
    print(f"{'cost':<12}{task_report.fmt_cost(stats['cost_usd']):>9}")
    if stats.get("integration_tasks"):
        n, left = stats["integration_tasks"], stats["integrating"]
        print(f"{'integration':<12}{n:>9,}  the merge queue's own task{'' if n == 1 else 's'}, in the cost but not "
              f"the counts" + (f" ({left} still to run)" if left else ""))
    if job and job.get("max_budget_usd"):
        print(f"{'budget':<12}{task_report.fmt_cost(job['max_budget_usd']):>9}")
    return EXIT_OK


def cmd_jobs(args):
    q = open_queue(args, create=False, empty_ok=True)
    jobs = q.list_jobs(limit=args.limit or None)
    for j in jobs:  # the merge queue's integration tasks are not the user's tasks (their cost counts)
        j["stats"] = integration.user_stats(q, j)
    if args.json:
        emit_json(jobs)
        return EXIT_OK
    if not jobs:
        print("no jobs", file=sys.stderr)
        return EXIT_OK
    rows = []
    now = time.time()
    for j in jobs:
        s = j["stats"]
        budget = task_report.fmt_cost(j.get("max_budget_usd"))
        rows.append([j["id"], task_report.fmt_ago(j["created_at"], now),
                     task_report.job_progress(s) + task_report.job_denied_note(s), s["in_progress"],
                     s["failed"], task_report.fmt_cost(s["cost_usd"]), budget, j["description"]])
    print(table(["JOB", "CREATED", "DONE", "RUNNING", "FAILED", "COST", "BUDGET", "DESCRIPTION"], rows,
                terminal_width()))
    return EXIT_OK


def _ids_or_job(args, flag):
    if args.ids and (args.job is not None or getattr(args, "failed", False)):
        raise CliError(f"give task ids or {flag}, not both")
    if not args.ids and args.job is None and not getattr(args, "failed", False):
        raise CliError(f"give task ids or {flag}")


CANCEL_WORDS = {"cancelled": "cancelled",
                "cancel_requested": "cancel requested; its worker stops it within a heartbeat"}


def cmd_cancel(args):
    _ids_or_job(args, "--job ID")
    q = open_queue(args)
    if args.job is not None:
        if q.get_job(args.job) is None:
            raise CliError(f"job {args.job} not found", EXIT_FAIL)
        results = [(tid, status) for tid, status in q.cancel_job(args.job).items()]
        if not results and not args.json:
            print(f"job {args.job} has no pending or running tasks", file=sys.stderr)
    else:
        results = []
        for tid in dict.fromkeys(args.ids):
            # cancel_task answers a finished task with its status; look first to say "already".
            task = q.get_task(tid)
            if task is not None and task.status in claude_queue.FINISHED:
                results.append((tid, "already " + task.status))
            else:
                results.append((tid, q.cancel_task(tid)))
    failed = False
    out = []
    for tid, status in results:
        if status is None:
            failed = True
            out.append({"id": tid, "status": None, "error": "not found"})
            print(f"task {tid} not found", file=sys.stderr)
        elif status == "already cancelled":
            out.append({"id": tid, "status": "cancelled"})
            print(f"task {tid} was already cancelled", file=sys.stderr)
        elif status not in CANCEL_WORDS:
            failed = True
            status = status.replace("already ", "")
            out.append({"id": tid, "status": status, "error": f"already {status}"})
            print(f"task {tid} is already {status}; nothing to cancel", file=sys.stderr)
        else:
            out.append({"id": tid, "status": status})
            if not args.json:
                print(f"#{tid} {CANCEL_WORDS[status]}")
    if args.json:
        emit_json(out)
    return EXIT_FAIL if failed else EXIT_OK


def cmd_retry(args):
    if args.job is not None and not args.failed:
        raise CliError("--job goes with --failed (retry every failed task of that job)")
    _ids_or_job(args, "--failed")
    q = open_queue(args)
    if args.failed:
        if args.job is not None and q.get_job(args.job) is None:
            raise CliError(f"job {args.job} not found", EXIT_FAIL)
        ids = [t.id for t in reversed(q.recent_tasks(status="failed", job_id=args.job, limit=None))]
        if not ids and not args.json:
            print("no failed tasks" + (f" in job {args.job}" if args.job else ""), file=sys.stderr)
    else:
        ids = list(dict.fromkeys(args.ids))
    failed = False
    out = []
    for tid in ids:
        try:
            revived = q.retry_task(tid)
        except KeyError:
            failed = True
            out.append({"id": tid, "revived": [], "error": "not found"})
            print(f"task {tid} not found", file=sys.stderr)
            continue
        except ValueError as exc:
            failed = True
            out.append({"id": tid, "revived": [], "error": str(exc)})
            print(exc, file=sys.stderr)
            continue
        out.append({"id": tid, "revived": revived})
        if not args.json:
            also = [r for r in revived if r != tid]
            print(f"#{tid} queued again" + (f" (and its dependents {', '.join('#%d' % r for r in also)})" if also else ""))
    if args.json:
        emit_json(out)
    return EXIT_FAIL if failed else EXIT_OK


def cmd_purge(args):
    if args.older_than < 0:
        raise CliError(f"--older-than: expected days >= 0, got {args.older_than:g}")
    statuses = [s for group in args.status or () for s in group] or None
    q = open_queue(args)
    count = q.purge(args.older_than * 86400, statuses)
    if args.json:
        emit_json({"purged": count})
    else:
        print(f"purged {count} task{'s' if count != 1 else ''}")
    return EXIT_OK


def cmd_merge(args):
    q = open_queue(args, create=False)
    if q.get_job(args.job) is None:
        raise CliError(f"job {args.job} not found", EXIT_FAIL)
    try:
        report = integration.merge_job(q.cfg, q, args.job, force=args.force)
    except worktrees.WorktreeError as exc:
        raise CliError(f"{PROG}: error: {exc}", EXIT_FAIL) from None
    lines, ok = worktrees.describe_merge(report)
    if args.json:
        emit_json(report)
    else:
        print("\n".join(lines), file=sys.stdout if ok else sys.stderr)
    return EXIT_OK if ok else EXIT_FAIL


def cmd_worktrees(args):
    q = open_queue(args, create=False)
    rows = worktrees.list_worktrees(q.cfg, q, args.job)
    if args.json:
        emit_json(rows)
        return EXIT_OK
    if not rows:
        print("no worktrees" + (f" for job {args.job}" if args.job else ""), file=sys.stderr)
        return EXIT_OK
    table_rows = [[f"#{r['task_id']}" if r["kind"] == "task" else f"{r['job_id']} (merges)",
                   task_report.status_word(r["status"]),
                   r["branch"] or "(detached)", r["path"]] for r in rows]
    print(table(["TASK", "STATUS", "BRANCH", "PATH"], table_rows))
    return EXIT_OK


def cmd_clean_worktrees(args):
    if args.force and not args.branches:
        raise CliError("--force goes with --branches (delete branches whose work is not merged)")
    q = open_queue(args, create=False)
    if args.job is not None and q.get_job(args.job) is None:
        raise CliError(f"job {args.job} not found", EXIT_FAIL)
    report = worktrees.clean_worktrees(q.cfg, q, args.job, branches=args.branches, force=args.force)
    if args.json:
        emit_json(report)
        return EXIT_OK
    for item in report["saved"]:
        print(f"saved the uncommitted changes in {item['path']} ({len(item['files'])} file(s)) as commit "
              f"{item['commit'][:12]} on {item['branch'] or item['ref']}")
    for path in report["removed"]:
        print(f"removed {path}")
    for item in report["kept"]:
        print(f"kept {item['path']}: {item['reason']}", file=sys.stderr)
    archived = {a["branch"]: a for a in report["branches_archived"]}
    for name in report["branches_deleted"]:
        a = archived.get(name)
        print(f"deleted branch {name}" + (f" (not merged: archived as {a['archive']}; `git branch {name} "
                                          f"{a['archive']}` brings it back)" if a else ""))
    for item in report["branches_kept"]:
        print(f"kept branch {item['branch']}: {item['reason']}", file=sys.stderr)
    if not any(report.values()):
        print("no worktrees to clean", file=sys.stderr)
    return EXIT_OK


# --- argument parsing --------------------------------------------------------------------------

def build_parser():
    # --db and --json are accepted before or after the command; SUPPRESS keeps a subcommand's
    # unset copy from overwriting the value given before it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, metavar="PATH",
                        help="the queue database (default: the project's; KLAUSS_DB also sets it)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")

    parser = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                     epilog=f"Run `{hints.command('COMMAND', '--help')}` for a command's options.")
    parser.add_argument("--db", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("submit", parents=[common], help="queue one task; prints its id",
                       description="Queue one task and print its id. Paths must stay inside the project "
                                   "unless [safety] in .klauss.toml allows more.")
    p.add_argument("prompt", metavar="PROMPT",
                   help=f'what Claude should do; "-" reads it from stdin. At most {config.MAX_PROMPT_BYTES:,} '
                        'bytes (longer prompts are refused, never cut): put big material in --context files')
    p.add_argument("--dir", metavar="D", help="working directory (default: the project root)")
    p.add_argument("--context", nargs="+", action="extend", metavar="GLOB",
                   help="files Claude should read first (globs, relative to the working dir)")
    p.add_argument("--outputs", nargs="+", action="extend", metavar="PATH",
                   help="files the task must produce; checked when it finishes")
    p.add_argument("--priority", type=_int, metavar="N", help="higher runs first (default 0)")
    p.add_argument("--metadata", metavar="JSON", help='a JSON object, e.g. \'{"max_turns": 20}\'')
    p.add_argument("--job", metavar="ID", help="the job this task belongs to")
    p.add_argument("--depends-on", nargs="+", action="extend", type=_task_id, metavar="ID",
                   help="run only after these tasks completed")
    p.add_argument("--timeout", type=_number, metavar="S", help="seconds the task may run")
    p.add_argument("--max-attempts", type=_int, metavar="N", help="tries before it fails for good")
    p.add_argument("--model", metavar="M", help="model for this task (stored in metadata)")
    p.add_argument("--isolation", choices=worktrees.MODES,
                   help="worktree: run in its own git worktree and branch (default: the job's, else [isolation] mode)")
    p.add_argument("--wait", action="store_true",
                   help="wait for the task; print its result (exit 0) or its error (exit 1)")
    p.add_argument("--timeout-wait", type=_number, metavar="S", help="with --wait: give up waiting after S seconds")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("submit-file", parents=[common], help="queue a JSON file of tasks (all or nothing)",
                       description="Queue every task in FILE, or none; prints the ids, one per line.",
                       epilog=FILE_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("file", metavar="FILE", help='a JSON file, or "-" for stdin')
    p.add_argument("--job", metavar="ID", help="job_id for entries that do not set one")
    p.add_argument("--isolation", choices=worktrees.MODES, help="metadata isolation for entries that do not set one")
    p.set_defaults(func=cmd_submit_file)

    p = sub.add_parser("list", parents=[common], help="recent tasks, newest first")
    p.add_argument("--status", type=_statuses, action="append", metavar="S",
                   help="only these statuses (repeat or comma-separate): pending, running, completed, failed, "
                        "cancelled, skipped. JSON output carries a running task's stored status, in_progress, "
                        "which --status also accepts")
    p.add_argument("--job", metavar="ID", help="only this job's tasks")
    p.add_argument("--limit", type=_int, default=50, metavar="N", help="at most N tasks (default 50; 0 = all)")
    p.add_argument("--all", action="store_true",
                   help="also the merge queue's integration tasks (marked [merge queue]; in JSON, an \"integration\" key)")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", parents=[common], help="one task in full: result, cost, outputs, history")
    p.add_argument("id", type=_task_id, metavar="ID")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("stats", parents=[common], help="task counts by status and total cost")
    p.add_argument("--job", metavar="ID", help="only this job")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("jobs", parents=[common], help="jobs with their progress and cost")
    p.add_argument("--limit", type=_int, default=0, metavar="N", help="only the newest N jobs")
    p.set_defaults(func=cmd_jobs)

    p = sub.add_parser("cancel", parents=[common], help="cancel tasks, or every unfinished task of a job",
                       description="Cancel pending tasks at once; running ones are stopped by their worker.")
    p.add_argument("ids", nargs="*", type=_task_id, metavar="ID")
    p.add_argument("--job", metavar="ID", help="cancel every pending or running task of this job")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("retry", parents=[common], help="queue failed, cancelled or skipped tasks again",
                       description="Queue tasks again with a fresh set of attempts; dependents skipped "
                                   "because of them are queued again too.")
    p.add_argument("ids", nargs="*", type=_task_id, metavar="ID")
    p.add_argument("--failed", action="store_true", help="retry every failed task")
    p.add_argument("--job", metavar="ID", help="with --failed: only this job's")
    p.set_defaults(func=cmd_retry)

    p = sub.add_parser("purge", parents=[common], help="delete old finished tasks",
                       description="Delete finished tasks older than DAYS (tasks that unfinished tasks "
                                   "depend on are kept).")
    p.add_argument("--older-than", type=_number, required=True, metavar="DAYS")
    p.add_argument("--status", type=_statuses, action="append", metavar="S",
                   help="only these finished statuses (default: all finished)")
    p.set_defaults(func=cmd_purge)

    p = sub.add_parser("merge", parents=[common], help="merge a worktree job's work into your current branch",
                       description="Merge the job branch klauss/JOB/merged (merge = auto), or each completed task's "
                                   "branch in task order (merge = branch), into the branch checked out in the project. "
                                   "Refuses an unfinished job, uncommitted changes to tracked files and untracked files the "
                                   "merge would overwrite (other untracked files are left alone); a conflict is "
                                   "aborted and reported, leaving your branch as it was.")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--force", action="store_true", help="merge even though tasks are still pending or running, "
                                                        "or the job branch's head did not pass verification")
    p.set_defaults(func=cmd_merge)

    p = sub.add_parser("worktrees", parents=[common], help="list the tasks' git worktrees")
    p.add_argument("--job", metavar="ID", help="only this job's")
    p.set_defaults(func=cmd_worktrees)

    p = sub.add_parser("clean-worktrees", parents=[common], help="remove the worktrees of finished tasks",
                       description="Remove the worktrees of finished tasks and finished jobs; uncommitted changes "
                                   "in one are first committed on its branch. Branches are kept unless --branches: "
                                   "then those whose work is in your current branch or in their job branch are "
                                   "deleted too (--force: all of them, the unmerged ones archived first under "
                                   "refs/klauss/archive/, so no commit is lost).")
    p.add_argument("--job", metavar="ID", help="only this job's")
    p.add_argument("--branches", action="store_true", help="also delete the task and job branches")
    p.add_argument("--force", action="store_true",
                   help="with --branches: delete branches whose work is not merged (archived first)")
    p.set_defaults(func=cmd_clean_worktrees)
    return parser


def main(argv=None):
    db = None
    try:
        args = build_parser().parse_args(argv)
        db = args.db
        return args.func(args)
    except CliError as exc:
        message = str(exc)
        if exc.code == EXIT_USAGE and not message.startswith(PROG):
            message = f"{PROG}: error: {message}"
        print(message, file=sys.stderr)
        return exc.code
    except claude_queue.DatabaseUnavailable as exc:
        # Not bad input: the same command works once the database is back.
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except (ValueError, config.ConfigError, claude_queue.QueueError, OverflowError) as exc:
        # Validation and configuration problems: the queue's messages already name the field.
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except sqlite3.DatabaseError as exc:
        print(f"{PROG}: error: database {db or 'of this project'}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        raise  # the reader went away: exits.run ends quietly
    except Exception as exc:  # a bug: still one line, with where it happened
        print(cli_args.internal_error(PROG, exc), file=sys.stderr)
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(exits.run(main))
