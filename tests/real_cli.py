"""Helpers for end-to-end tests against the REAL ``claude`` CLI, run hermetically.

* :func:`find_or_install_real_claude` installs ``@anthropic-ai/claude-code`` (pinned
  :data:`PINNED_VERSION`) with npm into a cache folder, by default
  ``~/.cache/klauss-tests/claude-code`` (``KLAUSS_TEST_CACHE`` moves the parent),
  reuses it when it is already there, and returns the path of its executable.
  When npm is missing or the install fails it raises :class:`RealCliUnavailable`
  whose message says why (tests turn that into ``pytest.skip``).  Setting
  ``KLAUSS_REAL_CLAUDE=/path/to/claude`` uses that executable instead.
* :func:`real_claude_env` builds the environment for running it with no network
  and no login against :class:`tests.messages_server.MessagesServer`.
* :func:`run_real_claude` runs it once (prompt on stdin, bounded by a timeout)
  and parses stream-json output.

The npm package is a thin wrapper whose postinstall step links a native binary
from the platform package (``@anthropic-ai/claude-code-linux-x64`` etc., about
245 MB unpacked, shipped inside the npm registry package, so no other download).
2.1.197 declares ``node >= 18`` and is what a plain ``npm install`` picks on
node 20; the binary itself does not need node at run time.
"""

import json
import os
import shutil
import subprocess
import sys
import time

PINNED_VERSION = os.environ.get("KLAUSS_REAL_CLAUDE_VERSION") or "2.1.197"
PACKAGE = "@anthropic-ai/claude-code"
TEST_API_KEY = "sk-ant-api03-klauss-test-key-not-real"
TEST_OAUTH_TOKEN = "sk-ant-oat01-klauss-test-token-not-real"
INSTALL_TIMEOUT = 900


class RealCliUnavailable(Exception):
    """The real CLI cannot be used here; str(exc) is the reason (for pytest.skip)."""


def default_cache_dir():
    base = os.environ.get("KLAUSS_TEST_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
        "klauss-tests")
    return os.path.join(base, "claude-code")


def _exe_in(prefix):
    name = "claude.cmd" if os.name == "nt" else "claude"
    return os.path.join(prefix, "node_modules", ".bin", name)


def claude_version(exe, timeout=60):
    """``'2.1.197'`` from ``exe --version``, or None if it does not run."""
    try:
        p = subprocess.run([exe, "--version"], stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    if p.returncode != 0:
        return None
    out = p.stdout.decode("utf-8", "replace").strip()
    return out.split()[0] if out else None


class _Lock:
    """An exclusive file lock (parallel test workers must not install twice at once)."""

    def __init__(self, path):
        self.path = path
        self.f = None

    def __enter__(self):
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self.f = open(self.path, "a+")
        try:
            import fcntl
            fcntl.flock(self.f.fileno(), fcntl.LOCK_EX)
        except ImportError:  # Windows: no locking, best effort
            pass
        return self

    def __exit__(self, *exc):
        try:
            import fcntl
            fcntl.flock(self.f.fileno(), fcntl.LOCK_UN)
        except ImportError:
            pass
        self.f.close()


def find_or_install_real_claude(version=None, cache_dir=None, timeout=INSTALL_TIMEOUT):
    """Path of a working real ``claude`` of ``version``; installs it with npm if needed.

    Raises RealCliUnavailable (with the reason) when that is not possible.
    """
    override = os.environ.get("KLAUSS_REAL_CLAUDE")
    if override:
        if claude_version(override) is None:
            raise RealCliUnavailable("KLAUSS_REAL_CLAUDE=%s does not run `--version`" % override)
        return override
    version = version or PINNED_VERSION
    prefix = cache_dir or default_cache_dir()
    exe = _exe_in(prefix)
    if os.path.exists(exe) and claude_version(exe) == version:
        return exe
    npm = shutil.which("npm")
    if not npm:
        raise RealCliUnavailable("npm is not on PATH, cannot install %s@%s" % (PACKAGE, version))
    with _Lock(prefix + ".lock"):
        if os.path.exists(exe) and claude_version(exe) == version:  # another worker did it
            return exe
        os.makedirs(prefix, exist_ok=True)
        pkg_json = os.path.join(prefix, "package.json")
        if not os.path.exists(pkg_json):
            with open(pkg_json, "w") as f:
                json.dump({"name": "klauss-test-claude-code", "private": True}, f)
        cmd = [npm, "install", "--prefix", prefix, "--no-audit", "--no-fund",
               "--loglevel=error", "%s@%s" % (PACKAGE, version)]
        t0 = time.time()
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RealCliUnavailable("npm install %s@%s timed out after %ss"
                                     % (PACKAGE, version, timeout)) from None
        except OSError as e:
            raise RealCliUnavailable("cannot run npm: %s" % e) from e
        out = p.stdout.decode("utf-8", "replace")
        if p.returncode != 0:
            tail = "\n".join(out.strip().splitlines()[-15:])
            raise RealCliUnavailable("npm install %s@%s failed (exit %d):\n%s"
                                     % (PACKAGE, version, p.returncode, tail))
        got = claude_version(exe) if os.path.exists(exe) else None
        if got != version:
            raise RealCliUnavailable(
                "npm install %s@%s finished in %.0fs but %s %s (postinstall scripts disabled or "
                "no native binary for this platform?)\n%s"
                % (PACKAGE, version, time.time() - t0, exe,
                   "reports version %r" % got if got else "does not run", out[-2000:]))
        return exe


def real_claude_env(server_url, tmp_home, extra=None, oauth=False):
    """A clean environment for running the real CLI against ``server_url`` with no
    network, login, updater or telemetry.  ``tmp_home`` becomes HOME (created).

    ``oauth=True`` authenticates like a claude.ai subscriber
    (``CLAUDE_CODE_OAUTH_TOKEN``) instead of with ``ANTHROPIC_API_KEY``; only then
    does the CLI report subscription usage limits (``rate_limit_event``)."""
    tmp_home = str(tmp_home)
    config = os.path.join(tmp_home, ".claude")
    os.makedirs(config, exist_ok=True)
    env = {}
    for k in ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "TEMP", "TMP", "SYSTEMROOT",
              "USER", "LOGNAME", "SHELL", "TERM"):
        if os.environ.get(k):
            env[k] = os.environ[k]
    env.update({
        "HOME": tmp_home,
        "USERPROFILE": tmp_home,
        "XDG_CONFIG_HOME": os.path.join(tmp_home, ".config"),
        "XDG_CACHE_HOME": os.path.join(tmp_home, ".cache"),
        "XDG_DATA_HOME": os.path.join(tmp_home, ".local", "share"),
        "XDG_STATE_HOME": os.path.join(tmp_home, ".local", "state"),
        "CLAUDE_CONFIG_DIR": config,
        "ANTHROPIC_BASE_URL": server_url,
        "ANTHROPIC_API_KEY": TEST_API_KEY,
        # fail at once on 429/529/network errors instead of retrying for minutes
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "API_TIMEOUT_MS": "60000",
        "DISABLE_AUTOUPDATER": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_TERMINAL_TITLE": "1",
        # Connect MCP servers before the first turn: in print mode the CLI otherwise connects
        # them in the background, and a server slower to start than the CLI is still "pending"
        # when the model is asked (a race that a loaded machine loses).
        "MCP_CONNECTION_NONBLOCKING": "0",
        # the local server must not go through a proxy
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    })
    if oauth:
        del env["ANTHROPIC_API_KEY"]
        env["CLAUDE_CODE_OAUTH_TOKEN"] = TEST_OAUTH_TOKEN
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        env["IS_SANDBOX"] = "1"  # else --dangerously-skip-permissions / bypassPermissions refuse
    if extra:
        env.update(extra)
    return env


class RealRun:
    """Outcome of :func:`run_real_claude`."""

    def __init__(self, returncode, stdout, stderr, seconds):
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.seconds = seconds
        self.events = []
        for line in stdout.splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    self.events.append(json.loads(line))
                except ValueError:
                    pass

    @property
    def result(self):
        for e in reversed(self.events):
            if e.get("type") == "result":
                return e
        return None

    def of_type(self, t, subtype=None):
        return [e for e in self.events if e.get("type") == t
                and (subtype is None or e.get("subtype") == subtype)]

    def __repr__(self):
        return "RealRun(rc=%r, %.2fs, %d events, stderr=%r)" % (
            self.returncode, self.seconds, len(self.events), self.stderr[-300:])


def run_real_claude(exe, prompt, cwd, env, args=("--permission-mode", "acceptEdits"), timeout=120,
                    output_format="stream-json"):
    """``claude -p --output-format <fmt> [--verbose] <args>`` with ``prompt`` on stdin."""
    cmd = [exe, "-p", "--output-format", output_format]
    if output_format == "stream-json":
        cmd.append("--verbose")
    cmd.extend(args)
    t0 = time.time()
    p = subprocess.run(cmd, input=prompt.encode("utf-8"), cwd=str(cwd), env=env,
                       capture_output=True, timeout=timeout)
    return RealRun(p.returncode, p.stdout.decode("utf-8", "replace"),
                   p.stderr.decode("utf-8", "replace"), time.time() - t0)


if __name__ == "__main__":  # python3 tests/real_cli.py  -> installs and prints the path
    try:
        print(find_or_install_real_claude())
    except RealCliUnavailable as e:
        print("unavailable: %s" % e, file=sys.stderr)
        sys.exit(1)
