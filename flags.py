"""The pool flags' names, in one place: the keys of the `pool_flags` table through which the
coordinator, its workers and every front end tell each other about the pool.

Each name's value (a JSON object) and who writes it:
  COORDINATOR  the running coordinator: pid, workers, state, log, token, worker pids (supervisor.py)
  RESIZE       a `resize` request: {"workers": N}, read and cleared by the coordinator (pool.py)
  BORROW       "borrow:<task id>": a task waiting on its own sub-job lends the pool a slot (pool.py)
  PAUSED       workers claim nothing until it expires: a usage limit or a full disk
  CONFIG_ERROR no worker can run (not logged in, claude missing): message and fix
  STOP         `stop --all-hosts` asks a host's coordinator (named by its token) to stop
  DOCTOR       `doctor`'s write probe, set and cleared at once

Several hosts share one database, so what belongs to one host or one Claude login is keyed by it:
`coordinator@<host>`, `pool_resize@<host>`, `config_error@<host>`, `stop@<host>`, `paused@host:<host>`
(a full disk) and `paused@login:<login>` (a usage limit hits every worker on that login). The bare
PAUSED and CONFIG_ERROR keys, which older versions wrote, still stop every worker.
"""

COORDINATOR = "coordinator"
RESIZE = "pool_resize"
BORROW_PREFIX = "borrow:"
PAUSED = "paused"
CONFIG_ERROR = "config_error"
DOCTOR = "doctor"
STOP = "stop"
SCOPE = "@"  # between a flag's name and the host or login it belongs to


def borrow(task_id):
    """The flag a task waiting on its sub-job sets to borrow one worker slot."""
    return f"{BORROW_PREFIX}{task_id}"


def coordinator(host):
    """The flag of `host`'s running coordinator."""
    return f"{COORDINATOR}{SCOPE}{host}"


def resize(host):
    return f"{RESIZE}{SCOPE}{host}"


def stop(host):
    return f"{STOP}{SCOPE}{host}"


def config_error(host):
    """Set when a configuration problem stops `host`'s workers (other hosts go on)."""
    return f"{CONFIG_ERROR}{SCOPE}{host}"


def paused_host(host):
    """Set while `host` cannot write (a full disk): only its workers pause."""
    return f"{PAUSED}{SCOPE}host:{host}"


def paused_login(login):
    """Set on a usage limit: every worker on that Claude login pauses, on whatever host."""
    return f"{PAUSED}{SCOPE}login:{login}"


def holds(host, login):
    """The flags that stop a worker of `host` on `login` from claiming, the legacy ones first."""
    return [PAUSED, CONFIG_ERROR, paused_login(login), paused_host(host), config_error(host)]
