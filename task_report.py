"""How tasks, jobs and progress are told to people: the text of `show`, the progress lines of a
waiting job, the pool's state in a sentence, status words, and the time, money and text-shortening
formats, shared by submit_task.py, the dashboard, the orchestrator, the MCP server, the admin
tables, the worker's activity lines and the worktrees' commit subjects so they all say the same
thing. A task's details are told once (`task_details`); `show` and the dashboard lay them out."""

import json
import re
import time
import unicodedata

import hints
import hosts
import states

# The stored status `in_progress` is shown and typed as "running", the word every view uses;
# JSON output and the Python API keep the stored value.
STATUS_WORDS = {"in_progress": "running"}


def status_word(status):
    return STATUS_WORDS.get(status, status)


def status_value(word, statuses):
    """The stored status among `statuses` for a word a user typed ("running" or its alias
    "in_progress"), else None. (The queue passes its statuses in: it imports this module.)"""
    value = {v: k for k, v in STATUS_WORDS.items()}.get(word, word)
    return value if value in statuses else None


# CSI, OSC and two-character escapes, in their 7-bit (ESC ...) and 8-bit (C1) forms.
ANSI_ESCAPE = re.compile(r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|(?:\x1b\]|\x9d)[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
                         r"|\x1b[@-Z\\-_]")


def clean(text):
    """One line of printable text: prompts and results may hold tabs, newlines or escape codes
    that would drive the reader's terminal (the --json outputs stay exact)."""
    return "".join(ch if ch.isprintable() else " " for ch in ANSI_ESCAPE.sub("", str(text)))


def char_width(ch):
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def text_width(text):
    return sum(char_width(ch) for ch in text)


def clip(text, width):
    """`text` cut to at most `width` terminal cells."""
    if width <= 0:
        return ""
    if len(text) <= width and text.isascii():
        return text
    out, used = [], 0
    for ch in text:
        w = char_width(ch)
        if used + w > width:
            break
        out.append(ch)
        used += w
    return "".join(out)


def opening_line(text):
    """The first non-blank line of `text`, as written."""
    text = "" if text is None else str(text)
    return text.strip().splitlines()[0] if text.strip() else ""


def shorten(text, width, ellipsis="…", first_line=False, at_word=False, cells=False):
    """The one text shortener: `text` in at most `width`, ending in `ellipsis` when cut.
    Whitespace runs become one space, or with `first_line` only the first non-blank line is kept
    (as written). `at_word` never cuts mid-word (and drops trailing punctuation); `cells` measures
    terminal cells (wide characters count two) instead of characters."""
    text = "" if text is None else str(text)
    if first_line:
        text = opening_line(text)
    else:
        text = " ".join(text.split())
    size, cut = (text_width, clip) if cells else (len, lambda s, n: s[:max(0, n)])
    if size(text) <= width:
        return text
    if width <= len(ellipsis):
        return cut(text, width)
    room = width - len(ellipsis)
    head = cut(text, room)
    if at_word:
        if text[len(head):len(head) + 1] != " " and " " in head:
            head = head.rsplit(" ", 1)[0]
        head = head.rstrip(" ,;:.-")
    return head + ellipsis


def fmt_time(ts):
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def fmt_duration(seconds):
    if 0 < seconds < 1:
        return f"{max(seconds, 0.1):.1f}s"  # a 0.9 s run did take time: never "0s"
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def fmt_ago(ts, now):
    if ts is None:
        return "-"
    return f"{fmt_duration(now - ts)} ago" if now >= ts else f"in {fmt_duration(ts - now)}"


def fmt_cost(cost):
    """The one money format: 4 decimals, and as many more as a non-zero amount needs to stay
    non-zero ($0.00004, never $0.0000); whole dollars from $100 up."""
    if cost is None:
        return "-"
    if abs(cost) >= 100:
        return f"${cost:,.0f}"
    decimals = 4
    while decimals < 10 and cost and round(cost, decimals) == 0:
        decimals += 1
    return f"${cost:.{decimals}f}"


def denied_note(count):
    """', 1 denied': how a completed run whose tool calls were denied is marked wherever it is listed."""
    return f", {count} denied" if count else ""


def job_denied_note(stats):
    """', 1 with denials': a job's completed tasks whose runs had tool calls denied."""
    count = stats.get("denied") or 0
    return f", {count} with denials" if count else ""


def status_label(task, label=None):
    """A task's status as listed: "completed, 1 denied" when the run completed although some of its
    tool calls were denied (done, but not as asked). `label` replaces the status word itself."""
    word = label or status_word(task.status)
    return word + denied_note(getattr(task, "denied", 0)) if task.status == "completed" else word


def attempts_text(task):
    """"1 of 3", and how many runs the history shows when that differs: a retry starts a fresh set of
    attempts and a release gives its attempt back, while the history numbers every run."""
    text = f"{task.attempts_used} of {task.max_attempts}"
    if task.attempt != task.attempts_used:
        text += f" ({task.attempt} run{'s' if task.attempt != 1 else ''} in all, numbered so in the history)"
    return text


def show_cancel_requested(task):
    """A cancel request matters only while the task runs; once it ended, its status says the rest."""
    return task.cancel_requested and task.status == "in_progress"


def without_integration(stats, merging):
    """`stats` (queue.get_stats()) as the user counts them: the merge queue's integration tasks
    (`merging`: queue.integration_counts() of the same job or queue) are not the user's tasks, so
    they are left out of every count, but what they cost is the job's (kept in `cost_usd`). Adds
    "integrating": how many of them are still to run, and "integration_tasks": how many there are."""
    out = {**stats, "integrating": merging["pending"] + merging["in_progress"], "integration_tasks": merging["total"]}
    for key, n in merging.items():
        out[key] -= n  # each status, and the total (they have no denials: they run no claude)
    return out


def queue_user_stats(queue, stats=None):
    """The whole queue's counts as every view tells them (`status` and its --json, the dashboard,
    MCP, `stats`): `stats` (queue.get_stats(), read when not given) without the merge queue's
    integration tasks (see without_integration), counted from indexes (queue.integration_counts).
    A queue without any keeps its stats as they are (no "integrating" or "integration_tasks")."""
    stats = queue.get_stats() if stats is None else stats
    merging = queue.integration_counts()
    return without_integration(stats, merging) if merging["total"] else stats


def job_progress(stats):
    """A job's progress as listed: "3/4" (finished of all), or "cancelled" when every task was
    cancelled (or skipped because of a cancelled one): such a job is not done."""
    total, cancelled, skipped = stats["total"], stats["cancelled"], stats["skipped"]
    if total and cancelled and cancelled + skipped == total:
        return "cancelled"
    done = sum(stats[s] for s in ("completed", "failed", "cancelled", "skipped"))
    return f"{done}/{total}"


def progress_line(status, elapsed=None):
    """One line of a waiting job's progress for a terminal (`wait`, `run`, `status JOB`), from
    ClaudeOrchestrator.get_job_status(): "[job] 2/5 done · 1 running · $0.12 · 40s"."""
    s = status["stats"]
    parts = [f"{status['done']}/{status['total']} done", f"{s['in_progress']} running"]
    if s["failed"]:
        parts.append(f"{s['failed']} failed")
    if s["skipped"] or s["cancelled"]:
        parts.append(f"{s['skipped'] + s['cancelled']} skipped/cancelled")
    if status.get("integrating"):
        parts.append(f"{status['integrating']} integrating")
    parts.append(fmt_cost(status["cost_usd"] or 0))
    if status.get("pool") and status["pool"]["state"] != states.POOL_RUNNING and not status["finished"]:
        parts.append(status["pool"]["text"])
    return f"[{status['job_id']}] " + " · ".join(parts) + ("" if elapsed is None else f" · {elapsed:.0f}s")


def job_status_line(status, pool_text=None):
    """A job's progress as the MCP tools tell it: every non-zero count, the cost against the
    budget, and what the pool is doing (`pool_text`) while the job runs."""
    s = status["stats"]
    parts = [f"{status['done']}/{status['total']} done"]
    for key in ("in_progress", "pending", "completed", "failed", "skipped", "cancelled"):
        if s[key]:
            parts.append(f"{s[key]} {status_word(key)}")
    if status.get("integrating"):
        parts.append(f"{status['integrating']} integrating")  # the merge queue's own tasks, still to run
    cost = f"cost {fmt_cost(status['cost_usd'] or 0)}"
    if status["max_budget_usd"]:
        cost += f" of {fmt_cost(status['max_budget_usd'] or 0)} budget"
    parts.append(cost)
    if pool_text:
        parts.append(pool_text)
    return " · ".join(parts)


def task_markdown_line(task, integration=None):
    """A task as one markdown list item (MCP job_status and wait_job): its state, what it is doing
    or waiting for, its prompt's first line and, unless it completed, its error's first line; with
    `integration` (its integration.job_report row), what became of its work in the job branch."""
    state = status_label(task)
    label = integration and helper_label(integration)
    if label:
        state += f" ({label})"
    if integration and task.status == "completed":
        state += f", {integration_text(integration)}"
    if task.status == "in_progress":
        state += f" on {task.worker_id}" + (f" ({task.activity})" if task.activity else "")
    elif task.status == "pending" and task.deps_remaining:
        state += " (waiting for " + ", ".join(f"#{d}" for d in task.depends_on or []) + ")"
    line = f"- #{task.id} {state}: {shorten(task.prompt, 60, first_line=True)}"
    if task.error and task.status != "completed":
        line += f" — {task.error.strip().splitlines()[0][:200]}"
    return line


def job_markdown_line(job, now):
    """A job as one markdown list item (MCP list_jobs): progress, what runs or failed, cost, age."""
    s = job["stats"]
    progress = job_progress(s)
    parts = [progress if progress == "cancelled" else f"{progress} done" + job_denied_note(s)]
    if s["in_progress"]:
        parts.append(f"{s['in_progress']} running")
    if s["failed"]:
        parts.append(f"{s['failed']} failed")
    if s.get("integrating"):
        parts.append(f"{s['integrating']} integrating")
    parts.append(fmt_cost(s["cost_usd"] or 0))
    parts.append(fmt_ago(job["created_at"], now))
    return f"- `{job['id']}` — {shorten(job['description'], 80, first_line=True)} — " + " · ".join(parts)


def pool_state(queue, start=None, restart=None, now=None):
    """What the pool is doing, for whoever waits on it (`status`, the orchestrator's progress, MCP
    `wait_job` and `job_status`): {"state": one of states.POOL_STATES,
    "text": one sentence}. `start` and `restart` say how to act (default: the manage.sh commands)."""
    now = queue.clock() if now is None else now
    problem = hosts.config_error_flag(queue, queue.cfg.host)
    if problem:
        value = problem["value"] if isinstance(problem["value"], dict) else {}
        fix = str(value.get("fix") or "see the worker logs").rstrip(". ")
        return {"state": states.POOL_CONFIG_ERROR,
                "text": f"workers stopped by a configuration error: {value.get('message') or 'see the worker logs'}. "
                        f"To fix: {fix}. {restart or 'Restart them with `' + hints.command('restart') + '`'}"}
    running = queue.running_coordinator()
    if running is None:
        return {"state": states.POOL_STOPPED,
                "text": f"no pool running: {start or 'start one with `' + hints.command('start') + '`'}"}
    paused = hosts.pause_flag(queue, queue.cfg.host, hosts.login_key(queue.cfg))
    if paused:
        value = paused["value"] if isinstance(paused["value"], dict) else {}
        until = paused["until"]
        when = f"until {time.strftime('%H:%M:%S', time.localtime(until))} ({fmt_ago(until, now)})" if until else \
            "until further notice"
        why = value.get("message") or value.get("reason") or "usage limit"
        return {"state": states.POOL_PAUSED, "text": f"paused {when}: {why}; workers resume by themselves"}
    workers = running.get("workers")
    return {"state": states.POOL_RUNNING, "text": f"pool running: {workers} worker(s)" if workers else "pool running"}


def find_transcript(cfg, task):
    outcome = task.outcome if isinstance(task.outcome, dict) else {}
    if outcome.get("transcript"):
        return outcome["transcript"]
    # A running task has no outcome yet; the worker writes logs/tasks/task-ID-attempt-N.jsonl.
    found = cfg.logs_dir.joinpath("tasks").glob(f"task-{task.id}-attempt-*.jsonl")
    attempts = {p: p.stem.rpartition("-")[2] for p in found}
    latest = max((p for p, n in attempts.items() if n.isdigit()), key=lambda p: int(attempts[p]), default=None)
    return str(latest) if latest else None


def ran_on(task, events):
    """The host that ran the task's latest attempt (from its worker's id), or None."""
    for worker_id in [task.worker_id] + [e["worker_id"] for e in reversed(events)]:
        if hosts.host_of(worker_id):
            return hosts.host_of(worker_id)
    return None


def task_details(task, events, dependents, transcript, now, here=None, integration=None):
    """Everything there is to tell about one task, for `show`, MCP `show_task` and the dashboard's
    details, each laying it out its own way: (status text, rows). A row is ("field", name, value,
    style) for a one-line value, or ("block", name, lines, style) for text told line by line (the
    prompt, the result, the history). `style` is a status whose colour suits the value, or "".
    `here` is this host's id: a transcript written on another host is only there. `integration` is
    what the merge queue says about the task (integration.task_row), when its job has a verify command."""
    outcome = task.outcome if isinstance(task.outcome, dict) else {}
    host = ran_on(task, events)
    status = status_label(task) + (" (cancel requested)" if show_cancel_requested(task) else "")
    rows = []

    def field(name, value, style=""):
        if value not in (None, "", [], {}):
            rows.append(("field", name, value, style))

    def block(name, lines, style=""):
        rows.append(("block", name, lines, style))

    field("Job", task.job_id)
    field("Parent", task.parent_id and f"#{task.parent_id}")
    field("Priority", task.priority)
    field("Attempts", attempts_text(task))
    field("Worker", task.worker_id)
    field("Host", host and (f"{host} (this host)" if host == here else host))
    field("Working dir", task.working_dir)
    field("Context", ", ".join(task.context_files))
    field("Outputs", ", ".join(task.expected_outputs))
    if outcome.get("outputs_verified") is not None:
        field("Verified", ", ".join(outcome["outputs_verified"]) or "none")
    field("Missing", ", ".join(outcome.get("outputs_missing") or []), "failed")
    if not outcome.get("branch"):
        field("Changed", ", ".join(outcome.get("files_changed") or []))
    if outcome.get("branch"):
        field("Worktree", outcome.get("worktree"))
        field("Branch", outcome["branch"])
        field("Commit", (outcome.get("commit") or "")[:12])
        field("Changed", ", ".join(outcome.get("files_changed") or []) or "nothing")
        merge = outcome.get("merge")
        if merge == "merged" and outcome.get("merged_into"):
            merge += f" into {outcome['merged_into']}"
        elif merge == "conflict":
            merge += f" in {', '.join(outcome.get('conflicts') or [])} (the work stays on {outcome['branch']})"
        if integration and "state" in integration:
            state = integration["state"]
            merge = integration_text(integration)
            field("Merge", merge, "failed" if state in NEEDS_ATTENTION else "completed" if "merged" in state else "")
        else:
            field("Merge", merge, "failed" if outcome.get("merge") == "conflict" else "")
        field("Worktree err", outcome.get("worktree_error"), "failed")
    if integration and "integrates" in integration:
        field("Integrates", f"task #{integration['integrates']} (the merge queue's own task: merge, then verify)")
    if integration and "state" in integration:
        field("Fix of", helper_label(integration))
        field("Job head", verified_head_text(integration["job"]))
    field("Depends on", ", ".join(f"#{d}" for d in task.depends_on or []))
    field("Dependents", ", ".join(f"#{d}" for d in dependents))
    field("Metadata", json.dumps(task.metadata, sort_keys=True) if task.metadata else None)
    field("Timeout", task.timeout and f"{task.timeout:g}s")
    field("Created", f"{fmt_time(task.created_at)} ({fmt_ago(task.created_at, now)})")
    # A pending task is not running, whatever an earlier (released or failed) run started at.
    ran = task.started_at if task.status != "pending" else None
    field("Started", ran and fmt_time(ran))
    field("Finished", task.finished_at and fmt_time(task.finished_at))
    if ran:
        field("Duration", fmt_duration((task.finished_at or now) - task.started_at))
    if task.status == "pending" and task.not_before > now:
        field("Next try", fmt_ago(task.not_before, now))
    if task.status == "pending" and task.deps_remaining:
        field("Waiting for", f"{task.deps_remaining} unfinished dependenc{'y' if task.deps_remaining == 1 else 'ies'}")
    field("Cost", fmt_cost(task.cost_usd) if task.cost_usd is not None else None)
    usage = outcome.get("usage") if isinstance(outcome.get("usage"), dict) else {}
    if usage:
        parts = [f"{usage.get(k) or 0:,} {label}" for k, label in (
            ("input_tokens", "in"), ("output_tokens", "out"),
            ("cache_read_input_tokens", "cache read"), ("cache_creation_input_tokens", "cache write"))]
        field("Tokens", ", ".join(parts))
    field("Turns", outcome.get("num_turns"))
    field("Session", outcome.get("session_id"))
    field("Exit code", outcome.get("exit_code"))
    field("Activity", task.activity, "in_progress")
    field("Error", task.error, "failed")
    field("Error class", outcome.get("error_class"), "failed")
    denials = outcome.get("permission_denials") or []
    if denials:
        field("Denied tools", ", ".join(sorted({str(d.get("tool_name", d)) if isinstance(d, dict) else str(d)
                                                for d in denials})), "failed")
    for warning in outcome.get("warnings") or []:
        field("Warning", warning, "skipped")
    if transcript and host and here and host != here:
        # Full transcripts stay on the host that ran the task; the database keeps the result and tails.
        transcript = f"{transcript} (on host {host}; the result and stderr tail below are from the database)"
    field("Transcript", transcript)
    block("Prompt", task.prompt.splitlines() or [""])
    if task.result:
        block("Result", task.result.splitlines())
    if outcome.get("stderr_tail") and task.status != "completed":
        block("Stderr (tail)", str(outcome["stderr_tail"]).splitlines(), "failed")
    history = []
    for e in events:
        extra = " ".join(x for x in (e["worker_id"] or "", f"attempt {e['attempt']}" if e["attempt"] else "",
                                     fmt_cost(e["cost_usd"]) if e.get("cost_usd") is not None else "",
                                     e["detail"] or "") if x)
        history.append(f"{fmt_time(e['at'])}  {e['event']:<16} {extra}".rstrip())
    block("History", history)
    return status, rows


FIELD_WIDTH = 13  # "Denied tools:" and a space: every field's value starts in one column


def describe_task(task, events, dependents, transcript, now, here=None, integration=None):
    """The text of `show` (and MCP `show_task`): one line per field, then the indented blocks."""
    status, rows = task_details(task, events, dependents, transcript, now, here=here, integration=integration)
    lines = [f"Task #{task.id}: {status}"]
    for kind, name, value, _ in rows:
        if kind == "field":
            lines.append(f"  {name + ':':<{FIELD_WIDTH - 1}} {value}")
        else:
            lines.append(f"{name}:")
            lines.extend(f"  {line}" for line in value)
    return lines


# --- the verified merge queue (integration.job_report) ------------------------------------------

INTEGRATION_WORDS = {"merged": "merged", "fixed_and_merged": "fixed and merged",
                     "integration_failed": "integration failed", "conflict": "conflict",
                     "pending": "not integrated yet", "not_completed": "not completed"}
NEEDS_ATTENTION = ("integration_failed", "conflict")  # kept out of the job branch: the user decides


def helper_label(row):
    """"fix-up of task #3" / "resolution of task #3" for the merge queue's Claude tasks, else None."""
    if row.get("kind") == "fix":
        return f"fix-up of task #{row['of']}"
    if row.get("kind") == "resolution":
        return f"resolution of task #{row['of']}"
    return None


def integration_text(row):
    """What became of one task's work in the job branch, from its integration.job_report row:
    "merged", "fixed and merged (by fix-up task #7)", "integration failed: why (log PATH)",
    "conflict in a.py, b.py: why", "not integrated yet", "not completed: why"."""
    state = row.get("state") or "pending"
    text = INTEGRATION_WORDS.get(state, state)
    if state == "fixed_and_merged" and row.get("fix_task"):
        text += f" (by {'resolution' if row.get('fix_kind') == 'resolution' else 'fix-up'} task #{row['fix_task']})"
    elif state == "conflict":
        if row.get("files"):
            text += " in " + ", ".join(row["files"])
        if row.get("why"):
            text += f": {row['why']}"
    elif state in ("integration_failed", "not_completed") and row.get("why"):
        text += f": {row['why']}"
    elif state == "pending" and row.get("fix_task"):
        text += f" ({'resolution' if row.get('fix_kind') == 'resolution' else 'fix-up'} task #{row['fix_task']} at work)"
    if state in ("integration_failed", "conflict") and row.get("log"):
        text += f" (log {row['log']})"
    return text


def verified_head_text(report):
    """The job branch's verified head in a sentence: commit, verify command, its exit status and
    duration; or that nothing is verified yet."""
    head, branch = report.get("head"), report["branch"]
    runs = report.get("verify_runs") or 0
    counted = f"; {runs} verify run{'' if runs == 1 else 's'} in all"
    if not head:
        return f"no verified head yet: nothing has entered {branch}" + (counted if runs else "")
    if head.get("exit_status") is None:
        return f"head of {branch}: {head['commit'][:12]}, merged without verification (no verify command)"
    return (f"verified head of {branch}: {head['commit'][:12]}, `{' '.join(head.get('verify_command') or [])}` "
            f"exited {head['exit_status']} in {fmt_duration(head.get('duration') or 0)}" + counted)


def integration_lines(report, bullet="- "):
    """The merge queue's report of a job, line by line (status, MCP job_status): the verified head,
    then each task's state."""
    lines = [bullet + verified_head_text(report)]
    for row in report["tasks"]:
        label = helper_label(row)
        lines.append(f"{bullet}#{row['task']}" + (f" ({label})" if label else "") + f": {integration_text(row)}")
    return lines


def pr_summary(job, report, tasks):
    """A job's work as a pull request's description (markdown), from the data the orchestrator
    gathers: `report` is integration.job_report (or None without a verify command) and `tasks` a list
    of {"id", "title", "state" (integration state, or the task's merge word), "files", "diffstat",
    "row" (its job_report row or None), "status", "error", "branch"}, in task order."""
    branch = report["branch"] if report else f"klauss/{job['id']}/merged"
    lines = [f"# {opening_line(job['description']) or job['id']}", "",
             f"Job `{job['id']}`: the work of its tasks on branch `{branch}`."]
    if report:
        lines += ["", "## Verification", ""]
        head = report.get("head")
        argv = " ".join((head or {}).get("verify_command") or report.get("verify_command") or [])
        lines.append(f"- Verify command: `{argv}`" if argv else "- Verify command: none")
        if head:
            lines += [f"- Verified head: `{head['commit']}`",
                      f"- Exit status: {head['exit_status']}, in {fmt_duration(head.get('duration') or 0)}"
                      + (f" (log `{head['log']}`)" if head.get("log") else "")]
        else:
            lines.append("- Verified head: none (nothing passed verification)")
        lines.append(f"- Verify runs: {report.get('verify_runs') or 0}")
    merged = [t for t in tasks if t["state"] in ("merged", "fixed_and_merged")]
    lines += ["", "## Changes", ""]
    if not merged:
        lines.append("Nothing made it into the job branch.")
    for t in merged:
        lines.append(f"### {t['title']} (task #{t['id']})")
        lines.append("")
        lines.append("- Files: " + (", ".join(f"`{f}`" for f in t["files"]) or "none"))
        if t["row"] is not None:
            lines.append("- Verification: passed, " + integration_text(t["row"]))
        elif report is None:
            lines.append("- Verification: none (the job has no verify command)")
        if t["diffstat"]:
            lines += ["", "```", t["diffstat"].rstrip("\n"), "```"]
        lines.append("")
    left = [t for t in tasks if t["state"] not in ("merged", "fixed_and_merged")]
    if left:
        lines += ["## Not included", ""]
        for t in left:
            if t["row"] is not None:
                why = integration_text(t["row"])
            elif t["status"] != "completed":
                why = f"not completed: the task {t['status']}" + (f": {opening_line(t['error'])}" if t["error"] else "")
            else:
                why = f"not merged ({t['state'] or 'no branch'})"
            lines.append(f"- Task #{t['id']} {t['title']}: {why}"
                         + (f"; its work is on branch `{t['branch']}`" if t["branch"] and t["status"] == "completed"
                            else ""))
    return "\n".join(lines).rstrip("\n") + "\n"
