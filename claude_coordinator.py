#!/usr/bin/env python3
"""The Klauss pool's command line: argument parsing, dispatch, and one error handler.

    klauss/manage.sh start|stop|kill|restart|resize|status|ps|logs|init-config|clean|doctor ...
    (this file's `run [N] [--db PATH] [--detach]` is the pool itself, which `start` launches)

`manage.sh` is the front end to these subcommands; `klauss/manage.sh help` lists them.
`run` is the supervisor itself (supervisor.py: how the pool is kept healthy, its states and data
flow); start/stop/kill/resize/restart go through pool.py, the pool-control API the orchestrator
and the MCP server use too; status/ps/logs/clean/doctor/init-config are admin.py's views.

Exit codes, as for every Klauss command: 0 done (a pool that is already running is not an error);
1 failure (e.g. workers that keep crashing, `stop` timing out, `clean` while a pool runs); 2 bad
arguments or configuration (including a configuration problem no worker can run with, such as the
claude CLI missing: a restart will not fix it, and the message says what will).
"""

import argparse
import sys

import admin
import claude_queue
import cli_args
import config
import exits
import hints
import pool
from exits import EXIT_FAIL, EXIT_OK, EXIT_USAGE
from pool import PoolError
from supervisor import AlreadyRunning, Coordinator, eprint

_load = admin.load


def _say(line):
    print(line, flush=True)


# --- pool control: pool.py's API, printed -------------------------------------------------------

def cmd_run(args):
    cfg = _load(args)
    workers = args.workers if args.workers is not None else cfg["workers"]["count"]
    if workers < 1:
        eprint("error: the number of workers must be at least 1")
        return EXIT_USAGE
    if args.detach:
        pool.start(cfg, workers, timeout=args.timeout, say=_say, warn=eprint)
        return EXIT_OK
    coordinator = Coordinator(cfg, workers, echo=not args.quiet)
    try:
        return coordinator.run()
    except AlreadyRunning as exc:
        # What was asked for (a pool on this database) is there: say so, not an error.
        print(pool.already_running(exc.pid, None))
        return EXIT_OK


def cmd_start(args):
    args.detach = True
    cfg = _load(args)
    if args.workers is None:
        # Only a number the user typed asks for --force; the configured count stays within the cap.
        args.workers = min(cfg["workers"]["count"], cfg["workers"]["max_workers"])
    pool.check_size(cfg, args.workers, args.force)
    return cmd_run(args)


def cmd_stop(args):
    if args.all_hosts:
        pool.stop_all_hosts(_load(args), timeout=args.timeout, say=_say, warn=eprint)
        return EXIT_OK
    pool.stop(_load(args), timeout=args.timeout, say=_say, warn=eprint)
    return EXIT_OK


def cmd_kill(args):
    pool.kill(_load(args), say=_say, warn=eprint)
    return EXIT_OK


def cmd_resize(args):
    pool.resize(_load(args), args.workers, timeout=args.timeout, force=args.force, say=_say)
    return EXIT_OK


def cmd_restart(args):
    pool.restart(_load(args), args.workers, force=args.force, timeout=args.timeout, say=_say, warn=eprint)
    return EXIT_OK


COMMANDS = {
    "start": "start [N]          start a pool of N workers in the background (default: [workers] count)",
    "stop": "stop [--all-hosts] stop this host's pool gracefully (running tasks are released); --all-hosts: every host's",
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
    ap = cli_args.Parser(prog=hints.prog("claude_coordinator.py"), description="Run and control a pool of Klauss workers.")
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
        p.add_argument("--timeout", type=float, default=pool.START_TIMEOUT_SECONDS, help="with --detach: longest wait for the pool")
        p.add_argument("--quiet", action="store_true", help=argparse.SUPPRESS)
        _common(p)
    p = sub.add_parser("stop", help=COMMANDS["stop"])
    p.add_argument("--timeout", type=float, help="longest wait for the pool to stop")
    p.add_argument("--all-hosts", action="store_true",
                   help="ask every host sharing the database to stop its pool gracefully, and wait for them")
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
            "status": admin.cmd_status, "workers": admin.cmd_status, "ps": admin.cmd_ps, "logs": admin.cmd_logs,
            "init-config": admin.cmd_init_config, "clean": admin.cmd_clean, "doctor": admin.cmd_doctor}


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
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command in ("run", "start", "restart", "resize"):
            if args.workers is not None and args.workers_pos is not None and args.workers != args.workers_pos:
                parser.chosen(args).error("N and --workers disagree")
            args.workers = args.workers if args.workers is not None else args.workers_pos
            if getattr(args, "db_pos", None):
                if args.db and args.db != args.db_pos:
                    parser.chosen(args).error("DB and --db disagree")
                args.db = args.db_pos
            args.detach = getattr(args, "detach", False)
    except cli_args.CliError as exc:
        eprint(str(exc))
        return exc.code
    try:
        return HANDLERS[args.command](args)
    except PoolError as exc:
        eprint(exc.message)
        return exc.code
    except (config.ConfigError, claude_queue.DriverMissing) as exc:
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
