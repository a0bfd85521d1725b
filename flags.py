"""The pool flags' names, in one place: the keys of the `pool_flags` table through which the
coordinator, its workers and every front end tell each other about the pool.

Each name's value (a JSON object) and who writes it:
  COORDINATOR  the running coordinator: pid, workers, state, log, token, worker pids (supervisor.py)
  RESIZE       a `resize` request: {"workers": N}, read and cleared by the coordinator (pool.py)
  BORROW       "borrow:<task id>": a task waiting on its own sub-job lends the pool a slot (pool.py)
  PAUSED       workers claim nothing until it expires: a usage limit or a full disk
  CONFIG_ERROR no worker can run (not logged in, claude missing): message and fix
  DOCTOR       `doctor`'s write probe, set and cleared at once
"""

COORDINATOR = "coordinator"
RESIZE = "pool_resize"
BORROW_PREFIX = "borrow:"
PAUSED = "paused"
CONFIG_ERROR = "config_error"
DOCTOR = "doctor"


def borrow(task_id):
    """The flag a task waiting on its sub-job sets to borrow one worker slot."""
    return f"{BORROW_PREFIX}{task_id}"
