#!/usr/bin/env python3
"""A live view of the Klauss queue and its worker pool.

    python claude_dashboard.py [DB] [--db PATH] [--interval S] [--status S] [--once]

Keys: Up/Down or j/k move, PgUp/PgDn page, Home/End (g/G) jump, f cycles the status filter,
Enter shows the selected task (Esc, Backspace or q goes back), q quits.
--once prints one plain-text snapshot without curses, for scripts and non-terminals. NO_COLOR
(set and not empty) turns colours off.

Each refresh reads only what is on screen: the per-status counts kept by triggers, the flags and
workers, a few jobs, and one page of tasks through `TaskQueue.recent_tasks`, so its cost does not
grow with the number of finished tasks.
"""

import argparse
import curses
import locale
import os
import shutil
import sqlite3
import sys
import textwrap
import time

import claude_queue
import cli_args
import config
import exits
import flags
import hints
import hosts
import integration
import processes
import queues
import states
import task_report
from exits import EXIT_FAIL, EXIT_OK, EXIT_USAGE

PROG = hints.prog("claude_dashboard.py", "dashboard")
MIN_WIDTH, MIN_HEIGHT = 40, 10
FILTERS = (None, *claude_queue.STATUSES)
STATUS_LABELS = {status: task_report.status_word(status) for status in claude_queue.STATUSES}
ONCE_TASKS, ONCE_JOBS = 20, 10
KEY_ESC = 27
QUIT_KEYS = (ord("q"), ord("Q"))
BACK_KEYS = (KEY_ESC, ord("q"), ord("Q"), ord("h"), 127, 8, curses.KEY_BACKSPACE, curses.KEY_LEFT)
ENTER_KEYS = (10, 13, curses.KEY_ENTER)


# --- text that fits -----------------------------------------------------------------------------

char_width, text_width, clip = task_report.char_width, task_report.text_width, task_report.clip
clean = task_report.clean  # the one sanitizer, shared with `list` and `show`


def shorten(text, width):
    return task_report.shorten(clean(text), width, ellipsis="...", cells=True)


def fmt_clock(ts, now):
    """Local time of day, with the date when it is not today."""
    local, today = time.localtime(ts), time.localtime(now)
    fmt = "%H:%M" if local[:3] == today[:3] else "%a %d %b %H:%M"
    return time.strftime(fmt, local)


def bar(done, total, width):
    filled = 0 if not total else min(width, done * width // total)
    return "[" + "#" * filled + "-" * (width - filled) + "]"


def _message(value, *keys):
    """The first of `keys` in a flag's value; flags written by hand may be plain strings."""
    if isinstance(value, dict):
        for key in keys:
            if value.get(key):
                return str(value[key])
        return ""
    return "" if value in (None, True) else str(value)


def _sentence(text):
    text = text.strip()
    return text if text.endswith((".", "!", "?")) else text + "."


# --- the model: what one refresh reads, and the lines it becomes --------------------------------

def pool_lease(coordinator, cfg):
    """The lease the running pool works with (its coordinator publishes it), by which a worker's
    silence is judged; this process's own configuration only when no pool says."""
    value = coordinator["value"] if coordinator else None
    lease = value.get("lease_seconds") if isinstance(value, dict) else None
    if isinstance(lease, (int, float)) and not isinstance(lease, bool) and lease > 0:
        return lease
    return cfg["workers"]["lease_seconds"]


class Dashboard:
    """State (filter, selection, detail view) and rendering. `frame(width, height)` reads the
    database and returns the screen as lines of (text, style) segments; `height=None` renders a
    full plain snapshot."""

    def __init__(self, queue, status=None, clock=time.time, title=None):
        self.q = queue
        self.status = status
        self.clock = clock
        self.title = title or config.shown_db(queue.db_path)
        self.cursor = 0  # index of the selected task within the filtered list
        self.offset = 0  # index of the first task on screen
        self.page = 1  # task rows on screen at the last frame
        self.shown = []  # the tasks on screen at the last frame
        self.total = 0  # tasks matching the filter at the last frame
        self.detail = None  # a task id while its details are shown
        self.detail_offset = 0

    # --- keys ---

    def handle_key(self, key):
        """Apply one key; False means quit."""
        if self.detail is not None:
            if key in BACK_KEYS:
                self.detail = None
            elif key in (curses.KEY_DOWN, ord("j")):
                self.detail_offset += 1
            elif key in (curses.KEY_UP, ord("k")):
                self.detail_offset = max(0, self.detail_offset - 1)
            elif key in (curses.KEY_NPAGE, ord(" ")):
                self.detail_offset += max(1, self.page)
            elif key == curses.KEY_PPAGE:
                self.detail_offset = max(0, self.detail_offset - max(1, self.page))
            return True
        if key in QUIT_KEYS:
            return False
        moves = {curses.KEY_DOWN: 1, ord("j"): 1, curses.KEY_UP: -1, ord("k"): -1,
                 curses.KEY_NPAGE: self.page, ord(" "): self.page, curses.KEY_PPAGE: -self.page,
                 curses.KEY_HOME: -10 ** 12, ord("g"): -10 ** 12, curses.KEY_END: 10 ** 12, ord("G"): 10 ** 12}
        if key in moves:
            self.move(moves[key])
        elif key in (ord("f"), ord("F")):
            step = 1 if key == ord("f") else -1
            self.status = FILTERS[(FILTERS.index(self.status) + step) % len(FILTERS)]
            self.cursor = self.offset = 0
        elif key in ENTER_KEYS:
            index = self.cursor - self.offset
            if 0 <= index < len(self.shown):
                self.detail = self.shown[index].id
                self.detail_offset = 0
        return True

    def move(self, delta):
        self.cursor = max(0, min(self.cursor + delta, self.total - 1))
        self._follow_cursor()

    def _follow_cursor(self):
        if self.cursor < self.offset:
            self.offset = self.cursor
        elif self.cursor >= self.offset + self.page:
            self.offset = self.cursor - self.page + 1
        self.offset = max(0, min(self.offset, max(0, self.total - self.page)))

    # --- frames ---

    def frame(self, width, height=None):
        now = self.clock()
        if height is not None and (width < MIN_WIDTH or height < MIN_HEIGHT):
            message = [f"Terminal too small ({width}x{height}).", f"Need {MIN_WIDTH}x{MIN_HEIGHT}; q quits."]
            return [[(line, "title")] for line in message][:height]
        try:
            if self.detail is not None:
                return self._detail_frame(width, height, now)
            return self._main_frame(width, height, now)
        except (sqlite3.Error, claude_queue.QueueError) as exc:
            # The database may be mid-migration, replaced or deleted; keep the screen alive.
            return [[(f"Klauss - {self.title}", "title")], [(f"database error: {exc}", "failed")],
                    [("retrying at the next refresh; q quits", "dim")]]

    def _main_frame(self, width, height, now):
        q = self.q
        stats = q.get_stats()
        mine = task_report.queue_user_stats(q, stats)  # the merge queue's own tasks are not the user's
        paused = hosts.pause_flag(q, q.cfg.host, hosts.login_key(q.cfg))
        config_error = hosts.config_error_flag(q, q.cfg.host)
        coordinator = q.get_flag(flags.coordinator(q.cfg.host)) or q.get_flag(flags.COORDINATOR)
        workers = q.list_workers()
        running = {t.id: t for t in q.recent_tasks("in_progress", limit=max(50, len(workers)))}
        jobs = q.list_jobs(limit=ONCE_JOBS if height is None else max(1, height // 6))

        counts = [("Queue: ", "heading")]
        for status in claude_queue.STATUSES:
            counts += [(f"{mine[status]:,} {STATUS_LABELS[status]}", status if mine[status] else "dim"),
                       ("  ", "")]
        counts.append((f"({mine['total']:,} total)", "dim"))
        if mine.get("integrating"):
            counts.append((f"  {mine['integrating']:,} integrating", "in_progress"))
        banner_lines = 3 if height is None or height >= 24 else 2 if height >= 14 else 1
        lines = [self._title_line(width, now, stats), counts,
                 *self._banners(width, now, paused, config_error, banner_lines)]

        if height is None:
            worker_rows, job_rows, gaps = len(workers), len(jobs), True
        else:
            # After the pool line, the task headings and the footer, the task list keeps at least
            # half of the room; workers come next, then jobs, then blank separators.
            avail = height - len(lines) - 4
            rest = avail - max(1, avail // 2)
            worker_rows = min(len(workers), max(0, rest))
            rest -= worker_rows
            job_rows = min(len(jobs), max(0, rest - 1))
            gaps = avail >= 16

        lines += [[]] * gaps
        lines.append(self._pool_line(coordinator, workers, now))
        lease = pool_lease(coordinator, q.cfg)
        hidden = len(workers) - worker_rows
        for w in workers[:worker_rows - 1 if hidden else worker_rows]:
            lines.append(self._worker_line(w, running.get(w["current_task"]), now, lease, width))
        if hidden and worker_rows:
            more = f"  ... {hidden + 1} more" if worker_rows > 1 else f"  ({len(workers)} workers not shown)"
            lines.append([(more, "dim")])

        if job_rows:
            lines += [[]] * gaps
            lines.append([("Jobs", "heading")])
            for job in jobs[:job_rows]:
                lines.append(self._job_line(job, width))

        lines += [[]] * gaps
        self.total = stats["total"] if self.status is None else stats[self.status]
        self.page = ONCE_TASKS if height is None else max(1, height - len(lines) - 3)
        self.cursor = max(0, min(self.cursor, self.total - 1))
        self._follow_cursor()
        self.shown = self.q.recent_tasks(self.status, limit=self.page, offset=self.offset)
        label = "all" if self.status is None else STATUS_LABELS[self.status]
        span = f"{self.offset + 1}-{self.offset + len(self.shown)} of {self.total:,}" if self.shown else "none"
        # The list shows every task; the merge queue's are not in the queue line's counts.
        merging = self.total - (mine["total"] if self.status is None else mine[self.status])
        span += f" ({merging:,} of them the merge queue's)" if merging and self.shown else ""
        lines.append([(f"Tasks ({label}): {span}", "heading")])
        rows = [self._task_cells(task, now) for task in self.shown]
        # Wider only while a shown task needs it ("completed, 1 denied"), so prompts keep their room.
        status_width = max([10] + [len(r[1]) + 1 for r in rows])
        lines.append([(self._task_columns(["ID", "STATUS", "PRI", "WORKER", "TRIES", "COST", "UPDATED", "PROMPT"],
                                          width, status_width), "dim")])
        for index, (task, cells) in enumerate(zip(self.shown, rows)):
            selected = height is not None and self.offset + index == self.cursor
            lines.append([(self._task_columns(cells, width, status_width),
                           task.status + ("+selected" if selected else ""))])
        if height is None:
            return lines
        lines = lines[:height - 1]
        lines += [[]] * (height - 1 - len(lines))
        lines.append([(f"q quit  j/k move  f filter: {label}  Enter details", "dim")])
        return lines

    def _title_line(self, width, now, stats):
        right = f"cost {task_report.fmt_cost(stats['cost_usd'])}  {time.strftime('%H:%M:%S', time.localtime(now))}"
        left = f"Klauss  {self.title}"
        gap = width - text_width(right) - 1
        left = shorten(left, max(0, gap - 1))
        return [(left + " " * max(1, gap - text_width(left)) + right, "title")]

    def _banners(self, width, now, paused, config_error, max_lines):
        banners = []
        if config_error is not None:
            value = config_error["value"]
            fix = _message(value, "fix")
            banners.append(("STOPPED by a configuration error: "
                            + _sentence(_message(value, "message") or "see the worker logs")
                            + (f" Fix: {_sentence(fix)}" if fix else "") + " Then restart the workers.",
                            "config_error"))
        if paused is not None:
            until = paused["until"]
            when = f" until {fmt_clock(until, now)} ({task_report.fmt_ago(until, now)})" if until else ""
            reason = _message(paused["value"], "message", "reason")
            banners.append((f"PAUSED{when}: " + (_sentence(reason) + " " if reason else "")
                            + "Workers resume by themselves.", "paused"))
        lines = []
        for text, style in banners:
            wrapped = textwrap.wrap(clean(text), max(10, width - 2))[:max_lines]
            lines += [[(" " + part.ljust(width - 2) + " ", style)] for part in wrapped]
        return lines

    def _pool_line(self, coordinator, workers, now):
        busy = sum(1 for w in workers if w["state"] == states.BUSY)
        summary = f"  {len(workers)} worker{'s' if len(workers) != 1 else ''}, {busy} busy"
        value = coordinator["value"] if coordinator else None
        pid = value.get("pid") if isinstance(value, dict) else None
        if isinstance(pid, int) and processes.pid_alive(pid):
            since = value.get("started_at")
            since = f", up {task_report.fmt_duration(now - since)}" if isinstance(since, (int, float)) else ""
            return [("Pool: ", "heading"), (f"coordinator up (pid {pid}{since})", "completed"), (summary, "")]
        state = f"coordinator not running (pid {pid} is gone)" if pid else "coordinator not running"
        return [("Pool: ", "heading"), (state, "dim"), (summary, "")]

    def _worker_line(self, w, task, now, lease, width):
        state = w["state"]
        style = {states.BUSY: "in_progress", states.PAUSED: "skipped", states.CONFIG_ERROR: "failed"}.get(state, "")
        silent = now - (w["last_heartbeat"] or now)
        cells = [f"  {w['worker_id']:<12} ", f"{state:<12} "]
        if task is not None:
            elapsed = task_report.fmt_duration(now - task.started_at) if task.started_at else "-"
            cells.append(f"#{task.id:<7} {elapsed:>7}  ")
            cells.append(shorten(task.activity or task.prompt, max(0, width - sum(map(len, cells)))))
        elif w["current_task"]:
            cells.append(f"#{w['current_task']}")
        segments = [("".join(cells[:2]), style), ("".join(cells[2:]), "")]
        if silent > lease:
            segments.append((f"  no heartbeat for {task_report.fmt_duration(silent)}", "failed"))
        return segments

    def _job_line(self, job, width):
        s = integration.user_stats(self.q, job)  # the merge queue's own tasks are not the user's
        done = sum(s[x] for x in claude_queue.FINISHED)
        extra = "".join(f"  {s[k]} {STATUS_LABELS[k]}" for k in ("in_progress", "failed") if s[k])
        extra += task_report.job_denied_note(s).replace(",", " ")
        extra += f"  {s['integrating']} integrating" if s.get("integrating") else ""
        progress = task_report.job_progress(s)
        head = f"  {job['id']:<22} {bar(done, s['total'], 20)} {progress}{extra}  {task_report.fmt_cost(s['cost_usd'])}  "
        style = ("failed" if s["failed"] else "cancelled" if progress == "cancelled"
                 else "completed" if s["total"] and done == s["total"] else "")
        return [(head, style), (shorten(job["description"], max(0, width - len(head))), "")]

    @staticmethod
    def _task_cells(task, now):
        when = task.finished_at or task.started_at or task.created_at
        return [f"#{task.id}", task_report.status_label(task, STATUS_LABELS.get(task.status)), str(task.priority),
                task.worker_id or "-", f"{task.attempts_used}/{task.max_attempts}", task_report.fmt_cost(task.cost_usd),
                task_report.fmt_ago(when, now), task.prompt]

    @staticmethod
    def _task_columns(cells, width, status_width=10):
        widths = (8, status_width, 4, 12, 6, 10, 12)
        text = "  " + "".join(shorten(c, w - 1).ljust(w) for c, w in zip(cells, widths))
        return text + shorten(cells[-1], max(0, width - len(text)))

    # --- details of one task ---

    def _detail_frame(self, width, height, now):
        task = self.q.get_task(self.detail)
        if task is None:
            self.detail = None
            return self._main_frame(width, height, now)
        body = self._describe(task, self.q.get_events(task.id), now, width, self.q.get_dependents(task.id),
                              task_report.find_transcript(self.q.cfg, task), integration.task_row(self.q, task))
        header = [[(shorten(f"Task #{task.id}  {STATUS_LABELS.get(task.status, task.status)}", width), "title")]]
        if height is None:
            return header + body
        room = height - 2
        self.page = max(1, room)
        self.detail_offset = max(0, min(self.detail_offset, len(body) - room))
        visible = body[self.detail_offset:self.detail_offset + room]
        visible += [[]] * (room - len(visible))
        more = f"  lines {self.detail_offset + 1}-{self.detail_offset + min(room, len(body))} of {len(body)}"
        return header + visible + [[("Esc/q back  j/k scroll" + more, "dim")]]

    @staticmethod
    def _describe(task, events, now, width, dependents=(), transcript=None, merging=None):
        """task_report's details of a task (the same as `show`), coloured and wrapped to the screen."""
        status, rows = task_report.task_details(task, events, dependents, transcript, now, integration=merging)
        lines = []
        for kind, name, value, style in [("field", "Status", status, task.status), *rows]:
            if kind == "field":
                lines.append([(f"{name + ':':<{task_report.FIELD_WIDTH}}", "heading"),
                              (shorten(str(value), width - task_report.FIELD_WIDTH), style)])
                continue
            lines.append([(name, "heading")])
            for paragraph in value:
                for part in textwrap.wrap(clean(paragraph), max(10, width - 2)) or [""]:
                    lines.append([("  " + part, style)])
        return lines


# --- drawing on a screen ------------------------------------------------------------------------

def make_styles(use_color):
    """Style name -> curses attribute. Colours only when wanted and available."""
    plain = {"title": curses.A_REVERSE | curses.A_BOLD, "heading": curses.A_BOLD, "dim": curses.A_DIM,
             "selected": curses.A_REVERSE, "failed": curses.A_BOLD,
             "paused": curses.A_REVERSE | curses.A_BOLD, "config_error": curses.A_REVERSE | curses.A_BOLD}
    if not use_color:
        return plain
    curses.start_color()
    try:
        curses.use_default_colors()
        background = -1
    except curses.error:
        background = curses.COLOR_BLACK
    colours = {"in_progress": (curses.COLOR_CYAN, background), "completed": (curses.COLOR_GREEN, background),
               "failed": (curses.COLOR_RED, background), "cancelled": (curses.COLOR_MAGENTA, background),
               "skipped": (curses.COLOR_YELLOW, background), "paused": (curses.COLOR_BLACK, curses.COLOR_YELLOW),
               "config_error": (curses.COLOR_WHITE, curses.COLOR_RED)}
    styles = dict(plain)
    for number, (name, (fg, bg)) in enumerate(colours.items(), 1):
        curses.init_pair(number, fg, bg)
        styles[name] = curses.color_pair(number) | (curses.A_BOLD if name in ("failed", "paused", "config_error") else 0)
    return styles


def attr_of(style, styles):
    attr = 0
    for part in style.split("+") if style else ():
        attr |= styles.get(part, 0)
    return attr


def paint(screen, lines, styles):
    """Write `lines` on `screen`, clipped to its size (curses refuses the bottom-right cell)."""
    height, width = screen.getmaxyx()
    screen.erase()
    for y, segments in enumerate(lines[:height]):
        x = 0
        for text, style in segments:
            room = width - x - (1 if y == height - 1 else 0)
            if room <= 0:
                break
            text = clip(clean(text), room)
            if text:
                try:
                    screen.addstr(y, x, text, attr_of(style, styles))
                except curses.error:
                    pass
            x += text_width(text)
    screen.refresh()


def run_screen(screen, dash, interval, styles, clock=time.monotonic):
    """The interactive loop: redraw on every key and every `interval` seconds until q."""
    next_refresh = 0.0
    while True:
        height, width = screen.getmaxyx()
        paint(screen, dash.frame(width, height), styles)
        now = clock()
        if now >= next_refresh:
            next_refresh = now + interval
        screen.timeout(max(1, int((next_refresh - now) * 1000)))
        key = screen.getch()
        if key == curses.KEY_RESIZE:
            curses.update_lines_cols()
            continue
        if key != -1 and not dash.handle_key(key):
            return


def plain_text(lines):
    return "\n".join("".join(text for text, _ in segments).rstrip() for segments in lines)


# --- the program --------------------------------------------------------------------------------

def _positive(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value > 3600:
        raise argparse.ArgumentTypeError(f"expected seconds between 0 and 3600, got {text!r}")
    return value


def open_queue(db):
    """The queue, by queues.open_queue's rule. A database named explicitly must exist (a mistyped
    path says so); the project's own is created empty, so a fresh project shows an empty queue
    that fills as tasks arrive."""
    cfg = config.load_config(db=db)
    explicit = bool(db or os.environ.get("KLAUSS_DB"))
    return queues.open_queue(cfg, create=not explicit, must_exist=explicit)


def main(argv=None):
    parser = cli_args.Parser(prog=PROG, command=("dashboard",), description=__doc__.split("\n\n")[0],
                     epilog="Keys: j/k or arrows move, f filter, Enter details, q quit.")
    parser.add_argument("db", nargs="?", metavar="DB", help="the queue database (default: the project's)")
    parser.add_argument("--db", dest="db_option", metavar="PATH", help="same as DB")
    parser.add_argument("--interval", type=_positive, default=2.0, metavar="S", help="seconds between refreshes (2)")
    parser.add_argument("--status", type=cli_args.status_arg, metavar="S",
                        help="start with this status filter (pending, running, completed, failed, cancelled, skipped)")
    parser.add_argument("--once", action="store_true", help="print one plain-text snapshot and exit")
    try:
        args = parser.parse_args(argv)
        if args.db and args.db_option and args.db != args.db_option:
            parser.error("give the database once, as DB or --db")
    except cli_args.CliError as exc:
        print(exc, file=sys.stderr)
        return exc.code
    try:
        q = open_queue(args.db or args.db_option)
        dash = Dashboard(q, status=args.status)
        if args.once:
            print(plain_text(dash.frame(shutil.get_terminal_size((120, 40)).columns)))
            return EXIT_OK
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            raise claude_queue.QueueError("not a terminal; use --once for a plain-text snapshot")
        locale.setlocale(locale.LC_ALL, "")  # so curses writes UTF-8 prompts correctly
        # LINES/COLUMNS inherited from a parent (pytest, some tools) pin curses to that size and
        # hide every resize; without them curses asks the terminal.
        for var in ("LINES", "COLUMNS"):
            os.environ.pop(var, None)
        use_color = not os.environ.get("NO_COLOR")

        def run(screen):
            try:
                curses.curs_set(0)
            except curses.error:
                pass
            screen.keypad(True)
            curses.set_escdelay(25)  # Esc leaves the details at once, not after curses' default 1 s
            styles = make_styles(use_color and curses.has_colors())
            run_screen(screen, dash, args.interval, styles)

        curses.wrapper(run)
        return EXIT_OK
    except claude_queue.DatabaseUnavailable as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    except (config.ConfigError, claude_queue.QueueError, sqlite3.Error, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except curses.error as exc:
        print(f"{PROG}: error: this terminal cannot run the dashboard ({exc}); use --once", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        raise  # the reader went away: exits.run ends quietly
    except Exception as exc:  # a bug: still one line, with where it happened
        print(cli_args.internal_error(PROG, exc), file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(exits.run(main))
