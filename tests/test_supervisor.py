"""The supervisor's slot and pool states, in-process: a Coordinator driven through its transitions
with a fake queue and fake worker processes (no subprocess, no signal, no wall-clock wait).
What the real processes do is in test_coordinator.py."""

import selectors
import signal
import time

import pytest

import config
import flags
import supervisor
from supervisor import Coordinator, Slot


class FakeProc:
    """A worker process: alive until `exit(rc)`."""

    def __init__(self, pid):
        self.pid, self.returncode = pid, None

    def poll(self):
        return self.returncode

    def exit(self, rc):
        self.returncode = rc


class FakeQueue:
    """The part of TaskQueue the supervisor uses, in memory."""

    clock = staticmethod(time.time)

    def __init__(self):
        self.flags, self.workers, self.in_progress = {}, {}, []
        self.released, self.recovered = [], []
        self.pending = 0

    def set_flag(self, key, value, until=None):
        self.flags[key] = {"value": value, "until": until}

    def get_flag(self, key):
        return self.flags.get(key)

    def clear_flag(self, key):
        self.flags.pop(key, None)

    def list_flags(self, prefix):
        return {k: v for k, v in self.flags.items() if k.startswith(prefix)}

    def list_workers(self):
        return list(self.workers.values())

    def register(self, worker_id, pid, state="idle", last_heartbeat=None):
        self.workers[worker_id] = {"worker_id": worker_id, "pid": pid, "state": state, "info": {},
                                   "last_heartbeat": time.time() if last_heartbeat is None else last_heartbeat}

    def list_tasks(self, status=None, worker_id=None):
        return [t for t in self.in_progress if worker_id is None or t.worker_id == worker_id]

    def release_task(self, task_id, worker_id, reason=None, attempt=None):
        self.released.append(task_id)
        return True

    def recover_stale(self, worker_id=None):
        self.recovered.append(worker_id)
        return []

    def unregister_worker(self, worker_id):
        self.workers.pop(worker_id, None)

    def get_stats(self):
        return {"pending": self.pending, "in_progress": len(self.in_progress)}

    def checkpoint(self):
        pass

    def db_replaced(self):
        return None


@pytest.fixture
def pool(tmp_path, monkeypatch):
    """make(n) -> a Coordinator of n slots, started (STARTING), each slot with a FakeProc."""
    (tmp_path / ".klauss.toml").write_text("[workers]\nmax_fast_crashes = 3\nmax_workers = 4\n[pool]\nhost = \"h\"\n")
    cfg = config.load_config(cwd=tmp_path, env={})
    signals = []
    monkeypatch.setattr(supervisor, "signal_pid", lambda pid, sig: signals.append((pid, sig)) or True)
    monkeypatch.setattr(supervisor, "signal_group", lambda pid, sig: signals.append((pid, sig)) or True)
    monkeypatch.setattr(supervisor, "kill_token_processes", lambda *a, **k: [])
    monkeypatch.setattr(supervisor, "kill_claude_group", lambda *a, **k: False)
    pids = iter(range(50000, 60000))

    def spawn(self, slot):
        slot.proc, slot.started, slot.restart_at = FakeProc(next(pids)), time.monotonic(), None
        slot.spawns += 1
        slot.state = Slot.STARTING

    monkeypatch.setattr(Coordinator, "_spawn", spawn)
    monkeypatch.setattr(Slot, "_open_log", lambda self: None)

    def make(n):
        c = Coordinator(cfg, n, echo=False)
        c.queue, c.sel, c.state = FakeQueue(), selectors.DefaultSelector(), Coordinator.STARTING
        c.signals_sent = signals
        c._add_slots()
        return c

    return make


def ready_all(c):
    for slot in c.slots:
        c.queue.register(slot.worker_id, slot.proc.pid)
    c._check_ready()


def test_slots_become_ready_and_the_pool_runs(pool):
    c = pool(2)
    assert [s.state for s in c.slots] == [Slot.STARTING, Slot.STARTING] and c.state == Coordinator.STARTING
    c.queue.register("worker_1@h", c.slots[0].proc.pid)
    c._check_ready()
    assert [s.state for s in c.slots] == [Slot.READY, Slot.STARTING] and c.state == Coordinator.STARTING
    c.queue.register("worker_2@h", c.slots[1].proc.pid, state="busy")
    c._check_ready()
    assert c.state == Coordinator.RUNNING
    published = c.queue.get_flag(flags.coordinator("h"))["value"]
    assert published["state"] == "running" and published["workers"] == 2
    assert published["lease_seconds"] == c.cfg["workers"]["lease_seconds"]


def test_a_row_of_another_pid_does_not_make_a_slot_ready(pool):
    c = pool(1)
    c.queue.register("worker_1@h", 1)  # a previous process under the same id
    c._check_ready()
    assert c.slots[0].state == Slot.STARTING and c.state == Coordinator.STARTING


def test_a_crashing_worker_backs_off_then_is_given_up(pool):
    c = pool(1)
    ready_all(c)
    slot = c.slots[0]
    slot.proc.exit(1)
    c._reap()
    assert slot.state == Slot.BACKOFF and slot.fast_crashes == 1 and slot.restart_at is not None
    assert c.queue.recovered == ["worker_1@h"], "a dead worker's task is returned at once"
    c._spawn(slot)  # what _timers does once restart_at has come
    slot.proc.exit(1)
    c._reap()
    assert slot.state == Slot.BACKOFF and slot.fast_crashes == 2
    c._spawn(slot)
    slot.proc.exit(1)
    c._reap()
    assert slot.state == Slot.FAILED and "3 immediate crashes in a row" in slot.reason
    assert c.state == Coordinator.STOPPING and c.exit_code == supervisor.EXIT_FAIL
    assert supervisor.NO_WORKER in c.stop_reason


def test_a_configuration_error_is_given_up_at_once_as_bad_input(pool):
    c = pool(2)
    ready_all(c)
    for slot in c.slots:
        slot.tail.append("error: claude is not logged in")
        slot.proc.exit(2)
    c._reap()
    assert [s.state for s in c.slots] == [Slot.FAILED, Slot.FAILED]
    assert c.slots[0].reason == "configuration error: claude is not logged in"
    assert c.exit_code == supervisor.EXIT_USAGE and c.state == Coordinator.STOPPING


def test_a_clean_exit_while_running_restarts_without_delay(pool):
    c = pool(1)
    ready_all(c)
    slot = c.slots[0]
    slot.started -= supervisor.FAST_CRASH_SECONDS + 1  # it ran a while: not an immediate crash
    slot.proc.exit(0)
    c._reap()
    assert slot.state == Slot.BACKOFF and slot.fast_crashes == 0 and slot.restart_at <= time.monotonic()


def test_growing_goes_back_to_starting_and_shrinking_retires_the_highest(pool):
    c = pool(1)
    ready_all(c)
    assert c.state == Coordinator.RUNNING
    c.queue.set_flag(flags.resize("h"), {"workers": 3})
    c._check_resize()
    assert c.n == 3 and [s.worker_id for s in c.slots] == ["worker_1@h", "worker_2@h", "worker_3@h"]
    assert c.state == Coordinator.STARTING, "the back-edge: RUNNING -> STARTING until the new workers are ready"
    assert c.queue.get_flag(flags.resize("h")) is None
    ready_all(c)
    assert c.state == Coordinator.RUNNING
    c.queue.workers["worker_3@h"]["state"] = "busy"
    c.queue.set_flag(flags.resize("h"), {"workers": 1})
    c._check_resize()
    sigterms = [pid for pid, sig in c.signals_sent if sig == signal.SIGTERM]
    assert sigterms == [c.slots[1].proc.pid], "a busy surplus worker finishes its task first"
    c.slots[1].proc.exit(0)
    c._reap()
    assert [s.worker_id for s in c.slots] == ["worker_1@h", "worker_3@h"]


def test_a_borrowed_slot_grows_the_pool_up_to_max_workers(pool):
    c = pool(3)
    ready_all(c)
    for task in (1, 2, 3):
        c.queue.set_flag(flags.borrow(task), {"task": task})
    c._check_resize()
    assert c.n == 4 and c.base_n == 3, "capped at max_workers"
    for task in (1, 2, 3):
        c.queue.clear_flag(flags.borrow(task))
    c._check_resize()
    assert c.n == 3


def test_stopping_releases_tasks_without_spending_an_attempt_then_stops(pool):
    c = pool(2)
    ready_all(c)
    c.slots[1].proc.exit(1)
    c._reap()
    assert c.slots[1].state == Slot.BACKOFF
    c.begin_stop("SIGTERM received")
    assert c.state == Coordinator.STOPPING and c.slots[1].state == Slot.STOPPED
    assert [pid for pid, sig in c.signals_sent if sig == signal.SIGTERM] == [c.slots[0].proc.pid]

    class Task:
        id, worker_id, attempt = 7, "worker_1@h", 1

    c.queue.in_progress.append(Task())
    c.slots[0].proc.exit(0)
    c._reap()
    assert c.slots[0].state == Slot.STOPPED and c.queue.released == [7]
    c._timers()
    assert c.state == Coordinator.STOPPED


def test_a_silent_worker_is_killed_after_the_configured_threshold(pool):
    c = pool(1)
    ready_all(c)
    pid = c.slots[0].proc.pid
    c.queue.workers["worker_1@h"]["last_heartbeat"] = time.time() - c.cfg.hung_after + 30
    c._periodic()
    assert (pid, signal.SIGKILL) not in c.signals_sent
    c.queue.workers["worker_1@h"]["last_heartbeat"] = time.time() - c.cfg.hung_after - 1
    c._periodic()
    assert (pid, signal.SIGKILL) in c.signals_sent


def test_timings_follow_the_lease(tmp_path):
    (tmp_path / ".klauss.toml").write_text("[workers]\nlease_seconds = 30\nheartbeat_seconds = 20\n")
    cfg = config.load_config(cwd=tmp_path, env={})
    assert cfg.heartbeat_interval == 10 and cfg.recover_every == 15 and cfg.hung_after == 60


class RecordingSelector:
    def __init__(self):
        self.timeouts = []

    def select(self, timeout):
        self.timeouts.append(timeout)
        return []


@pytest.mark.parametrize("hold", ["db_lost", "disk_full", "db_down"])
def test_a_restart_held_back_does_not_make_the_wait_return_at_once(pool, hold):
    """A dead worker's restart is due, but the database file was replaced (or the disk is full, or
    the server is down): the pool waits for its next tick, not in a loop of zero-timeout selects
    (a coordinator of a deleted project once spun a core that way)."""
    c = pool(1)
    ready_all(c)
    c.slots[0].proc.exit(0)
    c.slots[0].started -= supervisor.FAST_CRASH_SECONDS + 1
    c._reap()
    assert c.slots[0].state == Slot.BACKOFF and c.slots[0].restart_at <= time.monotonic()
    c.next_tick = time.monotonic() + 60
    c.sel = RecordingSelector()
    c._wait()
    assert c.sel.timeouts[-1] == 0, "the due restart is what the wait wakes for"
    setattr(c, hold, "held")
    c._wait()
    c._timers()
    c._wait()
    assert all(t > 30 for t in c.sel.timeouts[1:]), c.sel.timeouts
    assert c.slots[0].state == Slot.BACKOFF and c.slots[0].proc is None, "not restarted while held"


def test_a_full_disk_keeps_the_pool_paused_while_space_is_low_even_if_its_own_log_takes_a_line(pool, monkeypatch):
    """A worker's log line did not fit: the pool pauses. The coordinator's own log may still have
    room on its last page, so that a line written there is no sign the disk has space again: the
    free space decides, as the workers judge it (the flag stays until there is room)."""
    import io

    import claude_queue

    c = pool(1)
    ready_all(c)
    c.log = io.BytesIO()
    monkeypatch.setattr(c.lock, "note_problem", lambda *_: None)
    c._write_failed(c.slots[0].log_path, OSError(28, "No space left on device"))
    low = ["disk full: 4096 bytes free on the logs' disk"]
    monkeypatch.setattr(claude_queue, "disk_full_note", lambda *_: low[0])
    assert c._check_disk() is True, "still full"
    paused = c.queue.get_flag(flags.paused_host("h"))
    assert paused and paused["value"]["reason"] == "disk_full"
    low[0] = None  # space again
    assert c._check_disk() is False and c.disk_full is None
    assert c.queue.get_flag(flags.paused_host("h")) is None and b"writes work again" in c.log.getvalue()
