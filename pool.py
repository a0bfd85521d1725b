"""Pool control as a Python API: start, stop, kill, resize and restart the pool, read its status,
borrow a slot. This is the one channel to the coordinator: `manage.sh` (through
claude_coordinator.py's CLI), orchestrator.py and klauss_mcp.py all call these functions, and only
these functions write the pool's control flags, signal the coordinator or read its start-up log.

A function that cannot do what was asked raises PoolError (its message is one line for a person,
its `code` the exit code a command reports). What a command prints along the way goes to the
optional `say` (stdout) and `warn` (stderr) callables; an API caller that passes neither hears
nothing. `start` launches the supervisor (supervisor.py) as a detached process and returns once
its pool is up.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import claude_queue
import config
import flags
import hints
import hosts
import processes
import queues
import states
import supervisor
import task_report
from exits import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from processes import (
    kill_claude_group,
    kill_recorded_worker,
    kill_token_processes,
    owned_claude_group,
    process_table,
    signal_group,
    signal_pid,
)
from supervisor import LOG_NAME, NO_WORKER, STOP_MARGIN_SECONDS, locked_coordinator

COORDINATOR_SCRIPT = Path(__file__).resolve().parent / processes.COORDINATOR_SCRIPT
START_TIMEOUT_SECONDS = 60.0  # `start` gives up waiting for the pool after this long
BORROW_TTL_SECONDS = 120      # a borrowed slot expires unless re-asserted within this long

__all__ = ["EXIT_OK", "EXIT_FAIL", "EXIT_USAGE", "PoolError", "open_queue", "running",
           "start", "stop", "stop_all_hosts", "kill", "resize", "restart", "status", "borrow", "give_back", "check_size"]


class PoolError(Exception):
    """The pool could not do what was asked; the message says why and what to do."""

    def __init__(self, message, code=EXIT_FAIL):
        super().__init__(message)
        self.message, self.code = message, code

    @property
    def reason(self):
        """The message without its "error: " prefix, for a caller that puts it in a line of its own."""
        return self.message[len("error: "):] if self.message.startswith("error: ") else self.message


def _quiet(*_parts):
    pass


# Coordinators this process started: reaped as soon as they end, so a long-lived caller (the MCP
# server) keeps no zombie that would read as a live pid.
_started = []


def _reap_started():
    _started[:] = [child for child in _started if child.poll() is None]


# --- the queue and who is running -----------------------------------------------------------------

open_queue = queues.open_queue


def running(queue):
    """The live coordinator's flag value (with "pid") for this database, or None."""
    _reap_started()
    return processes.running_coordinator(queue)


def unrecorded(cfg, running_value):
    """The live coordinator the database does not know about (None when it does, or none runs)."""
    if running_value is not None:
        return None
    found = locked_coordinator(cfg.state_dir)
    if found and not found["problem"]:
        found["problem"] = f"the database {config.shown_db(cfg.db_path)} does not record it (deleted or replaced under the pool?)"
    return found


def recorded_pool_processes(cfg, queue):
    """[(pid, claude_pgid, role)] of live workers of this host our database records, verified to be
    workers for this database (a recycled pid is not ours)."""
    found = []
    for w in own_workers(cfg, queue):
        if processes.pid_alive(w["pid"]) and processes.is_our_process(w["pid"], processes.WORKER_SCRIPT, cfg.db_path):
            found.append((w["pid"], w["info"].get("claude_pgid"), w["worker_id"]))
        elif w["info"].get("claude_pgid") and owned_claude_group(w["info"]["claude_pgid"], cfg.db_path):
            found.append((None, w["info"]["claude_pgid"], w["worker_id"]))
    return found


def own_workers(cfg, queue):
    """This host's worker rows; another host's pids mean nothing here."""
    return [w for w in queue.list_workers() if hosts.is_local(w, cfg.host)]


def _wait_gone(pid, timeout):
    """Poll until `pid` is no longer a live coordinator; True if it went within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap_started()
        if not processes.pid_alive(pid) or not processes.is_our_process(pid, processes.COORDINATOR_SCRIPT):
            return True
        time.sleep(0.05)
    return False


def check_size(cfg, workers, force=False):
    """Refuse (PoolError, a usage error) `workers` beyond [workers] max_workers without `force`:
    each worker runs its own claude at its own cost, so a typo like `resize 100` must not start 100."""
    limit = cfg["workers"]["max_workers"]
    if workers is None or workers <= limit or force:
        return
    raise PoolError(f"error: {workers} workers is more than [workers] max_workers = {limit} (each runs its own "
                    f"claude, at its own cost); pass --force to run {workers} anyway, or raise max_workers in "
                    ".klauss.toml", EXIT_USAGE)


# --- start ----------------------------------------------------------------------------------------

def already_running(pid, workers):
    size = f", {workers} worker(s)" if workers else ""
    return (f"a pool is already running (coordinator pid {pid or 'unknown'}{size}); nothing started. "
            f"Resize it with {hints.command('resize', 'N')}, or stop it with {hints.command('stop')}")


def _start_failure(rc, lines):
    """One line for a coordinator that exited while starting: why, and what to do."""
    for line in reversed(lines):
        if NO_WORKER in line:
            reason = line.split(NO_WORKER, 1)[1].strip()
            if line.split(NO_WORKER, 1)[0].endswith("stopped ("):  # the reason closes "stopped (...)"
                reason = reason[:-1]
            return f"error: the pool did not start: {reason}"
    last = next((ln.strip() for ln in reversed(lines) if ln.strip()), "no output")
    last = re.sub(r"^error:\s*", "", last)
    return f"error: the pool did not start (coordinator exit code {rc}): {last}"


def start(cfg, workers, timeout=START_TIMEOUT_SECONDS, say=_quiet, warn=_quiet):
    """Start a coordinator of `workers` workers in a new session, logging to its file; return once
    its pool is up: {"pid", "workers", "failed": {worker_id: reason}, "started": False when a pool
    was already running}. Raises PoolError when it does not come up."""
    if workers < 1:
        raise PoolError("error: the number of workers must be at least 1", EXIT_USAGE)
    queue = open_queue(cfg)
    try:
        now = running(queue)
        if now:
            say(already_running(now["pid"], now.get("workers")))
            return {"pid": now["pid"], "workers": now.get("workers"), "failed": {}, "started": False}
        log_path = cfg.logs_dir / LOG_NAME
        offset = log_path.stat().st_size if log_path.exists() else 0
        db, db_env = config.process_db(cfg.db_path)
        argv = [sys.executable, str(COORDINATOR_SCRIPT), "run", str(workers), "--db", db, "--quiet"]
        with open(log_path, "ab") as log:
            child = subprocess.Popen(argv, cwd=str(cfg.root), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True, env={**os.environ, **db_env} if db_env else None)
        _started.append(child)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rc = child.poll()
            if rc is not None:
                with open(log_path, "rb") as fh:
                    fh.seek(offset)
                    lines = fh.read().decode("utf-8", "replace").splitlines()
                if rc == EXIT_OK:  # another start won the race: its pool is running
                    now = running(queue)
                    if now:
                        say(already_running(now["pid"], now.get("workers")))
                        return {"pid": now["pid"], "workers": now.get("workers"), "failed": {}, "started": False}
                raise PoolError(_start_failure(rc, lines) + f" (log: {log_path})",
                                rc if rc in (EXIT_FAIL, EXIT_USAGE) else EXIT_FAIL)
            flag = queue.get_flag(flags.coordinator(cfg.host))
            value = flag["value"] if flag else {}
            if value.get("pid") == child.pid and value.get("state") == supervisor.Coordinator.RUNNING:
                failed = value.get("failed") or {}
                say(f"pool started: {workers - len(failed)} of {workers} worker(s) ready "
                    f"(coordinator pid {child.pid}); log: {log_path}")
                for worker_id, reason in sorted(failed.items()):
                    warn(f"warning: {worker_id} not running: {reason}")
                return {"pid": child.pid, "workers": workers, "failed": failed, "started": True}
            time.sleep(0.02)
        raise PoolError(f"error: the pool (coordinator pid {child.pid}) is still starting after {timeout:g}s; "
                        f"see {log_path}")
    finally:
        queue.close()


# --- stop and kill --------------------------------------------------------------------------------

def stop(cfg, queue=None, timeout=None, quiet=False, say=_quiet, warn=_quiet):
    """SIGTERM the coordinator and wait for it to stop (its workers release their tasks). Returns
    True if a pool was running. Raises PoolError if it is still running after `timeout`."""
    own = queue is None
    queue = open_queue(cfg, create=False) if own else queue
    try:
        now = running(queue)
        lost = unrecorded(cfg, now)
        if lost:
            warn(f"note: coordinator pid {lost['pid']} runs but {lost['problem']}; stopping it through its lock file")
            now = lost
        if now is None:
            leftovers = [pid for pid, _pgid, _role in recorded_pool_processes(cfg, queue) if pid is not None]
            for pid in leftovers:
                signal_pid(pid, signal.SIGTERM)
            if leftovers:
                warn(f"no coordinator running; asked {len(leftovers)} leftover worker(s) to stop")
            elif not quiet:
                say("no pool running")
            return False
    finally:
        if own:
            queue.close()
    pid = now["pid"]
    grace = cfg["workers"]["shutdown_grace_seconds"]
    timeout = timeout if timeout is not None else grace + STOP_MARGIN_SECONDS + 10
    if not quiet:
        say(f"stopping the pool (coordinator pid {pid}); running tasks get {grace:g}s to finish")
    signal_pid(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        raise PoolError(f"error: the coordinator (pid {pid}) is still running after {timeout:g}s; "
                        f"use {hints.command('kill')}")
    if not quiet:
        say("stopped")
    return True


def kill(cfg, say=_quiet, warn=_quiet):
    """SIGKILL the coordinator, its workers and their claude groups (recorded pids only), then
    give their tasks back. Returns (what was killed, task ids returned)."""
    queue = open_queue(cfg, create=False)
    try:
        killed = []
        flag = queue.get_flag(flags.coordinator(cfg.host))
        value = flag["value"] if flag else {}
        pid = value.get("pid")
        if pid and processes.pid_alive(pid) and \
                processes.is_our_process(pid, processes.COORDINATOR_SCRIPT, cfg.db_path):
            signal_pid(pid, signal.SIGKILL)  # first, so it restarts nothing
            killed.append(f"coordinator {pid}")
        victims = [pid] if killed else []
        for wpid, pgid, worker_id in recorded_pool_processes(cfg, queue):
            if kill_recorded_worker(wpid, pgid, cfg.db_path) if wpid else kill_claude_group(pgid, cfg.db_path):
                killed.append(f"{worker_id} {wpid or 'claude group ' + str(pgid)}")
                victims.append(wpid)
        killed += [f"leftover {p}" for p in kill_token_processes(value.get("token"))]
        lost = None if killed else unrecorded(cfg, running(queue))
        if lost:
            warn(f"note: coordinator pid {lost['pid']} runs but {lost['problem']}; killing it "
                 "and its workers, found through its lock file")
            killed += _kill_unrecorded_pool(lost["pid"])
        # SIGKILL is delivered asynchronously: only a worker seen dead may have its task given back.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and process_table([p for p in victims if p]):
            _reap_started()
            time.sleep(0.02)
        returned = []
        for w in own_workers(cfg, queue):
            if not processes.pid_alive(w["pid"]) or not processes.is_our_process(w["pid"], processes.WORKER_SCRIPT):
                killed += [f"leftover {p}" for p in processes.kill_run_processes(w["info"].get("run_marker"))]
                for task in queue.list_tasks(status="in_progress", worker_id=w["worker_id"]):
                    if queue.release_task(task.id, w["worker_id"], reason="pool killed", attempt=task.attempt):
                        returned.append(task.id)
                queue.unregister_worker(w["worker_id"])
        if flag and not processes.is_our_process(pid, processes.COORDINATOR_SCRIPT):
            queue.clear_flag(flags.coordinator(cfg.host))
        say(f"killed: {', '.join(killed)}" if killed else "nothing to kill")
        if returned:
            say(f"returned to the queue: {', '.join(f'#{t}' for t in returned)}")
        return killed, returned
    finally:
        queue.close()


def _kill_unrecorded_pool(pid):
    """SIGKILL a coordinator the database does not record, the workers it started (their command
    line names it) and everything carrying their pool token (claude and what it started)."""
    signal_pid(pid, signal.SIGKILL)
    killed = [f"coordinator {pid}"]
    tokens = set()
    for wpid, entry in process_table().items():
        args = entry["args"]
        if any(Path(a).name == processes.WORKER_SCRIPT for a in args[:3]) and \
                _arg_after(args, "--coordinator-pid") == str(pid):
            token = processes.env_value(wpid, processes.POOL_TOKEN_VAR)
            if token:
                tokens.add(token.split(":", 1)[0])
            if signal_group(wpid, signal.SIGKILL) if entry["pgid"] == wpid else signal_pid(wpid, signal.SIGKILL):
                killed.append(f"worker {wpid}")
    for token in tokens:
        killed += [f"leftover {p}" for p in kill_token_processes(token)]
    return killed


def _arg_after(args, name):
    return args[args.index(name) + 1] if name in args[:-1] else None


# --- resize, restart ------------------------------------------------------------------------------

def resize(cfg, workers, timeout=START_TIMEOUT_SECONDS, force=False, say=_quiet):
    """Ask the running coordinator for `workers` workers and wait until they are ready."""
    if workers is None or workers < 1:
        raise PoolError("error: resize needs the number of workers, at least 1", EXIT_USAGE)
    check_size(cfg, workers, force)
    queue = open_queue(cfg, create=False)
    try:
        now = running(queue)
        if now is None:
            raise PoolError(f"error: no pool running; start one with {hints.command('start', workers)}")
        pid = now["pid"]
        queue.set_flag(flags.resize(cfg.host), {"workers": workers})
        signal_pid(pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            flag = queue.get_flag(flags.coordinator(cfg.host))
            value = flag["value"] if flag else {}
            if value.get("pid") != pid:
                raise PoolError(f"error: the pool stopped while resizing; see {hints.command('logs')}")
            if value.get("base_workers", value.get("workers")) == workers \
                    and value.get("state") == supervisor.Coordinator.RUNNING and not queue.get_flag(flags.resize(cfg.host)):
                say(f"pool resized to {workers} worker(s) (coordinator pid {pid})")
                return
            time.sleep(0.02)
        raise PoolError(f"error: the pool did not reach {workers} ready worker(s) within {timeout:g}s")
    finally:
        queue.close()


def restart(cfg, workers=None, force=False, timeout=START_TIMEOUT_SECONDS, say=_quiet, warn=_quiet):
    """Stop the pool, then start `workers` (default: as many as before, else [workers] count)."""
    queue = open_queue(cfg, create=False)
    try:
        now = running(queue)
        if workers is None and now:
            workers, force = now.get("workers"), True  # as many as before, however many that was
        check_size(cfg, workers if workers is not None else cfg["workers"]["count"], force)  # before stopping
        stop(cfg, queue, quiet=now is None, say=say, warn=warn)
    finally:
        queue.close()
    if workers is None:
        # Only a number the user typed asks for --force; the configured count stays within the cap.
        workers = min(cfg["workers"]["count"], cfg["workers"]["max_workers"])
    check_size(cfg, workers, force)
    return start(cfg, workers, timeout=timeout, say=say, warn=warn)


# --- borrowing a slot -----------------------------------------------------------------------------

def borrow(queue, task_id, ttl=BORROW_TTL_SECONDS):
    """A task that waits for its own sub-job holds a worker: the pool grows by one slot for the
    wait (up to [workers] max_workers) so its children are not starved. The flag expires by
    itself after `ttl` if the borrower dies without giving it back; call again to re-assert it."""
    first = queue.get_flag(flags.borrow(task_id)) is None
    # The slot is lent by the host the borrower runs on.
    queue.set_flag(flags.borrow(task_id), {"task": task_id, "host": queue.cfg.host}, until=queue.clock() + ttl)
    if first:
        _nudge(queue)


def give_back(queue, task_id):
    queue.clear_flag(flags.borrow(task_id))
    _nudge(queue)


def _nudge(queue):
    """Have the coordinator re-read its size now rather than at its next tick."""
    now = running(queue)
    if now:
        signal_pid(now["pid"], signal.SIGUSR1)


# --- status ---------------------------------------------------------------------------------------

def status(cfg, queue):
    """Everything `status` shows, as plain data (also its --json output)."""
    now = running(queue)
    rows = queue.list_workers()
    local = [w for w in rows if hosts.is_local(w, cfg.host)]
    pids = [w["pid"] for w in local] + [w["info"].get("claude_pid") for w in local if w["info"].get("claude_pid")]
    if now:
        pids.append(now["pid"])
    table = process_table([p for p in pids if p])
    clock = queue.clock()
    pools = hosts.coordinators(queue)
    workers = []
    for w in rows:
        host = hosts.host_of(w["worker_id"]) or w["info"].get("host") or cfg.host
        if host == cfg.host:
            proc = table.get(w["pid"])
            alive = proc is not None and any(Path(a).name == processes.WORKER_SCRIPT for a in proc["args"][:3])
            claude = table.get(w["info"].get("claude_pid")) if w["info"].get("claude_pid") else None
            ours = (now or {}).get("worker_pids", {})
        else:
            # Another host's pids cannot be looked at from here: its heartbeat is all we know.
            proc = claude = None
            alive = clock - w["last_heartbeat"] < cfg.hung_after
            ours = (pools.get(host) or {}).get("worker_pids") or {}
        workers.append({
            "worker_id": w["worker_id"], "host": host, "pid": w["pid"], "alive": alive,
            "state": w["state"] if alive else (states.DEAD if host == cfg.host else "silent"),
            "current_task": w["current_task"], "in_pool": ours.get(w["worker_id"]) == w["pid"],
            "heartbeat_age": round(clock - w["last_heartbeat"], 1), "started_at": w["started_at"],
            "cpu_percent": proc["cpu_percent"] if proc else None, "rss_kb": proc["rss_kb"] if proc else None,
            "claude_pid": w["info"].get("claude_pid") if claude else None,
            "claude_cpu_percent": claude["cpu_percent"] if claude else None,
            "claude_rss_kb": claude["rss_kb"] if claude else None,
        })
    coordinator = None
    if now:
        proc = table.get(now["pid"])
        coordinator = {**{k: v for k, v in now.items() if k != "token"},
                       "uptime": round(clock - now.get("started_at", clock), 1),
                       "cpu_percent": proc["cpu_percent"] if proc else None, "rss_kb": proc["rss_kb"] if proc else None}
    config_error = hosts.config_error_flag(queue, cfg.host)
    paused = hosts.pause_flag(queue, cfg.host, hosts.login_key(cfg))
    lost = unrecorded(cfg, now)
    problem = (lost or locked_coordinator(cfg.state_dir) or {}).get("problem")
    return {"running": now is not None or lost is not None, "unrecorded_coordinator": lost,
            "problem": problem, "disk_full": claude_queue.disk_full_note(cfg.state_dir, cfg.db_path.parent),
            "db": config.shown_db(cfg.db_path), "state_dir": str(cfg.state_dir), "host": cfg.host,
            "hosts": hosts_status(queue, pools),
            "coordinator": coordinator, "workers": workers, "queue": task_report.queue_user_stats(queue),
            "config_error": config_error["value"] if config_error else None,
            "paused": paused or None, "pool_state": task_report.pool_state(queue)}


def hosts_status(queue, pools=None):
    """{host: {"coordinator_pid", "state", "workers", "started_at", "silent_for", "config_error",
    "paused"}} for every host whose coordinator the database records, and every host a
    configuration error stops. `silent_for` (seconds) is set once a coordinator has not renewed its
    flag for two of its leases: that host is down, cut off, or was killed without cleaning up."""
    pools = hosts.coordinators(queue) if pools is None else pools
    found = {}
    clock = queue.clock()
    for host, value in pools.items():
        age = clock - (value.get("seen_at") or clock)
        lease = value.get("lease_seconds") if isinstance(value.get("lease_seconds"), (int, float)) else 60
        found[host] = {"coordinator_pid": value.get("pid"), "state": value.get("state"),
                       "workers": value.get("workers"), "started_at": value.get("started_at"),
                       "silent_for": round(age, 1) if age > config.HUNG_LEASES * lease else None,
                       "config_error": None, "paused": None}
    prefix = flags.config_error("")
    for key, flag in queue.list_flags(prefix).items():
        entry = found.setdefault(key[len(prefix):], {"coordinator_pid": None, "state": None, "workers": None,
                                                     "started_at": None, "silent_for": None, "paused": None})
        entry["config_error"] = flag["value"]
    prefix = flags.paused_host("")
    for key, flag in queue.list_flags(prefix).items():
        if key[len(prefix):] in found:
            found[key[len(prefix):]]["paused"] = flag["value"]
    return found


# --- stopping every host --------------------------------------------------------------------------

def stop_all_hosts(cfg, timeout=None, say=_quiet, warn=_quiet):
    """Ask every host's coordinator to stop gracefully (this host's by signal, the others through
    a `stop@<host>` flag naming the coordinator's token, which each coordinator reads every tick),
    then wait for them to go. Returns {host: "stopped" | "not running"}; raises PoolError (exit 1)
    naming the hosts that did not answer within `timeout` (down, cut off, or still stopping)."""
    queue = open_queue(cfg, create=False)
    try:
        pools = hosts.coordinators(queue)
        # A host silent for two leases (status says so) has nobody to read the request now: it is
        # named at once rather than waited for; the request waits in the database all the same.
        silent = {h: st["silent_for"] for h, st in hosts_status(queue, pools).items() if h in pools and st["silent_for"]}
        me = cfg.host
        for host, value in sorted(pools.items()):
            if host != me and value.get("token"):
                queue.set_flag(flags.stop(host), {"token": value["token"], "from": me,
                                                  "requested_at": queue.clock()})
                say(f"asked host {host} to stop (coordinator pid {value.get('pid')} there)")
    finally:
        queue.close()
    result = {me: "stopped" if stop(cfg, timeout=timeout, say=say, warn=warn) else "not running"}
    grace = cfg["workers"]["shutdown_grace_seconds"]
    timeout = timeout if timeout is not None else grace + STOP_MARGIN_SECONDS + 10
    # A coordinator clears its own flag as it exits; its tick (at most 5 s) is when it reads ours.
    deadline = time.monotonic() + timeout + 5.0
    queue = open_queue(cfg, create=False)
    try:
        waiting = {h: v for h, v in pools.items() if h != me and v.get("token") and h not in silent}
        while waiting and time.monotonic() < deadline:
            now = hosts.coordinators(queue)
            for host in [h for h, v in waiting.items() if (now.get(h) or {}).get("token") != v["token"]]:
                result[host] = "stopped"
                say(f"host {host}: stopped")
                del waiting[host]
            if waiting:
                time.sleep(0.05)
        for host in [*waiting, *silent]:
            result[host] = "no answer"
    finally:
        queue.close()
    if waiting or silent:
        why = ([f"{', '.join(sorted(waiting))} did not stop within {timeout:g}s"] if waiting else []) + \
              [f"{host} did not stop (silent for {task_report.fmt_duration(age)})" for host, age in sorted(silent.items())]
        raise PoolError(f"error: host(s) {'; '.join(why)} (down or cut off? their tasks return to the queue once "
                        f"their leases expire, and the request waits for them); run {hints.command('stop')} there")
    return result
