"""claude_dashboard.py: what a frame shows, keys, resizes and tiny terminals (against a fake screen
that refuses writes outside itself, as curses does), --once as a program, the cost of a refresh,
and the real thing in tmux."""

import curses
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import claude_dashboard
from claude_dashboard import Dashboard, paint, run_screen
from conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / "claude_dashboard.py")
STYLES = {name: 1 << (16 + i) for i, name in enumerate(
    ("title", "heading", "dim", "selected", "pending", "in_progress", "completed", "failed", "cancelled",
     "skipped", "paused", "config_error"))}


class FakeScreen:
    """A curses window stand-in: records what is drawn and refuses, like curses, writes outside the
    window or into its bottom-right cell. Keys come from a script; ("resize", h, w) resizes."""

    def __init__(self, height, width, keys=()):
        self.height, self.width = height, width
        self.keys = list(keys)
        self.violations = []
        self.frames = []
        self.timeouts = []
        self.erase()

    def getmaxyx(self):
        return self.height, self.width

    def erase(self):
        self.cells = [[" "] * self.width for _ in range(self.height)]
        self.attrs = [[0] * self.width for _ in range(self.height)]

    def addstr(self, y, x, text, attr=0):
        end = x + claude_dashboard.text_width(text)
        if not (0 <= y < self.height and 0 <= x < self.width) or end > self.width or (
                y == self.height - 1 and end == self.width):
            self.violations.append((y, x, text))
            raise curses.error("addstr() returned ERR")
        if any(ord(ch) < 32 or ch == "\x7f" for ch in text):
            self.violations.append((y, x, text))
        for ch in text:
            self.cells[y][x], self.attrs[y][x] = ch, attr
            x += 1
            if claude_dashboard.char_width(ch) == 2:
                self.cells[y][x], self.attrs[y][x] = "", attr
                x += 1

    def refresh(self):
        self.frames.append(self.text())

    def timeout(self, ms):
        self.timeouts.append(ms)

    def getch(self):
        key = self.keys.pop(0) if self.keys else ord("q")
        if isinstance(key, tuple):
            _, self.height, self.width = key
            return curses.KEY_RESIZE
        return key

    def text(self):
        return "\n".join("".join(row).rstrip() for row in self.cells)

    def task_row(self, task_id):
        """(text, attribute) of the task list's row for `task_id`."""
        for y, row in enumerate(self.cells):
            line = "".join(row)
            if line.startswith(f"  #{task_id} "):
                return line.rstrip(), self.attrs[y][2]
        raise AssertionError(f"task #{task_id} not listed:\n{self.text()}")

    def row(self, needle):
        """(text, attribute) of the first row containing `needle`."""
        for y, row in enumerate(self.cells):
            line = "".join(row)
            if needle in line:
                return line.rstrip(), self.attrs[y][line.index(needle)]
        raise AssertionError(f"{needle!r} not on screen:\n{self.text()}")


def draw(dash, height, width):
    screen = FakeScreen(height, width)
    paint(screen, dash.frame(width, height), STYLES)
    assert screen.violations == []
    return screen


@pytest.fixture
def world(make_queue, clock):
    """Tasks in every status, two workers (one busy), a job and a live coordinator:
    job tasks #1-#4 (completed, failed, running, cancelled), loose tasks #5-#10 (#5 skipped)."""
    q = make_queue(clock=clock)
    job = q.create_job("Build the auth module")
    q.add_tasks([{"prompt": f"job task {i}", "job_id": job, "priority": 5} for i in range(4)])
    q.add_tasks([{"prompt": f"loose task {i}", "depends_on": [2] if i == 0 else []} for i in range(6)])
    q.register_worker("w1", pid=os.getpid(), state="idle")
    q.register_worker("w2", pid=os.getpid(), state="idle")
    t = q.claim_task("w1")
    q.complete_task(t.id, "w1", {"result": "Wrote it all.", "total_cost_usd": 1.25,
                                 "usage": {"input_tokens": 1500, "output_tokens": 20},
                                 "transcript": "/logs/t.jsonl", "outputs_verified": ["a.py"]})
    t = q.claim_task("w1")
    q.fail_task(t.id, "w1", "tests failed", retryable=False)
    running = q.claim_task("w2")
    q.cancel_task(4)
    clock.advance(125)
    q.worker_heartbeat("w2", state="busy", current_task=running.id)
    q.worker_heartbeat("w1", state="idle")
    q.set_activity(running.id, "w2", "Edit src/auth.py · 12k tokens")
    q.set_flag("coordinator", {"pid": os.getpid(), "workers": 2, "started_at": clock() - 3600})
    return q, job, running


def test_a_frame_shows_counts_pool_jobs_tasks_and_cost(world, clock):
    q, job, running = world
    screen = draw(Dashboard(q, clock=clock), 40, 130)
    text = screen.text()
    assert "cost $1.2500" in text
    assert "Queue: 5 pending  1 running  1 completed  1 failed  1 cancelled  1 skipped  (10 total)" in text
    assert f"coordinator up (pid {os.getpid()}, up 1h00m)" in text and "2 workers, 1 busy" in text
    line, _ = screen.row("w2 ")
    assert "busy" in line and f"#{running.id}" in line and "2m05s" in line and "Edit src/auth.py" in line
    line, _ = screen.row(job)
    assert "[###############-----] 3/4  1 running  1 failed  $1.2500" in line and "Build the auth module" in line
    assert "Tasks (all): 1-10 of 10" in text
    assert "STATUS" in text and "TRIES" in text and "COST" in text
    assert "loose task 5" in screen.task_row(10)[0]


def test_tasks_are_colour_coded_by_status_and_the_selection_is_shown(world, clock):
    q, _, running = world
    screen = draw(Dashboard(q, clock=clock), 40, 130)
    assert screen.task_row(10)[1] == STYLES["pending"] | STYLES["selected"]
    assert screen.task_row(2)[1] == STYLES["failed"]
    assert screen.task_row(running.id)[1] == STYLES["in_progress"]
    assert screen.task_row(4)[1] == STYLES["cancelled"] and screen.task_row(5)[1] == STYLES["skipped"]
    line, attr = screen.task_row(1)
    assert attr == STYLES["completed"] and "$1.2500" in line and "1/3" in line and "w1" in line


def test_banners_for_a_usage_limit_pause_and_a_configuration_error(world, clock):
    q, _, _ = world
    q.set_flag("paused", {"reason": "usage_limit", "message": "Claude usage limit reached"}, until=clock() + 3000)
    q.set_flag("config_error", {"message": "claude is not logged in", "fix": "run `claude /login`"})
    dash = Dashboard(q, clock=clock)
    screen = draw(dash, 40, 130)
    until = time.strftime("%H:%M", time.localtime(clock() + 3000))
    line, attr = screen.row("PAUSED")
    assert f"PAUSED until {until} (in 50m00s): Claude usage limit reached." in line and attr == STYLES["paused"]
    line, attr = screen.row("STOPPED")
    assert "claude is not logged in. Fix: run `claude /login`." in line and attr == STYLES["config_error"]
    clock.advance(3001)  # the limit has reset: the pause banner goes by itself
    q.clear_flag("config_error")
    text = draw(dash, 40, 130).text()
    assert "PAUSED" not in text and "STOPPED" not in text


def test_banners_tolerate_hand_written_flags(world, clock):
    q, _, _ = world
    q.set_flag("paused", True)
    q.set_flag("config_error", "run claude /login")
    text = draw(Dashboard(q, clock=clock), 40, 130).text()
    assert "PAUSED: Workers resume by themselves." in text and "STOPPED by a configuration error: run claude" in text


def test_pool_without_a_live_coordinator(make_queue, clock):
    q = make_queue(clock=clock)
    dash = Dashboard(q, clock=clock)
    assert "coordinator not running  0 workers, 0 busy" in draw(dash, 30, 100).text()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    q.set_flag("coordinator", {"pid": int(gone.stdout), "workers": 4})
    assert f"coordinator not running (pid {int(gone.stdout)} is gone)" in draw(dash, 30, 100).text()


def test_a_silent_worker_is_flagged(world, clock):
    q, _, _ = world
    clock.advance(q.cfg["workers"]["lease_seconds"] + 30)
    q.worker_heartbeat("w2", state="busy")
    assert "no heartbeat for 1m30s" in draw(Dashboard(q, clock=clock), 40, 130).row("w1 ")[0]


# --- keys ----------------------------------------------------------------------------------------

def test_scrolling_pages_through_the_tasks_a_screenful_at_a_time(make_queue, clock):
    q = make_queue(clock=clock)
    q.add_tasks([{"prompt": f"task {i}"} for i in range(100)])
    dash = Dashboard(q, clock=clock)
    screen = draw(dash, 20, 100)
    page = dash.page
    assert f"Tasks (all): 1-{page} of 100" in screen.text() and screen.task_row(100)[1] & STYLES["selected"]
    for _ in range(page):
        dash.handle_key(ord("j"))
    screen = draw(dash, 20, 100)
    assert "#100 " not in screen.text() and screen.task_row(100 - page)[1] & STYLES["selected"]
    dash.handle_key(curses.KEY_END)
    screen = draw(dash, 20, 100)
    assert f"{101 - page}-100 of 100" in screen.text() and screen.task_row(1)[1] & STYLES["selected"]
    dash.handle_key(ord("k"))
    assert draw(dash, 20, 100).task_row(2)[1] & STYLES["selected"]
    dash.handle_key(curses.KEY_HOME)
    assert draw(dash, 20, 100).task_row(100)[1] & STYLES["selected"]
    dash.handle_key(curses.KEY_UP)
    assert dash.cursor == 0


def test_f_cycles_the_status_filter(world, clock):
    q, _, _ = world
    dash = Dashboard(q, clock=clock)
    seen = []
    for _ in range(len(claude_dashboard.FILTERS)):
        dash.handle_key(ord("f"))
        text = draw(dash, 40, 130).text()
        seen.append(re.search(r"Tasks \((\w+)\)", text).group(1))
        if dash.status == "failed":
            assert "tests failed" not in text and "1-1 of 1" in text
    assert seen == ["pending", "running", "completed", "failed", "cancelled", "skipped", "all"]
    dash.handle_key(ord("F"))
    assert dash.status == "skipped"


def test_enter_shows_a_task_in_full_and_escape_returns(world, clock):
    q, _, _ = world
    completed = q.recent_tasks("completed")[0]
    dash = Dashboard(q, status="completed", clock=clock)
    draw(dash, 40, 100)
    dash.handle_key(10)
    text = draw(dash, 40, 100).text()
    for needle in (f"Task #{completed.id} completed", "Cost:        $1.2500", "1,500 in, 20 out",
                   "Verified:    a.py", "Transcript:  /logs/t.jsonl", "Wrote it all.", "History", "claimed"):
        assert needle in text, needle
    assert dash.handle_key(ord("q")) is True and dash.detail is None  # q leaves the details first
    assert "Tasks (completed)" in draw(dash, 40, 100).text()
    assert dash.handle_key(ord("q")) is False


def test_details_scroll_and_survive_the_task_being_purged(make_queue, clock):
    q = make_queue(clock=clock)
    tid = q.add_task("\n".join(f"line {i}" for i in range(80)))
    dash = Dashboard(q, clock=clock)
    draw(dash, 20, 80)
    dash.handle_key(curses.KEY_ENTER)
    assert "line 0" in draw(dash, 20, 80).text()
    for _ in range(30):
        dash.handle_key(ord("j"))
    text = draw(dash, 20, 80).text()
    assert "line 0\n" not in text and "line 30" in text
    with q._write() as conn:
        conn.execute("DELETE FROM tasks WHERE id = ?", (tid,))
    assert "Tasks (all): none" in draw(dash, 20, 80).text() and dash.detail is None


def test_the_loop_redraws_on_keys_resizes_and_timeouts_until_q(world, clock, monkeypatch):
    q, _, _ = world
    monkeypatch.setattr(curses, "update_lines_cols", lambda: None)
    screen = FakeScreen(40, 120, keys=[-1, ord("j"), ("resize", 6, 30), ("resize", 3, 200), ("resize", 1, 1),
                                       ("resize", 30, 90), ord("f"), 10, 27, ord("q")])
    ticks = iter(range(0, 10 ** 6, 1))
    run_screen(screen, Dashboard(q, clock=clock), 2.0, STYLES, clock=lambda: next(ticks))
    assert screen.violations == []
    # One frame at start and one after each key: the -1 is a refresh on the interval.
    assert len(screen.frames) == 10 and screen.keys == []
    assert "Tasks (all)" in screen.frames[0] and "Tasks (all)" in screen.frames[2]
    assert screen.frames[3].startswith("Terminal too small (30x6).")
    assert screen.frames[4].startswith("Terminal too small (200x3).")
    assert screen.frames[5] == ""  # 1x1: curses refuses the only cell; nothing breaks
    assert "Tasks (all)" in screen.frames[6] and "Tasks (pending)" in screen.frames[7]
    assert screen.frames[8].startswith("Task #")
    assert "Tasks (pending)" in screen.frames[9]
    assert all(0 < ms <= 2000 for ms in screen.timeouts)


@pytest.mark.parametrize("height, width", [(1, 1), (2, 10), (5, 20), (9, 39), (10, 40), (12, 50), (24, 80),
                                           (200, 400)])
def test_any_terminal_size_draws_without_a_single_bad_write(world, clock, height, width):
    q, _, _ = world
    q.set_flag("paused", {"message": "limit " * 40}, until=clock() + 60)
    q.set_flag("config_error", {"message": "broken " * 40, "fix": "fix it " * 40})
    dash = Dashboard(q, clock=clock)
    screen = draw(dash, height, width)
    if height < claude_dashboard.MIN_HEIGHT or width < claude_dashboard.MIN_WIDTH:
        first = screen.text().split("\n")[0]
        expected = f"Terminal too small ({width}x{height})."
        assert first == expected[:len(first)] and len(first) >= min(width - 1, len(expected))
    else:
        text = screen.text()
        assert "PAUSED" in text and "STOPPED" in text and "Tasks (" in text and "q quit"[:width] in text
    dash.handle_key(10)
    draw(dash, height, width)


def test_hostile_text_cannot_break_the_screen(make_queue, clock):
    q = make_queue(clock=clock)
    q.add_task("修复登录错误 \x1b[31mred\x1b[0m\ttab\rreturn " + "宽" * 200)
    q.register_worker("\x1b]0;title\x07w9", state="busy")
    dash = Dashboard(q, clock=clock)
    for width in (41, 42, 80, 81, 121, 122, 200):
        screen = draw(dash, 20, width)
        assert "\x1b" not in screen.text()
        if width > 120:
            assert "修复登录错误 red tab return 宽宽" in screen.text()
    dash.handle_key(10)
    assert "\x1b" not in draw(dash, 20, 41).text() and "title" not in draw(dash, 20, 41).text()


def test_database_errors_are_shown_not_raised(world, clock, monkeypatch):
    q, _, _ = world

    def broken(*args, **kwargs):
        raise claude_dashboard.sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(q, "get_stats", broken)
    assert "database error: database disk image is malformed" in draw(Dashboard(q, clock=clock), 20, 80).text()


def test_no_color_uses_attributes_only(monkeypatch):
    def no_curses_colours(*args):
        raise AssertionError("NO_COLOR must not touch colours")

    for name in ("start_color", "init_pair", "color_pair", "use_default_colors"):
        monkeypatch.setattr(curses, name, no_curses_colours)
    styles = claude_dashboard.make_styles(False)
    assert styles["failed"] == curses.A_BOLD and styles["title"] & curses.A_REVERSE


# --- the cost of a refresh -----------------------------------------------------------------------

def steps_per_frame(q, dash, height=40):
    """SQLite virtual-machine steps (in hundreds) one frame costs: a measure that, unlike time,
    does not vary with the machine."""
    conn = q._connect()
    count = [0]

    def tick():
        count[0] += 1
        return 0

    conn.set_progress_handler(tick, 100)
    try:
        dash.frame(120, height)
    finally:
        conn.set_progress_handler(None, 100)
    return count[0]


def fill(q, finished, clock):
    """`finished` old tasks (completed, with three failed among the oldest), then the same 30
    recent ones (pending, running, failed) in every database."""
    if finished:
        q.add_tasks([{"prompt": f"old {i} " + "x" * 200} for i in range(finished)])
        with q._write() as conn:
            conn.execute("UPDATE tasks SET status = 'completed', finished_at = 1, cost_usd = 0.01, "
                         "result = 'done' WHERE id > 3")
            conn.execute("UPDATE tasks SET status = 'failed', finished_at = 1 WHERE id <= 3")
    q.add_tasks([{"prompt": f"new {i}"} for i in range(30)])
    q.register_worker("w1")
    t = q.claim_task("w1")
    q.worker_heartbeat("w1", state="busy", current_task=t.id)


def test_recent_tasks_returns_what_list_tasks_does(world):
    """The dashboard's bounded query (TaskQueue.recent_tasks) against the plain one as reference."""
    q, job, _ = world
    filters = [None, *claude_dashboard.FILTERS[1:], ["failed", "pending"], ["completed", "cancelled", "skipped"]]
    for status in filters:
        for job_id in (None, job):
            everything = [t.id for t in q.list_tasks(status=status, job_id=job_id)]
            for limit, offset in ((None, 0), (3, 0), (3, 2), (50, 1), (0, 0), (5, 100)):
                got = [t.id for t in q.recent_tasks(status, job_id, limit=limit, offset=offset)]
                assert got == everything[offset:None if limit is None else offset + limit], (status, job_id, limit, offset)
    assert q.recent_tasks(limit=1)[0].to_dict() == q.list_tasks(limit=1)[0].to_dict()
    with pytest.raises(ValueError, match="status: unknown 'done'"):
        q.recent_tasks("done")
    with pytest.raises(ValueError, match="limit"):
        q.recent_tasks(limit=-1)


@pytest.mark.parametrize("status", [None, "pending", "in_progress", "completed", "failed", "cancelled"])
def test_a_refresh_costs_the_same_with_5000_finished_tasks_as_with_none(make_queue, clock, tmp_path, status):
    small = make_queue(clock=clock, db=tmp_path / "small.db")
    big = make_queue(clock=clock, db=tmp_path / "big.db")
    fill(small, 0, clock)
    fill(big, 5000, clock)
    small_steps = steps_per_frame(small, Dashboard(small, status=status, clock=clock))
    big_steps = steps_per_frame(big, Dashboard(big, status=status, clock=clock))
    # A scan of the big table would cost thousands of steps; a deeper B-tree costs a few.
    assert big_steps <= small_steps * 1.5 + 20, (small_steps, big_steps)


# --- the program ---------------------------------------------------------------------------------

def clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_") and k != "NO_COLOR"}
    env.update(extra)
    return env


def test_once_prints_a_plain_snapshot(world, tmp_path):
    q, job, running = world
    q.set_flag("paused", {"message": "Claude usage limit reached"}, until=time.time() + 600)
    out = subprocess.run([sys.executable, SCRIPT, str(q.db_path), "--once"], cwd=str(tmp_path),
                         capture_output=True, text=True, timeout=60, env=clean_env(COLUMNS="100"))
    assert (out.returncode, out.stderr) == (0, "")
    for needle in ("Queue: 5 pending", "PAUSED until", "Pool: coordinator", "Edit src/auth.py", job,
                   "Tasks (all): 1-10 of 10", "loose task 5", "$1.2500"):
        assert needle in out.stdout, needle
    assert "\x1b" not in out.stdout and max(map(len, out.stdout.splitlines()[:1])) <= 100
    out = subprocess.run([sys.executable, SCRIPT, "--db", str(q.db_path), "--once", "--status", "failed"],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=60, env=clean_env())
    assert "Tasks (failed): 1-1 of 1" in out.stdout and "loose task 5" not in out.stdout


@pytest.mark.parametrize("args, message", [
    (["{db}"], "not a terminal; use --once"),
    (["missing.db", "--once"], "no database at"),
    (["{db}", "--once", "--interval", "0"], "--interval"),
    (["{db}", "--once", "--status", "done"], "--status"),
    (["{db}", "--db", "other.db", "--once"], "give the database once"),
])
def test_program_errors_are_one_line_exit_2(world, tmp_path, args, message):
    q, _, _ = world
    argv = [a.replace("{db}", str(q.db_path)) for a in args]
    out = subprocess.run([sys.executable, SCRIPT, *argv], cwd=str(tmp_path), capture_output=True, text=True,
                         timeout=60, env=clean_env(), stdin=subprocess.DEVNULL)
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "missing.db").exists()


# --- a real terminal -----------------------------------------------------------------------------

class Tmux:
    """A private tmux server (its own socket), so the test never touches the user's sessions."""

    def __init__(self):
        self.socket = f"klauss-test-{uuid.uuid4().hex[:8]}"

    def __call__(self, *args):
        return subprocess.run(["tmux", "-L", self.socket, "-f", os.devnull, *args], capture_output=True,
                              text=True, timeout=30)

    def screen(self, colours=False):
        return self("capture-pane", "-p", *(["-e"] if colours else []), "-t", "dash").stdout

    def wait_for(self, needle, colours=False, deadline=20):
        def shown():
            text = self.screen(colours)
            return text if re.search(needle, text) else None
        return wait_for(shown, timeout=deadline, what=lambda: f"{needle!r} to appear:\n{self.screen()}")


@pytest.fixture
def tmux():
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    server = Tmux()
    yield server
    socket = server("display-message", "-p", "#{socket_path}").stdout.strip()
    server("kill-server")
    if socket and os.path.exists(socket):  # tmux leaves it behind
        os.unlink(socket)


def start_dashboard(tmux, db, tmp_path, env=""):
    command = (f"cd {tmp_path} && env -u KLAUSS_DB {env} {sys.executable} {SCRIPT} {db} --interval 0.5; "
               "echo DASHBOARD-EXIT=$?; sleep 60")
    tmux("new-session", "-d", "-s", "dash", "-x", "100", "-y", "30", command)


def test_in_a_real_terminal_keys_resize_and_quit(world, tmp_path, tmux):
    q, _, _ = world
    start_dashboard(tmux, q.db_path, tmp_path)
    tmux.wait_for(r"Tasks \(all\): 1-10 of 10")
    tmux("send-keys", "-t", "dash", "f")
    tmux.wait_for(r"Tasks \(pending\)")
    tmux("resize-window", "-t", "dash", "-x", "30", "-y", "6")
    tmux.wait_for(r"Terminal too small \(30x6\)")
    tmux("resize-window", "-t", "dash", "-x", "100", "-y", "30")
    tmux.wait_for(r"Tasks \(pending\)")
    tmux("send-keys", "-t", "dash", "Enter")
    tmux.wait_for(r"History")
    tmux("send-keys", "-t", "dash", "Escape")
    tmux.wait_for(r"Tasks \(pending\)")
    q.add_task("a task added while watching")  # the next refresh shows it
    tmux.wait_for(r"a task added while watching")
    tmux("send-keys", "-t", "dash", "q")
    assert "Traceback" not in tmux.wait_for(r"DASHBOARD-EXIT=0")


def test_in_a_real_terminal_colours_follow_no_color(world, tmp_path, tmux):
    q, _, _ = world
    start_dashboard(tmux, q.db_path, tmp_path)
    coloured = tmux.wait_for(r"Tasks \(all\)", colours=True)
    assert re.search(r"\x1b\[(?:[0-9;]*;)?31m[^\n]*failed", coloured)
    tmux("send-keys", "-t", "dash", "q")
    tmux.wait_for(r"DASHBOARD-EXIT=0")
    tmux("kill-session", "-t", "dash")
    start_dashboard(tmux, q.db_path, tmp_path, env="NO_COLOR=1")
    plain = tmux.wait_for(r"Tasks \(all\)", colours=True)
    assert not re.search(r"\x1b\[(?:[0-9;]*;)?3[1-6]m", plain)
