"""Everything Klauss knows about the `claude` CLI: how to call it, how to read what it prints, and
what its failures mean. The facts behind this are in shared/claude-cli-reference.md (CLI 2.1.x).

The worker runs the CLI through it, and validation.py refuses at submit the task metadata its argv
could not carry (check_task_metadata); keeping the CLI's quirks here means one file changes when
the CLI does.
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import time

import task_report

# Outcome kinds and what the worker does with each.
SUCCESS = "success"
USAGE_LIMIT = "usage_limit"      # release the task, pause every worker until the limit resets
CONFIG_ERROR = "config_error"    # release the task, stop claiming, tell the user what to fix
RETRYABLE = "retryable"          # fail with backoff while attempts remain
FATAL = "fatal"                  # fail now; retrying would fail the same way

DEFAULT_USAGE_PAUSE_SECONDS = 900  # when a usage limit comes without a reset time

# The tools that change files: `permission_mode = "acceptEdits"` lets them run without asking (in
# the working directory), and their calls are how a run without a worktree says what it changed.
EDIT_TOOLS = ("Write", "Edit", "MultiEdit", "NotebookEdit")
MAX_FILES_CHANGED = 500  # an outcome stays small however many files a run touches


class ClaudeNotFound(Exception):
    """The configured command cannot be run; the message says what was tried and how to fix it."""


def resolve_command(command):
    """The executable for `command` (a name on PATH or a path), or ClaudeNotFound."""
    path = shutil.which(command)
    if path is None:
        raise ClaudeNotFound(f"claude CLI not found: tried {command!r}; install it with "
                             "'npm install -g @anthropic-ai/claude-code', or set [claude] command in "
                             ".klauss.toml or KLAUSS_CLAUDE to its path")
    return path


def check_runnable(command, timeout=30):
    """Run `claude --version`; returns the version line or raises ClaudeNotFound."""
    path = resolve_command(command)
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=timeout,
                             stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ClaudeNotFound(f"claude CLI at {path} could not be run ({exc}); check the installation") from None
    if out.returncode != 0:
        detail = (out.stderr or out.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ClaudeNotFound(f"'{path} --version' failed with exit code {out.returncode}: {detail[0]}")
    return out.stdout.strip()


# Where a host's pool remembers the executables whose `--version` ran: a worker starts often (every
# pool start, restart, resize), and the real CLI's check costs half a second of node startup.
CHECKED_NAME = "claude-checked.json"


def _identity(path):
    """The executable behind `path` as it is now: a replaced, rewritten or chmod'ed file differs."""
    real = os.path.realpath(path)
    st = os.stat(real)
    return [path, real, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def check_runnable_once(command, state_dir, timeout=30):
    """check_runnable, run once per executable: a success is remembered in `state_dir` (per host)
    for that very file, so the pool's other workers, and the next starts, skip it; a failure is
    never remembered. The workers of a pool starting together wait for the first one's check."""
    path = resolve_command(command)
    try:
        fd = os.open(os.path.join(state_dir, CHECKED_NAME), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError:
        return check_runnable(path, timeout)  # a read-only state dir: check every time, as before
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            identity = _identity(path)
        except OSError:
            return check_runnable(path, timeout)  # gone since `which` found it: the check says so
        try:
            record = json.loads(os.read(fd, 65536) or b"{}")
        except ValueError:
            record = {}  # cut short by a crash: check again
        if isinstance(record, dict) and record.get("identity") == identity and isinstance(record.get("version"), str):
            return record["version"]
        version = check_runnable(path, timeout)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"identity": identity, "version": version}).encode(), 0)
        except OSError:
            pass  # only a saving: the next start checks again
        return version
    finally:
        os.close(fd)  # releases the lock


def forget_checked(state_dir):
    """After a run that could not start (or died without a result): the next worker start checks
    the executable again rather than trust a remembered success."""
    try:
        os.unlink(os.path.join(state_dir, CHECKED_NAME))
    except OSError:
        pass


# The task metadata keys that reach claude's argv, and the option each one becomes.
TASK_OPTIONS = {"model": "--model", "max_turns": "--max-turns", "max_budget_usd": "--max-budget-usd",
                "allowed_tools": "--allowedTools"}
# Settings a task might expect to pass but that only the project's .klauss.toml may set (or that
# are CLI options Klauss never takes from a task), spelled without case, "-" or "_". Other keys
# (a ticket number, say) are the task's own data and never reach the CLI.
_NOT_PER_TASK = {"permissionmode", "disallowedtools", "appendsystemprompt", "extraargs",
                 "dangerouslyskippermissions", "allowdangerouslyskippermissions", "adddir", "mcpconfig",
                 "strictmcpconfig", "systemprompt", "systempromptfile", "appendsystempromptfile", "fallbackmodel",
                 "sessionid", "forksession", "outputformat", "permissionprompttool"}
MAX_TURNS_LIMIT = 1_000_000
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadTaskArgument(ValueError):
    """A task's metadata would put a bad value on claude's command line; the message names the field."""


def _norm(key):
    return re.sub(r"[-_]", "", key).lower()


def _word(field_name, value, what):
    """One value for a single argv word: never read as an option, never split, never NUL."""
    if not isinstance(value, str) or not value.strip():
        raise BadTaskArgument(f"metadata.{field_name}: expected {what}, got {value!r}")
    if _CONTROL.search(value):
        raise BadTaskArgument(f"metadata.{field_name}: {value!r} contains a control character (NUL, newline, "
                              "escape...); remove it")
    if value.lstrip().startswith("-"):
        raise BadTaskArgument(f"metadata.{field_name}: {value!r} starts with '-', so claude would read it as an "
                              "option; give a name, not a flag")
    return value


def check_task_metadata(metadata):
    """Check the metadata keys that reach claude's argv (type and range) and refuse keys a task may
    not set; BadTaskArgument names the field and the fix. Other keys are the task's own data."""
    if not isinstance(metadata, dict):
        raise BadTaskArgument(f"metadata: expected a JSON object, got {metadata!r}")
    for key in metadata:
        if not isinstance(key, str):
            raise BadTaskArgument(f"metadata: keys must be strings, got {key!r}")
        known = next((k for k in TASK_OPTIONS if _norm(k) == _norm(key)), None)
        if known is not None and known != key:
            raise BadTaskArgument(f"metadata.{key}: unknown key; did you mean {known!r}?")
        if key.startswith("-") or _norm(key) in _NOT_PER_TASK:
            raise BadTaskArgument(f"metadata.{key}: not a per-task setting (claude takes only "
                                  f"{', '.join(TASK_OPTIONS)} from a task); set it in [claude] of .klauss.toml "
                                  "instead")
    if metadata.get("model") is not None:
        _word("model", metadata["model"], "a model name such as \"sonnet\"")
    turns = metadata.get("max_turns")
    if turns is not None and (isinstance(turns, bool) or not isinstance(turns, int)
                              or not 1 <= turns <= MAX_TURNS_LIMIT):
        raise BadTaskArgument(f"metadata.max_turns: expected a whole number from 1 to {MAX_TURNS_LIMIT}, "
                              f"got {turns!r}")
    budget = metadata.get("max_budget_usd")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not 0 < budget < float("inf")):
        raise BadTaskArgument(f"metadata.max_budget_usd: expected a number of dollars > 0, got {budget!r}")
    tools = metadata.get("allowed_tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise BadTaskArgument(f"metadata.allowed_tools: expected a list of tool patterns such as "
                                  f"[\"Edit\", \"Bash(git *)\"], got {tools!r}")
        for tool in tools:
            _word("allowed_tools", tool, "a tool pattern such as \"Edit\" or \"Bash(git *)\"")
    return metadata


def build_argv(claude_cfg, metadata=None, executable=None):
    """The argv for one task. The prompt goes on stdin, so list-valued flags (which swallow the
    words after them) cannot eat it. Per-task metadata may override model, max_turns,
    max_budget_usd and allowed_tools; it is checked again here (BadTaskArgument), and every value
    travels inside its option's own word (`--model=x`), so no value is ever read as a flag."""
    metadata = check_task_metadata(metadata or {})
    argv = [executable or claude_cfg["command"], "-p", "--output-format", "stream-json", "--verbose",
            "--permission-mode", claude_cfg["permission_mode"]]
    model = metadata.get("model") or claude_cfg["model"]
    if model:
        argv.append(f"--model={model}")
    max_turns = metadata.get("max_turns", claude_cfg["max_turns"])
    if max_turns is not None:
        argv.append(f"--max-turns={int(max_turns)}")
    budget = metadata.get("max_budget_usd", claude_cfg["max_budget_usd"])
    if budget is not None:
        argv.append(f"--max-budget-usd={float(budget):g}")
    if claude_cfg["append_system_prompt"]:
        argv += ["--append-system-prompt", claude_cfg["append_system_prompt"]]
    allowed = list(claude_cfg["allowed_tools"]) + list(metadata.get("allowed_tools") or [])
    argv += [f"--allowedTools={tool}" for tool in allowed]
    if claude_cfg["disallowed_tools"]:
        argv += ["--disallowedTools", *claude_cfg["disallowed_tools"]]
    return argv + list(claude_cfg["extra_args"])


def describe_tool_use(name, tool_input):
    """A short human line for a tool call, e.g. 'Edit src/auth.py' or 'Bash: npm test'."""
    tool_input = tool_input if isinstance(tool_input, dict) else {}
    for key in ("file_path", "notebook_path", "path"):
        if tool_input.get(key):
            return f"{name} {tool_input[key]}"
    if tool_input.get("command"):
        return f"{name}: {task_report.shorten(str(tool_input['command']), 60)}"
    if tool_input.get("pattern"):
        return f"{name} {task_report.shorten(str(tool_input['pattern']), 60)}"
    if tool_input.get("description"):
        return f"{name}: {task_report.shorten(str(tool_input['description']), 60)}"
    return name


class _Record:
    """Equality and repr over the attributes, as @dataclass gives them. Plain classes, because
    importing dataclasses (with inspect, ast, dis and tokenize: ~10 ms of CPU on a slow machine)
    would cost every worker and command start more than these two records are worth."""
    __hash__ = None

    def __eq__(self, other):
        return vars(self) == vars(other) if other.__class__ is self.__class__ else NotImplemented

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"


class StreamState(_Record):
    """What a `--output-format stream-json` run has said so far."""

    def __init__(self, session_id=None, model=None, result=None, rate_limit_rejected=None, last_activity=None,
                 tool_calls=0, output_tokens=0, input_tokens=0, api_retries=0, api_error=None, non_json_lines=None,
                 malformed_events=0, edits=None, failed_tool_uses=None):
        self.session_id = session_id
        self.model = model
        self.result = result                          # the final `result` event
        self.rate_limit_rejected = rate_limit_rejected  # rate_limit_info of a rejected rate_limit_event
        self.last_activity = last_activity
        self.tool_calls = tool_calls
        self.output_tokens = output_tokens
        self.input_tokens = input_tokens
        self.api_retries = api_retries
        self.api_error = api_error                    # `error` of a synthetic API-error assistant message
        self.non_json_lines = [] if non_json_lines is None else non_json_lines
        self.malformed_events = malformed_events      # events skipped because a field had the wrong shape
        # Files the run's Write/Edit/MultiEdit/NotebookEdit calls named, by tool_use id (the only record
        # of what a run changed without a worktree), and the ids whose result was an error (denied, failed).
        self.edits = {} if edits is None else edits
        self.failed_tool_uses = set() if failed_tool_uses is None else failed_tool_uses

    def feed(self, event):
        """Update from one decoded event; returns True when the activity line changed. Never
        raises: an event with a field of the wrong shape is counted in malformed_events and skipped."""
        try:
            return self._feed(event)
        except (AttributeError, TypeError, ValueError, KeyError, OverflowError):
            self.malformed_events += 1
            return False

    def _feed(self, event):
        kind = event.get("type")
        if kind == "system" and event.get("subtype") == "init":
            self.session_id = event.get("session_id") or self.session_id
            self.model = event.get("model")
            self.last_activity = "started"
            return True
        if kind == "system" and event.get("subtype") == "api_retry":
            self.api_retries += 1
            self.last_activity = f"API retry {event.get('attempt')}/{event.get('max_retries')} ({event.get('error')})"
            return True
        if kind == "rate_limit_event":
            info = event.get("rate_limit_info") or {}
            if info.get("status") == "rejected":
                self.rate_limit_rejected = info
            return False
        if kind == "assistant":
            message = event.get("message") or {}
            if event.get("error"):
                self.api_error = event.get("error")
            usage = message.get("usage") or {}
            self.output_tokens += int(usage.get("output_tokens") or 0)
            self.input_tokens = max(self.input_tokens, int(usage.get("input_tokens") or 0)
                                    + int(usage.get("cache_read_input_tokens") or 0))
            changed = False
            for block in message.get("content") or []:
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    self._note_edit(block)
                    self.tool_calls += 1
                    self.last_activity = describe_tool_use(block.get("name", "tool"), block.get("input"))
                    changed = True
                elif isinstance(block, dict) and block.get("type") == "text" and block.get("text", "").strip():
                    if self.last_activity in (None, "started"):
                        self.last_activity = "writing"
                        changed = True
            return changed or bool(usage)
        if kind == "user":
            content = (event.get("message") or {}).get("content")
            for block in content if isinstance(content, list) else []:
                if isinstance(block, dict) and block.get("type") == "tool_result" and block.get("is_error"):
                    self.failed_tool_uses.add(block.get("tool_use_id"))
            return False
        if kind == "result":
            _check_result_shape(event)
            self.result = event
            self.session_id = event.get("session_id") or self.session_id
            return False
        return False

    def _note_edit(self, block):
        tool_input = block.get("input") if isinstance(block.get("input"), dict) else {}
        path = tool_input.get("file_path") or tool_input.get("notebook_path")
        if block.get("name") in EDIT_TOOLS and isinstance(path, str) and path and len(self.edits) < MAX_FILES_CHANGED:
            self.edits[block.get("id") or len(self.edits)] = path

    def files_changed(self, working_dir=None):
        """The files the run's edit tools changed (sorted; relative to `working_dir` when inside it)."""
        names = set()
        for tool_use_id, path in self.edits.items():
            if tool_use_id in self.failed_tool_uses:
                continue
            if working_dir and os.path.isabs(path):
                rel = os.path.relpath(path, working_dir)
                path = path if rel == os.pardir or rel.startswith(os.pardir + os.sep) else rel
            names.add(path)
        return sorted(names)

    def activity_line(self):
        tokens = self.input_tokens + self.output_tokens
        parts = [self.last_activity or "starting"]
        if tokens:
            parts.append(f"{tokens / 1000:.1f}k tokens")
        if self.tool_calls:
            parts.append(f"{self.tool_calls} tool calls")
        return " · ".join(parts)


_RESULT_SHAPES = {"subtype": str, "is_error": bool, "result": str, "errors": list, "usage": dict,
                  "permission_denials": list, "num_turns": int, "total_cost_usd": (int, float)}


def _check_result_shape(event):
    """A result whose fields have the wrong types is malformed (TypeError): the worker formats and
    compares them, and must not crash on what a broken CLI printed."""
    for key, kind in _RESULT_SHAPES.items():
        value = event.get(key)
        if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
            raise TypeError(f"result field {key} is {type(value).__name__}")


class Verdict(_Record):
    def __init__(self, kind, message="", fix="", resets_at=None):
        self.kind = kind
        self.message = message
        self.fix = fix
        self.resets_at = resets_at


_STARTUP_CONFIG_ERRORS = (
    # The CLI refused its arguments or environment before doing anything (no result event).
    # No structured field exists for these, so the text is all there is.
    re.compile(r"^error: (unknown option|option '|too many arguments|missing required argument)", re.M),
    re.compile(r"cannot be used with root/sudo privileges", re.M),
    re.compile(r"^Error: When using --print", re.M),
)


_REFUSAL = re.compile(r"\s*error:", re.I)


def classify(result, exit_code, rate_limit_rejected=None, stderr_tail="", model_from_task=False, now=None,
             task_fields=()):
    """Decide what a finished run means, from the structured fields wherever they exist.
    `task_fields` are the TASK_OPTIONS keys the task's own metadata set: a refusal of one of
    those options is that task's fault, not the configuration's."""
    now = time.time() if now is None else now
    if rate_limit_rejected is not None or (result and result.get("api_error") == "usage_limit_reached"):
        resets = (rate_limit_rejected or {}).get("resetsAt")
        resets = float(resets) if isinstance(resets, (int, float)) and resets > now else now + DEFAULT_USAGE_PAUSE_SECONDS
        text = (result or {}).get("result") or "usage limit reached"
        return Verdict(USAGE_LIMIT, f"Claude usage limit: {text}", "wait for the limit to reset", resets)

    if result is None:
        for field_name in task_fields:
            option = TASK_OPTIONS.get(field_name)
            line = next((ln for ln in (stderr_tail or "").splitlines()
                         if option and _REFUSAL.match(ln) and re.search(re.escape(option) + r"\b", ln)), None)
            if line is not None:
                return Verdict(FATAL, f"claude refused the task's metadata.{field_name}: {line.strip()}",
                               f"fix metadata.{field_name} and submit the task again")
        for pattern in _STARTUP_CONFIG_ERRORS:
            if pattern.search(stderr_tail or ""):
                line = next((ln for ln in stderr_tail.splitlines() if pattern.search(ln)), stderr_tail.strip())
                return Verdict(CONFIG_ERROR, f"claude refused to start: {line.strip()}",
                               "fix [claude] settings (extra_args, permission_mode) in .klauss.toml")
        tail = (stderr_tail or "").strip().splitlines()[-1:] or ["no output"]
        return Verdict(RETRYABLE, f"claude exited with code {exit_code} without a result: {tail[0]}")

    subtype = result.get("subtype")
    errors = "; ".join(str(e) for e in result.get("errors") or []) or subtype
    if subtype == "error_max_turns":
        return Verdict(FATAL, f"max turns reached ({result.get('num_turns')} turns): {errors}",
                       "raise max_turns (task metadata or [claude] max_turns) or split the task")
    if subtype == "error_max_budget_usd":
        return Verdict(FATAL, f"max budget reached ({task_report.fmt_cost(result.get('total_cost_usd') or 0)}): {errors}",
                       "raise max_budget_usd or split the task")
    if subtype and subtype.startswith("error"):
        return Verdict(RETRYABLE, f"claude failed during execution: {errors}")

    if result.get("is_error"):
        return _classify_api_error(result, model_from_task)
    if exit_code != 0:
        return Verdict(RETRYABLE, f"claude exited with code {exit_code} after reporting success")
    return Verdict(SUCCESS)


def _classify_api_error(result, model_from_task):
    status = result.get("api_error_status")
    api_error = result.get("api_error")
    reason = result.get("terminal_reason")
    text = str(result.get("result") or "")
    if status in (401, 403) or text.startswith("Not logged in") or text.startswith("Invalid API key"):
        return Verdict(CONFIG_ERROR, f"Claude is not authenticated: {text}",
                       "run `claude` in a terminal and use /login (or set a valid ANTHROPIC_API_KEY), "
                       "then restart the workers")
    if "credit balance" in text.lower() or api_error == "billing_error":
        return Verdict(CONFIG_ERROR, f"Claude billing problem: {text}",
                       "add credits or change plan in the Anthropic console, then restart the workers")
    if reason == "prompt_too_long" or text.startswith("Prompt is too long"):
        return Verdict(FATAL, f"prompt too long: {text}", "shorten the prompt or its context files")
    if status == 404 or text.startswith("There's an issue with the selected model"):
        fix = "fix the task's metadata model" if model_from_task else "fix [claude] model in .klauss.toml"
        return Verdict(FATAL if model_from_task else CONFIG_ERROR, f"model not available: {text}", fix)
    if status == 429:
        return Verdict(RETRYABLE, f"rate limited: {text}")
    if status == 529:
        return Verdict(RETRYABLE, f"API overloaded: {text}")
    if isinstance(status, int) and status >= 500:
        return Verdict(RETRYABLE, f"API server error {status}: {text}")
    if api_error == "connection_failed" or status is None:
        return Verdict(RETRYABLE, f"API unreachable: {text}")
    return Verdict(RETRYABLE, f"API error {status}: {text}")


# Modes in which an edit inside the working directory already runs: suggesting acceptEdits there
# would name a setting that changes nothing.
EDITS_ALLOWED_MODES = ("acceptEdits", "auto", "bypassPermissions")


def denial_summary(denials, permission_mode=None, disallowed_tools=()):
    """'Write (2×), Bash' and only the settings that would allow those tools under the current
    `permission_mode`: a tool in disallowed_tools must leave that list first (it wins over every
    allow); acceptEdits is named only for edit tools and only when it is not (or more) in force."""
    counts = {}
    for d in denials or []:
        name = d.get("tool_name", "?") if isinstance(d, dict) else str(d)
        counts[name] = counts.get(name, 0) + 1
    names = ", ".join(f"{n} ({c}×)" if c > 1 else n for n, c in counts.items())
    # Only a bare tool name in disallowed_tools surely denied it; a pattern such as Bash(rm:*) may not have.
    blocked = [n for n in counts if n in (disallowed_tools or ())]
    if blocked:
        return names, (f"remove {', '.join(blocked)} from [claude] disallowed_tools in .klauss.toml "
                       "(it wins over any allowed_tools)")
    allow = ", ".join(f'"{n}"' for n in counts)
    fix = (f"allow them with [claude] allowed_tools = [{allow}] in .klauss.toml (or per task in "
           f"metadata.allowed_tools)")
    if permission_mode == "plan":
        fix += ', and a permission_mode other than "plan" (it lets nothing change files)'
    elif all(n in EDIT_TOOLS for n in counts) and permission_mode not in EDITS_ALLOWED_MODES:
        fix += ', or permission_mode = "acceptEdits"'
    elif all(n in EDIT_TOOLS for n in counts):
        fix += f" (permission_mode = \"{permission_mode}\" already allows edits inside the task's working " \
               "directory, so these were outside it)"
    return names, fix
