#!/usr/bin/env python3
"""The Klauss pool: runs N `claude_worker.py` processes for one database and keeps them healthy.

    python claude_coordinator.py [N] [DB] [--workers N] [--db PATH] [--detach]   run a pool
    python claude_coordinator.py start|stop|kill|restart|resize|status|ps|logs|init-config|clean|doctor ...

`manage.sh` is a thin front end to the subcommands; `python claude_coordinator.py help` lists them.

The coordinator is one thread around one `select()`: it wakes on worker output, on a signal
(SIGCHLD included, so a dying worker is seen at once) or on its next timer, and otherwise costs
nothing. Its states are STARTING (workers launched, not all ready) -> RUNNING -> STOPPING (workers
got SIGTERM and have `shutdown_grace_seconds` plus a margin to release their tasks and exit) ->
STOPPED (what is left is SIGKILLed by process group, tasks returned, the pool flag cleared).

Each worker slot is STARTING, READY, BACKOFF (dead, restart scheduled), FAILED (gave up: a
configuration error, or `max_fast_crashes` immediate crashes in a row) or STOPPED. When a worker
dies, the claude process group it recorded is killed and its task returned at once
(`recover_stale(worker_id=...)`), before a new worker takes the same id.

Pool state lives in the database: the pool flag "coordinator" (pid, workers, worker pids, state,
log) and the `workers` table, so status commands read it there and only pids recorded by this
project's coordinator are ever signalled. One coordinator per state directory is guaranteed by an
`flock` on `<state>/coordinator.lock`, held for the coordinator's lifetime (a crash releases it).

Exit codes, as for every Klauss command: 0 done (a pool that is already running is not an error);
1 failure (e.g. workers that keep crashing, `stop` timing out, `clean` while a pool runs); 2 bad
arguments or configuration (including a configuration problem no worker can run with, such as the
claude CLI missing: a restart will not fix it, and the message says what will).
"""

import argparse
import errno
import fcntl
import json
import os
import re
import select
import selectors
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections import deque
from pathlib import Path

import claude_queue
import config
import exits
import hints
import processes
import task_report
from processes import (
    POOL_TOKEN_VAR,
    kill_claude_group,
    kill_recorded_worker,
    kill_token_processes,
    owned_claude_group,
    process_table,
    signal_group,
    signal_pid,
)

HERE = Path(__file__).resolve().parent
WORKER_SCRIPT = HERE / "claude_worker.py"

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
# Worker exit codes a restart cannot fix (bad configuration, claude missing or logged out).
WORKER_FATAL_CODES = {2: "configuration error", 3: "configuration error"}

FLAG = claude_queue.COORDINATOR_FLAG
RESIZE_FLAG = "pool_resize"
# A task waiting on its own sub-job sets "borrow:<task id>" (orchestrator.py); each live borrow
# grows the pool by one worker, up to [workers] max_workers, so the children are not starved.
BORROW_PREFIX = "borrow:"
LOCK_NAME = "coordinator.lock"
PID_NAME = "coordinator.pid"
# One line a running coordinator leaves beside its pid file when it can no longer say it through
# the database (deleted or replaced under it, or a full disk): control commands read it there.
PROBLEM_NAME = "coordinator.problem"
LOG_NAME = "coordinator.log"
NO_WORKER = "no worker can run:"  # `start` finds the reason after this in the coordinator's log

READY_STATES = ("idle", "busy", "paused")
FAST_CRASH_SECONDS = 10.0     # a worker that dies sooner than this counted as an immediate crash
FIRST_BACKOFF_SECONDS = 0.5   # doubled per consecutive immediate crash, up to the configured max
STOP_MARGIN_SECONDS = 5.0     # beyond the grace: time for a worker to release, unregister, exit
START_TIMEOUT_SECONDS = 60.0  # `start` gives up waiting for the pool after this long
MIN_PYTHON = (3, 9)
HUNG_LEASES = 2               # a registered worker silent for this many leases is killed


def now_stamp():
    t = time.time()
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def eprint(*parts):
    print(*parts, file=sys.stderr, flush=True)


# --- the pool flag and who is running ------------------------------------------------------------

def open_queue(cfg, create=True):
    """The project's queue; with create=False and no database yet, an empty stand-in, so that
    looking (status, ps, stop...) never creates a state directory or a database."""
    if not create and not cfg.db_path.exists():
        return _NoQueue()
    try:
        cfg.ensure_state_dir()
    except OSError:
        if create:
            raise
        # A read-only state directory: looking still works (the queue opens the database read-only).
    return claude_queue.TaskQueue(str(cfg.db_path), cfg=cfg)


class _NoQueue:
    """A database that does not exist yet: no flags, no workers, no tasks."""

    def get_flag(self, key):
        return None

    def running_coordinator(self):
        return None

    def list_workers(self):
        return []

    def list_tasks(self, **kw):
        return []

    def get_task(self, task_id):
        return None

    def get_stats(self):
        return {**{s: 0 for s in claude_queue.STATUSES}, "total": 0, "cost_usd": 0.0, "denied": 0}

    def close(self):
        pass


class AlreadyRunning(Exception):
    def __init__(self, pid, message):
        super().__init__(message)
        self.pid = pid


class PoolLock:
    """The one-coordinator-per-state-dir lock: an flock held while the coordinator lives."""

    def __init__(self, state_dir):
        self.path = Path(state_dir) / LOCK_NAME
        self.pid_path = Path(state_dir) / PID_NAME
        self.fd = None

    def acquire(self):
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        # A status command may hold a shared probe for a moment; a few tries ride over it.
        for attempt in range(20):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or attempt == 19:
                    holder = self.holder_pid(fd)
                    os.close(fd)
                    raise AlreadyRunning(holder, f"another coordinator (pid {holder or 'unknown'}) is already running "
                                                 f"for {self.path.parent}; stop it first ({hints.command('stop')})") from None
                time.sleep(0.01)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        self.pid_path.write_text(f"{os.getpid()}\n")

    @staticmethod
    def holder_pid(fd):
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            return int(os.read(fd, 64).decode().strip() or 0) or None
        except (OSError, ValueError):
            return None

    def note_problem(self, text):
        """Best effort: on a full disk even this may not be written."""
        try:
            (self.path.parent / PROBLEM_NAME).write_text(text + "\n" if text else "")
        except OSError:
            pass

    def release(self):
        if self.fd is None:
            return
        try:
            if self.pid_path.read_text().strip() == str(os.getpid()):
                self.pid_path.unlink()
            (self.path.parent / PROBLEM_NAME).unlink()
        except OSError:
            pass
        os.close(self.fd)  # closing drops the flock
        self.fd = None


def locked_coordinator(state_dir):
    """{"pid", "problem"} of a live coordinator holding this state directory's lock, else None.
    The lock, not the database, is the ground truth: a pool whose database was deleted or
    replaced under it is found here, so `status`, `stop` and `kill` still reach it."""
    path = Path(state_dir) / LOCK_NAME
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                return None
            pid = PoolLock.holder_pid(fd)
        else:
            return None  # nobody holds it (our shared probe goes with the close)
    finally:
        os.close(fd)
    if not pid or not claude_queue.is_our_process(pid, "claude_coordinator.py"):
        return None
    try:
        problem = (Path(state_dir) / PROBLEM_NAME).read_text().strip() or None
    except OSError:
        problem = None
    return {"pid": pid, "problem": problem}


def _unrecorded(cfg, running):
    """The live coordinator the database does not know about (None when it does, or none runs)."""
    if running is not None:
        return None
    found = locked_coordinator(cfg.state_dir)
    if found and not found["problem"]:
        found["problem"] = f"the database {cfg.db_path} does not record it (deleted or replaced under the pool?)"
    return found


# --- the supervisor -------------------------------------------------------------------------------

class Slot:
    """One worker id and the process currently running it."""

    STARTING, READY, BACKOFF, FAILED, STOPPED = "starting", "ready", "backoff", "failed", "stopped"

    def __init__(self, n, log_path, on_error=None):
        self.n = n
        self.worker_id = f"worker_{n}"
        self.log_path = log_path
        self.on_error = on_error
        self.log = None
        self._open_log()
        self.state = Slot.STARTING
        self.proc = None
        self.started = 0.0
        self.restart_at = None
        self.fast_crashes = 0
        self.spawns = 0
        self.reason = None
        self.retire_signalled = False
        self.tail = deque(maxlen=20)

    def _open_log(self):
        try:
            self.log = open(self.log_path, "ab", buffering=0)
        except OSError as exc:
            if self.on_error:
                self.on_error(self.log_path, exc)

    def write(self, line):
        """One line of worker output into its log, stamped; the last few are kept for crash reports.
        A failed write (a full disk) loses the line, never the supervisor."""
        text = line.rstrip(b"\r")
        if self.log is None:
            self._open_log()
        try:
            if self.log is not None:
                self.log.write(now_stamp().encode() + b" " + text + b"\n")
        except OSError as exc:
            if self.on_error:
                self.on_error(self.log_path, exc)
        decoded = text.decode("utf-8", "replace").strip()
        if decoded:
            self.tail.append(decoded)


class _Pipe:
    """A worker's stdout+stderr, copied to its slot's log line by line as lines arrive."""

    def __init__(self, fd, slot):
        self.fd, self.slot, self.partial = fd, slot, b""

    def read(self):
        """Copy what is there; False at end of file."""
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            if self.partial:
                self.slot.write(self.partial)
                self.partial = b""
            return False
        lines = (self.partial + data).split(b"\n")
        self.partial = lines.pop()
        if len(self.partial) > 65536:  # a runaway line without a newline is logged in pieces
            lines.append(self.partial)
            self.partial = b""
        for line in lines:
            self.slot.write(line)
        return True


class Coordinator:
    STARTING, RUNNING, STOPPING, STOPPED = "starting", "running", "stopping", "stopped"

    def __init__(self, cfg, workers, worker_cmd=None, echo=True):
        self.cfg = cfg
        self.n = workers          # workers wanted now: base_n plus borrowed slots
        self.base_n = workers     # what the user asked for (start / resize)
        self.worker_cmd = list(worker_cmd or [sys.executable, str(WORKER_SCRIPT)])
        self.echo = echo
        w = cfg["workers"]
        self.lease = w["lease_seconds"]
        self.grace = w["shutdown_grace_seconds"]
        self.idle_timeout = w["idle_timeout"]
        self.backoff_max = w["restart_backoff_max_seconds"]
        self.max_fast_crashes = w["max_fast_crashes"]
        # One timer for the periodic work; small enough for short test settings, never above 5 s.
        self.tick = max(0.05, min(5.0, self.lease / 4, w["heartbeat_seconds"],
                                  self.idle_timeout / 4 if self.idle_timeout else 5.0))
        self.state = None
        self.subreaper = False
        self.token = uuid.uuid4().hex
        self._tokens = {}
        self._spawn_seq = 0
        self.queue = None
        self.lock = PoolLock(cfg.state_dir)
        self.sel = None
        self.slots = []
        self.signals = []
        self.stop_reason = None
        self.stop_deadline = None
        self.killed = False
        self.killed_at = None
        self.exit_code = EXIT_OK
        self.idle_since = None
        self.next_tick = 0.0
        self.started_at = time.time()
        self.log_path = cfg.logs_dir / LOG_NAME
        self.log = None
        self.db_lost = None       # why the database can no longer be trusted (see _check_db)
        self.disk_full = None     # why writes fail (see _check_disk); the pool pauses meanwhile
        self.disk_full_since = None

    # --- messages ---

    def say(self, message):
        line = f"{now_stamp()} coordinator: {message}"
        if self.log is not None:
            try:
                self.log.write((line + "\n").encode())
            except OSError as exc:
                self._write_failed(self.log_path, exc)
        if self.echo:
            try:
                eprint(line)
            except OSError as exc:  # our stderr is a log file too when detached
                self._write_failed(self.log_path, exc)

    def _write_failed(self, path, exc):
        """A log write failed: remember why; the next tick pauses the pool (never raise here)."""
        if self.disk_full is None:
            why = getattr(exc, "strerror", None) or exc
            self.disk_full = f"disk full: cannot write {path}: {why}" if claude_queue.is_disk_full(exc) \
                else f"cannot write {path}: {why}"
            self.disk_full_since = time.monotonic()

    # --- the flag other programs read ---

    def publish(self):
        self.queue.set_flag(FLAG, {
            "pid": os.getpid(), "workers": self.n, "base_workers": self.base_n, "state": self.state,
            "started_at": self.started_at,
            "log": str(self.log_path), "db": str(self.cfg.db_path), "token": self.token,
            "worker_pids": {s.worker_id: s.proc.pid for s in self.slots if s.proc is not None},
            "failed": {s.worker_id: s.reason for s in self.slots if s.state == Slot.FAILED},
        })

    # --- lifecycle ---

    def run(self):
        """Supervise until stopped; returns the exit code. Raises AlreadyRunning."""
        self.cfg.ensure_state_dir()
        self.lock.acquire()
        try:
            self.log = open(self.log_path, "ab", buffering=0)
            self.queue = claude_queue.TaskQueue(str(self.cfg.db_path), cfg=self.cfg)
            self.queue.pinned = True
            other = self.queue.get_flag(FLAG)
            other_pid = other and other["value"].get("pid")
            if other_pid and other_pid != os.getpid() and claude_queue.pid_alive(other_pid) and \
                    claude_queue.is_our_process(other_pid, "claude_coordinator.py", self.cfg.db_path):
                raise AlreadyRunning(other_pid, f"another coordinator (pid {other_pid}) is already running "
                                                f"for {self.cfg.db_path}; stop it first ({hints.command('stop')})")
            return self._supervise(other["value"] if other else None)
        finally:
            # After an unexpected error the workers must not wait for a coordinator that is going:
            # SIGTERM makes them release their tasks and exit now.
            for slot in self.slots:
                if slot.proc is not None and slot.proc.poll() is None:
                    signal_pid(slot.proc.pid, signal.SIGTERM)
            self._close()
            self.lock.release()

    def _supervise(self, previous):
        self.state = Coordinator.STARTING
        self.say(f"starting {self.n} worker(s) for {self.cfg.db_path} (pid {os.getpid()})")
        self.sel = selectors.DefaultSelector()
        # What a SIGKILLed worker's run leaves behind is re-parented to us, so it can be ended.
        self.subreaper = processes.become_subreaper()
        self._install_signals()
        self._clean_up_previous(previous)
        self._add_slots()
        self.publish()
        while self.state != Coordinator.STOPPED:
            try:
                self._wait()
                self._handle_signals()
                self._reap()
                self._timers()
            except claude_queue.DiskFull as exc:
                if self.disk_full is None:
                    self.disk_full, self.disk_full_since = str(exc), time.monotonic()
                # A worker's exit may have been half handled: have its slot restarted later.
                for slot in self.slots:
                    if slot.proc is None and slot.state in (Slot.STARTING, Slot.READY):
                        slot.state, slot.restart_at = Slot.BACKOFF, time.monotonic() + self.tick
        self._drain_pipes(deadline=time.monotonic() + 1.0)
        self.say(f"stopped ({self.stop_reason})")
        return self.exit_code

    def _install_signals(self):
        rfd, wfd = os.pipe()
        for fd in (rfd, wfd):
            os.set_blocking(fd, False)
        self._wake_r, self._wake_w = rfd, wfd
        self.sel.register(rfd, selectors.EVENT_READ, None)
        signal.set_wakeup_fd(wfd)

        def note(signum, _frame):
            self.signals.append(signum)

        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
            signal.signal(sig, note)
        # SIGCHLD only has to wake the select: a dying worker is then reaped at once.
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def _wait(self):
        now = time.monotonic()
        deadlines = [self.next_tick]
        deadlines += [s.restart_at for s in self.slots if s.state == Slot.BACKOFF and s.restart_at]
        if self.stop_deadline is not None:
            deadlines.append(self.stop_deadline)
        if self.state == Coordinator.STARTING:
            deadlines.append(now + 0.05)  # readiness is read from the database until all are up
        timeout = max(0.0, min(deadlines) - now)
        for key, _ in self.sel.select(timeout):
            if key.data is None:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            elif not key.data.read():
                self.sel.unregister(key.fd)
                os.close(key.fd)

    def _handle_signals(self):
        while self.signals:
            signum = self.signals.pop(0)
            name = signal.Signals(signum).name
            if signum == signal.SIGUSR1:
                self._check_resize()
            elif self.state == Coordinator.STOPPING:
                if not self.killed:
                    self.say(f"{name} again: killing the workers now")
                    self._kill_all()
            elif self.state in (Coordinator.STARTING, Coordinator.RUNNING):
                self.begin_stop(f"{name} received")

    # --- workers ---

    def _instance_token(self, worker_id, pid=None):
        """The token a worker process's environment carries: the pool's, plus which process."""
        if pid is not None:
            return self._tokens.pop((worker_id, pid), f"{self.token}:{worker_id}:?")
        return f"{self.token}:{worker_id}:{self._spawn_seq}"

    def _add_slots(self):
        """Create and start a slot for every id in 1..n that has none."""
        used = {s.n for s in self.slots}
        for n in range(1, self.n + 1):
            if n not in used:
                slot = Slot(n, self.cfg.logs_dir / f"worker_{n}.log", on_error=self._write_failed)
                self.slots.append(slot)
                self._spawn(slot)
        self.slots.sort(key=lambda s: s.n)

    def _check_resize(self):
        """Apply a `resize` request (the pool flag "pool_resize") and the slots borrowed by waiting
        parent tasks: grow by starting slots; shrink by stopping the highest-numbered workers once
        they are not busy (a busy one finishes its task first), releasing like at shutdown."""
        if self.state not in (Coordinator.STARTING, Coordinator.RUNNING):
            return
        flag = self.queue.get_flag(RESIZE_FLAG)
        if flag:
            self.queue.clear_flag(RESIZE_FLAG)
            n = flag["value"].get("workers")
            if isinstance(n, int) and n >= 1:
                self.base_n = n
        borrowed = len(self.queue.list_flags(BORROW_PREFIX))
        n = min(self.base_n + borrowed, max(self.base_n, self.cfg["workers"]["max_workers"]))
        changed = bool(flag) or n != self.n
        if n != self.n:
            why = f" ({borrowed} borrowed by waiting tasks)" if borrowed else ""
            self.say(f"resizing the pool from {self.n} to {n} worker(s){why}")
            grow = n > self.n
            self.n = n
            if grow:
                self._add_slots()
                self.state = Coordinator.STARTING  # back to RUNNING once the new workers are ready
        self._retire_surplus()
        if changed:
            self.publish()

    def _retire_surplus(self):
        busy = {w["worker_id"] for w in self.queue.list_workers() if w["state"] == "busy"}
        for slot in [s for s in self.slots if s.n > self.n]:
            if slot.proc is None:
                self._retire(slot)
            elif slot.worker_id not in busy and not slot.retire_signalled:
                slot.retire_signalled = True
                signal_pid(slot.proc.pid, signal.SIGTERM)

    def _retire(self, slot):
        slot.state = Slot.STOPPED
        if slot.log is not None:
            slot.log.close()
        self.slots.remove(slot)

    def _spawn(self, slot):
        argv = [*self.worker_cmd, slot.worker_id, "--db", str(self.cfg.db_path), "--coordinator-pid", str(os.getpid())]
        self._spawn_seq += 1
        env = {**os.environ, "PYTHONUNBUFFERED": "1", POOL_TOKEN_VAR: self._instance_token(slot.worker_id)}
        try:
            # A session of its own: a terminal's Ctrl-C reaches only the coordinator, which then
            # stops workers in order; and the worker's group can be killed without touching ours.
            proc = subprocess.Popen(argv, cwd=str(self.cfg.root), env=env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            self._give_up(slot, f"cannot start {argv[0]}: {exc}")
            return
        slot.proc, slot.started, slot.restart_at = proc, time.monotonic(), None
        slot.spawns += 1
        self._tokens[slot.worker_id, proc.pid] = env[POOL_TOKEN_VAR]
        slot.state = Slot.STARTING
        # The selector owns a duplicate of the pipe, so an old worker's output can finish
        # draining after the slot has moved on to its next process.
        fd = os.dup(proc.stdout.fileno())
        proc.stdout.close()
        os.set_blocking(fd, False)
        self.sel.register(fd, selectors.EVENT_READ, _Pipe(fd, slot))
        if slot.spawns > 1:
            self.say(f"{slot.worker_id} restarted (pid {proc.pid})")

    def _reap(self):
        for slot in list(self.slots):
            if slot.proc is not None and slot.proc.poll() is not None:
                self._on_exit(slot)

    def _on_exit(self, slot):
        proc, slot.proc = slot.proc, None
        rc = proc.returncode
        uptime = time.monotonic() - slot.started
        retiring = slot.n > self.n
        stopping = self.state == Coordinator.STOPPING or retiring
        self._drain_pipes(deadline=time.monotonic() + 0.2, slot=slot)
        returned = self._clean_up_worker(slot.worker_id, proc.pid, died=rc != 0, stopping=stopping)
        how = f"exit code {rc}" if rc >= 0 else f"killed by {signal.Signals(-rc).name}"
        if returned:
            self.say(f"{slot.worker_id} (pid {proc.pid}) {how}; task(s) {', '.join(map(str, returned))} returned to the queue")
        elif rc != 0 or not stopping:
            self.say(f"{slot.worker_id} (pid {proc.pid}) {how}")
        if retiring:
            self._retire(slot)
        elif stopping:
            slot.state = Slot.STOPPED
        elif rc in WORKER_FATAL_CODES:
            self._give_up(slot, f"{WORKER_FATAL_CODES[rc]}: {self._why(slot)}")
        else:
            slot.fast_crashes = slot.fast_crashes + 1 if uptime < FAST_CRASH_SECONDS else 0
            if slot.fast_crashes >= self.max_fast_crashes:
                self._give_up(slot, f"{slot.fast_crashes} immediate crashes in a row; last: {how}: {self._why(slot)}")
            else:
                delay = min(self.backoff_max, FIRST_BACKOFF_SECONDS * 2 ** (slot.fast_crashes - 1)) \
                    if slot.fast_crashes else 0.0
                slot.state, slot.restart_at = Slot.BACKOFF, time.monotonic() + delay
                if delay:
                    self.say(f"{slot.worker_id} restarts in {delay:g}s")
        self.publish()

    @staticmethod
    def _why(slot):
        errors = [line for line in slot.tail if "error" in line.lower()]
        last = (errors or list(slot.tail) or ["no output"])[-1]
        return re.sub(r"^error:\s*", "", last)

    def _give_up(self, slot, reason):
        slot.state, slot.reason, slot.restart_at = Slot.FAILED, reason, None
        self.say(f"{slot.worker_id} not restarted: {reason}")
        if all(s.state == Slot.FAILED for s in self.slots) and self.state != Coordinator.STOPPING:
            # A configuration problem is bad input (2); workers that keep crashing are a failure (1).
            configured = any(s.reason.startswith(tuple(WORKER_FATAL_CODES.values())) for s in self.slots)
            self.exit_code = EXIT_USAGE if configured else EXIT_FAIL
            self.begin_stop(f"{NO_WORKER} {reason}")

    def _clean_up_worker(self, worker_id, pid, died, stopping):
        """After a worker process ended: kill the claude group it recorded, return its task (at
        once, not after the lease), forget it. Returns the task ids returned."""
        row = next((w for w in self.queue.list_workers() if w["worker_id"] == worker_id), None)
        if row is not None and row["pid"] == pid:
            info = row.get("info") or {}
            pgid = info.get("claude_pgid")
            if kill_claude_group(pgid, self.cfg.db_path):
                self.say(f"{worker_id}: killed its orphaned claude (process group {pgid})")
            for left in processes.kill_run_processes(info.get("run_marker")):
                self.say(f"{worker_id}: killed process {left} its task's run left behind")
            if self.subreaper and pgid:
                processes.wait_group_dead(pgid)
                for left in processes.reap_orphans(keep={s.proc.pid for s in self.slots if s.proc is not None}):
                    self.say(f"{worker_id}: killed process {left} its run left outside claude's group")
        for left in kill_token_processes(self._instance_token(worker_id, pid), exact=True):
            self.say(f"{worker_id}: killed process {left} it left behind")
        returned = []
        if stopping:
            # Stopped by us, not the task's fault: give it back without spending an attempt.
            for task in self.queue.list_tasks(status="in_progress", worker_id=worker_id):
                if self.queue.release_task(task.id, worker_id, reason="pool stopping", attempt=task.attempt):
                    returned.append(task.id)
        elif died or row is not None:
            returned = self.queue.recover_stale(worker_id=worker_id)
        if row is not None and row["pid"] == pid:
            self.queue.unregister_worker(worker_id)
        return returned

    # --- timers ---

    def _timers(self):
        now = time.monotonic()
        if self.state in (Coordinator.STARTING, Coordinator.RUNNING):
            for slot in self.slots:
                if slot.state == Slot.BACKOFF and slot.restart_at is not None and now >= slot.restart_at \
                        and not self._check_db() and self.disk_full is None:
                    self._spawn(slot)
                    self.publish()
        if self.state == Coordinator.STARTING:
            self._check_ready()
        if self.state == Coordinator.STOPPING:
            if all(s.proc is None for s in self.slots):
                self._finish_stop()
            elif now >= self.stop_deadline and not self.killed:
                self.say(f"workers still running {self.grace + STOP_MARGIN_SECONDS:g}s after SIGTERM; killing them")
                self._kill_all()
            elif self.killed and now >= self.stop_deadline:
                if now - self.killed_at > STOP_MARGIN_SECONDS:
                    stuck = [str(s.proc.pid) for s in self.slots if s.proc is not None]
                    self.say(f"worker pid(s) {', '.join(stuck)} survive SIGKILL (stuck in the kernel?); leaving them")
                    self._finish_stop()
                else:
                    self.stop_deadline = now + 0.5  # SIGKILL is final; keep reaping
            return
        if now >= self.next_tick:
            self.next_tick = now + self.tick
            self._periodic()

    def _check_ready(self):
        rows = {w["worker_id"]: w for w in self.queue.list_workers()}
        for slot in self.slots:
            row = rows.get(slot.worker_id)
            if slot.state == Slot.STARTING and slot.proc is not None and row and row["pid"] == slot.proc.pid \
                    and row["state"] in READY_STATES:
                slot.state = Slot.READY
        if all(s.state in (Slot.READY, Slot.FAILED) for s in self.slots if s.n <= self.n):
            ready = sum(s.state == Slot.READY for s in self.slots if s.n <= self.n)
            self.state = Coordinator.RUNNING
            self.say(f"pool up: {ready} of {self.n} worker(s) ready")
            self.publish()

    def _check_db(self):
        """True once the database path no longer names the file we opened. The workers then stop
        claiming on their own; no worker is restarted (a new one would open whatever is at the path
        now) and the pool waits to be stopped, saying why in its log and to `status`."""
        if self.db_lost is None:
            lost = self.queue.db_replaced()
            if lost:
                self.db_lost = lost
                self.say(f"error: {lost}; workers claim nothing more, and what they finish now is lost "
                         f"with the old file: stop the pool ({hints.command('stop')}) and start it again")
                self.lock.note_problem(lost)
        return self.db_lost is not None

    def _check_disk(self):
        """While writes fail: keep the workers paused (the "paused" flag, renewed each tick, when the
        database can still be written; otherwise their own writes fail and pause them) and try to
        write the log again. True while still failing."""
        if self.disk_full is None:
            return False
        line = (f"{now_stamp()} coordinator: writes work again after {time.monotonic() - self.disk_full_since:.0f}s "
                f"({self.disk_full}); claiming resumed\n")
        try:
            self.publish()  # the database too: it may be the one on the full disk
            if self.log is not None:
                self.log.write(line.encode())
            flag = self.queue.get_flag("paused")
            if flag and flag["value"].get("reason") == "disk_full":
                self.queue.clear_flag("paused")
        except (OSError, claude_queue.QueueError):
            try:
                flag = self.queue.get_flag("paused")
                if not flag or flag["value"].get("reason") == "disk_full":
                    self.queue.set_flag("paused", {"reason": "disk_full", "message": self.disk_full + "; the pool "
                                                   "pauses claiming until writes work again"},
                                        until=time.time() + max(2.0, 4 * self.tick))
            except claude_queue.QueueError:
                pass
            self.lock.note_problem(self.disk_full)
            return True
        if self.echo:
            eprint(line.rstrip("\n"))
        self.disk_full = self.disk_full_since = None
        self.lock.note_problem(self.db_lost)
        return False

    def _periodic(self):
        if self._check_disk() or self._check_db():
            return
        self._check_resize()  # in case the signal that announces a request was missed
        # recover_stale() takes the write lock even when nothing expired; a read of the (few)
        # running tasks first keeps an idle pool from writing every tick.
        now = time.time()
        if any(t.lease_expires_at is not None and t.lease_expires_at < now
               for t in self.queue.list_tasks(status="in_progress")):
            for tid in self.queue.recover_stale():
                self.say(f"task {tid}: lease expired; returned to the queue")
        rows = {w["worker_id"]: w for w in self.queue.list_workers()}
        for slot in self.slots:
            row = rows.get(slot.worker_id)
            if slot.proc is None or not row or row["pid"] != slot.proc.pid:
                continue
            if slot.state == Slot.STARTING and row["state"] in READY_STATES:
                slot.state = Slot.READY
            silent = time.time() - row["last_heartbeat"]
            if silent > HUNG_LEASES * self.lease:
                # Its lease has long expired and its task runs elsewhere; a restart heals it.
                self.say(f"{slot.worker_id} (pid {slot.proc.pid}) silent for {silent:.0f}s; killing it")
                signal_group(slot.proc.pid, signal.SIGKILL)
        self.queue.checkpoint()  # keeps WAL checkpoints off the workers' claim path
        self._check_idle()

    def _check_idle(self):
        if not self.idle_timeout or self.state != Coordinator.RUNNING:
            return  # start-up time is not idle time
        stats = self.queue.get_stats()
        if stats["pending"] or stats["in_progress"]:
            self.idle_since = None
            return
        now = time.monotonic()
        if self.idle_since is None:
            self.idle_since = now
        elif now - self.idle_since >= self.idle_timeout:
            self.begin_stop(f"idle for {self.idle_timeout:g}s")

    # --- stopping ---

    def begin_stop(self, reason):
        if self.state in (Coordinator.STOPPING, Coordinator.STOPPED):
            return
        self.stop_reason = reason
        self.state = Coordinator.STOPPING
        self.stop_deadline = time.monotonic() + self.grace + STOP_MARGIN_SECONDS
        live = [s for s in self.slots if s.proc is not None]
        self.say(f"stopping ({reason}): SIGTERM to {len(live)} worker(s)")
        for slot in self.slots:
            if slot.state == Slot.BACKOFF:
                slot.state, slot.restart_at = Slot.STOPPED, None
        for slot in live:
            signal_pid(slot.proc.pid, signal.SIGTERM)
        self.publish()

    def _kill_all(self):
        """SIGKILL every live worker's group and the claude group each recorded."""
        self.killed = True
        self.killed_at = time.monotonic()
        self.stop_deadline = self.killed_at + 0.5
        rows = {w["worker_id"]: w for w in self.queue.list_workers()}
        for slot in self.slots:
            if slot.proc is None:
                continue
            row = rows.get(slot.worker_id)
            pgid = (row or {}).get("info", {}).get("claude_pgid") if row and row["pid"] == slot.proc.pid else None
            # Our own unreaped child: its pid (its group, by start_new_session) cannot be reused.
            signal_group(slot.proc.pid, signal.SIGKILL)
            kill_claude_group(pgid, self.cfg.db_path)

    def _finish_stop(self):
        for pid in kill_token_processes(self.token):
            self.say(f"killed process {pid} left behind by a worker")
        self.state = Coordinator.STOPPED

    # --- start-up and shutdown housekeeping ---

    def _clean_up_previous(self, previous):
        """Make the database match reality before starting: workers of a dead pool are waited for
        (they release their tasks when they notice their coordinator is gone), then forgotten."""
        ids = {f"worker_{n}" for n in range(1, self.n + 1)}
        deadline = time.monotonic() + self.grace + STOP_MARGIN_SECONDS
        announced = killed = False
        while True:
            rows = self.queue.list_workers()
            lingering = [w for w in rows if claude_queue.pid_alive(w["pid"]) and
                         claude_queue.is_our_process(w["pid"], "claude_worker.py", self.cfg.db_path) and
                         (w["worker_id"] in ids or "--coordinator-pid" in (claude_queue.process_args(w["pid"]) or []))]
            if not lingering:
                break
            if not announced:
                self.say(f"waiting for {len(lingering)} worker(s) of the previous pool to release their tasks")
                announced = True
            if time.monotonic() >= deadline:
                if killed:
                    self.say(f"pid(s) {', '.join(str(w['pid']) for w in lingering)} survive SIGKILL; going on")
                    break
                for w in lingering:
                    self.say(f"{w['worker_id']} (pid {w['pid']}) of the previous pool did not exit; killing it")
                    kill_recorded_worker(w["pid"], w["info"].get("claude_pgid"), self.cfg.db_path)
                killed, deadline = True, time.monotonic() + 2.0
            time.sleep(0.05)
        for w in self.queue.list_workers():
            if claude_queue.pid_alive(w["pid"]) and claude_queue.is_our_process(w["pid"], "claude_worker.py"):
                continue  # a live worker that is not ours to manage
            pgid = w["info"].get("claude_pgid")
            if kill_claude_group(pgid, self.cfg.db_path):
                self.say(f"killed the orphaned claude of {w['worker_id']} (process group {pgid})")
            for left in processes.kill_run_processes(w["info"].get("run_marker")):
                self.say(f"killed process {left} left behind by the run of {w['worker_id']}")
            for tid in self.queue.recover_stale(worker_id=w["worker_id"]):
                self.say(f"task {tid}: its worker {w['worker_id']} is gone; returned to the queue")
            self.queue.unregister_worker(w["worker_id"])
        if previous and previous.get("token"):
            for pid in kill_token_processes(previous["token"]):
                self.say(f"killed process {pid} left behind by the previous pool")

    def _drain_pipes(self, deadline, slot=None):
        """Copy what the workers (or one slot's workers) still have to say, until end of file or
        the deadline: a leftover grandchild may hold a pipe open forever."""
        while True:
            keys = {k.fd: k for k in self.sel.get_map().values()
                    if k.data is not None and (slot is None or k.data.slot is slot)}
            remaining = deadline - time.monotonic()
            if not keys or remaining <= 0:
                return
            ready, _, _ = select.select(list(keys), [], [], remaining)
            for fd in ready:
                if not keys[fd].data.read():
                    self.sel.unregister(fd)
                    os.close(fd)

    def _close(self):
        try:
            if self.queue is not None:
                flag = self.queue.get_flag(FLAG)
                if flag and flag["value"].get("pid") == os.getpid():
                    self.queue.clear_flag(FLAG)
        except claude_queue.QueueError as exc:
            self.say(f"could not clear the pool flag: {exc}")  # status checks the pid: it reads as stopped
        finally:
            if self.sel is not None:
                for key in list(self.sel.get_map().values()):
                    if key.data is not None:
                        os.close(key.fd)
                self.sel.close()
                signal.set_wakeup_fd(-1)
                os.close(self._wake_r)
                os.close(self._wake_w)
            for slot in self.slots:
                if slot.log is not None:
                    slot.log.close()
            if self.log is not None:
                self.log.close()
            if self.queue is not None:
                self.queue.close()


# --- commands -------------------------------------------------------------------------------------

def _load(args):
    return config.load_config(db=getattr(args, "db", None))


def _wait_gone(pid, timeout):
    """Poll until `pid` is no longer a live coordinator; True if it went within `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not claude_queue.pid_alive(pid) or not claude_queue.is_our_process(pid, "claude_coordinator.py"):
            return True
        time.sleep(0.05)
    return False


def cmd_run(args):
    cfg = _load(args)
    workers = args.workers if args.workers is not None else cfg["workers"]["count"]
    if workers < 1:
        eprint("error: the number of workers must be at least 1")
        return EXIT_USAGE
    if args.detach:
        return start_detached(cfg, workers, args)
    worker_cmd = json.loads(args.worker_cmd) if args.worker_cmd else None
    coordinator = Coordinator(cfg, workers, worker_cmd=worker_cmd, echo=not args.quiet)
    try:
        return coordinator.run()
    except AlreadyRunning as exc:
        # What was asked for (a pool on this database) is there: say so, not an error.
        print(_already_running(exc.pid, None))
        return EXIT_OK


def _already_running(pid, workers):
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


def start_detached(cfg, workers, args):
    """Start a coordinator in a new session, logging to its file; return once its pool is up."""
    queue = open_queue(cfg)
    try:
        running = claude_queue.running_coordinator(queue)
        if running:
            print(_already_running(running["pid"], running.get("workers")))
            return EXIT_OK
        log_path = cfg.logs_dir / LOG_NAME
        offset = log_path.stat().st_size if log_path.exists() else 0
        argv = [sys.executable, str(Path(__file__).resolve()), "run", str(workers), "--db", str(cfg.db_path), "--quiet"]
        if args.worker_cmd:
            argv += ["--worker-cmd", args.worker_cmd]
        with open(log_path, "ab") as log:
            child = subprocess.Popen(argv, cwd=str(cfg.root), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                     start_new_session=True)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            rc = child.poll()
            if rc is not None:
                with open(log_path, "rb") as fh:
                    fh.seek(offset)
                    lines = fh.read().decode("utf-8", "replace").splitlines()
                if rc == EXIT_OK:  # another start won the race: its pool is running
                    running = claude_queue.running_coordinator(queue)
                    if running:
                        print(_already_running(running["pid"], running.get("workers")))
                        return EXIT_OK
                eprint(_start_failure(rc, lines) + f" (log: {log_path})")
                return rc if rc in (EXIT_FAIL, EXIT_USAGE) else EXIT_FAIL
            flag = queue.get_flag(FLAG)
            value = flag["value"] if flag else {}
            if value.get("pid") == child.pid and value.get("state") == Coordinator.RUNNING:
                failed = value.get("failed") or {}
                print(f"pool started: {workers - len(failed)} of {workers} worker(s) ready "
                      f"(coordinator pid {child.pid}); log: {log_path}")
                for worker_id, reason in sorted(failed.items()):
                    eprint(f"warning: {worker_id} not running: {reason}")
                return EXIT_OK
            time.sleep(0.02)
        eprint(f"error: the pool (coordinator pid {child.pid}) is still starting after {args.timeout:g}s; "
               f"see {log_path}")
        return EXIT_FAIL
    finally:
        queue.close()


def _beyond_max(cfg, args, workers):
    """An error line when `workers` exceeds [workers] max_workers without --force, else None: each
    worker runs its own claude at its own cost, so a typo like `resize 100` must not start 100."""
    limit = cfg["workers"]["max_workers"]
    if workers is None or workers <= limit or getattr(args, "force", False):
        return None
    return (f"error: {workers} workers is more than [workers] max_workers = {limit} (each runs its own claude, "
            f"at its own cost); pass --force to run {workers} anyway, or raise max_workers in .klauss.toml")


def cmd_start(args):
    args.detach = True
    cfg = _load(args)
    if args.workers is None:
        # Only a number the user typed asks for --force; the configured count stays within the cap.
        args.workers = min(cfg["workers"]["count"], cfg["workers"]["max_workers"])
    problem = _beyond_max(cfg, args, args.workers)
    if problem:
        eprint(problem)
        return EXIT_USAGE
    return cmd_run(args)


def stop_pool(cfg, queue, timeout=None, quiet=False):
    """SIGTERM the coordinator and wait for it; returns an exit code."""
    running = claude_queue.running_coordinator(queue)
    unrecorded = _unrecorded(cfg, running)
    if unrecorded:
        eprint(f"note: coordinator pid {unrecorded['pid']} runs but {unrecorded['problem']}; stopping it "
               f"through its lock file")
        running = unrecorded
    if running is None:
        leftovers = [pid for pid, _pgid, _role in _recorded_pool_processes(cfg, queue) if pid is not None]
        for pid in leftovers:
            signal_pid(pid, signal.SIGTERM)
        if leftovers:
            eprint(f"no coordinator running; asked {len(leftovers)} leftover worker(s) to stop")
        elif not quiet:
            print("no pool running")
        return EXIT_OK
    pid = running["pid"]
    grace = cfg["workers"]["shutdown_grace_seconds"]
    timeout = timeout if timeout is not None else grace + STOP_MARGIN_SECONDS + 10
    if not quiet:
        print(f"stopping the pool (coordinator pid {pid}); running tasks get {grace:g}s to finish")
    signal_pid(pid, signal.SIGTERM)
    if not _wait_gone(pid, timeout):
        eprint(f"error: the coordinator (pid {pid}) is still running after {timeout:g}s; use {hints.command('kill')}")
        return EXIT_FAIL
    if not quiet:
        print("stopped")
    return EXIT_OK


def _recorded_pool_processes(cfg, queue):
    """[(pid, claude_pgid, role)] of live workers our database records, verified to be workers
    for this database (a recycled pid is not ours)."""
    found = []
    for w in queue.list_workers():
        if claude_queue.pid_alive(w["pid"]) and claude_queue.is_our_process(w["pid"], "claude_worker.py", cfg.db_path):
            found.append((w["pid"], w["info"].get("claude_pgid"), w["worker_id"]))
        elif w["info"].get("claude_pgid") and owned_claude_group(w["info"]["claude_pgid"], cfg.db_path):
            found.append((None, w["info"]["claude_pgid"], w["worker_id"]))
    return found


def cmd_stop(args):
    cfg = _load(args)
    queue = open_queue(cfg, create=False)
    try:
        return stop_pool(cfg, queue, timeout=args.timeout)
    finally:
        queue.close()


def cmd_kill(args):
    """SIGKILL the coordinator, its workers and their claude groups (recorded pids only), then
    give their tasks back."""
    cfg = _load(args)
    queue = open_queue(cfg, create=False)
    try:
        killed = []
        flag = queue.get_flag(FLAG)
        value = flag["value"] if flag else {}
        pid = value.get("pid")
        if pid and claude_queue.pid_alive(pid) and claude_queue.is_our_process(pid, "claude_coordinator.py", cfg.db_path):
            signal_pid(pid, signal.SIGKILL)  # first, so it restarts nothing
            killed.append(f"coordinator {pid}")
        victims = [pid] if killed else []
        for wpid, pgid, worker_id in _recorded_pool_processes(cfg, queue):
            if kill_recorded_worker(wpid, pgid, cfg.db_path) if wpid else kill_claude_group(pgid, cfg.db_path):
                killed.append(f"{worker_id} {wpid or 'claude group ' + str(pgid)}")
                victims.append(wpid)
        killed += [f"leftover {p}" for p in kill_token_processes(value.get("token"))]
        unrecorded = None if killed else _unrecorded(cfg, claude_queue.running_coordinator(queue))
        if unrecorded:
            eprint(f"note: coordinator pid {unrecorded['pid']} runs but {unrecorded['problem']}; killing it "
                   "and its workers, found through its lock file")
            killed += _kill_unrecorded_pool(unrecorded["pid"])
        # SIGKILL is delivered asynchronously: only a worker seen dead may have its task given back.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and process_table([p for p in victims if p]):
            time.sleep(0.02)
        returned = []
        for w in queue.list_workers():
            if not claude_queue.pid_alive(w["pid"]) or not claude_queue.is_our_process(w["pid"], "claude_worker.py"):
                killed += [f"leftover {p}" for p in processes.kill_run_processes(w["info"].get("run_marker"))]
                for task in queue.list_tasks(status="in_progress", worker_id=w["worker_id"]):
                    if queue.release_task(task.id, w["worker_id"], reason="pool killed", attempt=task.attempt):
                        returned.append(task.id)
                queue.unregister_worker(w["worker_id"])
        if flag and not claude_queue.is_our_process(pid, "claude_coordinator.py"):
            queue.clear_flag(FLAG)
        print(f"killed: {', '.join(killed)}" if killed else "nothing to kill")
        if returned:
            print(f"returned to the queue: {', '.join(f'#{t}' for t in returned)}")
        return EXIT_OK
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
        if any(Path(a).name == "claude_worker.py" for a in args[:3]) and \
                _arg_after(args, "--coordinator-pid") == str(pid):
            token = processes.env_value(wpid, POOL_TOKEN_VAR)
            if token:
                tokens.add(token.split(":", 1)[0])
            if signal_group(wpid, signal.SIGKILL) if entry["pgid"] == wpid else signal_pid(wpid, signal.SIGKILL):
                killed.append(f"worker {wpid}")
    for token in tokens:
        killed += [f"leftover {p}" for p in kill_token_processes(token)]
    return killed


def _arg_after(args, name):
    return args[args.index(name) + 1] if name in args[:-1] else None


def cmd_resize(args):
    """Ask the running coordinator for N workers and wait until they are ready."""
    if args.workers is None or args.workers < 1:
        eprint("error: resize needs the number of workers, at least 1")
        return EXIT_USAGE
    cfg = _load(args)
    problem = _beyond_max(cfg, args, args.workers)
    if problem:
        eprint(problem)
        return EXIT_USAGE
    queue = open_queue(cfg, create=False)
    try:
        running = claude_queue.running_coordinator(queue)
        if running is None:
            eprint(f"error: no pool running; start one with {hints.command('start', args.workers)}")
            return EXIT_FAIL
        pid = running["pid"]
        queue.set_flag(RESIZE_FLAG, {"workers": args.workers})
        signal_pid(pid, signal.SIGUSR1)
        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            flag = queue.get_flag(FLAG)
            value = flag["value"] if flag else {}
            if value.get("pid") != pid:
                eprint(f"error: the pool stopped while resizing; see {hints.command('logs')}")
                return EXIT_FAIL
            if value.get("base_workers", value.get("workers")) == args.workers \
                    and value.get("state") == Coordinator.RUNNING and not queue.get_flag(RESIZE_FLAG):
                print(f"pool resized to {args.workers} worker(s) (coordinator pid {pid})")
                return EXIT_OK
            time.sleep(0.02)
        eprint(f"error: the pool did not reach {args.workers} ready worker(s) within {args.timeout:g}s")
        return EXIT_FAIL
    finally:
        queue.close()


def cmd_restart(args):
    cfg = _load(args)
    queue = open_queue(cfg, create=False)
    try:
        running = claude_queue.running_coordinator(queue)
        if args.workers is None and running:
            args.workers = running.get("workers")
            args.force = True  # as many as before, however many that was
        problem = _beyond_max(cfg, args, args.workers if args.workers is not None else cfg["workers"]["count"])
        if problem:  # refused before the running pool is stopped
            eprint(problem)
            return EXIT_USAGE
        rc = stop_pool(cfg, queue, quiet=running is None)
    finally:
        queue.close()
    if rc != EXIT_OK:
        return rc
    return cmd_start(args)


# --- status and ps ---

def _fmt_age(seconds):
    if seconds is None:
        return "-"
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _fmt_mem(kb):
    if kb is None:
        return "-"
    return f"{kb / 1024:.0f}M" if kb < 1024 * 1024 else f"{kb / 1024 / 1024:.1f}G"


def disk_full_note(cfg):
    return claude_queue.disk_full_note(cfg.state_dir, cfg.db_path.parent)


def pool_status(cfg, queue):
    """Everything `status` shows, as plain data (also its --json output)."""
    running = claude_queue.running_coordinator(queue)
    rows = queue.list_workers()
    pids = [w["pid"] for w in rows] + [w["info"].get("claude_pid") for w in rows if w["info"].get("claude_pid")]
    if running:
        pids.append(running["pid"])
    table = process_table([p for p in pids if p])
    now = time.time()
    ours = (running or {}).get("worker_pids", {})
    workers = []
    for w in rows:
        proc = table.get(w["pid"])
        alive = proc is not None and any(Path(a).name == "claude_worker.py" for a in proc["args"][:3])
        claude = table.get(w["info"].get("claude_pid")) if w["info"].get("claude_pid") else None
        workers.append({
            "worker_id": w["worker_id"], "pid": w["pid"], "alive": alive, "state": w["state"] if alive else "dead",
            "current_task": w["current_task"], "in_pool": ours.get(w["worker_id"]) == w["pid"],
            "heartbeat_age": round(now - w["last_heartbeat"], 1), "started_at": w["started_at"],
            "cpu_percent": proc["cpu_percent"] if proc else None, "rss_kb": proc["rss_kb"] if proc else None,
            "claude_pid": w["info"].get("claude_pid") if claude else None,
            "claude_cpu_percent": claude["cpu_percent"] if claude else None,
            "claude_rss_kb": claude["rss_kb"] if claude else None,
        })
    coordinator = None
    if running:
        proc = table.get(running["pid"])
        coordinator = {**{k: v for k, v in running.items() if k != "token"},
                       "uptime": round(now - running.get("started_at", now), 1),
                       "cpu_percent": proc["cpu_percent"] if proc else None, "rss_kb": proc["rss_kb"] if proc else None}
    flags = {key: queue.get_flag(key) for key in ("config_error", "paused")}
    unrecorded = _unrecorded(cfg, running)
    problem = (unrecorded or locked_coordinator(cfg.state_dir) or {}).get("problem")
    return {"running": running is not None or unrecorded is not None, "unrecorded_coordinator": unrecorded,
            "problem": problem, "disk_full": disk_full_note(cfg), "db": str(cfg.db_path), "state_dir": str(cfg.state_dir),
            "coordinator": coordinator, "workers": workers, "queue": queue.get_stats(),
            "config_error": flags["config_error"]["value"] if flags["config_error"] else None,
            "paused": flags["paused"] if flags["paused"] else None, "pool_state": task_report.pool_state(queue)}


def cmd_status(args):
    cfg = _load(args)
    queue = open_queue(cfg, create=False)
    try:
        st = pool_status(cfg, queue)
    finally:
        queue.close()
    if args.json:
        print(json.dumps(st, indent=2, sort_keys=True))
        return EXIT_OK
    c = st["coordinator"]
    if c:
        print(f"pool: {c.get('state')}, coordinator pid {c['pid']}, {c.get('workers')} worker(s), "
              f"up {_fmt_age(c['uptime'])}")
        for worker_id, reason in sorted((c.get("failed") or {}).items()):
            print(f"  {worker_id} gave up: {reason}")
        if st["problem"]:
            print(f"problem: {st['problem']}")
    elif st["unrecorded_coordinator"]:
        u = st["unrecorded_coordinator"]
        print(f"pool: coordinator pid {u['pid']} is running, but {u['problem']}; it claims nothing: "
              f"stop it with {hints.command('stop')} (or {hints.command('kill')})")
    else:
        # The command alone, so that it runs as printed ("start [N]" did not).
        print(f"pool: not running (start it with `{hints.command('start')}`, followed by a number of workers "
              "if not [workers] count)")
    print(f"database: {st['db']}")
    if st["disk_full"]:
        print(f"{st['disk_full']}: the pool pauses claiming until writes work again; free some space")
    if st["pool_state"]["state"] in ("config_error", "paused"):
        print(st["pool_state"]["text"])
    if st["workers"]:
        print(f"{'WORKER':<12} {'PID':>7} {'STATE':<12} {'TASK':>6} {'CPU%':>6} {'MEM':>6} {'BEAT':>6}  CLAUDE")
        for w in st["workers"]:
            claude = (f"pid {w['claude_pid']} {w['claude_cpu_percent']:.1f}% {_fmt_mem(w['claude_rss_kb'])}"
                      if w["claude_pid"] else "-")
            task = f"#{w['current_task']}" if w["current_task"] else "-"
            cpu = f"{w['cpu_percent']:.1f}" if w["cpu_percent"] is not None else "-"
            print(f"{w['worker_id']:<12} {w['pid']:>7} {w['state']:<12} {task:>6} {cpu:>6} "
                  f"{_fmt_mem(w['rss_kb']):>6} {_fmt_age(w['heartbeat_age']):>6}  {claude}")
    q = st["queue"]
    print(f"queue: {q['pending']} pending, {q['in_progress']} running, {q['completed']} completed, "
          f"{q['failed']} failed, {q['cancelled']} cancelled, {q['skipped']} skipped ({q['total']} total)")
    return EXIT_OK


def pool_processes(cfg, queue):
    """Our processes: the coordinator, each recorded worker, and every member of each recorded
    claude process group."""
    running = claude_queue.running_coordinator(queue)
    rows = queue.list_workers()
    table = process_table()
    found = []
    if running and running["pid"] in table:
        found.append(("coordinator", table[running["pid"]]))
    for w in rows:
        proc = table.get(w["pid"])
        if proc and any(Path(a).name == "claude_worker.py" for a in proc["args"][:3]):
            found.append((w["worker_id"], proc))
        pgid = w["info"].get("claude_pgid")
        if pgid:
            task = f", task {w['current_task']}" if w["current_task"] else ""
            for member in sorted((p for p in table.values() if p["pgid"] == pgid), key=lambda p: p["pid"]):
                role = "claude" if member["pid"] == pgid else "claude child"
                found.append((f"{role} ({w['worker_id']}{task})", member))
    return found


def cmd_ps(args):
    cfg = _load(args)
    queue = open_queue(cfg, create=False)
    try:
        found = pool_processes(cfg, queue)
    finally:
        queue.close()
    if args.json:
        print(json.dumps([{"role": role, **proc} for role, proc in found], indent=2))
        return EXIT_OK
    if not found:
        print("no Klauss processes running for this project")
        return EXIT_OK
    print(f"{'PID':>7} {'PPID':>7} {'PGID':>7} {'CPU%':>6} {'MEM':>6} {'AGE':>7}  {'ROLE':<28} COMMAND")
    for role, p in found:
        print(f"{p['pid']:>7} {p['ppid']:>7} {p['pgid']:>7} {p['cpu_percent']:>6.1f} {_fmt_mem(p['rss_kb']):>6} "
              f"{_fmt_age(p['elapsed']):>7}  {role:<28} {' '.join(p['args'])[:100]}")
    return EXIT_OK


# --- logs ---

def _tail_lines(path, n):
    """The last `n` lines of `path`, and the offset they end at (where following starts)."""
    try:
        with open(path, "rb") as fh:
            start = max(0, fh.seek(0, os.SEEK_END) - max(4096, n * 400))
            fh.seek(start)
            data = fh.read()
    except OSError:
        return [], 0
    lines = data.decode("utf-8", "replace").splitlines()
    return (lines[-n:] if n else []), start + len(data)


def _follow(path, pos):
    """Print what is appended to `path` from `pos` on, until interrupted (like tail -f; survives
    truncation)."""
    try:
        while True:
            try:
                size = path.stat().st_size
            except OSError:
                size = 0
            if size < pos:
                pos = 0
            if size > pos:
                with open(path, "rb") as fh:
                    fh.seek(pos)
                    data = fh.read()
                pos += len(data)
                sys.stdout.write(data.decode("utf-8", "replace"))
                sys.stdout.flush()
            time.sleep(0.25)
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_logs(args):
    cfg = _load(args)
    what = args.what
    if not what or what == ["coordinator"]:
        path = cfg.logs_dir / LOG_NAME
    elif len(what) == 2 and what[0] == "worker" and what[1].isdigit():
        path = cfg.logs_dir / f"worker_{int(what[1])}.log"
    elif len(what) == 2 and what[0] == "task" and what[1].lstrip("#").isdigit():
        return _task_logs(cfg, int(what[1].lstrip("#")), args)
    else:
        eprint("usage: logs [coordinator | worker N | task ID] [-f] [-n LINES]")
        return EXIT_USAGE
    if not path.exists() and not args.follow:
        eprint(f"error: no log yet at {path}")
        return EXIT_FAIL
    lines, end = _tail_lines(path, args.lines)
    for line in lines:
        print(line)
    if args.follow:
        sys.stdout.flush()
        return _follow(path, end)
    return EXIT_OK


def _task_logs(cfg, task_id, args):
    """A task's history from the database, what the workers logged about it, and its transcripts."""
    queue = open_queue(cfg, create=False)
    try:
        task = queue.get_task(task_id)
        if task is None:
            eprint(f"error: no task {task_id}")
            return EXIT_FAIL
        events = queue.get_events(task_id)
    finally:
        queue.close()
    print(f"task {task_id}: {task_report.status_word(task.status)}" + (f" ({task.error})" if task.error else ""))
    for e in events:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
        who = f" {e['worker_id']}" if e["worker_id"] else ""
        print(f"  {stamp} {e['event']}{who}" + (f": {e['detail']}" if e["detail"] else ""))
    pattern = re.compile(rf"\btask #?{task_id}\b")
    lines = []
    for log in sorted(cfg.logs_dir.glob("worker_*.log")):
        try:
            text = log.read_text(errors="replace")
        except OSError:
            continue
        lines += [(line[:23], log.stem, line) for line in text.splitlines() if pattern.search(line)]
    if lines:
        print("worker logs:")
        for _, name, line in sorted(lines)[-args.lines:]:
            print(f"  {name}: {line}")
    transcripts = sorted((cfg.logs_dir / "tasks").glob(f"task-{task_id}-attempt-*.jsonl"),
                         key=lambda p: int(p.stem.rsplit("-", 1)[1]))
    for path in transcripts:
        print(f"transcript: {path}")
    if args.follow and transcripts:
        sys.stdout.flush()
        return _follow(transcripts[-1], transcripts[-1].stat().st_size)
    return EXIT_OK


# --- init-config, clean, doctor ---

def cmd_init_config(args):
    root = config.find_project_root()
    path = root / config.CONFIG_FILENAME
    if path.exists():
        eprint(f"{path} already exists; left unchanged (delete it to write the defaults again)")
        return EXIT_OK
    path.write_text(config.render_default_config())
    print(f"wrote {path}")
    return EXIT_OK


def cmd_clean(args):
    cfg = _load(args)
    try:
        queue = open_queue(cfg, create=False)
    except claude_queue.DatabaseBroken:
        # Unreadable: cleaning it away is the fix; the lock still tells whether a pool runs on it.
        queue = _NoQueue()
    try:
        running = claude_queue.running_coordinator(queue) or locked_coordinator(cfg.state_dir)
        live = _recorded_pool_processes(cfg, queue)
        stats = queue.get_stats()
    finally:
        queue.close()
    if running or live:
        eprint(f"error: a pool is running; stop it first ({hints.command('stop')}), then clean")
        return EXIT_FAIL
    logs = [p for p in cfg.logs_dir.glob("*.log")] + list((cfg.logs_dir / "tasks").glob("*.jsonl"))
    targets = logs + [cfg.state_dir / PID_NAME]
    wake_dir = config.wake_dir(cfg.db_path)  # the idle workers' wake-up FIFOs
    if not args.logs:
        db = str(cfg.db_path)
        targets += [Path(db), Path(db + "-wal"), Path(db + "-shm")]
        if wake_dir.is_dir():
            targets += [p for p in wake_dir.iterdir() if p.name.endswith((".fifo", ".tmp"))]
    targets = [p for p in targets if p.exists()]
    if not targets:
        print("nothing to clean")
        return EXIT_OK
    what = f"{len(logs)} log file(s) in {cfg.logs_dir}"
    if not args.logs:
        what = f"the database {cfg.db_path} ({stats['total']} task(s)) and " + what
    if not args.yes:
        if not sys.stdin.isatty():
            eprint(f"error: this deletes {what}; pass --yes to confirm")
            return EXIT_USAGE
        answer = input(f"Delete {what}? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("nothing deleted")
            return EXIT_FAIL
    for path in targets:
        path.unlink()
    for folder in (cfg.logs_dir / "tasks", cfg.logs_dir, wake_dir):
        try:
            folder.rmdir()
        except OSError:
            pass
    print(f"deleted {what}")
    return EXIT_OK


def doctor_checks(args):
    """[(ok: True/False/None for a warning, name, detail, fix)] for `doctor`."""
    checks = []
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] >= MIN_PYTHON:
        checks.append((True, "python", f"{version} ({sys.executable})", None))
    else:
        checks.append((False, "python", version, "Klauss needs Python 3.9 or newer"))
    if sys.version_info >= (3, 11):
        checks.append((True, "toml", "tomllib (built in)", None))
    elif config.tomllib is not None:
        checks.append((True, "toml", "tomli installed", None))
    else:
        checks.append((False, "toml", "tomli is missing (Python < 3.11 needs it to read .klauss.toml)",
                       f"{sys.executable} -m pip install -r {HERE / 'requirements.txt'}"))
    try:
        cfg = _load(args)
    except config.ConfigError as exc:
        checks.append((False, "config", str(exc), "fix the file named above"))
        return checks
    checks.append((True, "config", str(cfg.config_file) if cfg.config_file else
                   f"defaults (no .klauss.toml; {hints.command('init-config')} writes one)", None))
    checks += _claude_checks(cfg["claude"]["command"], cfg["claude"]["env"])
    try:
        queue = open_queue(cfg)
        try:
            queue.set_flag("doctor", {"pid": os.getpid()})
            queue.clear_flag("doctor")
            checks.append((True, "database", f"{cfg.db_path} is writable", None))
            running = claude_queue.running_coordinator(queue)
            if running:
                live = sum(1 for w in queue.list_workers() if claude_queue.is_our_process(w["pid"], "claude_worker.py"))
                checks.append((True, "pool", f"running: coordinator pid {running['pid']}, {live} worker(s) alive", None))
            else:
                checks.append((True, "pool", "not running", None))
            problem = queue.get_flag("config_error")
            if problem:
                checks.append((False, "workers", f"stopped on a configuration error: {problem['value'].get('message')}",
                               problem["value"].get("fix")))
        finally:
            queue.close()
    except claude_queue.DatabaseBroken as exc:
        checks.append((False, "database", str(exc)[:-len(exc.fix) - 2], exc.fix))
    except (claude_queue.QueueError, OSError, sqlite3.Error) as exc:
        checks.append((False, "database", f"{cfg.db_path}: {exc}",
                       "make the state directory writable, or pass --db / set KLAUSS_DB"))
    return checks


def _claude_checks(command, extra_env):
    path = shutil.which(command)
    if path is None:
        return [(False, "claude", f"{command!r} not found on PATH",
                 "npm install -g @anthropic-ai/claude-code, or set [claude] command in .klauss.toml "
                 "(or KLAUSS_CLAUDE) to its path")]
    env = {**os.environ, **extra_env}
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30,
                             stdin=subprocess.DEVNULL, env=env)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [(False, "claude", f"{path} cannot be run: {exc}", "reinstall the Claude Code CLI")]
    if out.returncode != 0:
        return [(False, "claude", f"'{path} --version' failed (exit {out.returncode}): "
                 f"{(out.stderr or out.stdout).strip()[-200:]}", "reinstall the Claude Code CLI")]
    checks = [(True, "claude", f"{path}: {out.stdout.strip()}", None)]
    login_fix = "run `claude` once and log in (/login), or set ANTHROPIC_API_KEY"
    try:
        auth = subprocess.run([path, "auth", "status"], capture_output=True, text=True, timeout=30,
                              stdin=subprocess.DEVNULL, env=env)
        status = json.loads(auth.stdout) if auth.stdout.strip().startswith("{") else None
    except (OSError, subprocess.TimeoutExpired, ValueError):
        auth, status = None, None
    if isinstance(status, dict) and isinstance(status.get("loggedIn"), bool):
        if status["loggedIn"]:
            method = status.get("authMethod") or status.get("apiProvider") or "yes"
            checks.append((True, "login", f"logged in ({method})", None))
        else:
            checks.append((False, "login", "not logged in", login_fix))
    elif auth is not None and "not logged in" in (auth.stdout + auth.stderr).lower():
        checks.append((False, "login", "not logged in", login_fix))
    elif env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_AUTH_TOKEN") or env.get("CLAUDE_CODE_OAUTH_TOKEN"):
        checks.append((True, "login", "an API key or token is set in the environment", None))
    else:
        home = Path(env.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude")
        if (home / ".credentials.json").exists():
            checks.append((True, "login", f"credentials found in {home}", None))
        else:
            checks.append((None, "login", "could not tell (this claude has no `auth status`)",
                           "if tasks fail with 'Not logged in', " + login_fix))
    return checks


def cmd_doctor(args):
    checks = doctor_checks(args)
    if args.json:
        print(json.dumps([{"ok": ok, "check": name, "detail": detail, "fix": fix}
                          for ok, name, detail, fix in checks], indent=2))
    else:
        for ok, name, detail, fix in checks:
            mark = {True: "OK  ", False: "FAIL", None: "WARN"}[ok]
            print(f"{mark} {name}: {detail}" + (f"\n     fix: {fix}" if fix else ""))
    return EXIT_OK if all(ok is not False for ok, *_ in checks) else EXIT_FAIL


# --- argument parsing -----------------------------------------------------------------------------

COMMANDS = {
    "start": "start [N]          start a pool of N workers in the background (default: [workers] count)",
    "stop": "stop               stop the pool gracefully (running tasks are released)",
    "kill": "kill               kill the pool now (only this project's recorded processes)",
    "restart": "restart [N]        stop, then start N workers (default: as many as before)",
    "resize": "resize N [--force] grow or shrink the running pool to N workers (--force: past max_workers)",
    "status": "status             the pool, each worker (pid, CPU, memory, task) and the queue counts",
    "workers": "workers            same as status",
    "ps": "ps                 our processes and their claude children",
    "logs": "logs [worker N | task ID] [-f]   the coordinator's log, a worker's, or a task's history",
    "init-config": "init-config        write a commented .klauss.toml at the project root (never overwrites)",
    "clean": "clean [--logs]     delete the database and logs (asks first; --yes for scripts)",
    "doctor": "doctor             check Python, tomli, claude, login, database and pool",
    "run": "run [N] [DB]       run a pool in the foreground (--detach: in the background)",
    "help": "help               this list",
}


def _common(parser, json_flag=False):
    parser.add_argument("--db", help="the database (default: the project's .klauss/claude_tasks.db)")
    if json_flag:
        parser.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser():
    ap = argparse.ArgumentParser(prog="claude_coordinator.py", description="Run and control a pool of Klauss workers.")
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name in ("run", "start", "restart", "resize"):
        p = sub.add_parser(name, help=COMMANDS[name])
        p.add_argument("workers_pos", nargs="?", type=int, metavar="N", help="how many workers")
        if name == "run":
            p.add_argument("db_pos", nargs="?", metavar="DB", help="the database (same as --db)")
        if name in ("run", "start"):
            p.add_argument("--detach", action="store_true", help="run in the background; return once the pool is up"
                           + (" (always so for start)" if name == "start" else ""))
        p.add_argument("--workers", type=int, help="how many workers (same as N)")
        if name != "run":
            p.add_argument("--force", action="store_true", help="allow more than [workers] max_workers")
        p.add_argument("--timeout", type=float, default=START_TIMEOUT_SECONDS, help="with --detach: longest wait for the pool")
        p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
        p.add_argument("--worker-cmd", help=argparse.SUPPRESS)  # tests: a JSON argv prefix instead of claude_worker.py
        _common(p)
    p = sub.add_parser("stop", help=COMMANDS["stop"])
    p.add_argument("--timeout", type=float, help="longest wait for the pool to stop")
    p.add_argument("--wait", action="store_true", help="wait until it has stopped (always so)")
    _common(p)
    p = sub.add_parser("kill", help=COMMANDS["kill"])
    _common(p)
    for name in ("status", "workers", "ps"):
        _common(sub.add_parser(name, help=COMMANDS[name]), json_flag=True)
    p = sub.add_parser("logs", help=COMMANDS["logs"])
    p.add_argument("what", nargs="*", help="coordinator | worker N | task ID")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing what is appended")
    p.add_argument("-n", "--lines", type=int, default=50, help="how many lines (default 50)")
    _common(p)
    sub.add_parser("init-config", help=COMMANDS["init-config"])
    p = sub.add_parser("clean", help=COMMANDS["clean"])
    p.add_argument("--yes", "-y", action="store_true", help="do not ask")
    p.add_argument("--logs", action="store_true", help="delete only the logs, keep the database")
    _common(p)
    _common(sub.add_parser("doctor", help=COMMANDS["doctor"]), json_flag=True)
    sub.add_parser("help", help=COMMANDS["help"])
    return ap


HANDLERS = {"run": cmd_run, "start": cmd_start, "stop": cmd_stop, "kill": cmd_kill, "restart": cmd_restart,
            "resize": cmd_resize,
            "status": cmd_status, "workers": cmd_status, "ps": cmd_ps, "logs": cmd_logs,
            "init-config": cmd_init_config, "clean": cmd_clean, "doctor": cmd_doctor}


def print_help(out=sys.stdout):
    print("usage: manage.sh COMMAND [ARGS]   (or: python claude_coordinator.py COMMAND [ARGS])", file=out)
    for line in COMMANDS.values():
        print("  " + line, file=out)
    print("  submit, submit-file, list, show, stats, cancel, retry: the queue (submit_task.py)", file=out)
    print("  dashboard: the live view (claude_dashboard.py)", file=out)
    print("Every command takes --db PATH; `COMMAND --help` for its options.", file=out)


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    # `claude_coordinator.py [N] [DB] [--workers N] ...` with no command means `run`.
    if not argv or argv[0] not in HANDLERS and argv[0] not in ("help", "-h", "--help"):
        argv = ["run", *argv]
    if argv[0] in ("help", "-h", "--help"):
        print_help()
        return EXIT_OK
    args = build_parser().parse_args(argv)
    if args.command in ("run", "start", "restart", "resize"):
        if args.workers is not None and args.workers_pos is not None and args.workers != args.workers_pos:
            eprint("error: N and --workers disagree")
            return EXIT_USAGE
        args.workers = args.workers if args.workers is not None else args.workers_pos
        if getattr(args, "db_pos", None):
            if args.db and args.db != args.db_pos:
                eprint("error: DB and --db disagree")
                return EXIT_USAGE
            args.db = args.db_pos
        args.detach = getattr(args, "detach", False)
    try:
        return HANDLERS[args.command](args)
    except config.ConfigError as exc:
        eprint(f"error: {exc}")
        return EXIT_USAGE
    except claude_queue.QueueError as exc:
        eprint(f"error: {exc}")
        return EXIT_FAIL
    except BrokenPipeError:
        raise  # the reader went away: exits.run ends quietly
    except OSError as exc:  # a read-only or full file system under the state directory
        eprint(f"error: cannot write {exc.filename or 'a file'}: {exc.strerror or exc}")
        return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(exits.run(main))
