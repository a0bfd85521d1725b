"""The supervisor: one coordinator process keeping N `claude_worker.py` processes healthy for one
database. Mechanism only: policy comes from the configuration, control requests arrive as pool
flags (pool.py writes them), and its log and the "coordinator" flag are its only output.

Data flow (each box one process; arrows are the only channels between them):

    pool.py (manage.sh, orchestrator, MCP)           claude_worker.py (one per slot)
      | writes flags: resize, borrow:<task>          ^  spawned with --coordinator-pid, its own session
      | sends SIGTERM (stop), SIGUSR1 (re-read size) |  SIGTERM: release the task and exit
      v                                              |
    +------------------------------------------------+-----------------------------------------+
    | Coordinator.run -> _supervise: one loop around one wait point                             |
    |   _wait()            select() over worker pipes + a signal wake-up fd, until the next timer |
    |   _handle_signals()  SIGTERM/INT/HUP -> begin_stop; SIGUSR1 -> _check_resize              |
    |   _reap()            a worker exited -> _on_exit: kill what it left, return its task,      |
    |                      then READY again / BACKOFF (restart later) / FAILED (give up)          |
    |   _timers()          restarts due, readiness, the stop deadline, _periodic every tick      |
    +--------------------------------------------------------------------------------------------+
      | publishes the "coordinator" flag (pid, size, state, worker pids, failed slots)
      v
    the database (pool_flags, workers, tasks) -> pool.status, admin views, the dashboard

The coordinator's states: STARTING (workers launched, not all ready) -> RUNNING -> STOPPING
(workers got SIGTERM and have `shutdown_grace_seconds` plus a margin to release their tasks and
exit) -> STOPPED (what is left is SIGKILLed by process group, tasks returned, the pool flag
cleared). Growing the pool goes RUNNING -> STARTING again until the new workers are ready.

A database that cannot be reached (its server restarting, a lock nobody lets go) stops nothing: the
loop goes on, no worker is restarted, and each tick tries the database again (_check_db_back).

Each worker slot is STARTING, READY, BACKOFF (dead, restart scheduled), FAILED (gave up: a
configuration error, or `max_fast_crashes` immediate crashes in a row) or STOPPED. When a worker
dies, the claude process group it recorded is killed and its task returned at once
(`recover_stale(worker_id=...)`), before a new worker takes the same id.

One coordinator per state directory is guaranteed by an `flock` on `<state>/coordinator.lock`
(PoolLock), held for the coordinator's lifetime (a crash releases it); one per host per database by
the `coordinator@<host>` flag. Several hosts may share the database (hosts.py): a coordinator
manages, and judges by pid, only its own host's workers (`worker_<n>@<host>`); any host returns
tasks whose leases expired, wherever they ran.
"""

import errno
import fcntl
import os
import re
import select
import selectors
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

import claude_queue
import config
import flags
import hints
import hosts
import processes
import states
from exits import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, EXIT_USAGE
from processes import (
    POOL_TOKEN_VAR,
    kill_claude_group,
    kill_recorded_worker,
    kill_token_processes,
    signal_group,
    signal_pid,
)

HERE = Path(__file__).resolve().parent
WORKER_SCRIPT = HERE / processes.WORKER_SCRIPT

# Worker exit codes a restart cannot fix (bad configuration, claude missing or logged out).
WORKER_FATAL_CODES = {EXIT_USAGE: "configuration error", EXIT_CONFIG: "configuration error"}

LOCK_NAME = "coordinator.lock"
PID_NAME = "coordinator.pid"
# One line a running coordinator leaves beside its pid file when it can no longer say it through
# the database (deleted or replaced under it, or a full disk): control commands read it there.
PROBLEM_NAME = "coordinator.problem"
LOG_NAME = "coordinator.log"
NO_WORKER = "no worker can run:"  # `start` finds the reason after this in the coordinator's log

FAST_CRASH_SECONDS = 10.0     # a worker that dies sooner than this counted as an immediate crash
FIRST_BACKOFF_SECONDS = 0.5   # doubled per consecutive immediate crash, up to the configured max
STOP_MARGIN_SECONDS = 5.0     # beyond the grace: time for a worker to release, unregister, exit


def now_stamp():
    t = time.time()
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) + f".{int(t % 1 * 1000):03d}"


def eprint(*parts):
    print(*parts, file=sys.stderr, flush=True)




# --- one coordinator per state directory ------------------------------------------------------

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
    if not pid or not processes.is_our_process(pid, processes.COORDINATOR_SCRIPT):
        return None
    try:
        problem = (Path(state_dir) / PROBLEM_NAME).read_text().strip() or None
    except OSError:
        problem = None
    return {"pid": pid, "problem": problem}


# --- the supervisor -------------------------------------------------------------------------------

class Slot:
    """One worker id and the process currently running it."""

    STARTING, READY, BACKOFF, FAILED, STOPPED = "starting", "ready", "backoff", "failed", "stopped"

    def __init__(self, n, log_path, on_error=None, host=None):
        self.n = n
        self.worker_id = hosts.worker_id(n, host) if host else f"worker_{n}"
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
    """The supervisor of one pool (see the module docstring); `run()` returns its exit code."""

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
        self.tick = cfg.supervisor_tick  # one timer for the periodic work
        self.host = cfg.host
        self.state = None
        self.subreaper = False
        self.token = os.urandom(16).hex()  # 32 hex digits, as uuid4().hex, without importing uuid
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
        self.published_at = 0.0
        self.started_at = time.time()
        self.log_path = cfg.logs_dir / LOG_NAME
        self.log = None
        self.db_lost = None       # why the database can no longer be trusted (see _check_db)
        self.disk_full = None     # why writes fail (see _check_disk); the pool pauses meanwhile
        self.disk_full_since = None
        self.db_down = None       # why the database cannot be reached now (see _check_db_back)
        self.db_down_since = None
        self.db_back_at = 0.0     # when it came back (epoch): no heartbeat could be written before
        self.deferred = []        # workers that ended while it was down: their clean-up waits for it

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
        self.published_at = time.monotonic()
        self.queue.set_flag(flags.coordinator(self.host), {
            "pid": os.getpid(), "host": self.host, "workers": self.n, "base_workers": self.base_n, "state": self.state,
            "started_at": self.started_at, "lease_seconds": self.lease,
            "log": str(self.log_path), "db": config.shown_db(self.cfg.db_path), "token": self.token,
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
            other = self.queue.get_flag(flags.coordinator(self.host))
            other_pid = other and other["value"].get("pid")
            if other_pid and other_pid != os.getpid() and processes.pid_alive(other_pid) and \
                    processes.is_our_process(other_pid, processes.COORDINATOR_SCRIPT, self.cfg.db_path):
                raise AlreadyRunning(other_pid, f"another coordinator (pid {other_pid}) is already running "
                                                f"for {config.shown_db(self.cfg.db_path)} on host {self.host}; stop it first "
                                                f"({hints.command('stop')})")
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
        self.say(f"starting {self.n} worker(s) for {config.shown_db(self.cfg.db_path)} (pid {os.getpid()})")
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
                self._restart_half_handled()
            except claude_queue.DatabaseUnavailable as exc:
                self._database_down(exc)
                self._restart_half_handled()
        self._drain_pipes(deadline=time.monotonic() + 1.0)
        self.say(f"stopped ({self.stop_reason})")
        return self.exit_code

    def _restart_half_handled(self):
        # A worker's exit may have been half handled: have its slot restarted later.
        for slot in self.slots:
            if slot.proc is None and slot.state in (Slot.STARTING, Slot.READY):
                slot.state, slot.restart_at = Slot.BACKOFF, time.monotonic() + self.tick

    def _database_down(self, exc):
        """The server is down or out of reach (or SQLite stayed locked): not a reason to stop. Runs
        go on, the workers wait to record them and claim nothing, no worker is restarted, and each
        tick tries again (_check_db_back)."""
        if self.db_down is None:
            self.db_down, self.db_down_since = str(exc), time.monotonic()
            self.say(f"error: {exc}; the pool waits for the database: runs go on, and nothing is claimed "
                     f"or recorded until it is back")
            self.lock.note_problem(f"waiting for the database: {exc}")

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
        if not self._restarts_held():
            # A held restart is looked at again each tick: its past due time would make the wait
            # return at once, over and over (a busy loop for as long as the hold lasts).
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
                slot = Slot(n, self.cfg.logs_dir / f"worker_{n}.log", on_error=self._write_failed, host=self.host)
                self.slots.append(slot)
                self._spawn(slot)
        self.slots.sort(key=lambda s: s.n)

    def _check_resize(self):
        """Apply a `resize` request (the pool flag "pool_resize") and the slots borrowed by waiting
        parent tasks: grow by starting slots; shrink by stopping the highest-numbered workers once
        they are not busy (a busy one finishes its task first), releasing like at shutdown."""
        if self.state not in (Coordinator.STARTING, Coordinator.RUNNING):
            return
        flag = self.queue.get_flag(flags.resize(self.host))
        if flag:
            self.queue.clear_flag(flags.resize(self.host))
            n = flag["value"].get("workers")
            if isinstance(n, int) and n >= 1:
                self.base_n = n
        # A waiting task lends a slot to the host it runs on.
        borrowed = sum(1 for f in self.queue.list_flags(flags.BORROW_PREFIX).values()
                       if not isinstance(f["value"], dict) or f["value"].get("host", self.host) == self.host)
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
        busy = {w["worker_id"] for w in self.queue.list_workers() if w["state"] == states.BUSY}
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
        db, db_env = config.process_db(self.cfg.db_path)
        argv = [*self.worker_cmd, slot.worker_id, "--db", db, "--coordinator-pid", str(os.getpid())]
        self._spawn_seq += 1
        env = {**os.environ, **db_env, "PYTHONUNBUFFERED": "1", POOL_TOKEN_VAR: self._instance_token(slot.worker_id),
               "KLAUSS_HOST": self.host}
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
        try:
            returned = self._clean_up_worker(slot.worker_id, proc.pid, died=rc != 0, stopping=stopping)
        except claude_queue.DatabaseUnavailable as exc:
            self._database_down(exc)
            # What carries its token (its claude, and what that started) is found without the
            # database: ended now, as its run can no longer be recorded. Its row (the claude group,
            # the run's marker) and the task it held wait for the database, and are done once it is
            # back, before any worker is started again under its id.
            for left in kill_token_processes(self._instance_token(slot.worker_id, proc.pid), exact=True):
                self.say(f"{slot.worker_id}: killed process {left} it left behind")
            self.deferred.append((slot.worker_id, proc.pid, rc != 0, stopping))
            returned = []
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
                        and not self._check_db() and not self._restarts_held():
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

    def _restarts_held(self):
        """No worker is started while the database file was replaced, the disk is full or the
        database cannot be reached: a new worker could not work, or would open another file."""
        return self.db_lost is not None or self.disk_full is not None or self.db_down is not None

    def _check_ready(self):
        rows = {w["worker_id"]: w for w in self.queue.list_workers()}
        for slot in self.slots:
            row = rows.get(slot.worker_id)
            if slot.state == Slot.STARTING and slot.proc is not None and row and row["pid"] == slot.proc.pid \
                    and row["state"] in states.READY:
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
            # The free space first, as the workers judge it: the log's own last page may still take
            # a line when the disk takes no more (the line of a worker's that did not fit).
            full = claude_queue.disk_full_note(self.cfg.logs_dir)
            if full is None:
                if self.log is not None:
                    self.log.write(line.encode())
                flag = self.queue.get_flag(flags.paused_host(self.host))
                if flag and flag["value"].get("reason") == "disk_full":
                    self.queue.clear_flag(flags.paused_host(self.host))
        except (OSError, claude_queue.QueueError):
            full = self.disk_full
        if full is not None:
            try:
                flag = self.queue.get_flag(flags.paused_host(self.host))
                if not flag or flag["value"].get("reason") == "disk_full":
                    self.queue.set_flag(flags.paused_host(self.host), {"reason": "disk_full", "message": self.disk_full + "; the pool "
                                                   "pauses claiming until writes work again"},
                                        until=self.queue.clock() + max(2.0, 4 * self.tick))
            except claude_queue.QueueError:
                pass
            self.lock.note_problem(self.disk_full)
            return True
        if self.echo:
            eprint(line.rstrip("\n"))
        self.disk_full = self.disk_full_since = None
        self.lock.note_problem(self.db_lost)
        return False

    def _check_db_back(self):
        """While the database cannot be reached: try it again (the pool's flag, then the clean-up of
        workers that ended meanwhile). True while it still cannot be."""
        if self.db_down is None:
            return False
        try:
            self.publish()
            while self.deferred:
                worker_id, pid, died, stopping = self.deferred[0]
                for tid in self._clean_up_worker(worker_id, pid, died=died, stopping=stopping):
                    self.say(f"task {tid}: its worker {worker_id} ended while the database was down; "
                             f"returned to the queue")
                self.deferred.pop(0)
        except claude_queue.DatabaseUnavailable:
            return True
        self.say(f"the database is back after {time.monotonic() - self.db_down_since:.0f}s; the pool goes on")
        self.db_down = self.db_down_since = None
        self.db_back_at = self.queue.clock()
        self.lock.note_problem(self.db_lost)
        return False

    def _periodic(self):
        if self._check_disk() or self._check_db() or self._check_db_back():
            return
        self._check_resize()  # in case the signal that announces a request was missed
        self._check_stop_request()
        if time.monotonic() - self.published_at >= self.lease:
            # Other hosts cannot check our pid: the flag's age, renewed once a lease, says we live.
            self.publish()
        # recover_stale() takes the write lock even when nothing expired; a read of the (few)
        # running tasks first keeps an idle pool from writing every tick.
        now = self.queue.clock()
        if any(t.lease_expires_at is not None and t.lease_expires_at < now
               for t in self.queue.list_tasks(status="in_progress")):
            for tid in self.queue.recover_stale():
                self.say(f"task {tid}: lease expired; returned to the queue")
        rows = {w["worker_id"]: w for w in self.queue.list_workers()}
        for slot in self.slots:
            row = rows.get(slot.worker_id)
            if slot.proc is None or not row or row["pid"] != slot.proc.pid:
                continue
            if slot.state == Slot.STARTING and row["state"] in states.READY:
                slot.state = Slot.READY
            silent = self.queue.clock() - max(row["last_heartbeat"], self.db_back_at)
            if silent > self.cfg.hung_after:
                self.say(f"{slot.worker_id} (pid {slot.proc.pid}) silent for {silent:.0f}s; killing it")
                signal_group(slot.proc.pid, signal.SIGKILL)
        self.queue.checkpoint()  # keeps WAL checkpoints off the workers' claim path
        self._check_idle()

    def _check_stop_request(self):
        """`stop --all-hosts` on any host asks this one through the database (a signal cannot
        cross machines); the request names our token, so one left over never stops a later pool."""
        flag = self.queue.get_flag(flags.stop(self.host))
        if flag and isinstance(flag["value"], dict) and flag["value"].get("token") == self.token:
            self.queue.clear_flag(flags.stop(self.host))
            self.begin_stop(f"stop --all-hosts from {flag['value'].get('from') or 'another host'}")

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
        try:
            rows = {w["worker_id"]: w for w in self.queue.list_workers()}
        except claude_queue.DatabaseUnavailable:
            rows = {}  # their claude runs carry the pool token: _finish_stop's sweep ends them
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
        ids = {hosts.worker_id(n, self.host) for n in range(1, self.n + 1)}
        deadline = time.monotonic() + self.grace + STOP_MARGIN_SECONDS
        announced = killed = False
        while True:
            rows = self._own_workers()
            lingering = [w for w in rows if processes.pid_alive(w["pid"]) and
                         processes.is_our_process(w["pid"], processes.WORKER_SCRIPT, self.cfg.db_path) and
                         (w["worker_id"] in ids or "--coordinator-pid" in (processes.process_args(w["pid"]) or []))]
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
        for w in self._own_workers():
            if processes.pid_alive(w["pid"]) and processes.is_our_process(w["pid"], processes.WORKER_SCRIPT):
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

    def _own_workers(self):
        """This host's worker rows: another host's pids mean nothing here, and its workers' tasks
        come back through their leases, never as "dead" workers of ours."""
        return [w for w in self.queue.list_workers() if hosts.is_local(w, self.host)]

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
                flag = self.queue.get_flag(flags.coordinator(self.host))
                if flag and flag["value"].get("pid") == os.getpid():
                    self.queue.clear_flag(flags.coordinator(self.host))
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
