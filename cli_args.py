"""cli_args.py: the argparse pieces Klauss's command lines share, so a bad argument reads the
same everywhere: one line naming the problem and the command's --help (argparse's default
prints the whole usage first), argument types whose messages say what was expected, and the one
line a command prints for a bug of ours (`internal_error`)."""

import argparse
import math
import os

import claude_queue
import hints
import task_report
from exits import EXIT_USAGE

INT64_MAX = 2 ** 63 - 1  # what SQLite stores; a larger number would fail later, less clearly


class CliError(Exception):
    """A one-line error for stderr, and the exit code it means."""

    def __init__(self, message, code=EXIT_USAGE):
        super().__init__(message)
        self.code = code


class Parser(argparse.ArgumentParser):
    """`command` is the manage.sh command whose --help the error points at (default: the words of
    `prog` after the script, so subparsers of `submit_task.py` point at `submit --help`). Errors
    raise CliError, so a program's main() prints it and returns its code (in-process callers and
    tests get the code, not SystemExit)."""

    def __init__(self, *args, command=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.command = command

    def error(self, message):
        words = self.command if self.command is not None else self.prog.split()[1:]
        raise CliError(f"{self.prog}: error: {message} (see {hints.command(*words, '--help')})")

    def parse_args(self, args=None, namespace=None):
        # argparse reports a subcommand's unknown argument as the whole program's ("manage.sh: error:
        # unrecognized arguments", pointing at the list of commands): the subcommand reports it.
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            self.chosen(parsed).error("unrecognized arguments: " + " ".join(extras))
        return parsed

    def chosen(self, parsed):
        """The parser of the (sub)command `parsed` was read by, for errors found after parsing."""
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                sub = action.choices.get(getattr(parsed, action.dest, None))
                if sub is not None:
                    return sub.chosen(parsed) if isinstance(sub, Parser) else sub
        return self


def int_arg(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if abs(value) > INT64_MAX:
        raise argparse.ArgumentTypeError(f"{text} is too large")
    return value


def number_arg(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def task_id_arg(text):
    value = int_arg(text.lstrip("#"))
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a task id (a positive integer), got {text!r}")
    return value


def _unknown_status(text):
    known = ", ".join(map(task_report.status_word, claude_queue.STATUSES))
    return argparse.ArgumentTypeError(f"unknown status {text!r} (known: {known})")


def status_arg(text):
    """One stored status for a word a user typed ("running" or "in_progress", "failed", ...)."""
    value = task_report.status_value(text, claude_queue.STATUSES)
    if value is None:
        raise _unknown_status(text)
    return value


def statuses_arg(text):
    """A comma-separated list of statuses."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in names if task_report.status_value(s, claude_queue.STATUSES) is None]
    if bad or not names:
        raise _unknown_status(bad[0] if bad else text)
    return [task_report.status_value(s, claude_queue.STATUSES) for s in names]


def internal_error(prog, exc):
    """The one line a program prints for a bug: the exception and where it was raised."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = f"{os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno}" if tb else "?"
    return f"{prog}: internal error: {type(exc).__name__}: {exc} (at {where}); please report it"
