"""How every Klauss program ends: ``sys.exit(exits.run(main))``.

A reader that goes away (``manage.sh status | head -1``) is not an error of ours: the program
stops writing and exits without a traceback or an "Exception ignored" line. When it is stderr that
is gone (``2>&1 | head``), the message just has nowhere to go: the program goes on and exits with
the code it would have. Ctrl-C ends it with the shell's code 130, also without a traceback
(commands that wait say more themselves first).

Every program's exit codes are the ones below (the README lists 0, 1 and 2 for users; 3 is between a
worker and its coordinator).
"""

import os
import select
import sys

EXIT_OK = 0
EXIT_FAIL = 1  # the command ran and something failed or needs attention
EXIT_USAGE = 2  # bad usage or input; nothing was changed
EXIT_CONFIG = 3  # a worker that cannot run here (claude missing, not logged in): the pool gives up on it
EXIT_INTERRUPTED = 130  # Ctrl-C, as the shell reports it


def run(main, *args):
    """main(*args)'s exit code, ending quietly on a closed output or Ctrl-C."""
    sys.stderr = _QuietStream(sys.stderr)
    code = EXIT_OK  # stdout gone mid-way: what was not read was not wanted, and nothing failed
    try:
        code = main(*args)
        sys.stdout.flush()  # a closed pipe shows up here at the latest, while we can still catch it
    except BrokenPipeError:
        _silence()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
    return code


class _QuietStream:
    """A stream that, once its reader is gone, stops writing instead of raising: an error being
    reported must not turn into another one, nor change the exit code."""

    def __init__(self, stream):
        self._stream = stream

    def write(self, text):
        try:
            return self._stream.write(text)
        except BrokenPipeError:
            _silence()
            return len(text)

    def flush(self):
        try:
            self._stream.flush()
        except BrokenPipeError:
            _silence()

    def __getattr__(self, name):
        return getattr(self._stream, name)


def _silence():
    # Whatever is still buffered, and the interpreter's last flush, go nowhere instead of failing again.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    for fd in (1, 2):
        try:
            if _is_broken_pipe(fd):
                os.dup2(devnull, fd)
        except OSError:
            pass
    os.close(devnull)


def _is_broken_pipe(fd):
    """True for a pipe whose reader is gone (poll flags it as an error), so that a closed stdout
    does not also silence a stderr that still reaches someone."""
    if not hasattr(select, "poll"):
        return True
    poller = select.poll()
    poller.register(fd, select.POLLOUT)
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
