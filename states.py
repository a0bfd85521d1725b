"""The state words of the pool's parts, in one place (a task's statuses are claude_queue.STATUSES,
and the words people read for them are task_report.status_word's).

A worker's state: the `state` column of its row in the `workers` table, written by the worker
(claude_worker.py) and by the queue's claim and finish (claude_queue.py), read by the supervisor,
pool status, admin, the dashboard, the orchestrator and MCP:
  STARTING      registered; not looking for work yet
  IDLE          waiting for a task
  BUSY          running a task (the row's current_task says which)
  PAUSED        claims nothing while the pool-wide pause lasts (a usage limit, a full disk)
  CONFIG_ERROR  stopped by a configuration error (not logged in, claude missing)
  DEAD          never written: pool status shows it for a row whose process is gone
A worker in one of READY has come up: the supervisor counts its slot as started.

The pool's state, as task_report.pool_state tells it to whoever waits on the pool:
  POOL_RUNNING, POOL_PAUSED, POOL_CONFIG_ERROR (no worker can run), POOL_STOPPED (no coordinator)
"""

STARTING = "starting"
IDLE = "idle"
BUSY = "busy"
PAUSED = "paused"
CONFIG_ERROR = "config_error"
DEAD = "dead"
WORKER_STATES = (STARTING, IDLE, BUSY, PAUSED, CONFIG_ERROR)
READY = (IDLE, BUSY, PAUSED)

POOL_RUNNING = "running"
POOL_PAUSED = "paused"
POOL_CONFIG_ERROR = "config_error"
POOL_STOPPED = "stopped"
POOL_STATES = (POOL_RUNNING, POOL_PAUSED, POOL_CONFIG_ERROR, POOL_STOPPED)
