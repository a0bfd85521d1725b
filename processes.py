"""Process control, in one place: how Klauss starts, stops and finds the processes it runs.

A worker runs each `claude` as the leader of a session of its own, with a marker in its environment
naming the run (`KLAUSS_RUN`: task, attempt and a nonce) beside the pool token the coordinator gave
the worker (`KLAUSS_POOL_TOKEN`). A run is stopped in order: SIGTERM to claude (2.1.329 then ends
its Bash tools; 2.1.197 just exits), a short grace, SIGKILL to its process group, then a sweep of
every process that still carries the run's marker (the CLI runs each Bash command in a session of
its own, out of reach of the group), then whatever the worker adopted as subreaper (descendants
that left the session and cleared their environment). The coordinator uses the same sweeps when a
worker dies or the pool stops. Only processes we started, or that carry our markers, are signalled.

Process identity lives here too: whether a recorded pid is still alive and still runs our
coordinator or worker script (for our database), and so whether "the pool is up"
(`running_coordinator`), one answer for every program.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import config
import flags

POOL_TOKEN_VAR = "KLAUSS_POOL_TOKEN"
RUN_MARKER_VAR = "KLAUSS_RUN"

STOP_GRACE_SECONDS = 2.0     # SIGTERM to claude, then SIGKILL: time for the CLI to end its tools
SWEEP_SECONDS = 2.0          # how long a sweep keeps killing what reappears (a fork mid-sweep)
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
# How a recorded pid is recognised as one of ours: the script it runs.
COORDINATOR_SCRIPT = "claude_coordinator.py"
WORKER_SCRIPT = "claude_worker.py"


# --- reading /proc (or ps) and signalling only what we recorded ----------------------------------

def group_alive(pgid):
    if not pgid or pgid <= 1:
        return False
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid, sig):
    """Signal a process group we recorded; False if it no longer exists. Never pgid 0 or 1."""
    if not pgid or pgid <= 1 or pgid == os.getpgrp():
        return False
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def signal_pid(pid, sig):
    if not pid or pid <= 1 or pid == os.getpid():
        return False
    try:
        os.kill(pid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


_HAS_PROC = os.path.isdir("/proc/self")


def _clock_ticks():
    try:
        return os.sysconf("SC_CLK_TCK")
    except (ValueError, OSError, AttributeError):
        return 100


def _proc_entry(pid, ticks, uptime, page_kb):
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("utf-8", "replace")
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            args = [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a]
    except OSError:
        return None
    rest = stat[stat.rfind(")") + 2:].split()
    if rest[0] == "Z":
        return None  # a zombie is dead for every purpose here
    cpu_seconds = (int(rest[11]) + int(rest[12])) / ticks
    age = max(uptime - int(rest[19]) / ticks, 1e-6)
    return {"pid": pid, "ppid": int(rest[1]), "pgid": int(rest[2]), "cpu_seconds": cpu_seconds,
            "cpu_percent": round(100.0 * cpu_seconds / age, 1), "rss_kb": int(rest[21]) * page_kb,
            "elapsed": round(age, 1), "args": args}


def process_table(pids=None):
    """{pid: {pid, ppid, pgid, cpu_percent, rss_kb, elapsed, args}} for the given pids (all when
    None). /proc on Linux; elsewhere one `ps` call. Zombies and vanished pids are left out."""
    table = {}
    if _HAS_PROC:
        ticks = _clock_ticks()
        page_kb = os.sysconf("SC_PAGE_SIZE") // 1024
        try:
            with open("/proc/uptime") as fh:
                uptime = float(fh.read().split()[0])
        except OSError:
            uptime = 0.0
        wanted = pids if pids is not None else [int(p) for p in os.listdir("/proc") if p.isdigit()]
        for pid in wanted:
            entry = _proc_entry(pid, ticks, uptime, page_kb)
            if entry is not None:
                table[pid] = entry
        return table
    try:
        out = subprocess.run(["ps", "-A", "-o", "pid=,ppid=,pgid=,stat=,pcpu=,rss=,etime=,command="],
                             capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return table
    for line in out.splitlines():
        parts = line.split(None, 7)
        if len(parts) < 8 or parts[3].startswith("Z"):
            continue
        pid = int(parts[0])
        if pids is None or pid in pids:
            table[pid] = {"pid": pid, "ppid": int(parts[1]), "pgid": int(parts[2]), "cpu_seconds": None,
                          "cpu_percent": float(parts[4]), "rss_kb": int(parts[5]), "elapsed": _etime(parts[6]),
                          "args": parts[7].split()}
    return table


def _etime(text):
    days, _, clock = text.rpartition("-")
    seconds = 0
    for part in clock.split(":"):
        seconds = seconds * 60 + int(part)
    return seconds + int(days or 0) * 86400


def env_processes(var, value, exact=True):
    """Pids (not ours) whose environment carries `var=value` (exact) or `var=value:...` (a prefix
    ending at a colon). Every process inherits its parent's environment unless it clears it, so
    this finds what a run or a worker left behind in sessions of their own. Linux only."""
    if not value or not _HAS_PROC:
        return []
    marker = b"\0" + f"{var}={value}".encode() + (b"\0" if exact else b":")
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        env = _environ(name)
        if env is not None and marker in env:
            found.append(int(name))
    return found


def token_processes(token, exact=False):
    """Pids whose environment carries a pool token: `exact` names one worker instance's token,
    otherwise every token of the pool that starts with `token`. Every process a worker starts
    inherits it, so this finds a claude the worker died before recording, or what a task left
    running in a session of its own. Linux only; elsewhere nothing."""
    return env_processes(POOL_TOKEN_VAR, token, exact)


def kill_env_processes(var, value, exact=True):
    """SIGKILL what carries `var=value` (each one's group when it leads one). Returns the pids."""
    killed = []
    for pid in env_processes(var, value, exact):
        entry = process_table([pid]).get(pid)
        if entry is None or not entry["args"]:
            continue  # gone, or already dying (its memory, command line included, is released)
        if (signal_group(pid, signal.SIGKILL) if entry["pgid"] == pid else signal_pid(pid, signal.SIGKILL)):
            killed.append(pid)
    return killed


def kill_token_processes(token, exact=False):
    """SIGKILL what carries the pool token (each one's group when it leads one). Returns the pids."""
    return kill_env_processes(POOL_TOKEN_VAR, token, exact)


def _environ(pid):
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return b"\0" + fh.read() + b"\0"
    except OSError:
        return None


def env_value(pid, var):
    """The value of `var` in the environment `pid` started with, or None."""
    env, marker = _environ(pid), f"\0{var}=".encode()
    if not env or marker not in env:
        return None
    return env.split(marker, 1)[1].split(b"\0", 1)[0].decode(errors="replace")


def owned_claude_group(pgid, db_path):
    """True when the recorded claude process group still exists and is really ours: one of its
    processes has our database as KLAUSS_DB (the worker sets it for claude, and everything claude
    starts inherits it). A group recorded long ago may since have become someone else's."""
    if not group_alive(pgid):
        return False
    if not _HAS_PROC:
        return True  # nothing to look inside: the record is all we have
    marker = b"\0" + f"KLAUSS_DB={config.process_db(db_path)[0]}".encode() + b"\0"
    members = [pgid] + [p for p, e in process_table().items() if e["pgid"] == pgid and p != pgid]
    return any(marker in (_environ(p) or b"") for p in members)


def kill_claude_group(pgid, db_path):
    """SIGKILL a claude process group our worker recorded, once verified ours."""
    return bool(pgid) and owned_claude_group(pgid, db_path) and signal_group(pgid, signal.SIGKILL)


def kill_recorded_worker(pid, claude_pgid=None, db_path=None):
    """SIGKILL a worker pid we recorded (its whole group when it leads one, as the workers we
    start do) and the claude process group it recorded. True if anything was signalled."""
    try:
        own_group = os.getpgid(pid) == pid
    except OSError:
        own_group = False
    killed = signal_group(pid, signal.SIGKILL) if own_group else signal_pid(pid, signal.SIGKILL)
    return kill_claude_group(claude_pgid, db_path) or killed


# --- process identity: is this recorded pid still the process we recorded? ----------------------

def pid_alive(pid):
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def process_args(pid):
    """A process's argv (None if gone): /proc on Linux, `ps` elsewhere."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [a.decode("utf-8", "replace") for a in fh.read().split(b"\0") if a] or None
    except FileNotFoundError:
        if os.path.isdir("/proc/self"):
            return None
    except OSError:
        return None
    try:
        out = subprocess.run(["ps", "-ww", "-o", "command=", "-p", str(pid)], capture_output=True, text=True,
                             timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.split() or None


def is_our_process(pid, script, db_path=None):
    """True when `pid` runs `script` (for our database, when given): how a recorded pid is told
    apart from an unrelated process that reused it, before anything signals it."""
    args = process_args(pid) if pid_alive(pid) else None
    if not args or not any(Path(a).name == script for a in args[:3]):
        return False
    return db_path is None or config.process_db(db_path)[0] in args


def running_coordinator(queue):
    """This host's live coordinator's flag value (with "pid") for this database, or None. A flag
    left by a coordinator that died is not "running": its pid must be alive and still be our
    coordinator. Shared by every program that shows or signals the pool, so "is the pool up" has
    one answer. Other hosts' coordinators are theirs to judge (a pid means nothing here)."""
    # The bare key: a coordinator of an older Klauss, still running across an upgrade.
    flag = queue.get_flag(flags.coordinator(queue.cfg.host)) or queue.get_flag(flags.COORDINATOR)
    value = flag["value"] if flag else None
    pid = value.get("pid") if isinstance(value, dict) else None
    if pid is None:
        return None
    if pid == os.getpid() or is_our_process(pid, COORDINATOR_SCRIPT, queue.db_path):
        return value
    return None


# --- one run: stop it in order, sweep what it left, reap what we adopted --------------------------

def become_subreaper():
    """Make this process the reaper of every descendant orphaned below it (Linux): a process that
    leaves claude's session, even with its environment cleared, is then re-parented to us rather
    than to pid 1, so `reap_orphans` can end it. False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes  # only here: nothing else needs it

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def child_pids(parent=None):
    """Pids whose parent is `parent` (default: us), zombies included. Linux only; elsewhere []."""
    parent = os.getpid() if parent is None else parent
    if not _HAS_PROC:
        return []
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(name))
    return found


def _kill_pid_or_group(pid):
    try:
        leader = os.getpgid(pid) == pid
    except OSError:
        leader = False
    return signal_group(pid, signal.SIGKILL) if leader else signal_pid(pid, signal.SIGKILL)


def reap_orphans(keep=(), timeout=SWEEP_SECONDS):
    """SIGKILL and reap every child of ours not in `keep`. As a subreaper, a worker's only other
    children between runs are what its runs left behind. Returns the pids killed."""
    killed = []
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in child_pids() if p not in keep]
        for pid in left:
            if pid not in killed:
                _kill_pid_or_group(pid)
                killed.append(pid)
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        if not left or time.monotonic() >= deadline:
            return killed
        time.sleep(0.01)


def wait_group_dead(pgid, timeout=SWEEP_SECONDS):
    """Wait until no live (non-zombie) process is left in a group we killed, so that what it
    orphaned has been re-parented (to us, as subreaper) before we look for it. True if so."""
    deadline = time.monotonic() + timeout
    while any(e["pgid"] == pgid for e in process_table().values()):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def kill_run_processes(marker, timeout=SWEEP_SECONDS):
    """SIGKILL every process carrying the run's marker until none is left (a process may fork while
    it is swept) or the timeout ends. Returns the pids killed."""
    killed = set()
    deadline = time.monotonic() + timeout
    while True:
        found = kill_env_processes(RUN_MARKER_VAR, marker)
        killed.update(found)
        if not found or time.monotonic() >= deadline:
            return sorted(killed)
        time.sleep(0.01)


def start_run(argv, cwd, env, marker):
    """Start a process as the leader of a session of its own (so its group can be signalled
    without touching ours), its environment carrying the run's marker; pipes on stdin, stdout
    and stderr."""
    return subprocess.Popen(argv, cwd=cwd, env={**env, RUN_MARKER_VAR: marker}, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def stop_run(proc, marker, grace=STOP_GRACE_SECONDS, reap=True):
    """Stop a run that must end now: SIGTERM to its leader, up to `grace` for it to exit (and,
    for the claude CLI, end its tools), then `end_run`."""
    if proc.poll() is None:
        signal_pid(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    return end_run(proc, marker, reap)


def end_run(proc, marker, reap=True):
    """Whatever way a run ended, nothing it started outlives it: SIGKILL its process group, wait
    for the leader, sweep what carries its marker, then (`reap`: we are a subreaper and have no
    other children) kill and reap what we adopted. Returns the pids killed beyond the group."""
    signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
    left = kill_run_processes(marker) if marker else []
    return left + [p for p in (reap_orphans() if reap else []) if p not in left]
