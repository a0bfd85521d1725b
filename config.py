"""Klauss configuration: the one place every program learns its settings and database.

Precedence, lowest first: built-in defaults, the project's `.klauss.toml` (or the file named by
KLAUSS_CONFIG), environment overrides, then explicit arguments from the command line or API.

The project root is the git top-level of the current directory; when that top-level is Klauss's
own checkout and Klauss is a submodule (the normal `klauss/` install), the root is the
superproject. Outside git it is the current directory. State (database, logs, pid files) lives in
`<root>/.klauss/` unless configured otherwise, so every program started anywhere in the project
resolves the same database. Timings that follow from `lease_seconds` (heartbeat interval, recovery
interval, when a worker counts as hung, the supervisor's tick) are `Config` properties, computed
here only.
"""

import math
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import gitroot
import hints

# Commands in the comments of .klauss.toml, which sits at the project root: the folder that holds Klauss.
_AT_ROOT = os.path.dirname(hints.KLAUSS_DIR)


def toml_module():
    """tomllib (tomli before 3.11), or None where tomli is missing. Imported only when a file is
    read: most projects have no .klauss.toml, and every command would pay for the parser."""
    if sys.version_info >= (3, 11):
        import tomllib  # novermin (vermin sees this guard at module level only)
    else:  # pragma: no cover - exercised on Python < 3.11 only
        try:
            import tomli as tomllib
        except ImportError:  # the only runtime dependency; say how to get it
            return None
    return tomllib


KLAUSS_DIR = Path(__file__).resolve().parent
CONFIG_FILENAME = ".klauss.toml"
STATE_DIRNAME = ".klauss"
DB_FILENAME = "claude_tasks.db"

# Largest prompt accepted anywhere (bytes of UTF-8). Claude's context is the real bound; this
# only stops an accidental multi-megabyte paste from being stored and sent.
MAX_PROMPT_BYTES = 1_000_000

# section -> key -> (expected type(s), default, one-line comment for init-config).
# A type of (int, float) means "a number"; None as default means "not set".
SCHEMA = {
    "paths": {
        "state_dir": (str, None, "where the database, logs and pid files live (default <project>/.klauss)"),
        "db": (str, None, "the SQLite database (default <state_dir>/claude_tasks.db), or a postgresql:// URL"),
    },
    "pool": {
        "host": (str, None, "this machine's id among the hosts sharing one database (KLAUSS_HOST overrides; default: the hostname)"),
        "login": (str, None, "a name for the Claude login this host's workers use: hosts with the same name pause "
                             "together on a usage limit (KLAUSS_LOGIN overrides; default: derived from the credentials)"),
    },
    "queue": {
        "max_attempts": (int, 3, "how many times a task is tried before it fails for good"),
        "retry_backoff_seconds": ((int, float), 10, "first retry delay; doubles each attempt"),
        "retry_backoff_max_seconds": ((int, float), 600, "longest retry delay"),
    },
    "workers": {
        "count": (int, 4, f"workers `{hints.command('start', cwd=_AT_ROOT)}` runs when no number is given"),
        "max_workers": (int, 8, "upper bound for suggested and auto-started pools"),
        "lease_seconds": ((int, float), 60, "a task whose worker stops heartbeating this long runs again"),
        "heartbeat_seconds": ((int, float), 10, "how often a worker renews its lease"),
        "poll_seconds": ((int, float), 5.0, "longest an idle worker waits before looking again (new work wakes it at once)"),
        "idle_timeout": ((int, float), 300, "coordinator exits after this long with nothing to do (0 = never)"),
        "shutdown_grace_seconds": ((int, float), 10, "on stop, how long a running task may finish before it is killed and released"),
        "auto_start": (bool, True, "start workers automatically when a job needs them"),
        "restart_backoff_max_seconds": ((int, float), 30, "longest wait before restarting a crashed worker"),
        "max_fast_crashes": (int, 5, "consecutive immediate crashes before a worker slot gives up"),
    },
    "claude": {
        "command": (str, "claude", "the Claude Code CLI (KLAUSS_CLAUDE overrides)"),
        "model": (str, None, "model alias or name (default: the CLI's own)"),
        "permission_mode": (str, "acceptEdits", "acceptEdits, auto, bypassPermissions, manual, dontAsk or plan"),
        "allowed_tools": (list, [], "tools allowed without asking, e.g. [\"Bash(npm test:*)\", \"Edit\"]"),
        "disallowed_tools": (list, [], "tools never allowed"),
        "max_turns": (int, None, "stop a task after this many turns"),
        "max_budget_usd": ((int, float), None, "stop a task once it has cost this much"),
        "append_system_prompt": (str, None, "text appended to Claude's system prompt for every task"),
        "extra_args": (list, [], "more CLI arguments, appended as given"),
        "env": (dict, {}, "extra environment variables for claude"),
        "timeout": ((int, float), 1800, "seconds a task may run when it sets no timeout"),
        "context_inline_bytes": (int, 20000, "context files are inlined into the prompt up to this many bytes in all"),
    },
    "safety": {
        "allow_external_dirs": (bool, False, "allow working dirs and paths outside the project root"),
        "allowed_dirs": (list, [], "extra directories outside the project that tasks may use"),
    },
    "isolation": {
        "mode": (str, "none", "\"worktree\" is recommended when tasks edit files in parallel: each task runs in its own "
                              "git worktree and branch (needs a git repository); \"none\": tasks share the working tree"),
        "merge": (str, "auto", "\"auto\" merges finished tasks into klauss/<job>/merged (your branch is untouched until "
                               f"`{hints.command('merge', 'JOB', cwd=_AT_ROOT)}`); \"branch\" leaves one branch per task"),
        "dirty_policy": (str, "warn", "when the tree has uncommitted changes at job creation: \"warn\" or \"refuse\""),
        "copy_files": (list, [], "untracked files copied into each fresh worktree, e.g. [\".env\"] (never committed)"),
        "setup_command": (list, [], "argv run in a fresh worktree before Claude starts, e.g. [\"npm\", \"ci\"] "
                                    "(what it creates is never committed)"),
        "remote": (str, None, "git remote (name or URL) through which worktree jobs' edits travel between hosts: "
                              "base commits, task branches and job branches are pushed there under refs/klauss/"),
    },
    "integration": {
        "verify_command": (list, [], "argv that must pass before a worktree job's task enters klauss/<job>/merged, e.g. "
                                     "[\"python3\", \"-m\", \"pytest\", \"-q\"] (a string is split like a shell "
                                     "would, never run by one); empty: merge without verifying"),
        "verify_timeout": ((int, float), 1800, "seconds the verify command may run before it counts as failed"),
        "fix_attempts": (int, 2, "fix-up tasks queued for a task whose merge fails verification, before it is "
                                 "integration_failed"),
        "batch": (int, 1, "merge up to this many ready branches and verify them once (a failure is bisected)"),
    },
}

ENV_OVERRIDES = {
    # env var -> (section, key, parser)
    "KLAUSS_WORKERS": ("workers", "count", int),
    "KLAUSS_CLAUDE": ("claude", "command", str),
    "KLAUSS_AUTO_START": ("workers", "auto_start", "bool"),
    "KLAUSS_HOST": ("pool", "host", str),
    "KLAUSS_LOGIN": ("pool", "login", str),
}

_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


# A host id (and a login name): safe in a flag key, a worker id and a file name.
HOST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")

HUNG_LEASES = 2  # a registered worker silent for this many leases is hung


class ConfigError(ValueError):
    """A configuration problem; the message names where, what, and what was expected."""


def parse_bool(text, what):
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{what}: expected true or false, got {text!r}")


def _type_name(expected):
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             list: "a list", dict: "a table"}
    if isinstance(expected, tuple):
        return "a number"
    return names[expected]


def _check_type(value, expected, where):
    if isinstance(expected, tuple):
        ok = isinstance(value, expected) and not isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    if expected is list and ok:
        ok = all(isinstance(item, str) for item in value)
        if not ok:
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
    if expected is dict and ok:
        ok = all(isinstance(v, str) for v in value.values())
        if not ok:
            raise ConfigError(f"{where}: expected a table of string values, got {value!r}")
    if not ok:
        raise ConfigError(f"{where}: expected {_type_name(expected)}, got {value!r}")


def verify_argv(value, where):
    """A verify command as an argv list: a list of non-empty strings, or a string split with shlex
    (never given to a shell). ConfigError (a ValueError) names `where`."""
    if isinstance(value, str):
        try:
            value = shlex.split(value)
        except ValueError as exc:
            raise ConfigError(f"{where}: cannot split {value!r} into words: {exc}") from None
    if not isinstance(value, (list, tuple)) or not all(isinstance(a, str) and a for a in value):
        raise ConfigError(f"{where}: expected a command as a list of strings, e.g. [\"python3\", \"-m\", "
                          f"\"pytest\"], got {value!r}")
    return list(value)


def _validate(data, source):
    """Check a {section: {key: value}} mapping against SCHEMA; `source` names where it came from."""
    if isinstance(data.get("integration"), dict) and "verify_command" in data["integration"]:
        data["integration"]["verify_command"] = verify_argv(data["integration"]["verify_command"],
                                                            f"{source}: integration.verify_command")
    for section, values in data.items():
        if section not in SCHEMA:
            known = ", ".join(sorted(SCHEMA))
            raise ConfigError(f"{source}: unknown section [{section}] (known: {known})")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key, value in values.items():
            if key not in SCHEMA[section]:
                known = ", ".join(sorted(SCHEMA[section]))
                raise ConfigError(f"{source}: unknown key {section}.{key} (known in [{section}]: {known})")
            expected = SCHEMA[section][key][0]
            _check_type(value, expected, f"{source}: {section}.{key}")
    _check_values(data, source)


def _check_values(data, source):
    def positive(section, key, allow_zero=False):
        value = data.get(section, {}).get(key)
        # `not value >= 0` rather than `value < 0`: nan compares false both ways and must be refused.
        if value is not None and (not math.isfinite(value) or not value >= 0 or (value == 0 and not allow_zero)):
            bound = ">= 0" if allow_zero else "> 0"
            raise ConfigError(f"{source}: {section}.{key}: expected a number {bound}, got {value!r}")

    for key in ("lease_seconds", "heartbeat_seconds", "poll_seconds", "count", "max_workers", "max_fast_crashes"):
        positive("workers", key)
    for key in ("idle_timeout", "shutdown_grace_seconds", "restart_backoff_max_seconds"):
        positive("workers", key, allow_zero=True)
    positive("queue", "max_attempts")
    positive("queue", "retry_backoff_seconds", allow_zero=True)
    positive("queue", "retry_backoff_max_seconds", allow_zero=True)
    positive("claude", "timeout")
    positive("claude", "max_turns")
    positive("claude", "max_budget_usd")
    positive("claude", "context_inline_bytes", allow_zero=True)
    positive("integration", "verify_timeout")
    positive("integration", "fix_attempts", allow_zero=True)
    positive("integration", "batch")
    # Every number, including ones with no range of their own, must be finite: nan and inf
    # make timers spin or never fire.
    for section, values in data.items():
        for key, value in values.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{source}: {section}.{key}: expected a finite number, got {value!r}")
    choices = {
        ("claude", "permission_mode"): ("acceptEdits", "auto", "bypassPermissions", "manual", "default", "dontAsk", "plan"),
        ("isolation", "mode"): ("none", "worktree"),
        ("isolation", "merge"): ("auto", "branch"),
        ("isolation", "dirty_policy"): ("warn", "refuse"),
    }
    for key in ("host", "login"):
        value = data.get("pool", {}).get(key)
        if value is not None and not HOST_ID.match(value):
            raise ConfigError(f"{source}: pool.{key}: expected letters, digits, '.', '_' or '-' (at most 64, "
                              f"starting with a letter or digit), got {value!r}")
    for (section, key), allowed in choices.items():
        value = data.get(section, {}).get(key)
        if value is not None and value not in allowed:
            raise ConfigError(f"{source}: {section}.{key}: expected one of {', '.join(allowed)}, got {value!r}")
    remote = data.get("isolation", {}).get("remote")
    if remote is not None and not remote_ok(remote):
        raise ConfigError(f"{source}: isolation.remote: expected the name or URL of a git remote (e.g. \"origin\"), "
                          f"got {remote!r}")


def remote_ok(remote):
    """A git remote name or URL fit for git's command line: a leading "-" would be read as an
    option, and a remote has no spaces or control characters."""
    return (isinstance(remote, str) and bool(remote) and not remote.startswith("-")
            and not any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in remote))


def _git(args, cwd):
    try:
        out = subprocess.run(["git", *args], cwd=str(cwd), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


def find_project_root(cwd=None):
    """The directory whose `.klauss/` holds the shared state for commands run from `cwd`."""
    cwd = Path(cwd or os.getcwd()).resolve()
    top = gitroot.toplevel(cwd, timeout=10)
    if top is None:
        return cwd
    # Only when the repository we are in is Klauss's own checkout does its superproject win, so
    # a project that is itself a submodule of something else keeps its own root. That checkout's
    # top-level holds KLAUSS_DIR: where `top` does not, its top level is not looked up.
    here = Path(KLAUSS_DIR).resolve()
    inside = top == here or top in here.parents
    own_top = gitroot.toplevel(KLAUSS_DIR, timeout=10) if inside else None
    # A superproject's work tree holds this one's parent directory (git asks `git -C .. ls-files`):
    # where no repository holds it, git is not asked (Klauss copied into a project, not a submodule).
    if own_top == top and gitroot.fast_toplevel(top.parent) is not None:
        superproject = _git(["rev-parse", "--show-superproject-working-tree"], top)
        if superproject:
            return Path(superproject).resolve()
    return top


def _read_toml(path):
    tomllib = toml_module()
    if tomllib is None:
        raise ConfigError(f"{path}: reading TOML on Python < 3.11 needs the 'tomli' package: "
                          "pip install -r requirements.txt")
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None


def _merge(base, extra):
    for section, values in extra.items():
        base.setdefault(section, {}).update(values)


def ensure_private_dir(path):
    """Create `path` (and parents) readable by the owner only; an existing dir is left as it is."""
    path = Path(path)
    if not path.is_dir():
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


class Config:
    """Resolved settings. `cfg["workers"]["count"]`; paths as attributes."""

    def __init__(self, data, root, config_file, state_dir, db_path):
        self.data = data
        self.root = root
        self.config_file = config_file
        self.state_dir = state_dir
        self.db_path = db_path

    @property
    def db_url(self):
        """The PostgreSQL URL when the database is on a server, else None (a SQLite file)."""
        return self.db_path if isinstance(self.db_path, DatabaseUrl) else None

    def __getitem__(self, section):
        return self.data[section]

    @property
    def host(self):
        """This host's id among the hosts sharing the database: KLAUSS_HOST, else [pool] host, else
        the hostname (made safe: anything but letters, digits, '.', '_' and '-' becomes '-')."""
        return self.data["pool"]["host"] or hostname_id()

    @property
    def logs_dir(self):
        return self.state_dir / "logs"

    # Timing policy that follows from [workers] lease_seconds, computed here and nowhere else.

    @property
    def heartbeat_interval(self):
        """How often a running task's lease is renewed: three renewals fit in one lease."""
        w = self.data["workers"]
        return min(w["heartbeat_seconds"], w["lease_seconds"] / 3)

    @property
    def recover_every(self):
        """How often expired leases are looked for."""
        return self.data["workers"]["lease_seconds"] / 2

    @property
    def hung_after(self):
        """A registered worker silent this long is hung: its lease has long expired, and its task
        runs elsewhere; the coordinator kills it and a restart heals it."""
        return HUNG_LEASES * self.data["workers"]["lease_seconds"]

    @property
    def supervisor_tick(self):
        """The coordinator's timer for its periodic work: small enough for short test settings,
        never above 5 s."""
        w = self.data["workers"]
        idle = w["idle_timeout"]
        return max(0.05, min(5.0, w["lease_seconds"] / 4, w["heartbeat_seconds"], idle / 4 if idle else 5.0))

    def ensure_state_dir(self):
        if not self.state_dir.is_dir():
            ensure_private_dir(self.state_dir)
            # The database, logs and worktrees must never be committed by a `git add -A`.
            (self.state_dir / ".gitignore").write_text("# Klauss runtime state\n*\n")
        ensure_private_dir(self.logs_dir)
        return self.state_dir


def _normalize_overrides(overrides):
    """Accept {"workers": {"count": 2}} or {"workers.count": 2}; drop None values (= not given)."""
    result = {}
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and key in SCHEMA:
            for sub, sub_value in value.items():
                if sub_value is not None:
                    result.setdefault(key, {})[sub] = sub_value
        elif value is not None:
            if "." not in key:
                raise ConfigError(f"override {key!r}: expected 'section.key'")
            section, sub = key.split(".", 1)
            result.setdefault(section, {})[sub] = value
    return result


def load_config(db=None, cwd=None, overrides=None, env=None):
    """Resolve the configuration for a program started in `cwd` (default: the current directory).

    `db` is an explicit database path (`--db`); `overrides` are explicit settings, either nested
    ({"workers": {"count": 2}}) or dotted ({"workers.count": 2}).
    """
    env = os.environ if env is None else env
    cwd = Path(cwd or os.getcwd()).resolve()
    root = find_project_root(cwd)
    # A fresh copy of each default (the copy module's deepcopy is not needed: they are flat).
    data = {section: {k: spec[1].copy() if isinstance(spec[1], (list, dict)) else spec[1] for k, spec in keys.items()}
            for section, keys in SCHEMA.items()}

    config_file = Path(env["KLAUSS_CONFIG"]).expanduser() if env.get("KLAUSS_CONFIG") else root / CONFIG_FILENAME
    if env.get("KLAUSS_CONFIG") and not config_file.is_file():
        raise ConfigError(f"KLAUSS_CONFIG: {config_file} does not exist")
    if config_file.is_file():
        from_file = _read_toml(config_file)
        _validate(from_file, str(config_file))
        _merge(data, from_file)
    else:
        config_file = None

    from_env = {}
    for var, (section, key, parser) in ENV_OVERRIDES.items():
        if env.get(var):
            if parser == "bool":
                value = parse_bool(env[var], var)
            else:
                try:
                    value = parser(env[var])
                except ValueError:
                    raise ConfigError(f"{var}: expected {_type_name(parser)}, got {env[var]!r}") from None
            if section == "pool" and not HOST_ID.match(value):
                raise ConfigError(f"{var}: expected letters, digits, '.', '_' or '-' (at most 64, starting with "
                                  f"a letter or digit), got {value!r}")
            from_env.setdefault(section, {})[key] = value
    _validate(from_env, "environment")
    _merge(data, from_env)

    explicit = _normalize_overrides(overrides)
    _validate(explicit, "arguments")
    _merge(data, explicit)

    base = config_file.parent if config_file else root
    state_dir = data["paths"]["state_dir"]
    db_path = db or env.get("KLAUSS_DB") or data["paths"]["db"]
    if is_database_url(db_path):
        # A database server (several hosts share it): this host's logs, lock and wake-ups stay in
        # its own state directory.
        state_dir = Path(os.path.abspath(base / Path(state_dir).expanduser())) if state_dir else root / STATE_DIRNAME
        return Config(data, root, config_file, state_dir, DatabaseUrl(str(db_path), state_dir))
    if db_path:
        db_path = (cwd / Path(db_path).expanduser()) if (db or env.get("KLAUSS_DB")) else (base / Path(db_path).expanduser())
        db_path = Path(os.path.abspath(db_path))
    if state_dir:
        state_dir = Path(os.path.abspath(base / Path(state_dir).expanduser()))
    elif db_path:
        state_dir = db_state_dir(db_path)
    else:
        state_dir = root / STATE_DIRNAME
    if not db_path:
        db_path = state_dir / DB_FILENAME
    return Config(data, root, config_file, state_dir, db_path)


def hostname_id():
    # What socket.gethostname() returns on every POSIX system, without importing socket.
    name = re.sub(r"[^A-Za-z0-9._-]", "-", os.uname().nodename).lstrip("._-")[:64]
    return name or "localhost"


DATABASE_URL_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(db):
    """True when `db` (--db, KLAUSS_DB or [paths] db) names a PostgreSQL database rather than a file."""
    return isinstance(db, str) and db.lower().startswith(DATABASE_URL_SCHEMES)


class DatabaseUrl(str):
    """A PostgreSQL database URL where callers expect the SQLite file's path: str() is the URL (so
    `--db str(cfg.db_path)` hands it on to child processes), it always `exists()` (the server owns
    it), and its `parent` is this host's state directory (where disk space matters)."""

    def __new__(cls, url, state_dir):
        self = super().__new__(cls, url)
        self.parent = Path(state_dir)
        self.name = "database"
        return self

    def exists(self):
        return True

    def is_file(self):
        return False

    def redacted(self):
        """The URL without its password (in the user part or a `password=` parameter), for
        messages and logs."""
        import urllib.parse

        parts = urllib.parse.urlsplit(self)
        netloc = parts.netloc
        if parts.password is not None:
            netloc = netloc.replace(":" + parts.password + "@", ":***@", 1)
        query = re.sub(r"(^|&)(password=)[^&]*", r"\1\2***", parts.query, flags=re.I)
        if (netloc, query) == (parts.netloc, parts.query):
            return str(self)
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


def process_db(db_path):
    """(the database as a process we start is told it, on its command line or in KLAUSS_DB; more
    environment for it): a URL's password moves to PGPASSWORD, which libpq reads, so that `ps`
    (and `manage.sh ps`) never shows it. The same text for a URL with or without its password, so
    the pool's processes are recognised by it whichever form a caller holds."""
    if not isinstance(db_path, DatabaseUrl):
        return str(db_path), {}
    import urllib.parse

    parts = urllib.parse.urlsplit(db_path)
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    netloc = parts.netloc.replace(":" + parts.password + "@", "@", 1) if password is not None else parts.netloc
    found = re.search(r"(?:^|&)password=([^&]*)", parts.query, flags=re.I)
    if found:  # libpq takes a parameter over the user part
        password = urllib.parse.unquote(found.group(1))
    query = re.sub(r"(^|&)password=[^&]*", "", parts.query, flags=re.I).lstrip("&")
    text = urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))
    return text, ({"PGPASSWORD": password} if password is not None else {})


def shown_db(db_path):
    """The database as messages, logs and views name it: a file's path, or a URL without its
    password (str(db_path) is what a process needs to open it)."""
    return db_path.redacted() if isinstance(db_path, DatabaseUrl) else str(db_path)


def db_state_dir(db_path):
    """Where the logs, lock, pid file and wake-up FIFOs of the database at `db_path` live unless
    [paths] state_dir says otherwise: a project's default database keeps them in its `.klauss/`;
    any other database gets a directory named after it (`/tmp/q.db` -> `/tmp/q.db.klauss/`), so a
    database in a shared directory such as /tmp spreads nothing there, and two databases in one
    directory never share a lock or logs."""
    db_path = Path(db_path)
    if db_path.name == DB_FILENAME and db_path.parent.name == STATE_DIRNAME:
        return db_path.parent
    return db_path.with_name(db_path.name + STATE_DIRNAME)


def wake_dir(db_path):
    """The directory of the FIFOs that wake processes waiting on the database at `db_path`. Every
    process must find the same one from the path alone, whatever its configuration."""
    db_path = Path(db_path)
    state = db_state_dir(db_path)
    return db_path.with_name(db_path.name + "-wake") if state == db_path.parent else state / "wake"


# Keys that are unset by default appear commented out in init-config's file, with a value that is
# valid as it stands, so that uncommenting the line is enough (`# model = ` alone is invalid TOML).
EXAMPLES = {
    ("paths", "state_dir"): ".klauss",
    ("paths", "db"): ".klauss/claude_tasks.db",
    ("pool", "host"): "laptop",
    ("pool", "login"): "team-account",
    ("claude", "model"): "sonnet",
    ("claude", "max_turns"): 50,
    ("claude", "max_budget_usd"): 5.0,
    ("claude", "append_system_prompt"): "Run the project's tests before you finish.",
    ("isolation", "remote"): "origin",
}


def render_default_config():
    """The commented `.klauss.toml` that `manage.sh init-config` writes."""
    lines = ["# Klauss configuration. Every key is optional; the values shown are the defaults. Keys that are",
             "# unset by default are commented out, with an example value: uncomment a line to use it.",
             "# Environment overrides: KLAUSS_DB, KLAUSS_CONFIG, KLAUSS_WORKERS, KLAUSS_CLAUDE, KLAUSS_AUTO_START,",
             "# KLAUSS_HOST, KLAUSS_LOGIN.", ""]
    for section, keys in SCHEMA.items():
        lines.append(f"[{section}]")
        for key, (_, default, comment) in keys.items():
            lines.append(f"# {comment}")
            if default is None:
                lines.append(f"# {key} = {_toml_value(EXAMPLES[(section, key)])}")
            else:
                lines.append(f"{key} = {_toml_value(default)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value):
    import json

    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + "}"
    raise TypeError(value)
