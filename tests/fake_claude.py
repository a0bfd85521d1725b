#!/usr/bin/env python3
"""fake_claude: a test double of the ``claude`` CLI (Claude Code 2.1.x) headless interface.

Stdlib only, Python 3.9+.  Put it on PATH as ``claude`` (or call it directly) and
drive it like the real thing::

    echo 'do it' | fake_claude.py -p --output-format stream-json --verbose

Command line (as the real 2.1.197, see /work/shared/claude-cli-reference.md)
---------------------------------------------------------------------------
* ``--version`` / ``-v`` prints ``2.1.197 (Claude Code)`` (``FAKE_CLAUDE_VERSION``
  changes the number).
* ``-p/--print`` with ``--output-format text|json|stream-json``; stream-json needs
  ``--verbose``.  ``--output-format json --verbose`` prints a JSON *array* of every
  message (as the real one does), plain ``json`` one result object.
* Options taking a value swallow the next word even if it starts with ``-``;
  list options (``--allowedTools/--allowed-tools``, ``--disallowedTools/
  --disallowed-tools``, ``--add-dir``, ``--mcp-config``, ``--tools``, ``--betas``,
  ``--file``) also swallow every following word that does not start with ``-``
  (so ``--allowedTools Read "say hi"`` eats the prompt); ``--`` ends options.
  ``--opt=value`` works for options with values.
* Errors, exit 1, on stderr, same text as the real CLI:
  ``error: unknown option '--xyz'``; ``error: option '--model <model>' argument
  missing``; ``error: option '--permission-mode <mode>' argument 'bogus' is
  invalid. Allowed choices are acceptEdits, auto, bypassPermissions, default,
  dontAsk, plan.`` (2.1.197 rejects ``manual``; with ``FAKE_CLAUDE_VERSION`` >=
  2.1.329 the list is ``acceptEdits, auto, bypassPermissions, manual, dontAsk,
  plan`` and ``default`` stays accepted); ``error: --max-budget-usd must be a
  positive number greater than 0``; ``--dangerously-skip-permissions cannot be
  used with root/sudo privileges for security reasons`` (as root, for
  ``--dangerously-skip-permissions`` or ``--permission-mode bypassPermissions``,
  unless ``IS_SANDBOX=1``); ``Error: Invalid session ID. Must be a valid UUID.``;
  ``Error: Input must be provided either through stdin or as a prompt argument
  when using --print``; ``Error: When using --print, --output-format=stream-json
  requires --verbose``.  Order of the checks as observed: argument parsing,
  root refusal, session id, input, stream-json/--verbose.
* Prompt: the positional argument and/or stdin; both given -> ``"<arg>\\n<stdin>"``.
  Stdin is read when it is not a TTY; an open pipe with no data for 3 s
  (``FAKE_CLAUDE_STDIN_TIMEOUT``) gives ``Warning: no stdin data received in 3s,
  proceeding without it. ...`` on stderr, like the real one.

Scenarios
---------
Lines of the prompt of the form ``@fake {json}`` (one JSON object per line) are
actions, run in order.  Without any, the JSON list in env ``FAKE_CLAUDE_SCENARIO``
is used; without that, a plain success whose result is ``fake claude did: <first
line of the prompt>``.  An action is ``{"action": NAME, ...}`` or, shorter,
``{NAME: MAIN_ARG, ...}`` where MAIN_ARG fills the key named in brackets below.
Relative paths are relative to the working directory.

* ``write`` [path], ``content`` - a ``Write`` tool call (one turn).  Runs when
  permitted (see Permissions), else it is denied: listed in
  ``permission_denials``, tool_result ``is_error``, file not written.
* ``edit`` [path], ``old``, ``new`` - an ``Edit`` tool call replacing the first
  ``old`` with ``new`` (``old`` missing -> a tool error, run goes on).
* ``append`` [path], ``content`` - appends; shown as a ``Write`` of the new
  whole content.
* ``deny`` [tool] (default ``Write``), ``path``/``content`` or ``input`` - a tool
  call that is always denied (the run still ends ``success``, exit 0).
* ``tool`` [name], ``input``, ``output`` - any other tool call, always allowed,
  nothing happens; ``output`` is the tool_result text.
* ``run`` [argv], ``cwd``, ``env``, ``input``, ``timeout`` - runs argv (a list, no
  shell) as a ``Bash`` tool call; its stdout/stderr/exit code go into the
  tool_result; if no ``text`` action follows, the result text is its stdout.
  Not subject to permissions (it is the nesting hook for tests).
* ``text`` [text] - an assistant text message; the last one is the result.
* ``sleep`` [seconds].
* ``hang`` [child] - sleep forever; ``"child": true`` first starts a child
  process that also sleeps (same process group, stdout/stderr inherited, for
  ``child_seconds``, default 3600); ``pidfile`` (path) gets
  ``{"pid": .., "child_pid": ..}`` once both run.
* ``wait_for_file`` [path], ``timeout`` (default 60) - block until path exists
  (timeout: message on stderr, exit 1).
* ``touch_file`` [path], ``content`` - create a marker file (e.g. "started").
* ``stderr`` [text] - write text to stderr.
* ``exit`` [code] (default 1), ``stderr`` - exit at once, no result (a crash).
* ``api_retry`` [count] (default 1), ``status`` (529|429|500|null),
  ``delay_ms`` - emit ``system/api_retry`` events (stream-json), no waiting.
* ``error`` [kind], optional ``message`` (result text), ``resets_at`` (epoch s,
  usage_limit), ``limit_type`` (``five_hour``/``seven_day``..) - end the run
  with the real CLI's error result, exit 1.  Kinds: ``not_logged_in``,
  ``invalid_api_key`` (401), ``rate_limit`` (429), ``overloaded`` (529),
  ``server_error`` (500), ``connection_failed``, ``usage_limit`` (429
  ``usage_limit_reached``; stream-json shows a ``rate_limit_event`` with
  ``status: rejected`` and ``resetsAt`` first), ``billing`` (400 credit
  balance), ``model_not_found`` (404), ``prompt_too_long`` (400),
  ``max_turns`` (``error_max_turns``), ``max_budget`` (``error_max_budget_usd``),
  ``during_execution`` (``error_during_execution``).  API errors are
  ``subtype: success``, ``is_error: true`` with ``api_error_status``,
  ``api_error_type``, ``terminal_reason`` and the text in ``result``, preceded in
  stream-json by a synthetic assistant message (``model: <synthetic>``,
  ``error``, ``is_api_error_message``); the ``error_*`` subtypes have no
  ``result`` but ``errors: [..]``.  Shapes follow 2.1.329 / the reference
  (2.1.197 lacks ``api_error_type`` and says ``terminal_reason: completed``).

``--max-turns N`` and ``--max-budget-usd X`` are enforced: every tool action
and the final answer is a turn costing 0.0123 USD, 100 input + 20 output tokens.

Permissions
-----------
``write``/``edit``/``append`` run with ``--permission-mode acceptEdits`` (paths
inside cwd or an ``--add-dir``), ``auto``, ``bypassPermissions``,
``--dangerously-skip-permissions``, or an ``--allowedTools`` entry ``Write``,
``Edit``, ``Write(glob)``/``Edit(glob)``; ``--disallowedTools`` wins.  With
``default``/``manual``/``dontAsk``/``plan`` they are denied.

Sessions
--------
``session_id`` is a fresh uuid4, or ``--session-id``, or the ``--resume`` id
(``--fork-session`` makes a new one).  When ``FAKE_CLAUDE_STATE_DIR`` or
``CLAUDE_CONFIG_DIR`` is set, sessions are recorded as
``<dir>/projects/<cwd-slug>/<id>.jsonl`` (unless ``--no-session-persistence``),
``--resume`` of an unknown id fails like the real CLI (``No conversation found
with session ID: <id>``) and a reused ``--session-id`` gives ``Error: Session ID
<id> is already in use.``.  Without such a dir every valid id is accepted.

Invocation log
--------------
If ``FAKE_CLAUDE_LOG`` names a directory, one JSON line per invocation is
appended to ``<dir>/invocations.jsonl`` (single ``write`` in append mode, so
parallel runs do not interleave) as soon as the arguments and stdin are read,
before the scenario runs: ``argv``, ``cwd``, ``pid``, ``ppid``, ``pgid``,
``sid``, ``stdin`` (None when not read), ``prompt``, ``time`` and ``env`` (the
``CLAUDE_*``, ``ANTHROPIC_*``, ``KLAUSS_*``, ``FAKE_CLAUDE_*`` and ``IS_SANDBOX``
variables).
"""

import json
import os
import sys
import time

_T0 = time.time()

VERSION = os.environ.get("FAKE_CLAUDE_VERSION") or "2.1.197"
COST_PER_TURN = 0.0123
IN_TOKENS = 100
OUT_TOKENS = 20
DEFAULT_MODEL = "claude-sonnet-4-5-20250929"
MODEL_ALIASES = {
    "sonnet": "claude-sonnet-4-5-20250929",
    "opus": "claude-opus-4-1-20250805",
    "haiku": "claude-haiku-4-5-20251001",
    "default": DEFAULT_MODEL,
}
TOOLS = ["Task", "Bash", "Edit", "Glob", "Grep", "NotebookEdit", "Read", "Skill",
         "TodoWrite", "WebFetch", "WebSearch", "Write"]
EDIT_TOOLS = ("Write", "Edit", "MultiEdit", "NotebookEdit")

STDIN_WARNING = ("Warning: no stdin data received in 3s, proceeding without it. If piping from a "
                 "slow command, redirect stdin explicitly: < /dev/null to skip, or wait longer.")
NO_INPUT = ("Error: Input must be provided either through stdin or as a prompt argument "
            "when using --print")
STREAM_NEEDS_VERBOSE = "Error: When using --print, --output-format=stream-json requires --verbose"
ROOT_REFUSED = ("--dangerously-skip-permissions cannot be used with root/sudo privileges "
                "for security reasons")
DONT_ASK_DENIAL = (
    "Permission to use {tool} has been denied because Claude Code is running in don't ask mode. "
    "IMPORTANT: You *may* attempt to accomplish this action using other tools that might naturally "
    "be used to accomplish this goal, e.g. using head instead of cat. But you *should not* attempt "
    "to work around this denial in malicious ways, e.g. do not use your ability to run tests to "
    "execute non-test actions. You should only try to work around this restriction in reasonable "
    "ways that do not attempt to bypass the intent behind this denial. If you believe this "
    "capability is essential to complete the user's request, STOP and explain to the user what "
    "you were trying to do and why you need this permission. Let the user decide how to proceed.")


def _version_tuple(v):
    out = []
    for p in v.split(".")[:3]:
        digits = "".join(c for c in p if c.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


NEW_CLI = _version_tuple(VERSION) >= (2, 1, 329)
if NEW_CLI:
    PERMISSION_CHOICES = ["acceptEdits", "auto", "bypassPermissions", "manual", "dontAsk", "plan"]
    PERMISSION_ACCEPTED = PERMISSION_CHOICES + ["default"]
else:
    PERMISSION_CHOICES = ["acceptEdits", "auto", "bypassPermissions", "default", "dontAsk", "plan"]
    PERMISSION_ACCEPTED = PERMISSION_CHOICES

# ------------------------------------------------------------------ options
# kind: bool | value | optional | list ; metavar as in commander's messages
_OPTS = {}


def _opt(names, kind, metavar=None, choices=None):
    longs = [n for n in names if n.startswith("--")]
    spec = {"names": names, "kind": kind, "metavar": metavar, "choices": choices,
            "key": (longs[0] if longs else names[0]).lstrip("-")}
    for n in names:
        _OPTS[n] = spec
    return spec


for _n in (["-p", "--print"], ["--verbose"], ["--strict-mcp-config"], ["--no-session-persistence"],
           ["--dangerously-skip-permissions"], ["--allow-dangerously-skip-permissions"],
           ["-c", "--continue"], ["--fork-session"], ["--include-partial-messages"],
           ["--include-hook-events"], ["--replay-user-messages"], ["--bare"], ["--brief"],
           ["--chrome"], ["--no-chrome"], ["--ide"], ["--disable-slash-commands"],
           ["--exclude-dynamic-system-prompt-sections"], ["--safe-mode"], ["--ax-screen-reader"],
           ["--bg", "--background"], ["-v", "--version"], ["-h", "--help"]):
    _opt(_n, "bool")
_opt(["--output-format"], "value", "<format>", ["text", "json", "stream-json"])
_opt(["--input-format"], "value", "<format>", ["text", "stream-json"])
_opt(["--permission-mode"], "value", "<mode>", "PERMISSION")
for _n, _m in ((["--model"], "<model>"), (["--fallback-model"], "<model>"),
               (["--append-system-prompt"], "<prompt>"), (["--system-prompt"], "<prompt>"),
               (["--append-system-prompt-file"], "<file>"), (["--system-prompt-file"], "<file>"),
               (["--settings"], "<file-or-json>"), (["--max-turns"], "<turns>"),
               (["--max-budget-usd"], "<amount>"), (["--session-id"], "<uuid>"),
               (["--agent"], "<agent>"), (["--agents"], "<json>"), (["--effort"], "<level>"),
               (["--json-schema"], "<schema>"), (["-n", "--name"], "<name>"),
               (["--debug-file"], "<path>"), (["--setting-sources"], "<sources>"),
               (["--plugin-dir"], "<path>"), (["--plugin-url"], "<url>"),
               (["--remote-control-session-name-prefix"], "<prefix>")):
    _opt(_n, "value", _m)
for _n in (["-r", "--resume"], ["-d", "--debug"], ["-w", "--worktree"], ["--from-pr"],
           ["--prompt-suggestions"], ["--remote-control"], ["--tmux"]):
    _opt(_n, "optional", "[value]")
for _n, _m in ((["--allowedTools", "--allowed-tools"], "<tools...>"),
               (["--disallowedTools", "--disallowed-tools"], "<tools...>"),
               (["--add-dir"], "<directories...>"), (["--mcp-config"], "<configs...>"),
               (["--tools"], "<tools...>"), (["--betas"], "<betas...>"), (["--file"], "<specs...>")):
    _opt(_n, "list", _m)


def _die(msg, code=1):
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()
    _log_invocation()
    sys.exit(code)


def _flag_label(spec):
    """How commander names an option in errors: "--allowedTools, --allowed-tools <tools...>"."""
    return "%s %s" % (", ".join(spec["names"]), spec["metavar"])


def _fmt_num(f):
    return str(int(f)) if float(f).is_integer() else repr(float(f))


def parse_args(argv):
    opts = {}
    positionals = []
    unknown = []
    i = 0
    n = len(argv)
    while i < n:
        a = argv[i]
        i += 1
        if a == "--":
            positionals.extend(argv[i:])
            break
        if len(a) > 1 and a[0] == "-":
            name, eq, inline = a.partition("=") if a.startswith("--") else (a, "", "")
            spec = _OPTS.get(name)
            if spec is None or (eq and spec["kind"] == "bool"):
                unknown.append(a)
                continue
            key = spec["key"]
            kind = spec["kind"]
            if kind == "bool":
                opts[key] = True
                if key == "version":
                    sys.stdout.write("%s (Claude Code)\n" % VERSION)
                    sys.stdout.flush()
                    _log_invocation()
                    sys.exit(0)
                continue
            if kind == "optional":
                if eq:
                    opts[key] = inline
                elif i < n and not (len(argv[i]) > 1 and argv[i][0] == "-"):
                    opts[key] = argv[i]
                    i += 1
                else:
                    opts[key] = True
                continue
            if eq:
                val = inline
            elif i < n:
                val = argv[i]
                i += 1
            else:
                _die("error: option '%s' argument missing" % _flag_label(spec))
            if kind == "list":
                lst = opts.setdefault(key, [])
                lst.append(val)
                if not eq:
                    while i < n and argv[i] != "--" and not (len(argv[i]) > 1 and argv[i][0] == "-"):
                        lst.append(argv[i])
                        i += 1
                continue
            choices = spec["choices"]
            if choices == "PERMISSION":
                if val not in PERMISSION_ACCEPTED:
                    _die("error: option '%s' argument '%s' is invalid. Allowed choices are %s."
                         % (_flag_label(spec), val, ", ".join(PERMISSION_CHOICES)))
            elif choices and val not in choices:
                _die("error: option '%s' argument '%s' is invalid. Allowed choices are %s."
                     % (_flag_label(spec), val, ", ".join(choices)))
            if key == "max-budget-usd":
                try:
                    f = float(val)
                except ValueError:
                    f = float("nan")
                if not f > 0:
                    _die("error: --max-budget-usd must be a positive number greater than 0")
            opts[key] = val
            continue
        positionals.append(a)
    if unknown:
        _die("error: unknown option '%s'" % unknown[0])
    return opts, positionals


# ------------------------------------------------------------------ helpers
def uuid4():
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def is_uuid(s):
    s = s.lower()
    parts = s.split("-")
    if [len(p) for p in parts] != [8, 4, 4, 4, 12]:
        return False
    return all(c in "0123456789abcdef" for c in "".join(parts))


_STATE = {"stdin": None, "prompt": None, "logged": False}


def _log_invocation():
    if _STATE["logged"]:
        return
    _STATE["logged"] = True
    d = os.environ.get("FAKE_CLAUDE_LOG")
    if not d:
        return
    try:
        pgid = os.getpgid(0)
        sid = os.getsid(0)
    except (AttributeError, OSError):
        pgid = sid = None
    env = {k: v for k, v in os.environ.items()
           if k.startswith(("CLAUDE_", "ANTHROPIC_", "KLAUSS_", "FAKE_CLAUDE_")) or k == "IS_SANDBOX"}
    rec = {"argv": sys.argv[1:], "cwd": os.getcwd(), "pid": os.getpid(), "ppid": os.getppid(),
           "pgid": pgid, "sid": sid, "stdin": _STATE["stdin"], "prompt": _STATE["prompt"],
           "env": env, "time": time.time()}
    try:
        os.makedirs(d, exist_ok=True)
        fd = os.open(os.path.join(d, "invocations.jsonl"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(rec) + "\n").encode("utf-8"))
        finally:
            os.close(fd)
    except OSError as e:
        sys.stderr.write("fake-claude: cannot write invocation log: %s\n" % e)


def read_stdin():
    """Return stdin text, or None when there is none (TTY / closed / 3 s of silence)."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return None
    try:
        if os.isatty(fd):
            return None
    except OSError:
        return None
    timeout = float(os.environ.get("FAKE_CLAUDE_STDIN_TIMEOUT") or 3)
    try:
        import select
        r, _, _ = select.select([fd], [], [], timeout)
    except (OSError, ValueError, ImportError):
        r = [fd]
    if not r:
        sys.stderr.write(STDIN_WARNING + "\n")
        sys.stderr.flush()
        return None
    chunks = []
    while True:
        try:
            b = os.read(fd, 65536)
        except OSError:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks).decode("utf-8", "replace")


def _stream_json_input(text):
    parts = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        content = (obj.get("message") or {}).get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(b.get("text", "") for b in content if isinstance(b, dict))
    return "\n".join(parts)


def _split_rules(values):
    rules = []
    for v in values or []:
        cur, depth = "", 0
        for c in v:
            if c == "(":
                depth += 1
            elif c == ")":
                depth = max(0, depth - 1)
            if depth == 0 and (c == "," or c.isspace()):
                if cur:
                    rules.append(cur)
                cur = ""
            else:
                cur += c
        if cur:
            rules.append(cur)
    return rules


# ------------------------------------------------------------------ the run
class Done(Exception):
    def __init__(self, code):
        Exception.__init__(self, code)
        self.code = code


class Run:
    def __init__(self, opts, prompt):
        self.opts = opts
        self.prompt = prompt
        self.cwd = os.getcwd()
        self.fmt = opts.get("output-format", "text")
        self.verbose = bool(opts.get("verbose"))
        model = opts.get("model") or os.environ.get("ANTHROPIC_MODEL") or DEFAULT_MODEL
        self.model = MODEL_ALIASES.get(model, model)
        mode = opts.get("permission-mode") or "default"
        if opts.get("dangerously-skip-permissions"):
            mode = "bypassPermissions"
        self.mode = mode
        self.allowed = _split_rules(opts.get("allowedTools"))
        self.disallowed = _split_rules(opts.get("disallowedTools"))
        self.add_dirs = [os.path.abspath(d) for d in opts.get("add-dir") or []]
        self.max_turns = None
        if opts.get("max-turns") is not None:
            try:
                self.max_turns = int(float(opts["max-turns"]))
            except ValueError:
                self.max_turns = None
        self.budget = float(opts["max-budget-usd"]) if opts.get("max-budget-usd") else None
        self.session_id = None
        self.turns = 0
        self.cost = 0.0
        self.denials = []
        self.messages = []  # everything emitted, for json --verbose
        self.last_text = None
        self.last_run_stdout = None
        self.api_ms = 0

    # -- output
    def emit(self, obj):
        self.messages.append(obj)
        if self.fmt == "stream-json":
            sys.stdout.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n")
            sys.stdout.flush()

    def usage(self, turns):
        return {"input_tokens": IN_TOKENS * turns, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0, "output_tokens": OUT_TOKENS * turns,
                "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
                "service_tier": "standard",
                "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0}}

    def model_usage(self, turns):
        if not turns:
            return {}
        return {self.model: {"inputTokens": IN_TOKENS * turns, "outputTokens": OUT_TOKENS * turns,
                             "cacheReadInputTokens": 0, "cacheCreationInputTokens": 0,
                             "webSearchRequests": 0, "costUSD": round(self.cost, 6),
                             "contextWindow": 200000, "maxOutputTokens": 64000}}

    def base_result(self, subtype, is_error):
        return {"type": "result", "subtype": subtype, "is_error": is_error}

    def finish(self, res, code):
        res.setdefault("uuid", uuid4())
        self.emit(res)
        if self.fmt == "json":
            out = self.messages if self.verbose else res
            sys.stdout.write(json.dumps(out, ensure_ascii=False, separators=(",", ":")) + "\n")
        elif self.fmt == "text":
            if "result" in res:
                sys.stdout.write(str(res["result"]) + "\n")
            else:
                sys.stdout.write(self._text_error(res))
        sys.stdout.flush()
        self.save_session()
        raise Done(code)

    def _text_error(self, res):
        st = res.get("subtype")
        if st == "error_max_turns":
            return "Error: Reached max turns (%s)" % self.max_turns
        if st == "error_max_budget_usd":
            return "Error: Exceeded USD budget (%s)" % _fmt_num(self.budget or 0)
        return "Error: %s\n" % "; ".join(res.get("errors") or ["error during execution"])

    def duration(self):
        return int((time.time() - _T0) * 1000)

    # -- sessions
    def state_dir(self):
        d = os.environ.get("FAKE_CLAUDE_STATE_DIR") or os.environ.get("CLAUDE_CONFIG_DIR")
        if not d:
            return None
        slug = "".join(c if c.isalnum() else "-" for c in self.cwd)
        return os.path.join(d, "projects", slug)

    def save_session(self):
        d = self.state_dir()
        if not d or self.opts.get("no-session-persistence") or not self.session_id:
            return
        try:
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, self.session_id + ".jsonl"), "a") as f:
                f.write(json.dumps({"type": "user", "sessionId": self.session_id, "cwd": self.cwd,
                                    "message": {"role": "user", "content": self.prompt}}) + "\n")
        except OSError:
            pass

    def pick_session(self):
        """Session id from the flags; exits like the real CLI on unknown ids."""
        d = self.state_dir()
        resume = self.opts.get("resume")
        if resume is True:
            sys.stderr.write("Error: --resume requires a valid session ID or session title when used "
                             "with --print. Usage: claude -p --resume <session-id|title>\n")
            raise Done(1)
        if resume:
            known = d is None or os.path.exists(os.path.join(d, resume + ".jsonl"))
            if not is_uuid(resume) and d is None:
                known = False
            if not known:
                if is_uuid(resume):
                    msg = "No conversation found with session ID: %s" % resume
                else:
                    msg = ("Error: --resume requires a valid session ID or session title when used "
                           "with --print. Usage: claude -p --resume <session-id|title>. Provided "
                           "value \"%s\" is not a UUID and does not match any session title." % resume)
                sys.stderr.write(msg + "\n")
                if self.fmt == "stream-json":
                    self.session_id = resume if is_uuid(resume) else uuid4()
                    res = self.base_result("error_during_execution", True)
                    res.update({"duration_ms": 0, "duration_api_ms": 0, "num_turns": 0,
                                "stop_reason": None, "session_id": self.session_id,
                                "total_cost_usd": 0, "usage": self.usage(0), "modelUsage": {},
                                "permission_denials": [], "uuid": uuid4(), "errors": [msg]})
                    self.emit(res)
                raise Done(1)
            self.session_id = uuid4() if self.opts.get("fork-session") else resume
            return
        if self.opts.get("continue") and d and os.path.isdir(d):
            files = [os.path.join(d, f) for f in os.listdir(d) if f.endswith(".jsonl")]
            if files:
                latest = max(files, key=os.path.getmtime)
                sid = os.path.basename(latest)[:-6]
                self.session_id = uuid4() if self.opts.get("fork-session") else sid
                return
        sid = self.opts.get("session-id")
        if sid:
            if d and os.path.exists(os.path.join(d, sid + ".jsonl")):
                sys.stderr.write("Error: Session ID %s is already in use.\n" % sid)
                raise Done(1)
            self.session_id = sid
            return
        self.session_id = uuid4()

    # -- permissions
    def _rule_matches(self, rule, tool, path):
        name, _, spec = rule.partition("(")
        spec = spec[:-1] if spec.endswith(")") else spec
        if tool in EDIT_TOOLS:
            if name not in ("Write", "Edit", "MultiEdit") and name != tool:
                return False
        elif name != tool:
            return False
        if not spec or spec in ("*", "**"):
            return True
        if path is None:
            return False
        import fnmatch
        pat = spec.replace("**", "*")
        if pat.startswith("//"):
            pat = pat[1:]
        elif pat.startswith("./"):
            pat = pat[2:]
        rel = os.path.relpath(path, self.cwd)
        return fnmatch.fnmatch(rel, pat) or fnmatch.fnmatch(path, pat) or \
            fnmatch.fnmatch(rel, pat.lstrip("/"))

    def permitted(self, tool, path=None):
        if any(self._rule_matches(r, tool, path) for r in self.disallowed):
            return False
        if self.mode == "bypassPermissions":
            return True
        if any(self._rule_matches(r, tool, path) for r in self.allowed):
            return True
        if tool in EDIT_TOOLS:
            if self.mode == "auto":
                return True
            if self.mode == "acceptEdits":
                roots = [self.cwd] + self.add_dirs
                p = os.path.realpath(path) if path else ""
                return any(p == os.path.realpath(r) or p.startswith(os.path.realpath(r) + os.sep)
                           for r in roots)
        return False

    def denial_text(self, tool, path):
        if self.mode == "dontAsk":
            return DONT_ASK_DENIAL.format(tool=tool)
        if tool == "Write" and path:
            return "Claude requested permissions to write to %s, but you haven't granted it yet." % path
        if tool in EDIT_TOOLS and path:
            return "Claude requested permissions to edit %s, but you haven't granted it yet." % path
        return "Claude requested permissions to use %s, but you haven't granted it yet." % tool

    # -- turns
    def new_turn(self):
        """Start an API call. Enforces --max-turns."""
        self.turns += 1
        if self.max_turns is not None and self.turns > self.max_turns:
            self.finish_error_subtype("error_max_turns", "max_turns",
                                      "Reached maximum number of turns (%s)" % self.max_turns,
                                      stop_reason="tool_use")
        self.cost += COST_PER_TURN
        self.api_ms += 5

    def check_budget(self):
        if self.budget is not None and self.cost >= self.budget:
            self.finish_error_subtype("error_max_budget_usd", "budget_exhausted",
                                      "Reached maximum budget ($%s)" % _fmt_num(self.budget),
                                      stop_reason="tool_use")

    def assistant(self, blocks, stop_reason=None):
        self.emit({"type": "assistant", "message": {
            "id": "msg_" + uuid4().replace("-", "")[:24], "type": "message", "role": "assistant",
            "model": self.model, "content": blocks, "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": IN_TOKENS, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0, "output_tokens": OUT_TOKENS,
                      "service_tier": "standard"},
            "context_management": None},
            "parent_tool_use_id": None, "session_id": self.session_id, "uuid": uuid4()})

    def tool_call(self, tool, tool_input, path=None, action=None, force_deny=False,
                  check_permission=True):
        """One turn: assistant tool_use, then (maybe) the action, then user tool_result."""
        self.new_turn()
        tid = "toolu_" + uuid4().replace("-", "")[:24]
        self.assistant([{"type": "tool_use", "id": tid, "name": tool, "input": tool_input}])
        self.check_budget()
        ok = not force_deny and (not check_permission or self.permitted(tool, path))
        if not ok:
            msg = self.denial_text(tool, path)
            self.denials.append({"tool_name": tool, "tool_use_id": tid, "tool_input": tool_input})
            content, is_error, tur = msg, True, "Error: " + msg
        else:
            try:
                content, is_error, tur = action()
            except Exception as e:  # a failing tool is a tool error, not a crash
                content, is_error, tur = "<tool_use_error>%s</tool_use_error>" % e, True, "Error: %s" % e
        block = {"tool_use_id": tid, "type": "tool_result", "content": content}
        if is_error:
            block["is_error"] = True
        self.emit({"type": "user", "message": {"role": "user", "content": [block]},
                   "parent_tool_use_id": None, "session_id": self.session_id, "uuid": uuid4(),
                   "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
                   "tool_use_result": tur})

    # -- init / success / errors
    def init(self):
        tools = list(TOOLS)
        if self.opts.get("tools") is not None:
            names = _split_rules(self.opts["tools"])
            tools = [] if names in ([], [""]) else ([t for t in TOOLS] if names == ["default"] else names)
        tools = [t for t in tools if t not in self.disallowed]
        self.emit({"type": "system", "subtype": "init", "cwd": self.cwd, "session_id": self.session_id,
                   "tools": tools, "mcp_servers": [], "model": self.model,
                   "permissionMode": self.mode, "slash_commands": [],
                   "apiKeySource": "ANTHROPIC_API_KEY" if os.environ.get("ANTHROPIC_API_KEY") else "none",
                   "claude_code_version": VERSION, "output_style": "default", "agents": [],
                   "skills": [], "plugins": [], "uuid": uuid4()})

    def success(self):
        self.new_turn()
        text = self.last_text
        if text is None:
            text = self.last_run_stdout if self.last_run_stdout is not None else self.default_text()
            self.assistant([{"type": "text", "text": text}])
        res = self.base_result("success", False)
        res.update({"api_error_status": None, "duration_ms": self.duration(),
                    "duration_api_ms": self.api_ms, "num_turns": self.turns, "result": text,
                    "stop_reason": "end_turn", "session_id": self.session_id,
                    "total_cost_usd": round(self.cost, 6), "usage": self.usage(self.turns),
                    "modelUsage": self.model_usage(self.turns),
                    "permission_denials": self.denials, "terminal_reason": "completed"})
        self.finish(res, 0)

    def default_text(self):
        first = (self.prompt or "").strip().splitlines()
        return "fake claude did: %s" % (first[0][:200] if first else "")

    def finish_error_subtype(self, subtype, terminal_reason, message, stop_reason=None):
        res = self.base_result(subtype, True)
        res.update({"duration_ms": self.duration(), "duration_api_ms": self.api_ms,
                    "num_turns": self.turns, "stop_reason": stop_reason,
                    "session_id": self.session_id, "total_cost_usd": round(self.cost, 6),
                    "usage": self.usage(self.turns), "modelUsage": self.model_usage(self.turns),
                    "permission_denials": self.denials})
        if terminal_reason:
            res["terminal_reason"] = terminal_reason
        res["errors"] = [message]
        self.finish(res, 1)

    def api_error(self, a):
        kind = a.get("kind") or "server_error"
        if kind == "max_turns":
            self.turns += 1
            self.finish_error_subtype("error_max_turns", "max_turns", a.get("message") or
                                      "Reached maximum number of turns (%s)" % (self.max_turns or self.turns - 1),
                                      stop_reason="tool_use")
        if kind == "max_budget":
            self.turns += 1
            self.cost += COST_PER_TURN
            self.finish_error_subtype("error_max_budget_usd", "budget_exhausted", a.get("message") or
                                      "Reached maximum budget ($%s)" % _fmt_num(self.budget or self.cost),
                                      stop_reason="tool_use")
        if kind == "during_execution":
            self.turns += 1
            self.finish_error_subtype("error_during_execution", None,
                                      a.get("message") or "An unexpected error occurred during execution")
        table = {
            # kind: (status, api_error_type, synthetic error, result text, api_error, terminal_reason)
            "not_logged_in": (None, None, "authentication_failed", "Not logged in \u00b7 Please run /login",
                              None, "api_error"),
            "invalid_api_key": (401, "authentication_error", "authentication_failed",
                                "Invalid API key \u00b7 Fix external API key", None, "api_error"),
            "rate_limit": (429, "rate_limit_error", "rate_limit",
                           "API Error: Request rejected (429) \u00b7 This request would exceed the rate "
                           "limit for your organization of 50,000 input tokens per minute. For details, "
                           "refer to: https://docs.claude.com/en/api/rate-limits.", None, "api_error"),
            "overloaded": (529, "overloaded_error", "server_error",
                           "API Error: 529 Overloaded. This is a server-side issue, usually temporary "
                           "\u2014 try again in a moment.", None, "api_error"),
            "server_error": (500, "api_error", "server_error",
                             "API Error: 500 Internal server error. This is a server-side issue, usually "
                             "temporary \u2014 try again in a moment.", None, "api_error"),
            "connection_failed": (None, None, "server_error",
                                  "API Error: Can't reach the API server \u2014 check your internet or DNS "
                                  "(ENOTFOUND)", "connection_failed", "api_error"),
            "billing": (400, "invalid_request_error", "billing_error", "Credit balance is too low",
                        None, "api_error"),
            "model_not_found": (404, "not_found_error", "model_not_found",
                                "There's an issue with the selected model (%s). It may not exist or you "
                                "may not have access to it. Run --model to pick a different model."
                                % self.model, None, "api_error"),
            "prompt_too_long": (400, "invalid_request_error", "invalid_request",
                                "Prompt is too long \u00b7 the request is ~250000 tokens (limit 200000)",
                                None, "prompt_too_long"),
            "usage_limit": (429, "rate_limit_error", "rate_limit", None, "usage_limit_reached",
                            "api_error"),
        }
        if kind not in table:
            sys.stderr.write("fake-claude: unknown error kind %r\n" % kind)
            raise Done(2)
        status, etype, synth, text, api_error, terminal = table[kind]
        if kind != "not_logged_in":
            self.turns += 1
        else:
            self.turns = max(self.turns, 1)
        if kind == "usage_limit":
            resets = int(a.get("resets_at") or (time.time() // 3600 + 3) * 3600)
            ltype = a.get("limit_type") or "five_hour"
            label = {"five_hour": "5-hour limit", "seven_day": "weekly limit",
                     "seven_day_opus": "Opus limit", "seven_day_sonnet": "Sonnet limit"}.get(ltype, "usage limit")
            tm = time.gmtime(resets)
            hour = tm.tm_hour % 12 or 12
            text = "You've hit your %s \u00b7 resets %d:%02d%s (UTC)" % (
                label, hour, tm.tm_min, "am" if tm.tm_hour < 12 else "pm")
            self.emit({"type": "rate_limit_event",
                       "rate_limit_info": {"status": "rejected", "resetsAt": resets,
                                           "rateLimitType": ltype, "isUsingOverage": False},
                       "uuid": uuid4(), "session_id": self.session_id})
        text = a.get("message") or text
        synthetic = {"type": "assistant", "message": {
            "id": uuid4(), "container": None, "model": "<synthetic>", "role": "assistant",
            "stop_details": None, "stop_reason": "stop_sequence", "stop_sequence": "", "type": "message",
            "usage": {"input_tokens": 0, "output_tokens": 0, "cache_creation_input_tokens": 0,
                      "cache_read_input_tokens": 0},
            "content": [{"type": "text", "text": text}], "context_management": None},
            "parent_tool_use_id": None, "session_id": self.session_id, "uuid": uuid4(),
            "error": synth, "is_api_error_message": True}
        if status is not None:
            synthetic["api_error_status"] = status
            synthetic["api_error_type"] = etype
        self.emit(synthetic)
        res = self.base_result("success", True)
        res.update({"api_error_status": status, "duration_ms": self.duration(),
                    "duration_api_ms": self.api_ms, "num_turns": self.turns})
        if etype:
            res["api_error_type"] = etype
        if api_error:
            res["api_error"] = api_error
        res.update({"result": text, "stop_reason": "stop_sequence", "session_id": self.session_id,
                    "total_cost_usd": round(self.cost, 6), "usage": self.usage(0),
                    "modelUsage": self.model_usage(self.turns - 1),
                    "permission_denials": self.denials, "terminal_reason": terminal})
        self.finish(res, 1)

    # -- actions
    def path_of(self, p):
        return os.path.abspath(os.path.join(self.cwd, os.path.expanduser(str(p))))

    def do_write(self, a, append=False):
        path = self.path_of(a["path"])
        content = str(a.get("content", ""))
        new = content
        if append and os.path.exists(path):
            with open(path, "r", encoding="utf-8", errors="replace") as f:
                new = f.read() + content

        def act():
            existed = os.path.exists(path)
            old = None
            if existed:
                with open(path, "r", encoding="utf-8", errors="replace") as f:
                    old = f.read()
            parent = os.path.dirname(path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            with open(path, "w", encoding="utf-8") as f:
                f.write(new)
            if existed:
                msg = "The file %s has been updated successfully." % path
            else:
                msg = ("File created successfully at: %s (file state is current in your context "
                       "\u2014 no need to Read it back)" % path)
            return msg, False, {"type": "update" if existed else "create", "filePath": path,
                                "content": new, "structuredPatch": [], "originalFile": old,
                                "userModified": False}
        self.tool_call("Write", {"file_path": path, "content": new}, path=path, action=act)

    def do_edit(self, a):
        path = self.path_of(a["path"])
        old_s, new_s = str(a.get("old", "")), str(a.get("new", ""))

        def act():
            with open(path, "r", encoding="utf-8") as f:
                cur = f.read()
            if old_s not in cur:
                msg = "String to replace not found in file.\nString: %s" % old_s
                return "<tool_use_error>%s</tool_use_error>" % msg, True, "Error: " + msg
            with open(path, "w", encoding="utf-8") as f:
                f.write(cur.replace(old_s, new_s, 1))
            return ("The file %s has been updated successfully." % path, False,
                    {"filePath": path, "oldString": old_s, "newString": new_s, "originalFile": cur,
                     "structuredPatch": [], "userModified": False, "replaceAll": False})
        self.tool_call("Edit", {"file_path": path, "old_string": old_s, "new_string": new_s,
                                "replace_all": False}, path=path, action=act)

    def do_deny(self, a):
        tool = a.get("tool") or "Write"
        path = self.path_of(a["path"]) if a.get("path") else None
        tool_input = a.get("input")
        if tool_input is None:
            if tool in EDIT_TOOLS:
                tool_input = {"file_path": path or self.path_of("denied.txt"),
                              "content": str(a.get("content", ""))}
                path = tool_input["file_path"]
            elif tool == "Bash":
                tool_input = {"command": a.get("command", "true"), "description": "denied command"}
            else:
                tool_input = {}
        self.tool_call(tool, tool_input, path=path, force_deny=True)

    def do_tool(self, a):
        out = str(a.get("output", ""))
        self.tool_call(a.get("name") or "Read", a.get("input") or {},
                       action=lambda: (out, False, {"output": out}), check_permission=False)

    def do_run(self, a):
        import subprocess
        argv = a.get("argv")
        if isinstance(argv, str):
            argv = [argv]
        argv = [str(x) for x in argv or []]
        cwd = self.path_of(a["cwd"]) if a.get("cwd") else self.cwd
        env = None
        if a.get("env"):
            env = dict(os.environ)
            env.update({str(k): str(v) for k, v in a["env"].items()})
        inp = a.get("input")
        try:
            import shlex
            cmd = " ".join(shlex.quote(x) for x in argv)
        except Exception:
            cmd = " ".join(argv)

        def act():
            p = subprocess.run(argv, cwd=cwd, env=env,
                               input=(inp.encode("utf-8") if inp is not None else None),
                               stdin=(subprocess.DEVNULL if inp is None else None),
                               capture_output=True, timeout=a.get("timeout"))
            out = p.stdout.decode("utf-8", "replace")
            err = p.stderr.decode("utf-8", "replace")
            self.last_run_stdout = out.strip()
            content = (out + (("\n" if out and err else "") + err if err else "")).rstrip("\n")
            if p.returncode != 0:
                content = (content + "\nExit code %d" % p.returncode).lstrip("\n")
            return (content or "(Bash completed with no output)", p.returncode != 0,
                    {"stdout": out, "stderr": err, "exitCode": p.returncode, "interrupted": False,
                     "isImage": False, "noOutputExpected": False})
        self.tool_call("Bash", {"command": cmd, "description": a.get("description") or "Run command"},
                       action=act, check_permission=False)

    def do_text(self, a):
        # An assistant text message; the turn is counted once, by success().
        t = str(a.get("text", ""))
        self.last_text = t
        self.assistant([{"type": "text", "text": t}])

    def do_hang(self, a):
        child_pid = None
        if a.get("child"):
            import subprocess
            # bounded (default 1 h) so that a test that fails to kill it leaks nothing for long
            child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(%f)"
                                      % float(a.get("child_seconds", 3600))],
                                     stdin=subprocess.DEVNULL)
            child_pid = child.pid
        if a.get("pidfile"):
            tmp = self.path_of(a["pidfile"]) + ".tmp"
            with open(tmp, "w") as f:
                json.dump({"pid": os.getpid(), "child_pid": child_pid}, f)
            os.replace(tmp, self.path_of(a["pidfile"]))
        while True:
            time.sleep(3600)

    def do_wait_for_file(self, a):
        path = self.path_of(a["path"])
        limit = float(a.get("timeout", 60))
        end = time.time() + limit
        while not os.path.exists(path):
            if time.time() > end:
                sys.stderr.write("fake-claude: timed out after %ss waiting for %s\n" % (limit, path))
                sys.stderr.flush()
                raise Done(1)
            time.sleep(0.005)

    def do_touch_file(self, a):
        path = self.path_of(a["path"])
        parent = os.path.dirname(path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        with open(path, "a") as f:
            f.write(str(a.get("content", "")))

    def do_api_retry(self, a):
        count = int(a.get("count") or 1)
        status = a.get("status", 529)
        err = {529: "overloaded", 429: "rate_limit", 401: "authentication_failed",
               403: "authentication_failed"}.get(status, "server_error" if status else "unknown")
        max_retries = int(os.environ.get("CLAUDE_CODE_MAX_RETRIES") or 10)
        delay = float(a.get("delay_ms") or 500)
        for i in range(1, count + 1):
            self.emit({"type": "system", "subtype": "api_retry", "attempt": i,
                       "max_retries": max_retries, "retry_delay_ms": delay * (2 ** (i - 1)),
                       "error_status": status, "error": err, "session_id": self.session_id,
                       "uuid": uuid4()})

    MAIN_ARG = {"write": "path", "edit": "path", "append": "path", "deny": "tool", "tool": "name",
                "run": "argv", "text": "text", "sleep": "seconds", "hang": "child",
                "wait_for_file": "path", "touch_file": "path", "stderr": "text", "exit": "code",
                "api_retry": "count", "error": "kind"}

    def normalise(self, a):
        if not isinstance(a, dict):
            raise ValueError("scenario action must be an object: %r" % (a,))
        a = dict(a)
        name = a.pop("action", None)
        if name is None:
            for k in a:
                if k in self.MAIN_ARG:
                    name = k
                    break
            if name is None:
                raise ValueError("scenario action has no known action name: %r" % (a,))
            main = a.pop(name)
            a.setdefault(self.MAIN_ARG[name], main)
        if name not in self.MAIN_ARG:
            raise ValueError("unknown scenario action %r" % (name,))
        return name, a

    def execute(self, actions):
        self.init()
        for raw in actions:
            name, a = self.normalise(raw)
            if name == "write":
                self.do_write(a)
            elif name == "append":
                self.do_write(a, append=True)
            elif name == "edit":
                self.do_edit(a)
            elif name == "deny":
                self.do_deny(a)
            elif name == "tool":
                self.do_tool(a)
            elif name == "run":
                self.do_run(a)
            elif name == "text":
                self.do_text(a)
            elif name == "sleep":
                time.sleep(float(a.get("seconds") or 0))
            elif name == "hang":
                self.do_hang(a)
            elif name == "wait_for_file":
                self.do_wait_for_file(a)
            elif name == "touch_file":
                self.do_touch_file(a)
            elif name == "stderr":
                sys.stderr.write(str(a.get("text", "")))
                sys.stderr.flush()
            elif name == "exit":
                if a.get("stderr"):
                    sys.stderr.write(str(a["stderr"]))
                    sys.stderr.flush()
                sys.stdout.flush()
                raise Done(int(a.get("code", 1) if a.get("code") is not None else 1))
            elif name == "api_retry":
                self.do_api_retry(a)
            elif name == "error":
                self.api_error(a)
        self.success()


def scenario_from(prompt):
    actions = []
    for line in (prompt or "").splitlines():
        s = line.strip()
        if s.startswith("@fake ") or s.startswith("@fake\t"):
            actions.append(json.loads(s[5:].strip()))
    if actions:
        return actions
    env = os.environ.get("FAKE_CLAUDE_SCENARIO")
    if env:
        data = json.loads(env)
        return data if isinstance(data, list) else [data]
    return []


def main(argv):
    opts, positionals = parse_args(argv)
    if opts.get("help"):
        sys.stdout.write("Usage: claude [options] [command] [prompt]\n\n(fake claude: see "
                         "tests/fake_claude.py)\n")
        _log_invocation()
        return 0
    if not opts.get("print"):
        _die("fake-claude: only the headless -p/--print mode is simulated")
    mode = opts.get("permission-mode")
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    if root and os.environ.get("IS_SANDBOX") != "1" and (
            opts.get("dangerously-skip-permissions") or mode == "bypassPermissions"):
        _die(ROOT_REFUSED)
    sid = opts.get("session-id")
    if sid is not None and not is_uuid(sid):
        _die("Error: Invalid session ID. Must be a valid UUID.")
    stdin_text = read_stdin()
    _STATE["stdin"] = stdin_text
    arg = positionals[0] if positionals else None
    if opts.get("input-format") == "stream-json" and stdin_text:
        stdin_text = _stream_json_input(stdin_text)
    if arg and stdin_text:
        prompt = arg + "\n" + stdin_text
    else:
        prompt = arg or stdin_text or ""
    _STATE["prompt"] = prompt
    _log_invocation()
    if not prompt:
        _die(NO_INPUT)
    if not prompt.strip():
        _die("Error: No messages returned from query")
    fmt = opts.get("output-format", "text")
    if fmt == "stream-json" and not opts.get("verbose"):
        _die(STREAM_NEEDS_VERBOSE)
    try:
        actions = scenario_from(prompt)
    except ValueError as e:
        _die("fake-claude: bad scenario: %s" % e, 2)
    run = Run(opts, prompt)
    try:
        run.pick_session()
        run.execute(actions)
    except Done as d:
        return d.code
    except ValueError as e:
        _die("fake-claude: bad scenario: %s" % e, 2)
    return 0


def cli():
    """The program: `fake_claude.py ARGS` (or tests/fake_claude_start.py, which runs it from bytecode)."""
    try:
        code = main(sys.argv[1:])
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:
        code = 1
    try:
        sys.stdout.flush()
    except Exception:
        pass
    sys.exit(code)


if __name__ == "__main__":
    cli()
