#!/usr/bin/env python3
"""A Klauss worker: claims tasks from the queue and runs the `claude` CLI on each.

    python claude_worker.py WORKER_ID [DB] [--db PATH] [--exit-when-idle] [--coordinator-pid PID]

Each task runs as `claude -p --output-format stream-json --verbose ...` in the task's working
directory (or its own git worktree, worktrees.py), in its own process group, with the prompt on
stdin (build_prompt adds the job's shared context and inlines small context files). A heartbeat
thread renews the lease and watches for cancel requests; the stream is written to a per-task transcript and summarised
into the task's live activity. The outcome is decided from the CLI's structured fields and the
expected outputs on disk (see claude_cli.classify).

Exit codes: 0 stopped normally; 2 bad arguments or configuration; 3 a configuration problem that
a restart will not fix (claude missing, not logged in): stderr says what to do.
"""

import argparse
import glob
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import zlib
from collections import deque
from pathlib import Path

import claude_cli
import claude_queue
import config
import exits
import flags
import hints
import hosts
import integration
import processes
import states
import task_report
import validation
import worktrees
from exits import EXIT_CONFIG, EXIT_FAIL, EXIT_OK, EXIT_USAGE

# An idle worker blocks on its Waker (woken by every queue change); it still wakes this often to
# notice a vanished coordinator and to keep its worker row fresh.
IDLE_TICK_SECONDS = 1.0
ACTIVITY_MIN_INTERVAL = 1.0  # live-activity writes per task are throttled to one a second
STDERR_TAIL_CHARS = 4000
MAX_LISTED_CONTEXT_FILES = 200
RESULT_GRACE_SECONDS = 5.0    # after its result event claude gets this long to exit, then it is stopped
READER_JOIN_SECONDS = 2.0     # once a run's processes are dead, its pipes get this long to end
PIPE_CHUNK = 65536
# Output bounds: a worker's memory and a transcript's size must not follow what claude prints.
MAX_EVENT_LINE_BYTES = 8 * 1024 * 1024     # a longer stream line is cut (its start noted in the transcript)
STDERR_LINE_BYTES = 4096                   # stderr lines only feed a short tail
TRANSCRIPT_HEAD_BYTES = 32 * 1024 * 1024   # a transcript keeps this much of its start ...
TRANSCRIPT_TAIL_BYTES = 4 * 1024 * 1024    # ... and this much of its end; what lies between is cut


def log(message):
    try:
        print(message, flush=True)
    except (BrokenPipeError, ValueError):
        # Our coordinator (reading our stdout) is gone; the work of shutting down must go on.
        sys.stdout = open(os.devnull, "w")


# --- the prompt --------------------------------------------------------------------------------

def _is_text(data):
    if b"\x00" in data[:8192]:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def expand_context(patterns, working_dir, inside=None):
    """Files matched by the context globs (relative to the working dir), sorted, without duplicates,
    as (relative name, resolved path); and the names left out because they resolve (through a
    symlink) outside what `inside(resolved path)` allows. Submit checks only a glob's base."""
    seen, outside = {}, []
    for pattern in patterns:
        full = pattern if os.path.isabs(pattern) else os.path.join(working_dir, pattern)
        for match in sorted(glob.glob(full, recursive=True)):
            if os.path.isfile(match):
                rel, real = os.path.relpath(match, working_dir), Path(match).resolve()
                if inside is not None and not inside(real):
                    if rel not in outside:
                        outside.append(rel)
                elif rel not in seen:
                    seen[rel] = str(real)
    return list(seen.items()), outside


def build_prompt(task, job, working_dir, inline_budget, branch=None, inside=None):
    """The text Claude receives: who it is in the job, shared context, files, outputs, then the task."""
    parts = []
    header = f"You are a Klauss worker running task #{task.id}"
    if job:
        header += f" of job {job['id']} (\"{job['description']}\")"
    header += f", attempt {task.attempts_used} of {task.max_attempts}."
    if branch:
        parts.append(header + f" You work in a git worktree of your own, on branch {branch}: stay on it "
                     "(do not switch branches, commit or push); everything you change there is committed "
                     "for you when you finish and merged back by Klauss.")
    else:
        parts.append(header + " Other workers may be editing other files of this project at the same "
                     "time: change only what this task needs.")
    shared = (job or {}).get("metadata", {}).get("context")
    if shared:
        parts.append("## Shared context for this job\n" + str(shared).strip())
    if task.context_files:
        files, outside = expand_context(task.context_files, working_dir, inside)
        lines, inlined, remaining = [], [], inline_budget
        for rel, path in files[:MAX_LISTED_CONTEXT_FILES]:
            try:
                size = os.path.getsize(path)
                note = ""
                if size <= remaining:
                    with open(path, "rb") as fh:
                        data = fh.read()
                    if _is_text(data):
                        inlined.append(f"### {rel}\n```\n{data.decode('utf-8')}\n```")
                        remaining -= size
                        note = " (inlined below)"
                    else:
                        note = " (binary, not inlined)"
                else:
                    note = " (not inlined: read it yourself)"
                lines.append(f"- {rel} ({size} bytes){note}")
            except OSError as exc:
                lines.append(f"- {rel} (unreadable: {exc.strerror})")
        if len(files) > MAX_LISTED_CONTEXT_FILES:
            lines.append(f"- … and {len(files) - MAX_LISTED_CONTEXT_FILES} more files matching "
                         f"{', '.join(task.context_files)}")
        lines += [f"- {rel} (left out: it links outside the project)" for rel in outside[:MAX_LISTED_CONTEXT_FILES]]
        if not files and not outside:
            lines.append(f"- (no files match {', '.join(task.context_files)})")
        parts.append("## Context files\n" + "\n".join(lines) + ("\n\n" + "\n\n".join(inlined) if inlined else ""))
    if task.expected_outputs:
        parts.append("## Expected outputs\nThe task only counts as done when each of these exists and was "
                     "written during this run:\n" + "\n".join(f"- {p}" for p in task.expected_outputs))
    parts.append("## Task\n" + task.prompt)
    return "\n\n".join(parts) + "\n"


# --- expected outputs --------------------------------------------------------------------------

def _fingerprint(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    digest = None
    if st.st_size <= 4 * 1024 * 1024:
        # A content checksum catches a rewrite within the file system's timestamp granularity.
        # (zlib rather than hashlib: hashlib loads OpenSSL, 4 MB of resident memory per worker.)
        try:
            with open(path, "rb") as fh:
                digest = zlib.crc32(fh.read())
        except OSError:
            pass
    return (st.st_mtime_ns, st.st_size, st.st_ino, digest)


def snapshot_outputs(patterns, working_dir):
    """Fingerprints of what the expected outputs match before the run."""
    snap = {}
    for pattern in patterns:
        full = os.path.join(working_dir, pattern)
        for path in glob.glob(full, recursive=True) if glob.has_magic(pattern) else [full]:
            snap[os.path.normpath(path)] = _fingerprint(path)
    return snap


def verify_outputs(patterns, working_dir, before):
    """(verified, missing): an output counts when it exists and was created or changed in this run."""
    verified, missing = [], []
    for pattern in patterns:
        full = os.path.join(working_dir, pattern)
        paths = glob.glob(full, recursive=True) if glob.has_magic(pattern) else [full]
        fresh = [p for p in paths if os.path.exists(p) and _fingerprint(p) != before.get(os.path.normpath(p))]
        (verified if fresh else missing).append(pattern)
    return verified, missing


# --- running one task --------------------------------------------------------------------------

class Transcript:
    """The run's stream on disk, bounded: its first bytes as they come (so a running task can be
    followed), its last bytes once the run ends, and between them one line saying what was cut."""

    def __init__(self, fh):
        self.fh = fh
        self.head_left = TRANSCRIPT_HEAD_BYTES
        self.tail_max = TRANSCRIPT_TAIL_BYTES
        self.tail = deque()
        self.tail_bytes = 0
        self.cut_lines = 0
        self.cut_bytes = 0

    def write(self, line):
        if not self.tail and len(line) <= self.head_left:
            self.head_left -= len(line)
            self.fh.write(line)
            self.fh.flush()
            return
        self.tail.append(line)
        self.tail_bytes += len(line)
        while self.tail_bytes > self.tail_max and self.tail:
            dropped = self.tail.popleft()
            self.tail_bytes -= len(dropped)
            self.cut_lines += 1
            self.cut_bytes += len(dropped)

    def close(self):
        if self.cut_lines:
            self.fh.write(_note("transcript_cut", lines=self.cut_lines, bytes=self.cut_bytes,
                                message=f"{self.cut_lines} lines ({self.cut_bytes} bytes) cut here: a transcript "
                                        f"keeps its first {TRANSCRIPT_HEAD_BYTES} and last {TRANSCRIPT_TAIL_BYTES} bytes"))
        self.fh.writelines(self.tail)
        self.tail.clear()
        self.fh.flush()


def _note(kind, **fields):
    """A line of our own in a transcript (JSON like the stream's, with a type no CLI event has)."""
    return (json.dumps({"type": f"klauss_{kind}", **fields}) + "\n").encode()


class Run:
    """One `claude` process for one task: its stream, its transcript, and how it ended."""

    def __init__(self, worker, task, argv, prompt, working_dir, env, timeout, transcript_path, marker=None):
        self.worker = worker
        self.task = task
        self.argv = argv
        self.prompt = prompt
        self.working_dir = working_dir
        self.env = env
        self.timeout = timeout
        self.transcript_path = transcript_path
        # Carried in the environment of everything the run starts: what is found with it after
        # the run is killed (a Bash tool runs in a session of its own, out of reach of the group).
        # Random hex as uuid4().hex gives, without importing uuid (and platform) at every start.
        self.marker = marker or f"{task.id}:{task.attempt}:{os.urandom(16).hex()}"
        self.state = claude_cli.StreamState()
        self.stderr_tail = deque(maxlen=200)
        self.stop = threading.Event()     # set when the run must be ended early
        self.stop_reason = None           # "timeout" | "cancel" | "lease_lost" | "shutdown"
        self.lingered = False             # claude gave its result but did not exit: we stopped it
        self.left_behind = []             # pids killed after the run that were outside claude's group
        self.problems = {}                # what the stream reader skipped: {what: count}
        self.proc = None
        self._io_over = threading.Event()  # the run is over: pipe threads give up waiting
        # The first activity line waits a second too: a task that ends sooner never needs one (the
        # dashboard refreshes every 2 s), and its run then costs no commit of its own.
        self._last_activity_write = time.monotonic()
        self._activity_dirty = False

    def request_stop(self, reason):
        if self.stop_reason is None:
            self.stop_reason = reason
        self.stop.set()

    def _count(self, what):
        self.problems[what] = self.problems.get(what, 0) + 1

    def _lines(self, pipe, max_line):
        """(line, bytes cut) from a pipe until its end, or until the run is declared over (a process
        we could not kill may hold the pipe open). A line longer than max_line keeps its first
        max_line bytes; the rest is counted, never held in memory."""
        fd = pipe.fileno()
        buf, cut = bytearray(), 0
        with selectors.DefaultSelector() as sel:  # not select(): it fails on a descriptor over 1023
            sel.register(fd, selectors.EVENT_READ)
            while not self._io_over.is_set():
                if not sel.select(0.25):
                    continue
                chunk = os.read(fd, PIPE_CHUNK)
                if not chunk:
                    break
                start = 0
                while start < len(chunk):
                    nl = chunk.find(b"\n", start)
                    stop = len(chunk) if nl < 0 else nl + 1
                    room = max(0, max_line - len(buf))
                    buf += chunk[start:min(stop, start + room)]
                    cut += max(0, stop - start - room)
                    start = stop
                    if nl >= 0:
                        yield bytes(buf), cut
                        buf, cut = bytearray(), 0
        if buf or cut:
            yield bytes(buf), cut

    def _write_stdin(self):
        """Give claude its prompt without ever blocking the run: a claude that does not read its
        stdin must still time out, stop and cancel like any other."""
        data = memoryview(self.prompt.encode("utf-8"))
        fd = self.proc.stdin.fileno()
        try:
            os.set_blocking(fd, False)
            with selectors.DefaultSelector() as sel:
                sel.register(fd, selectors.EVENT_WRITE)
                while data and not self._io_over.is_set():
                    if sel.select(0.25):
                        try:
                            data = data[os.write(fd, data[:PIPE_CHUNK]):]
                        except BlockingIOError:
                            pass
        except OSError:
            pass  # claude exited before reading; its exit code and stderr tell why
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def _read_stdout(self, transcript):
        for line, cut in self._lines(self.proc.stdout, MAX_EVENT_LINE_BYTES):
            try:
                self._on_stdout_line(line, cut, transcript)
            except Exception as exc:  # noqa: BLE001 - the reader must never die: claude would block on a full pipe
                self._count(f"stream line(s) skipped, unreadable ({type(exc).__name__})")

    def _on_stdout_line(self, line, cut, transcript):
        if cut:
            self._count(f"stream line(s) over {MAX_EVENT_LINE_BYTES} bytes cut")
            self._record(transcript, _note("line_cut", bytes=len(line) + cut, head=line[:1000].decode("utf-8", "replace"),
                                   message=f"a stream line of {len(line) + cut} bytes (over "
                                           f"{MAX_EVENT_LINE_BYTES}) was cut; only its start is kept"))
            return
        self._record(transcript, line if line.endswith(b"\n") else line + b"\n")
        text = line.decode("utf-8", "replace").strip()
        if not text:
            return
        try:
            event = json.loads(text)
        except ValueError:
            if len(self.state.non_json_lines) < 20:
                self.state.non_json_lines.append(text[:500])
            self._count("non-JSON stream line(s) skipped")
            return
        if not isinstance(event, dict):
            self._count("malformed stream event(s) skipped")
            return
        malformed = self.state.malformed_events
        changed = self.state.feed(event)
        if self.state.malformed_events != malformed:
            self._count("malformed stream event(s) skipped")
        if changed:
            self._maybe_write_activity()

    def _record(self, transcript, line):
        try:
            transcript.write(line)
        except OSError as exc:  # a full disk loses transcript lines, never the run's events
            self._count(f"transcript line(s) not written ({exc.strerror or exc})")

    def _read_stderr(self):
        for line, _cut in self._lines(self.proc.stderr, STDERR_LINE_BYTES):
            self.stderr_tail.append(line.decode("utf-8", "replace"))

    def _maybe_write_activity(self, flush=False):
        """Throttled, not dropped: a change inside the interval is written by a later flush."""
        if not flush:
            self._activity_dirty = True
        if not self._activity_dirty:
            return
        now = time.monotonic()
        if now - self._last_activity_write >= ACTIVITY_MIN_INTERVAL:
            self._last_activity_write = now
            self._activity_dirty = False
            try:
                self.worker.queue.set_activity(self.task.id, self.worker.worker_id, self.state.activity_line(),
                                               attempt=self.task.attempt)
            except claude_queue.QueueError:
                pass  # the live activity line is a courtesy; the run must go on without it

    def execute(self):
        """Run claude to the end (or until stopped). Returns (exit_code, duration_seconds)."""
        started = time.monotonic()
        Path(self.transcript_path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.transcript_path, "ab") as fh:
            transcript = Transcript(fh)
            self.proc = processes.start_run(self.argv, self.working_dir, self.env, self.marker)
            self.worker.note_claude(self.proc.pid, self.marker)
            threads = [threading.Thread(target=self._write_stdin, daemon=True),
                       threading.Thread(target=self._read_stdout, args=(transcript,), daemon=True),
                       threading.Thread(target=self._read_stderr, daemon=True)]
            for t in threads:
                t.start()
            deadline = started + self.timeout
            result_at = None
            while True:
                wait = 0.25 if result_at is not None else min(0.25, max(0.0, deadline - time.monotonic()))
                try:
                    self.proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    pass
                self._maybe_write_activity(flush=True)
                now = time.monotonic()
                if self.state.result is not None:
                    # The answer is in: a claude that does not exit is stopped and judged by it.
                    result_at = result_at or now
                    if now - result_at >= RESULT_GRACE_SECONDS:
                        self.lingered = True
                        break
                elif now >= deadline:
                    self.request_stop("timeout")
                if self.worker.shutdown_due():
                    self.request_stop("shutdown")
                if self.stop.is_set():
                    break
            reap = self.worker.subreaper
            if self.proc.poll() is None:
                self.left_behind = processes.stop_run(self.proc, self.marker, reap=reap)
            else:
                self.left_behind = processes.end_run(self.proc, self.marker, reap=reap)
            # Everything the run started is dead, so the pipes end; should something we could not
            # kill still hold one, the threads give up rather than wait for it.
            until = time.monotonic() + READER_JOIN_SECONDS
            for t in threads:
                t.join(timeout=max(0.0, until - time.monotonic()))
            self._io_over.set()
            for t in threads:
                t.join()
            for pipe in (self.proc.stdout, self.proc.stderr):
                pipe.close()
            transcript.close()
            self.worker.note_claude(None)
        return self.proc.returncode, time.monotonic() - started


# --- the worker --------------------------------------------------------------------------------

class Worker:
    def __init__(self, worker_id, queue, cfg, exit_when_idle=False, coordinator_pid=None):
        self.worker_id = worker_id
        self.queue = queue
        self.cfg = cfg
        self.exit_when_idle = exit_when_idle
        self.coordinator_pid = coordinator_pid
        self.parent_pid = os.getppid()
        self.stopping = False
        self.stop_why = None
        self.shutdown_deadline = None
        self.run = None
        self.executable = None
        self.state = states.STARTING
        self.waker = None
        self._last_recover = 0.0
        self._last_worker_beat = 0.0
        self._db_lost_said = False
        self._disk_full = False
        self._db_down = False
        self.host = cfg.host
        self.login = hosts.login_key(cfg)
        self.holds = flags.holds(self.host, self.login)
        self._info = {"coordinator_pid": coordinator_pid, "host": self.host, "login": self.login}
        self._next = None  # a task claimed by the commit that recorded the previous one
        self._queue_empty = False  # ...or that commit found nothing to claim
        self._row_stale = False  # the worker row in the database lags behind state/_info
        self.subreaper = False  # set at start: whether what our runs leave behind is re-parented to us
        workers = cfg["workers"]
        self.lease = workers["lease_seconds"]
        self.heartbeat_every = cfg.heartbeat_interval
        self.grace = workers["shutdown_grace_seconds"]

    # signals and parent death

    def request_shutdown(self, why):
        # Also called from a signal handler: only set flags here (printing could re-enter stdout).
        if not self.stopping:
            self.stop_why = why
            self.stopping = True
            self.shutdown_deadline = time.monotonic() + self.grace
        if self.waker is not None:
            self.waker.wake()

    def install_signal_handlers(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: self.request_shutdown(signal.Signals(signum).name))

    def parent_gone(self):
        if self.coordinator_pid is None:
            return False
        if os.getppid() != self.parent_pid:
            return True
        try:
            os.kill(self.coordinator_pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False

    def shutdown_due(self):
        """True once a running task must be cut short: stopping and out of grace."""
        if not self.stopping and self.parent_gone():
            self.request_shutdown("coordinator is gone")
        return self.stopping and time.monotonic() >= self.shutdown_deadline

    # bookkeeping in the database

    def set_state(self, state, current_task=None, force=False):
        now = time.monotonic()
        if force or self._row_stale or state != self.state or now - self._last_worker_beat >= self.heartbeat_every:
            self.state = state
            self._last_worker_beat = now
            self._row_stale = False
            self.queue.worker_heartbeat(self.worker_id, state=state, current_task=current_task, info=self._info)

    def _row_written(self, state):
        """The worker row was set by a task transaction (claim, finish, heartbeat)."""
        self.state = state
        self._last_worker_beat = time.monotonic()
        self._row_stale = False

    def finish(self, action, task, **details):
        """Record a task's end; in the same commit, set this worker's row and, when the worker
        will go on, claim its next task (kept in self._next for the loop)."""
        give_up_at = None
        while True:
            go_on = not (self.stopping or self.parent_gone() or self._disk_full or self.queue.db_replaced())
            if go_on:
                self._arm_run_marker()
            try:
                done, self._next = self.queue.finish_and_claim(action, task.id, self.worker_id, attempt=task.attempt,
                                                               claim_next=go_on, lease_seconds=self.lease,
                                                               worker_info=self._info, holds=self.holds, **details)
                break
            except claude_queue.DatabaseUnavailable as exc:
                # The run's outcome is in hand: kept while its lease would still hold (a server
                # restart, a network cut), rather than the task run again once the lease expires.
                now = time.monotonic()
                if give_up_at is None:
                    give_up_at = now + self.lease
                    log(f"task {task.id}: cannot record its end yet: {exc}; trying again for up to {self.lease:g}s")
                if now >= give_up_at:
                    log(f"task {task.id}: its end could not be recorded within a lease; the task returns to "
                        f"the queue (its lease has expired) and runs again")
                    raise
                self.waker.wait(min(self.cfg["workers"]["poll_seconds"], IDLE_TICK_SECONDS))
        if give_up_at is not None:
            log(f"task {task.id}: its end recorded once the database was back")
            self._release_lost_claims(task)
        self._row_written(states.BUSY if self._next is not None else states.IDLE)
        # That commit found nothing to claim: the loop need not ask again before it waits (a task
        # added since wakes the wait at once).
        self._queue_empty = go_on and self._next is None
        return done

    def _release_lost_claims(self, finished):
        """A commit can go through with its answer lost on the way back (the server went down, the
        link was cut): its claim then holds a task nobody runs, until the lease expires. After such
        an outage, what this worker holds beyond the task it finished and the one it now runs goes
        back to the queue at once, no attempt spent."""
        keep = {finished.id} | ({self._next.id} if self._next is not None else set())
        try:
            for held in self.queue.list_tasks(status="in_progress", worker_id=self.worker_id):
                if held.id not in keep and self.queue.release_task(
                        held.id, self.worker_id, reason="claimed by a commit whose answer was lost", attempt=held.attempt):
                    log(f"task {held.id}: claimed by a commit whose answer the outage lost; returned to the queue")
        except claude_queue.QueueError as exc:
            log(f"could not look for claims an outage hid: {exc}")  # their leases return them

    def _arm_run_marker(self):
        # Chosen before a claim and recorded by the claim's own commit: everything the claimed task
        # starts (its worktree's setup command, then claude) carries it, so the sweep after a dead
        # worker (the coordinator reads it from this row) finds all of it, from the first moment.
        self._info = {**self._info, "run_marker": f"{self.worker_id}:{os.urandom(16).hex()}"}

    def note_claude(self, pid, run_marker=None):
        # Recorded so the coordinator can kill claude's group, and sweep what carries the run's
        # marker, if this worker is SIGKILLed. A run's end (pid None) costs no commit of its own:
        # the transaction that records the task's end writes the row (finish()), or, when nothing
        # is recorded, the loop's idle state does.
        self._info = {**self._info, "claude_pid": pid, "claude_pgid": pid, "run_marker": run_marker}
        self._row_stale = True
        if pid is None:
            return
        self._row_stale = False
        try:
            self.queue.worker_heartbeat(self.worker_id, state=self.state,
                                        current_task=self.run.task.id if (pid and self.run) else None, info=self._info)
        except claude_queue.QueueError as exc:
            log(f"could not record claude's pid {pid}: {exc}")  # the next heartbeat records it

    # the main loop

    def start(self):
        claude_cfg = self.cfg["claude"]
        try:
            version = claude_cli.check_runnable_once(claude_cfg["command"], self.cfg.state_dir)
            self.executable = claude_cli.resolve_command(claude_cfg["command"])
        except claude_cli.ClaudeNotFound as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return EXIT_CONFIG
        self.subreaper = processes.become_subreaper()
        self.waker = claude_queue.Waker(self.queue, self.worker_id)
        self.queue.register_worker(self.worker_id, pid=os.getpid(), state=states.IDLE, info=self._info)
        # Starting a worker is the user's way of saying a configuration problem is fixed.
        self.queue.clear_flag(flags.config_error(self.host))
        self.queue.clear_flag(flags.CONFIG_ERROR)  # as an older Klauss wrote it, for every host
        log(f"worker {self.worker_id} (pid {os.getpid()}) ready: {self.executable} {version}; "
            f"database {config.shown_db(self.queue.db_path)}")
        try:
            return self.loop()
        finally:
            self.waker.close()
            try:
                self.queue.unregister_worker(self.worker_id)
            except claude_queue.QueueError as exc:
                log(f"could not unregister: {exc}")  # the coordinator forgets a dead worker's row
            log(f"worker {self.worker_id} stopped")

    # What the loop waits out rather than crash on: the flag that says it is waiting (said once,
    # cleared by _loop when the next claim goes through) and what the log says meanwhile.
    _WAITED_OUT = ((claude_queue.DiskFull, "_disk_full", "claiming paused until writes work again"),
                   (claude_queue.DatabaseUnavailable, "_db_down", "claiming nothing until the database is back"))

    def loop(self):
        while True:
            try:
                return self._loop()
            except (claude_queue.DiskFull, claude_queue.DatabaseUnavailable) as exc:
                # Never a crash: a disk is freed, a server restarts, a network cut ends, and the pool
                # is still there. Nothing is claimed meanwhile; the loop tries again each tick.
                flag, waiting = next((f, w) for kind, f, w in self._WAITED_OUT if isinstance(exc, kind))
                if not getattr(self, flag):
                    setattr(self, flag, True)
                    log(f"error: {exc}; {waiting}")
                if self.stopping or self.parent_gone():
                    continue
                self.waker.wait(min(self.cfg["workers"]["poll_seconds"], IDLE_TICK_SECONDS))

    def _loop(self):
        while True:
            empty, self._queue_empty = self._queue_empty, False  # only for the claim right after it
            if self.stopping or self.parent_gone():
                if not self.stopping:
                    self.request_shutdown("coordinator is gone")
                if self._next is not None:
                    task, self._next = self._next, None
                    self.queue.release_task(task.id, self.worker_id, reason="worker shutting down", attempt=task.attempt)
                    log(f"task {task.id}: released (worker shutting down)")
                log(f"stopping: {self.stop_why}")
                return EXIT_OK
            if self._next is not None:
                # Claimed with the previous task's end, after the flags were read in that commit.
                task, self._next = self._next, None
                self._process_claimed(task)
                continue
            problem = hosts.config_error_flag(self.queue, self.host)
            if self._db_down:
                self._db_down = False
                log("the database is back; claiming resumed")
            if problem:
                self.set_state(states.CONFIG_ERROR, force=True)
                value = problem["value"]
                print(f"error: {value.get('message')}. To fix: {value.get('fix')}", file=sys.stderr, flush=True)
                return EXIT_CONFIG
            pause = hosts.pause_flag(self.queue, self.host, self.login)
            if pause:
                self.set_state(states.PAUSED)
                if self.exit_when_idle:
                    return EXIT_OK
                self.idle_wait(pause["until"] - self.queue.clock())
                continue
            lost = self.queue.db_replaced()
            if lost:
                # What we would record there is lost with the file, and a claim could run a task
                # twice; idle until the coordinator (or a stop) ends us.
                if not self._db_lost_said:
                    self._db_lost_said = True
                    log(f"error: {lost}; claiming nothing more (stop the pool: {hints.command('stop')})")
                self.idle_wait(self.cfg["workers"]["poll_seconds"])
                continue
            if self._disk_full:
                low = claude_queue.disk_full_note(self.cfg.logs_dir, self.queue.db_path.parent)
                if low:
                    self.idle_wait(self.cfg["workers"]["poll_seconds"])
                    continue
            self.maybe_recover()
            if empty:
                task = None
            else:
                self._arm_run_marker()
                task = self.queue.claim_task(self.worker_id, lease_seconds=self.lease, worker_info=self._info)
            if self._disk_full:
                self._disk_full = False
                log("writes work again; claiming resumed")
            if task is None:
                next_at = self.queue.next_claimable_at()
                if self.exit_when_idle and next_at is None:
                    return EXIT_OK
                self.set_state(states.IDLE)
                wait = self.cfg["workers"]["poll_seconds"]
                if next_at is not None:
                    wait = min(wait, max(0.0, next_at - self.queue.clock()))
                self.idle_wait(wait)
                continue
            self._row_written(states.BUSY)
            self._process_claimed(task)

    def _process_claimed(self, task):
        self.maybe_recover()
        self._row_stale = True  # until a task transaction sets the row again
        self.process(task)
        if self._row_stale:
            self.set_state(states.IDLE, force=True)
        # After a configuration error the loop top reads the flag, says what to do, and exits.

    def maybe_recover(self):
        # Without a coordinator nobody else returns a crashed worker's task; this is cheap
        # (only in-progress rows are looked at), so every worker does it now and then.
        now = time.monotonic()
        if now - self._last_recover >= self.cfg.recover_every:
            self._last_recover = now
            for tid in self.queue.recover_stale():
                log(f"recovered task {tid}: its lease expired")

    def idle_wait(self, seconds):
        """Sleep up to `seconds`, waking at once when the queue changes or a stop is requested."""
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.stopping or self.parent_gone():
                return
            if self.waker.wait(min(remaining, IDLE_TICK_SECONDS, self.heartbeat_every)):
                return
            self.set_state(self.state)

    def process(self, task):
        """Run one claimed task to a recorded outcome. Returns the verdict (None if not ours anymore)."""
        q = self.queue
        log(f"task {task.id}: claimed (attempt {task.attempts_used}/{task.max_attempts})")
        if integration.is_integration(task):  # merge queue work: git and the verify command, no claude
            summary = integration.run(self, task)
            log(f"task {task.id}: integration: {summary or 'not done'}")
            return summary
        try:
            # Validated once, at submit (validation.py). The boundary is checked again here because
            # the config may have changed since, and build_argv refuses metadata it cannot pass on.
            checked = validation.check_task_paths({"working_dir": task.working_dir, "context_files": task.context_files,
                                                   "expected_outputs": task.expected_outputs}, self.cfg,
                                                  cwd=self.cfg.root)
            # Bad data in one task (say, metadata queued past the submit checks) fails that task only.
            argv = claude_cli.build_argv(self.cfg["claude"], task.metadata, executable=self.executable)
        except ValueError as exc:
            q.fail_task(task.id, self.worker_id, f"refused before running: {exc}", retryable=False, attempt=task.attempt)
            log(f"task {task.id}: refused: {exc}")
            return None
        working_dir = checked["working_dir"]
        job = q.get_job(task.job_id) if task.job_id else None
        marker = self._info.get("run_marker") or f"{task.id}:{task.attempt}:{os.urandom(16).hex()}"
        try:
            # With worktree isolation the task runs in its own worktree, at the same path inside it.
            tree = worktrees.prepare_task(self.cfg, q, task, job, working_dir, keepalive=lambda: self._keepalive(task),
                                          setup_env={processes.RUN_MARKER_VAR: marker})
        except worktrees.WorktreeError as exc:
            for left in processes.kill_run_processes(marker):
                log(f"task {task.id}: killed process {left} its setup command left behind")
            q.fail_task(task.id, self.worker_id, f"worktree: {exc}", retryable=exc.retryable, attempt=task.attempt)
            log(f"task {task.id}: worktree not ready: {exc}")
            return None
        if tree is not None:
            working_dir = str(tree.working_dir)
            log(f"task {task.id}: worktree {tree.path} on branch {tree.branch}")
        boundary = validation.PathPolicy(self.cfg).inside
        own_tree = tree.path.resolve() if tree is not None else None
        prompt = build_prompt(task, job, working_dir, self.cfg["claude"]["context_inline_bytes"],
                              branch=tree.branch if tree is not None else None,
                              inside=lambda path: boundary(path) or (own_tree is not None and own_tree in path.parents))
        before = snapshot_outputs(task.expected_outputs, working_dir)
        db, db_env = config.process_db(q.db_path)  # as processes.owned_claude_group looks for it
        env = {**os.environ, **self.cfg["claude"]["env"], **db_env, "KLAUSS_TASK_ID": str(task.id),
               "KLAUSS_DB": db}
        if task.job_id:
            env["KLAUSS_JOB_ID"] = task.job_id
        timeout = task.timeout or self.cfg["claude"]["timeout"]
        transcript = self.cfg.logs_dir / "tasks" / f"task-{task.id}-attempt-{task.attempt}.jsonl"
        self.run = Run(self, task, argv, prompt, working_dir, env, timeout, transcript, marker=marker)
        beat = threading.Thread(target=self._heartbeat, args=(self.run,), daemon=True)
        beat.start()
        try:
            exit_code, duration = self.run.execute()
        except OSError as exc:
            self.run.stop.set()
            if claude_queue.is_disk_full(exc):
                # Not the task's fault: give it back untouched and pause (the loop waits for space).
                q.release_task(task.id, self.worker_id, reason="disk full", attempt=task.attempt)
                raise claude_queue.DiskFull(f"disk full: cannot write {transcript}: {exc.strerror}") from None
            claude_cli.forget_checked(self.cfg.state_dir)
            q.fail_task(task.id, self.worker_id, f"could not start claude: {exc}", attempt=task.attempt)
            log(f"task {task.id}: could not start claude: {exc}")
            return None
        finally:
            self.run.stop.set()
            beat.join()
        run, self.run = self.run, None
        return self.record(task, run, exit_code, duration, working_dir, before, tree=tree)

    def _keepalive(self, task):
        """While setup or git work runs in this thread (no heartbeat thread then): renew the task's
        lease and the worker row, which the coordinator reads to find hung workers. False once the
        task is no longer ours."""
        return self.queue.renew_lease(task.id, self.worker_id, attempt=task.attempt, lease_seconds=self.lease,
                                      worker_info=self._info) is not None

    def _heartbeat(self, run):
        """Renew the lease while claude works; end the run on a cancel request or a lost lease."""
        while not run.stop.wait(self.heartbeat_every):
            try:
                cancel = self.queue.renew_lease(run.task.id, self.worker_id, attempt=run.task.attempt,
                                                lease_seconds=self.lease, worker_info=self._info)
                if cancel is None:
                    run.request_stop("lease_lost")
                elif cancel:
                    run.request_stop("cancel")
            except claude_queue.QueueError as exc:
                log(f"task {run.task.id}: heartbeat failed: {exc}")

    def record(self, task, run, exit_code, duration, working_dir, before, tree=None):
        q, tid = self.queue, task.id
        state = run.state
        result = state.result or {}
        stderr_tail = "".join(run.stderr_tail)[-STDERR_TAIL_CHARS:]
        verified, missing = verify_outputs(task.expected_outputs, working_dir, before)
        denials = result.get("permission_denials") or []
        outcome = dict(  # an outcome.Outcome
            result=result.get("result"),
            session_id=state.session_id,
            total_cost_usd=result.get("total_cost_usd"),
            usage=result.get("usage"),
            num_turns=result.get("num_turns"),
            duration_ms=result.get("duration_ms"),
            wall_seconds=round(duration, 3),
            exit_code=exit_code,
            permission_denials=denials,
            outputs_verified=verified,
            outputs_missing=missing,
            # What the run's edit tools changed; with a worktree, tree.finish() puts git's list here.
            files_changed=state.files_changed(working_dir),
            stderr_tail=stderr_tail,
            transcript=str(run.transcript_path),
            model=state.model,
        )
        earlier = task.outcome.get("files_changed") if tree is None and isinstance(task.outcome, dict) else None
        if isinstance(earlier, list):
            # Without a worktree an earlier attempt's edits stay in the tree: the task changed them too.
            outcome["files_changed"] = sorted(set(outcome["files_changed"]) | {f for f in earlier if isinstance(f, str)})
        notes = [f"{n} {what}" for what, n in sorted(run.problems.items())]
        if run.lingered:
            notes.append(f"claude did not exit within {RESULT_GRACE_SECONDS:g}s of its result; Klauss stopped it")
        if notes:
            outcome["warnings"] = notes
        if run.left_behind:
            log(f"task {tid}: killed {len(run.left_behind)} process(es) the run left outside claude's group: "
                f"{', '.join(map(str, run.left_behind))}")
        reason = run.stop_reason
        if reason == "lease_lost":
            log(f"task {tid}: lease lost; another worker owns it now, nothing recorded")
            return None
        if tree is not None:
            tree.finish(outcome)  # however the run ended, what it changed is committed on the task branch
        if reason == "cancel":
            outcome["error_class"] = "cancelled"
            self.finish("cancel", task, outcome=outcome)
            log(f"task {tid}: cancelled; claude stopped")
            return None
        if reason == "shutdown":
            self.finish("release", task, reason="worker shutting down", cost=outcome["total_cost_usd"])
            log(f"task {tid}: released (worker shutting down)")
            return None
        if reason == "timeout":
            outcome["error_class"] = "timeout"
            self.finish("fail", task, error=f"timed out after {run.timeout:g}s", outcome=outcome)
            log(f"task {tid}: timed out after {run.timeout:g}s")
            return claude_cli.Verdict(claude_cli.RETRYABLE, "timeout")

        if state.result is None:
            claude_cli.forget_checked(self.cfg.state_dir)  # a broken installation? the next start checks it
        # A claude we stopped after its result did not fail: its answer, not our signal, decides.
        verdict = claude_cli.classify(state.result, 0 if run.lingered else exit_code, state.rate_limit_rejected, stderr_tail,
                                      model_from_task=bool(task.metadata.get("model")),
                                      task_fields=[k for k in claude_cli.TASK_OPTIONS if task.metadata.get(k) is not None])
        if verdict.kind == claude_cli.SUCCESS and missing:
            if denials:
                names, fix = claude_cli.denial_summary(denials, self.cfg["claude"]["permission_mode"],
                                                       self.cfg["claude"]["disallowed_tools"])
                verdict = claude_cli.Verdict(claude_cli.FATAL, f"Claude's tool calls were denied ({names}) and "
                                             f"expected outputs are missing: {', '.join(missing)}", fix)
            else:
                verdict = claude_cli.Verdict(claude_cli.RETRYABLE, "expected outputs missing or not written in "
                                             f"this run: {', '.join(missing)}")
        elif verdict.kind == claude_cli.SUCCESS and denials:
            names, fix = claude_cli.denial_summary(denials, self.cfg["claude"]["permission_mode"],
                                                   self.cfg["claude"]["disallowed_tools"])
            outcome["warnings"] = [f"tool calls were denied: {names}; {fix}", *outcome.get("warnings", [])]
        if verdict.kind == claude_cli.SUCCESS and tree is not None:
            queued, problem = integration.enqueue(self.cfg, q, task, q.get_job(task.job_id) if task.job_id else None,
                                                  tree, outcome)
            if not queued:
                problem = tree.merge(outcome)  # a conflict still completes: the work is safe on its branch
            if problem:
                verdict = claude_cli.Verdict(claude_cli.RETRYABLE, problem)
            log(f"task {tid}: branch {tree.branch}: merge {outcome['merge']}"
                + (f" (conflicts: {', '.join(outcome['conflicts'])})" if outcome["conflicts"] else ""))
        outcome["error_class"] = verdict.kind
        message = verdict.message + (f" — {verdict.fix}" if verdict.fix else "")

        if verdict.kind == claude_cli.SUCCESS:
            if self.finish("complete", task, result=outcome):
                log(f"task {tid}: completed in {duration:.1f}s"
                    + (f", {task_report.fmt_cost(outcome['total_cost_usd'])}" if outcome["total_cost_usd"] else ""))
        elif verdict.kind == claude_cli.USAGE_LIMIT:
            delay = max(0.0, verdict.resets_at - time.time())
            # Every worker on this login pauses, whatever its host; other logins go on.
            pause = (flags.paused_login(self.login), {"reason": "usage_limit", "message": verdict.message,
                                                      "login": self.login, "host": self.host}, verdict.resets_at)
            self.finish("release", task, flag=pause, delay=delay, reason=verdict.message,
                        cost=outcome["total_cost_usd"])
            log(f"task {tid}: released; the workers on login {self.login} pause until "
                f"{time.strftime('%H:%M:%S UTC', time.gmtime(verdict.resets_at))}: {verdict.message}")
        elif verdict.kind == claude_cli.CONFIG_ERROR:
            # Stops this host only: another host has its own claude and its own login.
            stop = (flags.config_error(self.host), {"message": verdict.message, "fix": verdict.fix,
                                                    "host": self.host}, None)
            self.finish("release", task, flag=stop, reason=verdict.message, cost=outcome["total_cost_usd"])
            log(f"task {tid}: released untouched: {verdict.message}")
        else:
            retryable = verdict.kind == claude_cli.RETRYABLE
            self.finish("fail", task, error=message, retryable=retryable, outcome=outcome)
            log(f"task {tid}: failed ({'retryable' if retryable else 'not retryable'}): {message}")
        return verdict


def parse_args(argv):
    ap = argparse.ArgumentParser(description="Run Klauss tasks with the claude CLI.")
    ap.add_argument("worker_id", help="a name for this worker, unique in the pool (e.g. worker_1)")
    ap.add_argument("db_pos", nargs="?", metavar="DB", help="the database (same as --db)")
    ap.add_argument("--db", help="the database (default: the project's .klauss/claude_tasks.db)")
    ap.add_argument("--exit-when-idle", action="store_true", help="stop once nothing is claimable")
    ap.add_argument("--coordinator-pid", type=int, help="exit (releasing work) when this process is gone")
    return ap.parse_args(argv)


def open_queue(cfg, db, coordinator_pid):
    """The queue; a pool's worker started while its database is out of reach (a server restart)
    waits for it, as a running worker does, until its coordinator is gone (then None)."""
    said, parent = False, os.getppid()
    while True:
        try:
            return claude_queue.TaskQueue(db, cfg=cfg)
        except claude_queue.DatabaseUnavailable as exc:
            if coordinator_pid is None:
                raise
            if not said:
                print(f"error: {exc}; waiting for the database", file=sys.stderr, flush=True)
                said = True
        if os.getppid() != parent or not processes.pid_alive(coordinator_pid):
            return None
        time.sleep(min(cfg["workers"]["poll_seconds"], IDLE_TICK_SECONDS))


def main(argv=None):
    args = parse_args(argv)
    try:
        explicit_db = args.db or args.db_pos
        cfg = config.load_config(db=explicit_db)
        queue = open_queue(cfg, str(cfg.db_path) if explicit_db else None, args.coordinator_pid)
    except claude_queue.DatabaseUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except (config.ConfigError, claude_queue.QueueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if queue is None:
        return EXIT_OK  # the coordinator went while the database was out of reach
    queue.pinned = True
    cfg.ensure_state_dir()
    worker = Worker(args.worker_id, queue, cfg, exit_when_idle=args.exit_when_idle,
                    coordinator_pid=args.coordinator_pid)
    worker.install_signal_handlers()
    return worker.start()


if __name__ == "__main__":
    sys.exit(exits.run(main))
