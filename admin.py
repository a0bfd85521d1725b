"""Admin views of the pool, for people: the `status` and `ps` tables, `logs`, `clean`, `doctor`
and `init-config`. Each `cmd_*` takes the parsed arguments of its claude_coordinator.py command,
prints, and returns an exit code; the data comes from pool.py (status) and the database. Nothing
here starts, stops or signals the pool.
"""

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import claude_queue
import config
import flags
import hints
import hosts
import pool
import processes
import queues
import states
import task_report
from exits import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from processes import process_table
from queues import open_queue
from supervisor import LOG_NAME, PID_NAME, eprint, locked_coordinator

HERE = Path(__file__).resolve().parent
MIN_PYTHON = (3, 9)


def load(args):
    return config.load_config(db=getattr(args, "db", None))


# --- status and ps ---

def _fmt_age(seconds):
    return "-" if seconds is None else task_report.fmt_duration(seconds)


def _fmt_mem(kb):
    if kb is None:
        return "-"
    return f"{kb / 1024:.0f}M" if kb < 1024 * 1024 else f"{kb / 1024 / 1024:.1f}G"


def disk_full_note(cfg):
    return claude_queue.disk_full_note(cfg.state_dir, cfg.db_path.parent)


def cmd_status(args):
    cfg = load(args)
    try:
        queue = open_queue(cfg, create=False)
    except claude_queue.DatabaseUnavailable as exc:
        # The pool rides out an outage (supervisor._database_down): say that it is there and waits.
        found = locked_coordinator(cfg.state_dir)
        if found and args.json:
            print(json.dumps({"coordinator": {"pid": found["pid"], "state": "waiting for the database"},
                              "error": str(exc)}, indent=2, sort_keys=True))
        elif found:
            print(f"pool: coordinator pid {found['pid']} is running and waits for the database")
        raise
    try:
        st = pool.status(cfg, queue)
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
    if st["pool_state"]["state"] in (states.POOL_CONFIG_ERROR, states.POOL_PAUSED):
        print(st["pool_state"]["text"])
    for host, h in sorted(st["hosts"].items()):
        if host == st["host"]:
            continue
        what = f"coordinator pid {h['coordinator_pid']} there, {h['workers']} worker(s), {h['state']}" \
            if h["coordinator_pid"] else "no coordinator"
        if h.get("silent_for"):
            what += f", silent for {_fmt_age(h['silent_for'])} (down or cut off? its tasks return once their leases expire)"
        print(f"host {host}: {what}" + (f"; stopped by a configuration error: {h['config_error'].get('message')}"
                                        if isinstance(h.get("config_error"), dict) else ""))
    if st["workers"]:
        print(f"{'WORKER':<12} {'HOST':<16} {'PID':>7} {'STATE':<12} {'TASK':>6} {'CPU%':>6} {'MEM':>6} {'BEAT':>6}  CLAUDE")
        for w in st["workers"]:
            claude = (f"pid {w['claude_pid']} {w['claude_cpu_percent']:.1f}% {_fmt_mem(w['claude_rss_kb'])}"
                      if w["claude_pid"] else "-")
            task = f"#{w['current_task']}" if w["current_task"] else "-"
            cpu = f"{w['cpu_percent']:.1f}" if w["cpu_percent"] is not None else "-"
            name = w["worker_id"].rsplit("@", 1)[0] if w["host"] else w["worker_id"]
            print(f"{name:<12} {w['host']:<16} {w['pid']:>7} {w['state']:<12} {task:>6} {cpu:>6} "
                  f"{_fmt_mem(w['rss_kb']):>6} {_fmt_age(w['heartbeat_age']):>6}  {claude}")
    q = st["queue"]
    print(f"queue: {q['pending']} pending, {q['in_progress']} running, {q['completed']} completed, "
          f"{q['failed']} failed, {q['cancelled']} cancelled, {q['skipped']} skipped ({q['total']} total)"
          + (f", {q['integrating']} integrating" if q.get("integrating") else ""))  # the merge queue's own, still to run
    return EXIT_OK


def pool_processes(cfg, queue):
    """Our processes: the coordinator, each recorded worker, and every member of each recorded
    claude process group."""
    running = pool.running(queue)
    rows = pool.own_workers(cfg, queue)
    table = process_table()
    found = []
    if running and running["pid"] in table:
        found.append(("coordinator", table[running["pid"]]))
    for w in rows:
        proc = table.get(w["pid"])
        if proc and any(Path(a).name == processes.WORKER_SCRIPT for a in proc["args"][:3]):
            found.append((w["worker_id"], proc))
        pgid = w["info"].get("claude_pgid")
        if pgid:
            task = f", task {w['current_task']}" if w["current_task"] else ""
            for member in sorted((p for p in table.values() if p["pgid"] == pgid), key=lambda p: p["pid"]):
                role = "claude" if member["pid"] == pgid else "claude child"
                found.append((f"{role} ({w['worker_id']}{task})", member))
    return found


def cmd_ps(args):
    cfg = load(args)
    queue = open_queue(cfg, create=False)
    try:
        found = pool_processes(cfg, queue)
        # Other hosts' processes cannot be listed from here: their worker rows are what we know.
        remote = [w for w in queue.list_workers() if not hosts.is_local(w, cfg.host)]
    finally:
        queue.close()
    if args.json:
        print(json.dumps([{"role": role, "host": cfg.host, **proc} for role, proc in found]
                         + [{"role": w["worker_id"], "host": hosts.host_of(w["worker_id"]), "pid": w["pid"],
                             "state": w["state"], "current_task": w["current_task"], "remote": True}
                            for w in remote], indent=2))
        return EXIT_OK
    for w in remote:
        task = f", task #{w['current_task']}" if w["current_task"] else ""
        print(f"on host {hosts.host_of(w['worker_id'])}: {w['worker_id']} (pid {w['pid']} there): {w['state']}{task}")
    if not found:
        print("no Klauss processes running for this project" + (" on this host" if remote else ""))
        return EXIT_OK
    print(f"{'PID':>7} {'PPID':>7} {'PGID':>7} {'CPU%':>6} {'MEM':>6} {'AGE':>7}  {'ROLE':<28} COMMAND")
    for role, p in found:
        print(f"{p['pid']:>7} {p['ppid']:>7} {p['pgid']:>7} {p['cpu_percent']:>6.1f} {_fmt_mem(p['rss_kb']):>6} "
              f"{_fmt_age(p['elapsed']):>7}  {task_report.clean(role):<28} "
              f"{task_report.shorten(task_report.clean(' '.join(p['args'])), 100)}")
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
    cfg = load(args)
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
    cfg = load(args)
    try:
        queue = open_queue(cfg, create=False)
    except claude_queue.DatabaseBroken:
        # Unreadable: cleaning it away is the fix; the lock still tells whether a pool runs on it.
        queue = queues.empty_queue(cfg)
    try:
        running = pool.running(queue) or locked_coordinator(cfg.state_dir)
        live = pool.recorded_pool_processes(cfg, queue)
        stats = queue.get_stats()
        # Other hosts' pools on this database cannot be checked by pid from here: their flags say.
        others = sorted(h for h in hosts.coordinators(queue) if h != cfg.host) if not args.logs else []
    finally:
        queue.close()
    if running or live:
        eprint(f"error: a pool is running; stop it first ({hints.command('stop')}), then clean")
        return EXIT_FAIL
    if others:
        eprint(f"error: the pool of host(s) {', '.join(others)} uses this database; stop them first "
               f"({hints.command('stop', '--all-hosts')}), then clean")
        return EXIT_FAIL
    logs = [p for p in cfg.logs_dir.glob("*.log")] + list((cfg.logs_dir / "tasks").glob("*.jsonl"))
    targets = logs + [cfg.state_dir / PID_NAME]
    wake_dir = config.wake_dir(cfg.db_path)  # the idle workers' wake-up FIFOs
    # A database on a server is not a file of this host's: it is dropped there, if at all.
    database = not args.logs and cfg.db_url is None
    if cfg.db_url is not None and not args.logs:
        print(f"the database {cfg.db_url.redacted()} stays on its server (drop it there to delete it)")
    if database:
        db = str(cfg.db_path)
        targets += [Path(db), Path(db + "-wal"), Path(db + "-shm")]
        if wake_dir.is_dir():
            targets += [p for p in wake_dir.iterdir() if p.name.endswith((".fifo", ".tmp"))]
    targets = [p for p in targets if p.exists()]
    if not targets:
        print("nothing to clean")
        return EXIT_OK
    what = f"{len(logs)} log file(s) in {cfg.logs_dir}"
    if database:
        what = f"the database {config.shown_db(cfg.db_path)} ({stats['total']} task(s)) and " + what
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
    elif config.toml_module() is not None:
        checks.append((True, "toml", "tomli installed", None))
    else:
        checks.append((False, "toml", "tomli is missing (Python < 3.11 needs it to read .klauss.toml)",
                       f"{sys.executable} -m pip install -r {HERE / 'requirements.txt'}"))
    try:
        cfg = load(args)
    except config.ConfigError as exc:
        checks.append((False, "config", str(exc), "fix the file named above"))
        return checks
    checks.append((True, "config", str(cfg.config_file) if cfg.config_file else
                   f"defaults (no .klauss.toml; {hints.command('init-config')} writes one)", None))
    checks += _claude_checks(cfg["claude"]["command"], cfg["claude"]["env"])
    try:
        queue = open_queue(cfg)
        try:
            queue.set_flag(flags.DOCTOR, {"pid": os.getpid()})
            queue.clear_flag(flags.DOCTOR)
            checks.append((True, "database", _database_detail(cfg, queue), None))
            if hasattr(queue, "clock_offset"):
                checks.append(_clock_check(cfg, queue.clock_offset()))
            running = pool.running(queue)
            if running:
                live = sum(1 for w in pool.own_workers(cfg, queue)
                           if processes.is_our_process(w["pid"], processes.WORKER_SCRIPT))
                checks.append((True, "pool", f"running: coordinator pid {running['pid']}, {live} worker(s) alive", None))
            else:
                checks.append((True, "pool", "not running", None))
            problem = hosts.config_error_flag(queue, cfg.host)
            if problem:
                checks.append((False, "workers", f"stopped on a configuration error: {problem['value'].get('message')}",
                               problem["value"].get("fix")))
        finally:
            queue.close()
    except (claude_queue.DatabaseBroken, claude_queue.DatabaseUnavailable) as exc:
        checks.append((False, "database", str(exc)[:-len(exc.fix) - 2], exc.fix))
    except claude_queue.QueueError as exc:
        if cfg.db_url is None:
            checks.append((False, "database", f"{config.shown_db(cfg.db_path)}: {exc}",
                           "make the state directory writable, or pass --db / set KLAUSS_DB"))
        elif "pip install" in str(exc):
            checks.append((False, "database", *str(exc).split(": ", 1)))
        else:
            # The message names the server without the URL's password.
            checks.append((False, "database", str(exc),
                           "check the URL (--db, KLAUSS_DB or [paths] db), that the server is up, and that it "
                           "lets this host and user in (pg_hba.conf)"))
    except (OSError, sqlite3.Error) as exc:
        checks.append((False, "database", f"{config.shown_db(cfg.db_path)}: {exc}",
                       "make the state directory writable, or pass --db / set KLAUSS_DB"))
    return checks


def _database_detail(cfg, queue):
    if cfg.db_url is None:
        return f"{config.shown_db(cfg.db_path)} is writable"
    # A server: which one, its version, and the schema this Klauss found (or made) there.
    return (f"{cfg.db_url.redacted()}: PostgreSQL {queue.server_version()}, schema version "
            f"{queue.schema_version()}, writable")


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


def _clock_check(cfg, offset):
    """Leases, heartbeats and flags go by the server's clock (PostgresTaskQueue.clock), whatever this
    host's says; what this host shows (ages, times) and waits for by its own clock is off by the gap."""
    way = "behind" if offset > 0 else "ahead of"
    if abs(offset) < cfg["workers"]["lease_seconds"] / 4:
        return (True, "clock", f"within {abs(offset):.1f}s of the database server's", None)
    return (None, "clock", f"this host's clock is {abs(offset):.0f}s {way} the database server's: leases go by "
            f"the server's, but the ages and times this host shows are off by that much",
            "keep every host's clock in sync (NTP: timedatectl set-ntp true)")


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
