"""The shared task queue every Klauss process uses, and its storage contract.

Today's store is one SQLite database in WAL mode, opened by many processes at once. This docstring
is the contract a second backend (PostgreSQL, for pools on several machines) must keep;
tests/test_queue_contract.py checks it for every backend. All SQL is in the named constants at the
end of this file (MIGRATIONS for the schema, SQL_* for the statements); `_write()` is the one owner
of write transactions (BEGIN IMMEDIATE retried while another process holds the lock, COMMIT or
ROLLBACK, then the wake-ups), so callers never see "database is locked".

    submit ──add_tasks──▶ pending ──claim──▶ in_progress ──complete──▶ completed
                            ▲  ▲                 │ │ │  ──fail (no attempts left)──▶ failed ──▶ dependents skipped
                            │  └─release/retry───┘ │ └──cancel (acknowledged)──▶ cancelled
                            └──lease expired───────┘        (retry_task revives failed/cancelled/skipped)

Claims. `claim_task` atomically takes the best runnable task: highest priority first, then oldest
(FIFO by id), skipping tasks waiting for a retry time (`not_before`) or for dependencies. Two
claimers never get the same task.

Leases and fencing. A claim sets `lease_expires_at` and increments `attempt`. The holder renews the
lease (`heartbeat`, `renew_lease`); `recover_stale` returns tasks whose lease expired (or a dead
worker's) to pending, spending an attempt, or fails them when none are left. Every holder action
(heartbeat, set_activity, complete, fail, release, acknowledge_cancel) names the worker and, when
known, the attempt, and does nothing once that worker no longer holds that attempt: a worker that
lost its lease can never overwrite the next holder's outcome. `attempt_base` counts claims that did
not spend an attempt (releases), so attempts used = attempt - attempt_base.

Retries. A retryable failure goes back to pending with exponential backoff while attempts remain;
`release_task` gives a task back without spending an attempt; `retry_task` gives a finished
unsuccessful task a fresh set of attempts.

Dependencies and skips. `depends_on` names existing ids or, within one batch, another entry's `ref`;
cycles are refused. A task becomes claimable when all its dependencies completed (kept as a
`deps_remaining` counter, so blocked tasks cost a claim nothing). When a task fails, is cancelled or
skipped, its pending transitive dependents are skipped; retrying it revives those not blocked by
something else.

Jobs and budgets. A job groups tasks (`submit_job` writes a job and its tasks in one transaction).
With `max_budget_usd`, once the job's spend (every attempt's cost, released runs included) reaches
it, its pending tasks are skipped and none of them is claimed (except merge-queue integration tasks,
which run no claude and cost nothing).

Events. Every transition is in a task's history (`get_events`): created, claimed, completed,
failed, released, recovered, cancel_requested, cancelled, skipped, retried, with worker, attempt,
detail and the attempt's cost. An attempt is stored as one row, written when it ends and carrying
when it started; its "claimed" entry is shown from that (or from the task row while it runs). The
attempt that completes a task writes no row: the completed task's row keeps it (worker, attempt,
started and finished times, the outcome's total_cost_usd) and its entries are shown from there.

Counts. `get_stats` gives per-status counts, cost and denials without scanning finished tasks:
triggers keep `task_counts` per job, for finished statuses plus one bucket of unfinished tasks (a
claim moves no count); how many of those run is read from the unfinished tasks' index.
`integration_counts` gives the same counts of the merge queue's integration tasks alone (the user's
views leave them out), from indexes only (theirs, probed by id from the unfinished and unsuccessful
tasks' indexes): no task's row is read.

Workers and flags. Workers register a row (state, current task, details such as claude's pid) and
beat it. Pool-wide flags (`set_flag`, with an optional `until`) carry the usage-limit pause,
configuration errors and the coordinator's identity.

A worker's step in one commit. `claim_task(worker_info=...)` sets the worker's row busy with the
claim; `finish_and_claim` records a task's end, sets the worker's row, and claims the next task
unless a pause or configuration-error flag is live; `renew_lease` renews the lease and the worker's
row and says whether a cancel was requested. A worker thus commits twice per task: the claim (or
the previous task's end with it) and claude's pid.

Results. A completion stores the final text once, in `result`; the other outcome details go to
`outcome` (Task.from_row gives back the whole dict, "result" included).

Wake-ups. A commit that can make work claimable or finish a task (`_write(notify=True)`) writes a
byte to every FIFO in the database's wake directory, so idle workers and waiting orchestrators
(`Waker`) wake at once instead of polling. Claims and heartbeats wake nobody.

Migrations. MIGRATIONS[i] upgrades a store from version i to i+1 (`PRAGMA user_version`); an older
database upgrades in place when opened; a newer one is refused with a clear error.

All times are UTC epoch seconds (float).
"""

import errno
import functools
import json
import os
import select
import shlex
import shutil
import sqlite3
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import config
import flags
import hints
import processes
import states
import task_report
import validation

STATUSES = ("pending", "in_progress", "completed", "failed", "cancelled", "skipped")
FINISHED = ("completed", "failed", "cancelled", "skipped")

TASK_FIELDS = validation.TASK_FIELDS  # the keys `add_task` accepts

BUSY_RETRY_SECONDS = 300  # after this long waiting for the lock, give up with a clear error

# A listing of the wake directory is reused while its mtime is older than this and unchanged.
WAKE_LISTING_MARGIN_NS = 1_000_000_000

# SQLite's own default: 4 MB of WAL at 4 KB pages. A larger WAL makes every page another process
# wrote slower to find (its index grows) and to read; under a burst of claims 10,000 pages cost
# more in those lookups than the fewer inline checkpoints saved (bench/queue_bench.py, W = 4).
WAL_AUTOCHECKPOINT_PAGES = 1000
# The WAL file keeps its largest size until the last connection closes unless it is truncated: a
# pool that runs for days would carry a WAL several times the database. Past this size the
# coordinator's checkpoint truncates it, and SQLite trims it to this size whenever it restarts.
WAL_LIMIT_BYTES = 4 * 1024 * 1024

# UPDATE ... RETURNING arrived in SQLite 3.35; Python 3.9 on Debian 11 links 3.34, where the claim
# selects then updates inside the same BEGIN IMMEDIATE transaction (equally atomic).
HAS_RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)


class QueueError(RuntimeError):
    """An operation the queue could not carry out (not a validation error)."""


class DatabaseBroken(QueueError):
    """The database file is corrupt or belongs to something else; `fix` says what to do."""

    def __init__(self, message, fix):
        super().__init__(f"{message}: {fix}")
        self.fix = fix


class _ReadOnly(QueueError):
    """Opening for writing failed for lack of permission (a read-only directory or file system)."""


class DriverMissing(QueueError):
    """The database named needs a driver this Python lacks: an install problem, so bad configuration
    (exit 2) in every front end, not a failed operation."""


class DatabaseUnavailable(QueueError):
    """The database cannot be used now (its server is down or out of reach, a lock nobody lets go):
    the command failed (exit 1 in every front end) and works as it is once the database is back;
    `fix` says what to check."""

    def __init__(self, message, fix):
        super().__init__(f"{message}; {fix}")
        self.fix = fix


class DiskFull(QueueError):
    """A write failed because the disk is full: a pool pauses until writes work again."""


# --- schema and migrations ---------------------------------------------------------------------
# MIGRATIONS[i] upgrades a database from user_version i to i+1. Never edit a released entry:
# add a new one, so a database made by any older version opens and upgrades in place.
# The counts' update trigger moves a task between two task_counts rows; schema 5 wrote it and
# schema 7 re-creates it with the same body on other columns (schema 8 makes it one statement).
_COUNTS_UPDATE_BODY = """    WHEN (old.status IS NOT new.status
          AND NOT (old.status IN ('pending', 'in_progress') AND new.status IN ('pending', 'in_progress')))
         OR old.cost_usd IS NOT new.cost_usd OR old.job_id IS NOT new.job_id OR old.denied IS NOT new.denied
    BEGIN
        UPDATE task_counts SET n = n - 1, cost = cost - ifnull(old.cost_usd, 0), denied = denied - (old.denied > 0)
        WHERE job_id = ifnull(old.job_id, '') AND status = CASE old.status WHEN 'in_progress' THEN 'pending' ELSE old.status END;
        INSERT INTO task_counts VALUES (ifnull(new.job_id, ''), CASE new.status WHEN 'in_progress' THEN 'pending' ELSE new.status END,
                                        1, ifnull(new.cost_usd, 0), new.denied > 0)
        ON CONFLICT (job_id, status) DO UPDATE SET n = n + 1, cost = cost + ifnull(new.cost_usd, 0),
                                                   denied = denied + (new.denied > 0);
    END;
"""

MIGRATIONS = [
    # 1: tasks, dependencies, history, jobs, workers, and trigger-maintained counts.
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        description TEXT NOT NULL,
        orchestrator_id TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        max_budget_usd REAL,
        created_at REAL NOT NULL
    );
    CREATE TABLE tasks (
        id INTEGER PRIMARY KEY,
        job_id TEXT REFERENCES jobs(id) ON DELETE SET NULL,
        parent_id INTEGER REFERENCES tasks(id) ON DELETE SET NULL,
        prompt TEXT NOT NULL,
        working_dir TEXT,
        context_files TEXT NOT NULL DEFAULT '[]',
        expected_outputs TEXT NOT NULL DEFAULT '[]',
        metadata TEXT NOT NULL DEFAULT '{}',
        priority INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'pending',
        deps_remaining INTEGER NOT NULL DEFAULT 0,
        attempt INTEGER NOT NULL DEFAULT 0,
        attempt_base INTEGER NOT NULL DEFAULT 0,
        max_attempts INTEGER NOT NULL,
        timeout REAL,
        not_before REAL NOT NULL DEFAULT 0,
        worker_id TEXT,
        lease_expires_at REAL,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        result TEXT,
        error TEXT,
        outcome TEXT,
        cost_usd REAL,
        activity TEXT
    );
    CREATE INDEX tasks_claimable ON tasks(priority DESC, id)
        WHERE status = 'pending' AND deps_remaining = 0;
    -- Every index entry a claim or completion touches costs a page write at commit, so indexes
    -- are few and partial. Completed and pending tasks are listed by scanning ids backwards
    -- (they dominate the recent ids); running tasks (one per worker) and the rare failed,
    -- cancelled and skipped ones have small indexes of their own.
    CREATE INDEX tasks_running ON tasks(worker_id) WHERE status = 'in_progress';
    CREATE INDEX tasks_unsuccessful ON tasks(status, id) WHERE status IN ('failed', 'cancelled', 'skipped');
    CREATE INDEX tasks_job ON tasks(job_id, id) WHERE job_id IS NOT NULL;
    CREATE INDEX tasks_parent ON tasks(parent_id) WHERE parent_id IS NOT NULL;

    CREATE TABLE task_deps (
        task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        depends_on INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        PRIMARY KEY (task_id, depends_on)
    ) WITHOUT ROWID;
    CREATE INDEX task_deps_reverse ON task_deps(depends_on, task_id);

    -- Keyed by (task_id, seq) without a rowid: one B-tree, one page touched per event.
    CREATE TABLE task_events (
        task_id INTEGER NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        at REAL NOT NULL,
        event TEXT NOT NULL,
        worker_id TEXT,
        attempt INTEGER,
        detail TEXT,
        PRIMARY KEY (task_id, seq)
    ) WITHOUT ROWID;

    CREATE TABLE workers (
        worker_id TEXT PRIMARY KEY,
        pid INTEGER,
        state TEXT NOT NULL,
        current_task INTEGER,
        started_at REAL NOT NULL,
        last_heartbeat REAL NOT NULL,
        info TEXT NOT NULL DEFAULT '{}'
    );

    CREATE TABLE task_counts (
        job_id TEXT NOT NULL,
        status TEXT NOT NULL,
        n INTEGER NOT NULL,
        cost REAL NOT NULL,
        PRIMARY KEY (job_id, status)
    ) WITHOUT ROWID;
    CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
        INSERT INTO task_counts VALUES (ifnull(new.job_id, ''), new.status, 1, ifnull(new.cost_usd, 0))
        ON CONFLICT (job_id, status) DO UPDATE SET n = n + 1, cost = cost + ifnull(new.cost_usd, 0);
    END;
    CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
        UPDATE task_counts SET n = n - 1, cost = cost - ifnull(old.cost_usd, 0)
        WHERE job_id = ifnull(old.job_id, '') AND status = old.status;
    END;
    CREATE TRIGGER task_counts_update AFTER UPDATE OF status, cost_usd, job_id ON tasks
    WHEN old.status IS NOT new.status OR old.cost_usd IS NOT new.cost_usd OR old.job_id IS NOT new.job_id
    BEGIN
        UPDATE task_counts SET n = n - 1, cost = cost - ifnull(old.cost_usd, 0)
        WHERE job_id = ifnull(old.job_id, '') AND status = old.status;
        INSERT INTO task_counts VALUES (ifnull(new.job_id, ''), new.status, 1, ifnull(new.cost_usd, 0))
        ON CONFLICT (job_id, status) DO UPDATE SET n = n + 1, cost = cost + ifnull(new.cost_usd, 0);
    END;
    """,
    # 2: pool-wide flags shared by every worker (usage-limit pause, configuration errors,
    # the coordinator's identity).
    """
    CREATE TABLE pool_flags (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        until REAL,
        updated_at REAL NOT NULL
    );
    """,
    # 3: every attempt's own cost in its history (a task's cost_usd is the sum over its attempts),
    # the number of tool calls denied in a task's last run, counted per job and status by the
    # triggers so a job's line can say how many of its tasks need a look without a scan, and the
    # task's `ref` (a plan's task id), which is how the synthesis names it.
    """
    ALTER TABLE task_events ADD COLUMN cost_usd REAL;
    ALTER TABLE tasks ADD COLUMN ref TEXT;
    ALTER TABLE tasks ADD COLUMN denied INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE task_counts ADD COLUMN denied INTEGER NOT NULL DEFAULT 0;
    DROP TRIGGER task_counts_insert;
    DROP TRIGGER task_counts_delete;
    DROP TRIGGER task_counts_update;
    CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
        INSERT INTO task_counts VALUES (ifnull(new.job_id, ''), new.status, 1, ifnull(new.cost_usd, 0), new.denied > 0)
        ON CONFLICT (job_id, status) DO UPDATE SET n = n + 1, cost = cost + ifnull(new.cost_usd, 0),
                                                   denied = denied + (new.denied > 0);
    END;
    CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
        UPDATE task_counts SET n = n - 1, cost = cost - ifnull(old.cost_usd, 0), denied = denied - (old.denied > 0)
        WHERE job_id = ifnull(old.job_id, '') AND status = old.status;
    END;
    CREATE TRIGGER task_counts_update AFTER UPDATE OF status, cost_usd, job_id, denied ON tasks
    WHEN old.status IS NOT new.status OR old.cost_usd IS NOT new.cost_usd OR old.job_id IS NOT new.job_id
         OR old.denied IS NOT new.denied
    BEGIN
        UPDATE task_counts SET n = n - 1, cost = cost - ifnull(old.cost_usd, 0), denied = denied - (old.denied > 0)
        WHERE job_id = ifnull(old.job_id, '') AND status = old.status;
        INSERT INTO task_counts VALUES (ifnull(new.job_id, ''), new.status, 1, ifnull(new.cost_usd, 0), new.denied > 0)
        ON CONFLICT (job_id, status) DO UPDATE SET n = n + 1, cost = cost + ifnull(new.cost_usd, 0),
                                                   denied = denied + (new.denied > 0);
    END;
    """,
    # 4: the digest of the plan a job was made from, so running the same plan again resumes it.
    """
    ALTER TABLE jobs ADD COLUMN plan_hash TEXT;
    CREATE INDEX jobs_plan_hash ON jobs (plan_hash) WHERE plan_hash IS NOT NULL;
    """,
    # 5: a claim no longer moves a count. Unfinished tasks (pending and running) share one
    # 'pending' bucket; how many of them run is read from tasks_running (one row per worker), so the
    # triggers fire only when a task finishes, is revived, or its cost, job or denials change.
    """
    INSERT INTO task_counts (job_id, status, n, cost, denied)
    SELECT job_id, 'pending', n, cost, denied FROM task_counts WHERE status = 'in_progress'
    ON CONFLICT (job_id, status) DO UPDATE SET n = n + excluded.n, cost = cost + excluded.cost,
                                               denied = denied + excluded.denied;
    DELETE FROM task_counts WHERE status = 'in_progress';
    DROP TRIGGER task_counts_insert;
    DROP TRIGGER task_counts_delete;
    DROP TRIGGER task_counts_update;
    CREATE TRIGGER task_counts_insert AFTER INSERT ON tasks BEGIN
        INSERT INTO task_counts VALUES (ifnull(new.job_id, ''), CASE new.status WHEN 'in_progress' THEN 'pending' ELSE new.status END,
                                        1, ifnull(new.cost_usd, 0), new.denied > 0)
        ON CONFLICT (job_id, status) DO UPDATE SET n = n + 1, cost = cost + ifnull(new.cost_usd, 0),
                                                   denied = denied + (new.denied > 0);
    END;
    CREATE TRIGGER task_counts_delete AFTER DELETE ON tasks BEGIN
        UPDATE task_counts SET n = n - 1, cost = cost - ifnull(old.cost_usd, 0), denied = denied - (old.denied > 0)
        WHERE job_id = ifnull(old.job_id, '') AND status = CASE old.status WHEN 'in_progress' THEN 'pending' ELSE old.status END;
    END;
    CREATE TRIGGER task_counts_update AFTER UPDATE OF status, cost_usd, job_id, denied ON tasks
{_COUNTS_UPDATE_BODY}    """,
    # 6: one history row per attempt. A claim writes no row of its own: the row that ends the attempt
    # (completed, failed, released, cancelled, recovered) carries when it started, and get_events
    # shows the "claimed" entry from it (or, for the running attempt, from the task row).
    """
    ALTER TABLE task_events ADD COLUMN started_at REAL;
    """,
    # 7: the index of unsuccessful tasks names its statuses with OR. SQLite evaluates a partial
    # index's `status IN (three values)` by building a temporary table, twice (old and new row) in
    # every UPDATE that changes a status: a claim and a completion each paid for two.
    # From this version on a completion writes no history row: the completed task's row holds its
    # last attempt, and get_events shows it from there (no DDL; older Klauss refuses the database
    # rather than show histories without their completions).
    """
    DROP INDEX tasks_unsuccessful;
    CREATE INDEX tasks_unsuccessful ON tasks(status, id)
        WHERE status = 'failed' OR status = 'cancelled' OR status = 'skipped';
    -- The counts' trigger is named for finished_at, not status: every statement that moves a task
    -- into or out of a finished status sets finished_at, and a claim (status only) then runs no
    -- trigger at all. Its body is unchanged.
    DROP TRIGGER task_counts_update;
    CREATE TRIGGER task_counts_update AFTER UPDATE OF finished_at, cost_usd, job_id, denied ON tasks
{_COUNTS_UPDATE_BODY}    """,
    # 8: the counts' update trigger moves a task between its two task_counts rows in one statement
    # (a two-row upsert: -1 from the old row, +1 to the new), where it ran an UPDATE and an upsert:
    # every completion runs it. Same conditions, same counts (the old row always exists: the task
    # was counted there).
    """
    DROP TRIGGER task_counts_update;
    CREATE TRIGGER task_counts_update AFTER UPDATE OF finished_at, cost_usd, job_id, denied ON tasks
    WHEN (old.status IS NOT new.status
          AND NOT (old.status IN ('pending', 'in_progress') AND new.status IN ('pending', 'in_progress')))
         OR old.cost_usd IS NOT new.cost_usd OR old.job_id IS NOT new.job_id OR old.denied IS NOT new.denied
    BEGIN
        INSERT INTO task_counts VALUES
            (ifnull(old.job_id, ''), CASE old.status WHEN 'in_progress' THEN 'pending' ELSE old.status END,
             -1, -ifnull(old.cost_usd, 0), -(old.denied > 0)),
            (ifnull(new.job_id, ''), CASE new.status WHEN 'in_progress' THEN 'pending' ELSE new.status END,
             1, ifnull(new.cost_usd, 0), new.denied > 0)
        ON CONFLICT (job_id, status) DO UPDATE SET n = n + excluded.n, cost = cost + excluded.cost,
                                                   denied = denied + excluded.denied;
    END;
    """,
    # 9: one index of unfinished tasks in place of tasks_claimable and tasks_running. A claim moved
    # an entry out of one and into the other, and a completion out of the second: two index pages
    # in every worker's step. Here a claim moves its entry from ('pending', 0, ...) to the running
    # entries just before them, usually on the same page, which the completion then also changes.
    # Blocked tasks (deps_remaining > 0) sort after the runnable ones, so a claim still never
    # steps over them.
    """
    DROP INDEX tasks_claimable;
    DROP INDEX tasks_running;
    CREATE INDEX tasks_open ON tasks(status, deps_remaining, priority DESC, id)
        WHERE status = 'pending' OR status = 'in_progress';
    """,
    # 10: the merge queue's integration tasks (integration.py) have an index of their own, so the
    # views that leave them out of the user's counts (integration_counts) count them without reading
    # every task's row (320 ms at 100,000 tasks). It is keyed by id, which no update changes: a
    # claim or a completion never touches it (keyed by status, it cost every worker's step 2% more
    # instructions); the statuses come from the unfinished and unsuccessful tasks' indexes, probed
    # by id. Its condition is _COSTS_NOTHING word for word (SQLite uses a partial index only for
    # the very same term).
    """
    CREATE INDEX tasks_integration ON tasks(id, job_id)
        WHERE metadata LIKE '%"klauss_integration":{%';
    """,
]
MIGRATIONS = [m.replace("{_COUNTS_UPDATE_BODY}", _COUNTS_UPDATE_BODY) for m in MIGRATIONS]
SCHEMA_VERSION = len(MIGRATIONS)


def _is_readonly(exc):
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text or "unable to open" in text


def is_disk_full(exc):
    return "disk is full" in str(exc).lower() or getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT)


LOW_DISK_BYTES = 64 * 1024  # below this the database, logs and transcripts cannot be written for long


def disk_full_note(*folders):
    """"disk full: ..." when one of the folders' file systems is (nearly) full, else None."""
    for folder in dict.fromkeys(folders):
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            continue
        if free < LOW_DISK_BYTES:
            return f"disk full: {free} bytes free on {folder}"
    return None


def _is_busy(exc):
    text = str(exc).lower()
    return "locked" in text or "busy" in text


def _dumps(value):
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


# Task's fields in order, with their defaults (a list or dict default is a new one per Task).
_TASK_FIELDS = (
    ("id", None), ("prompt", None), ("status", None), ("priority", 0), ("job_id", None), ("parent_id", None),
    ("working_dir", None), ("context_files", list), ("expected_outputs", list), ("metadata", dict),
    ("attempt", 0), ("attempts_used", 0), ("max_attempts", 1), ("timeout", None), ("not_before", 0),
    ("worker_id", None), ("lease_expires_at", None), ("cancel_requested", False), ("deps_remaining", 0),
    ("created_at", None), ("updated_at", None), ("started_at", None), ("finished_at", None), ("result", None),
    ("error", None), ("outcome", None), ("cost_usd", None), ("activity", None), ("denied", 0), ("ref", None),
    ("depends_on", None),
)
_TASK_REQUIRED = ("id", "prompt", "status")
_JSON_COLUMNS = ("context_files", "expected_outputs", "metadata", "outcome")
_TASK_NAMES = tuple(name for name, _ in _TASK_FIELDS)


class Task:
    """One task as stored (`outcome`: an outcome.Outcome). A plain class rather than a dataclass: a claim
    makes one per task straight from the row's dict (from_row), and the dataclasses module (with
    the inspect module it loads) costs every process that imports the queue ~12 ms at start."""

    __hash__ = None  # compared by value, and mutable

    def __init__(self, *args, **kwargs):
        if len(args) > len(_TASK_NAMES):
            raise TypeError(f"Task takes at most {len(_TASK_NAMES)} positional arguments ({len(args)} given)")
        for name, value in zip(_TASK_NAMES, args):
            if name in kwargs:
                raise TypeError(f"Task got multiple values for argument {name!r}")
            kwargs[name] = value
        unknown = sorted(set(kwargs) - set(_TASK_NAMES))
        if unknown:
            raise TypeError(f"Task got an unexpected keyword argument {unknown[0]!r}")
        missing = [name for name in _TASK_REQUIRED if name not in kwargs]
        if missing:
            raise TypeError(f"Task missing required argument(s): {', '.join(missing)}")
        for name, default in _TASK_FIELDS:
            setattr(self, name, kwargs[name] if name in kwargs else default() if callable(default) else default)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in _TASK_NAMES)

    def __repr__(self):
        return f"{type(self).__qualname__}({', '.join(f'{name}={getattr(self, name)!r}' for name in _TASK_NAMES)})"

    @classmethod
    def from_row(cls, row, depends_on=None, root=None):
        """`root`: the reader's project root, against which a working dir stored relative to the
        project (as submission stores it) is resolved, so each host sees its own clone."""
        # Not dict(row): sqlite3.Row looks each name up by a linear scan, quadratic in the columns.
        # A dict (a claim's, made from the picked row) is used as it is.
        data = row if type(row) is dict else dict(zip(row.keys(), row))
        get = data.get
        if root is not None:
            working_dir = get("working_dir")
            if working_dir is not None:
                data["working_dir"] = _resolve_dir(root, working_dir)
        for key in _JSON_COLUMNS:
            value = get(key)
            if value is not None:
                # Most tasks carry the empty defaults; decoding them is a measurable part of a claim.
                data[key] = [] if value == "[]" else {} if value == "{}" else json.loads(value)
        outcome = get("outcome")
        if type(outcome) is dict:
            outcome.setdefault("result", get("result"))  # stored once, in `result`
        data["cancel_requested"] = bool(data["cancel_requested"])
        data["attempts_used"] = data["attempt"] - data.pop("attempt_base")
        data["depends_on"] = depends_on
        # Not cls(**data): matching 31 keyword names against the parameters costs more than the
        # claim's own UPDATE. The row holds every field (a field it lacks reads its class default).
        task = object.__new__(cls)
        task.__dict__ = data
        return task

    def to_dict(self):
        """The fields in order, lists and dicts copied all the way down (as dataclasses.asdict did)."""
        return {name: _copied(getattr(self, name)) for name in _TASK_NAMES}


# A Task made from a row reads a field the row lacks here (a list or dict field has no such default).
for _name, _default in _TASK_FIELDS:
    if _name not in _TASK_REQUIRED and not callable(_default):
        setattr(Task, _name, _default)
del _name, _default


def _copied(value):
    if type(value) is list:
        return [_copied(v) for v in value]
    if type(value) is dict:
        return {k: _copied(v) for k, v in value.items()}
    return value


_require_int = validation.require_int


@functools.lru_cache(maxsize=256)
def _resolve_dir(root, working_dir):
    """A stored working dir as this reader sees it; a pool's tasks share a handful of them."""
    return os.path.normpath(os.path.join(root, working_dir))


_WARNED_STRAY = set()


def warn_stray_database(given, resolved):
    """The original Klauss documentation's `TaskQueue("claude_tasks.db")` names a file relative
    to the current directory: a second database that no pool reads. Say so once (stderr), naming
    the project's database; an absolute path is a deliberate choice and passes silently."""
    if given is None or str(given) == ":memory:" or os.path.isabs(str(given)):
        return
    resolved = Path(os.path.abspath(resolved))
    if resolved in _WARNED_STRAY:
        return
    try:
        project_db = config.load_config().db_path
    except config.ConfigError:
        return
    if Path(os.path.abspath(project_db)) == resolved:
        return
    _WARNED_STRAY.add(resolved)
    print(f"klauss: warning: {given!r} opens {resolved}, not this project's database {project_db} "
          "(the one its workers and manage.sh use); pass no path to use the project's", file=sys.stderr)


class TaskQueue:
    """The task queue over one SQLite database. Safe to share between threads and processes."""

    def __new__(cls, db_path=None, clock=None, cfg=None):
        # A postgresql:// URL (given, or the configuration's) opens the PostgreSQL backend, which
        # keeps this same contract (queue_postgres.py); psycopg is imported only then.
        if cls is TaskQueue:
            target = db_path if db_path is not None else (cfg or config.load_config()).db_path
            if config.is_database_url(str(target)):
                import queue_postgres
                return super().__new__(queue_postgres.PostgresTaskQueue)
        return super().__new__(cls)

    def __init__(self, db_path=None, clock=None, cfg=None):
        if cfg is None:
            cfg = config.load_config(db=db_path)
        self.cfg = cfg
        self.db_path = Path(db_path) if db_path is not None else cfg.db_path
        warn_stray_database(db_path, self.db_path)
        self.clock = clock or time.time
        self._local = threading.local()
        # Pool processes pin the file they opened: see db_replaced().
        self.pinned = False
        self._identity = None
        self._wake = None
        self._fifos = None  # (the wake directory's identity, its FIFOs): see notify_waiters
        self.read_only = False  # set when the database can only be read (see _connect)
        if not self.db_path.parent.is_dir():
            if db_path is None:
                cfg.ensure_state_dir()
            else:
                raise QueueError(f"database directory {self.db_path.parent} does not exist; "
                                 "create it or pass another --db")
        self._connect()

    # --- connection and transactions ---

    def _broken(self, exc, foreign=False):
        db = shlex.quote(str(self.db_path))
        if foreign:
            return DatabaseBroken(f"{self.db_path} is not a Klauss database (it has tables of its own and no Klauss "
                                  "schema version)", f"pass another --db, or move it aside (mv {db} {db}.other)")
        return DatabaseBroken(f"the database {self.db_path} is corrupt ({exc})",
                              f"move it aside (mv {db} {db}.corrupt) and Klauss starts a new one, or delete it "
                              f"with `{hints.command('clean')}`")

    def _connect(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        lost = self.db_replaced()
        if lost and self.pinned:
            # A new thread's connection would create (or open) another database at the path and
            # split this pool process's writes between two files.
            raise QueueError(lost)
        if lost:
            self._identity = None  # a client (MCP server, dashboard) follows the path to the new file
        try:
            conn = self._open_read_only() if self.read_only else self._open()
        except _ReadOnly:
            if not self.db_path.exists():
                raise
            # Nothing can be written here (a read-only directory or file system), but reading
            # must still work: status, list, show, stats.
            self.read_only = True
            conn = self._open_read_only()
        except sqlite3.DatabaseError as exc:
            if type(exc) is not sqlite3.DatabaseError:
                raise
            raise self._broken(exc) from None
        if self._identity is None:
            self._identity = _file_identity(self.db_path)
        return conn

    def _open(self):
        try:
            conn = sqlite3.connect(str(self.db_path), timeout=5, isolation_level=None,
                                   check_same_thread=False, factory=_Connection)
        except sqlite3.OperationalError as exc:
            raise QueueError(f"cannot open database {self.db_path}: {exc}") from None
        try:
            conn.row_factory = sqlite3.Row
            self._retry(lambda: conn.execute(SQL_WAL).fetchone())
            for pragma in SQL_CONNECTION_PRAGMAS:
                conn.execute(pragma)
            self._local.conn = conn
            self._migrate(conn)
        except BaseException:
            self._local.conn = None
            conn.close()
            raise
        return conn

    def _open_read_only(self):
        uri = "file:" + urllib.parse.quote(str(self.db_path)) + "?mode=ro"
        # Without its -shm file (and no right to create one) a WAL database opens only as immutable;
        # nobody can be writing it then.
        for extra in ("", "&immutable=1"):
            try:
                conn = sqlite3.connect(uri + extra, uri=True, timeout=5, isolation_level=None,
                                       check_same_thread=False, factory=_Connection)
                conn.row_factory = sqlite3.Row
                version = conn.execute(SQL_VERSION).fetchone()[0]
                break
            except sqlite3.OperationalError as exc:
                error = exc
        else:
            raise QueueError(f"cannot open database {self.db_path} even read-only: {error}")
        if version == 0 and conn.execute(SQL_ANY_TABLE).fetchone()[0]:
            conn.close()
            raise self._broken(None, foreign=True)
        if version != SCHEMA_VERSION:
            conn.close()
            raise QueueError(f"database {self.db_path} has schema version {version} and Klauss "
                             f"{SCHEMA_VERSION}, and it is read-only: make it writable once to upgrade it")
        self._local.conn = conn
        return conn

    def db_replaced(self):
        """None while the database path still names the file this queue opened; otherwise a
        one-line reason. Work recorded in a deleted or replaced file is lost when the last process
        holding it exits, so a pool checks this (one stat) before each claim and tick."""
        if self._identity is None:
            return None
        now = _file_identity(self.db_path)
        if now == self._identity:
            return None
        return f"the database {self.db_path} was {'deleted' if now is None else 'replaced'} under the running pool"

    def close(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _retry(self, fn):
        deadline = time.monotonic() + BUSY_RETRY_SECONDS
        delay = 0.001
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    if _is_readonly(exc) and not getattr(self._local, "conn", None) and not self.read_only:
                        raise _ReadOnly(f"cannot write database {self.db_path}: {exc}") from None
                    # Opening a database nobody holds open on a full disk fails to size its -shm
                    # file, and SQLite says only "disk I/O error" (SQLITE_IOERR_SHMSIZE).
                    if is_disk_full(exc) or ("disk i/o error" in str(exc).lower()
                                             and disk_full_note(str(self.db_path.parent))):
                        raise DiskFull(f"disk full: cannot write the database {self.db_path} ({exc}); "
                                       "free some space on that disk") from None
                    if "readonly" in str(exc).lower() or "unable to open" in str(exc).lower():
                        raise QueueError(f"cannot write database {self.db_path}: {exc}") from None
                    raise
                if time.monotonic() > deadline:
                    raise DatabaseUnavailable(f"database {self.db_path} stayed locked for {BUSY_RETRY_SECONDS}s",
                                              "is a process stuck holding it?") from None
                import random  # only once the lock is found taken: a millisecond at every start otherwise
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.05)
            except sqlite3.DatabaseError as exc:
                if type(exc) is not sqlite3.DatabaseError:  # a constraint, a bad query: not the file
                    raise
                raise self._broken(exc) from None  # "malformed", "not a database": the file is bad

    def _again(self, conn, sql, exc):
        """`sql` just failed with `exc`: _retry takes it from there, as if its own first try had
        failed (busy: run it again until the lock is free; anything else: its error)."""
        failed = [exc]

        def run():
            if failed:
                raise failed.pop()
            return conn.execute(sql)
        return self._retry(run)

    def _write(self, notify=False):
        """The one owner of write transactions: BEGIN IMMEDIATE (retried while busy), COMMIT or
        ROLLBACK. With `notify`, processes waiting for changes are woken after the commit.
        `with self._write() as conn:` (_Transaction)."""
        return _Transaction(self, notify)

    @property
    def wake_dir(self):
        # Every commit that changes the queue wakes waiters: computed once per path, not per commit.
        if self._wake is None or self._wake[0] is not self.db_path:
            path = config.wake_dir(self.db_path)
            self._wake = (self.db_path, path, str(path))  # os.stat of a Path makes its str every time
        return self._wake[1]

    def notify_waiters(self):
        """Wake every process blocked in a Waker on this database (idle workers, waiting
        orchestrators). A FIFO nobody reads any more belongs to a dead process and is removed."""
        wake_dir = self.wake_dir
        try:
            st = os.stat(self._wake[2])
        except FileNotFoundError:
            return
        # Every commit lands here: the FIFOs are listed again only when the directory changed (a
        # FIFO came or went), which with no waiters leaves one stat per commit. A change within
        # the file system's timestamp granularity of the listing could keep its mtime, so a
        # listing of a directory changed in the last second is never reused.
        key = (wake_dir, st.st_ino, st.st_mtime_ns)
        cached = self._fifos
        if cached is not None and cached[0] == key:
            fifos = cached[1]
        else:
            try:
                fifos = [entry.path for entry in os.scandir(wake_dir) if entry.name.endswith(".fifo")]
            except FileNotFoundError:
                return
            self._fifos = (key, fifos) if st.st_mtime_ns < time.time_ns() - WAKE_LISTING_MARGIN_NS else None
        for path in fifos:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as exc:
                if exc.errno == errno.ENXIO:
                    _unlink_quietly(path)
                continue
            try:
                os.write(fd, b"\0")
            except BlockingIOError:
                pass  # full: a wake-up is already waiting to be read
            except OSError:
                pass
            finally:
                os.close(fd)

    def _read(self, sql, params=()):
        conn = self._connect()
        return self._retry(lambda: conn.execute(sql, params).fetchall())

    def checkpoint(self):
        """Copy the WAL back into the database without blocking readers or writers (PASSIVE); when
        that got everything and the WAL file has grown past WAL_LIMIT_BYTES, truncate it, waiting
        at most a moment for readers (a busy truncate is simply tried again next time)."""
        conn = self._connect()
        row = self._retry(lambda: conn.execute(SQL_CHECKPOINT).fetchone())
        try:
            size = os.path.getsize(f"{self.db_path}-wal")
        except OSError:
            size = 0
        if size > WAL_LIMIT_BYTES and row is not None and row[0] == 0 and row[1] == row[2]:
            conn.execute(SQL_BUSY_TIMEOUT_SHORT)
            try:
                row = conn.execute(SQL_CHECKPOINT_TRUNCATE).fetchone()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
            finally:
                conn.execute(SQL_BUSY_TIMEOUT)
        return row

    def _migrate(self, conn):
        version = conn.execute(SQL_VERSION).fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        if version == 0 and conn.execute(SQL_ANY_TABLE).fetchone()[0]:
            raise self._broken(None, foreign=True)
        with self._write() as c:
            version = c.execute(SQL_VERSION).fetchone()[0]
            if version > SCHEMA_VERSION:
                raise QueueError(f"database {self.db_path} has schema version {version}, newer than this "
                                 f"Klauss ({SCHEMA_VERSION}); update Klauss")
            for number in range(version, SCHEMA_VERSION):
                for statement in _split_sql(MIGRATIONS[number]):
                    c.execute(statement)
            c.execute(SQL_SET_VERSION)

    def _event(self, conn, task_id, event, worker_id=None, attempt=None, detail=None, now=None, cost=None,
               started=None):
        """Append to a task's history. `started`: this row ends an attempt that began then."""
        conn.execute(SQL_EVENT, (task_id, now if now is not None else self.clock(), event,
                                 worker_id, attempt, detail, cost, started))

    # --- adding tasks ---

    def add_task(self, prompt, working_dir=None, context_files=None, expected_outputs=None, metadata=None,
                 priority=0, job_id=None, parent_id=None, depends_on=None, max_attempts=None, timeout=None):
        entry = dict(prompt=prompt, working_dir=working_dir, context_files=context_files,
                     expected_outputs=expected_outputs, metadata=metadata, priority=priority, job_id=job_id,
                     parent_id=parent_id, depends_on=depends_on, max_attempts=max_attempts, timeout=timeout)
        return self.add_tasks([entry])[0]

    def add_tasks(self, entries):
        """Insert all entries or none. An entry's `depends_on` may name existing task ids (int) or
        the `ref` of another entry in the same batch (str); cycles are rejected. Checked on the way
        in (validation.py), whoever calls; the front ends come through submission.py, which first
        annotates worktree isolation."""
        return self.insert_prepared(validation.prepare(self.cfg, entries))

    def insert_prepared(self, prepared):
        """Insert a batch validation.prepare checked; its ids in entry order. The storage verb: it
        checks only what the database knows (existing dependencies, jobs, parents)."""
        tasks, order = prepared
        with self._write(notify=True) as conn:
            return self._insert(conn, tasks, order)

    def _insert(self, conn, tasks, order):
        now = self.clock()
        existing = {dep for t in tasks for dep in t["depends_on"] if isinstance(dep, int)}
        statuses = {}
        if existing:
            marks = ",".join("?" * len(existing))
            statuses = {r[0]: r[1] for r in conn.execute(SQL_STATUSES_OF.format(marks=marks),
                                                         list(existing))}
            missing = sorted(existing - set(statuses))
            if missing:
                raise ValueError(f"depends_on: unknown task id(s) {', '.join(map(str, missing))}")
        jobs = {t["job_id"] for t in tasks if t["job_id"]}
        for job_id in jobs:
            if conn.execute(SQL_JOB_EXISTS, (job_id,)).fetchone() is None:
                raise ValueError(f"job_id: unknown job {job_id!r}")
        parents = {t["parent_id"] for t in tasks if t["parent_id"]}
        for parent in parents:
            if conn.execute(SQL_TASK_EXISTS, (parent,)).fetchone() is None:
                raise ValueError(f"parent_id: unknown task id {parent}")
        ids = [None] * len(tasks)
        by_ref, created, skipped = {}, [], []
        for index in order:
            t = tasks[index]
            deps = [by_ref[d] if isinstance(d, str) else d for d in t["depends_on"]]
            blocked_by = [d for d in deps if statuses[d] != "completed"]
            dead = [d for d in deps if statuses[d] in ("failed", "cancelled", "skipped")]
            status = "skipped" if dead else "pending"
            cur = conn.execute(SQL_INSERT_TASK, (
                t["job_id"], t["parent_id"], t["prompt"], t["working_dir"], _dumps(t["context_files"]),
                _dumps(t["expected_outputs"]), _dumps(t["metadata"]), t["priority"], status, len(blocked_by),
                t["max_attempts"], t["timeout"], now, now,
                f"dependency #{dead[0]} {statuses[dead[0]]}" if dead else None,
                now if dead else None, t["ref"]))
            task_id = cur.lastrowid
            ids[index] = task_id
            statuses[task_id] = status
            if t["ref"] is not None:
                by_ref[t["ref"]] = task_id
            if deps:
                conn.executemany(SQL_INSERT_DEP,
                                 [(task_id, d) for d in deps])
            created.append((task_id, now))
            if dead:
                skipped.append((task_id, now, f"dependency #{dead[0]} {statuses[dead[0]]}"))
        # A new task's history starts at seq 1; written in one go, not one statement per task.
        conn.executemany(SQL_EVENT_CREATED, created)
        conn.executemany(SQL_EVENT_SKIPPED_AT_ONCE,
                         skipped)
        return ids

    # --- claiming and leases ---

    def claim_task(self, worker_id, lease_seconds=None, worker_info=None):
        """Atomically take the best runnable task, or None when nothing can run now. With
        `worker_info` (a worker's own claim), the worker's row says busy on it in the same commit."""
        with self._write() as conn:
            row = self._claim(conn, worker_id, lease_seconds, worker_info)
        # Built once the lock is released: other processes wait for it while we hold it.
        return None if row is None else Task.from_row(row, root=self.cfg.root)

    def _claim(self, conn, worker_id, lease_seconds, worker_info=None, holds=None):
        """The claimed task's row (for Task.from_row), or None."""
        lease = lease_seconds if lease_seconds is not None else self.cfg["workers"]["lease_seconds"]
        now = self.clock()
        cur = conn.tuples
        while True:
            if holds is None:
                pick = cur.execute(SQL_PICK, (now,)).fetchone()
            else:
                pick = cur.execute(SQL_PICK_UNLESS_PAUSED, (now, *holds)).fetchone()
            if pick is None:
                return None
            # The job's budget is checked on its true total before any of its tasks starts;
            # a spent job has its pending tasks skipped, and the next best task is picked.
            if pick[1] is None or not self._enforce_budget(conn, pick[1]) \
                    or conn.execute(SQL_COSTS_NOTHING, (pick[0],)).fetchone():
                break
        lease_until = now + lease
        cur.execute(SQL_CLAIM_ID, (worker_id, lease_until, now, now, pick[0]))
        if len(pick) > 2:
            # The picked row with SQL_CLAIM_ID's changes, instead of reading it again (and not
            # UPDATE ... RETURNING, which gathers its rows in a temporary B-tree first).
            row = dict(zip(_CLAIMED_COLUMNS, pick + ("in_progress", worker_id, lease_until, now, now, False, None, 0)))
        else:  # a backend whose pick names only id and job_id (PostgreSQL's locks the row it picks)
            row = conn.execute(SQL_TASK, (pick[0],)).fetchone()
        if worker_info is not None:
            self._beat_worker(conn, worker_id, states.BUSY, pick[0], worker_info, now)
        return row

    def finish_and_claim(self, action, task_id, worker_id, attempt=None, claim_next=False, lease_seconds=None,
                         worker_info=None, holds=None, flag=None, **details):
        """A worker's step in one commit: record a task's end (`action` is "complete", "fail",
        "release" or "cancel", with that method's own keyword arguments in `details`), set the
        pool flag `flag` = (key, value, until) if given, set the worker's row, and, with
        `claim_next` and none of the flags `holds` set (default: the pool-wide pause and
        configuration error; a worker passes flags.holds(host, login)), claim its next task.
        Returns (recorded, next task or None); `recorded` is what the single method returns."""
        finish = self._complete if action == "complete" else {
            "fail": self._fail, "release": self._release, "cancel": self._acknowledge_cancel}[action]
        if claim_next:
            keys = _DEFAULT_HOLDS if holds is None else _padded_holds(holds)
        if action == "complete":
            # The outcome's JSON is made before the write lock is taken: other processes wait for it.
            details["encoded"] = _completion(details.get("result"))
        with self._write(notify=True) as conn:
            done = finish(conn, task_id, worker_id, attempt=attempt, **details)
            # A flag that stops workers (a pause, a configuration error) and the release of the task
            # that raised it are seen together: a waiter told "stopped" finds that task pending.
            # Set before the claim, which it then holds.
            if flag is not None:
                key, value, until = flag
                conn.execute(SQL_SET_FLAG, (key, _dumps(value), until, self.clock()))
            task = None
            if claim_next:
                task = self._claim(conn, worker_id, lease_seconds, worker_info, holds=keys)
            if task is None and worker_info is not None:
                self._beat_worker(conn, worker_id, states.IDLE, None, worker_info, self.clock())
        return done, None if task is None else Task.from_row(task, root=self.cfg.root)

    def _beat_worker(self, conn, worker_id, state, current_task, info, now):
        conn.execute(SQL_WORKER_BEAT, (now, state, current_task, _dumps(info), worker_id))

    def next_claimable_at(self):
        """When the earliest waiting-for-retry task becomes claimable (None if none waits)."""
        rows = self._read(SQL_NEXT_NOT_BEFORE)
        return rows[0][0] if rows and rows[0][0] is not None else None

    def heartbeat(self, task_id, worker_id, attempt=None, lease_seconds=None):
        """Extend the lease; False once this worker no longer holds the task."""
        lease = lease_seconds if lease_seconds is not None else self.cfg["workers"]["lease_seconds"]
        with self._write() as conn:
            now = self.clock()
            cur = conn.execute(SQL_HEARTBEAT, (now + lease, now, task_id, worker_id, attempt, attempt))
            return cur.rowcount == 1

    def renew_lease(self, task_id, worker_id, attempt=None, lease_seconds=None, worker_info=None):
        """The running task's heartbeat in one commit: extend its lease and, with `worker_info`,
        the worker's row. None once this worker no longer holds the task, else whether a cancel
        was requested."""
        lease = lease_seconds if lease_seconds is not None else self.cfg["workers"]["lease_seconds"]
        with self._write() as conn:
            now = self.clock()
            if HAS_RETURNING:
                row = conn.execute(SQL_HEARTBEAT + " RETURNING cancel_requested",
                                   (now + lease, now, task_id, worker_id, attempt, attempt)).fetchone()
            elif conn.execute(SQL_HEARTBEAT, (now + lease, now, task_id, worker_id, attempt, attempt)).rowcount:
                row = conn.execute(SQL_CANCEL_REQUESTED, (task_id,)).fetchone()
            else:
                row = None
            if row is None:
                return None
            if worker_info is not None:
                self._beat_worker(conn, worker_id, states.BUSY, task_id, worker_info, now)
            return bool(row[0])

    def cancel_requested(self, task_id):
        rows = self._read(SQL_CANCEL_REQUESTED, (task_id,))
        return bool(rows and rows[0][0])

    def set_activity(self, task_id, worker_id, activity, attempt=None):
        """Record what the running task is doing now (for the dashboard). Holder only."""
        with self._write() as conn:
            cur = conn.execute(SQL_ACTIVITY, (activity, task_id, worker_id, attempt, attempt))
            return cur.rowcount == 1

    def _finish(self, conn, task_id, worker_id, attempt, status, result_text, error, outcome, cost, event,
                detail=None):
        now = self.clock()
        params = (status, now, now, result_text, error, _outcome_json(outcome), _denied(outcome), cost, cost,
                  task_id, worker_id, attempt, attempt)
        if HAS_RETURNING:
            row = conn.execute(SQL_FINISH + " RETURNING attempt, job_id, started_at", params).fetchone()
        elif conn.execute(SQL_FINISH, params).rowcount == 1:
            row = conn.execute(SQL_TASK_ATTEMPT_JOB, (task_id,)).fetchone()
        else:
            row = None
        if row is None:
            return None
        self._event(conn, task_id, event, worker_id, row["attempt"], detail, now=now, cost=cost,
                    started=row["started_at"])
        return row

    def complete_task(self, task_id, worker_id, result=None, attempt=None):
        """Mark completed. `result` is the final text, or a dict of outcome details whose "result"
        key is the text and "total_cost_usd" the cost. False if this worker no longer holds it."""
        with self._write(notify=True) as conn:
            return self._complete(conn, task_id, worker_id, result, attempt)

    def _complete(self, conn, task_id, worker_id, result=None, attempt=None, encoded=None):
        """`encoded`: _completion(result), when the caller worked it out before taking the lock."""
        text, stored, denied, cost = encoded if encoded is not None else _completion(result)
        # Read first (a SELECT, where UPDATE ... RETURNING would build a temporary B-tree): whether
        # we hold it, its job, and whether any task waits for it.
        cur = conn.tuples
        row = cur.execute(SQL_HOLDER_JOB_WAITED_ON, (task_id, worker_id, attempt, attempt)).fetchone()
        if row is None:
            return False
        now = self.clock()
        cur.execute(SQL_COMPLETE, (now, text, stored, denied, cost, cost, task_id, worker_id, attempt, attempt))
        # No history row: the completed task's row keeps its last attempt (see get_events).
        if row[1]:
            conn.execute(SQL_UNBLOCK_DEPENDENTS, (task_id,))
        if row[0] is not None:
            self._enforce_budget(conn, row[0])
        return True

    def fail_task(self, task_id, worker_id, error, retryable=True, attempt=None, outcome=None):
        """Record a failure: retried with exponential backoff while attempts remain (and
        `retryable`), else failed for good, and its transitive dependents skipped."""
        with self._write(notify=True) as conn:
            return self._fail(conn, task_id, worker_id, error, retryable, attempt, outcome)

    def _fail(self, conn, task_id, worker_id, error, retryable=True, attempt=None, outcome=None):
        text, outcome, cost = _split_result(outcome)
        error = str(error)
        now = self.clock()
        row = conn.execute(SQL_HOLDER, (task_id, worker_id, attempt, attempt)).fetchone()
        if row is None:
            return False
        used = row["attempt"] - row["attempt_base"]
        if retryable and used < row["max_attempts"]:
            q = self.cfg["queue"]
            delay = min(q["retry_backoff_seconds"] * 2 ** (used - 1), q["retry_backoff_max_seconds"])
            conn.execute(SQL_REQUEUE, (now + delay, now, error, text, _outcome_json(outcome),
                                       _denied(outcome), cost, cost, 0, task_id))
            self._event(conn, task_id, "failed", worker_id, row["attempt"],
                        f"{error} (attempt {used}/{row['max_attempts']}; retry in {delay:g}s)", now=now, cost=cost,
                        started=row["started_at"])
        else:
            self._finish(conn, task_id, worker_id, attempt, "failed", text, error, outcome, cost, "failed",
                         error if retryable else f"{error} (not retryable)")
            self._skip_dependents(conn, task_id, f"dependency #{task_id} failed")
        self._enforce_budget(conn, row["job_id"])
        return True

    def release_task(self, task_id, worker_id, delay=0, reason=None, attempt=None, cost=None):
        """Back to pending without spending an attempt (shutdown, rate limits). `cost` is what the
        released run spent all the same: it counts in the task's and the job's total."""
        with self._write(notify=True) as conn:
            return self._release(conn, task_id, worker_id, delay, reason, attempt, cost)

    def _release(self, conn, task_id, worker_id, delay=0, reason=None, attempt=None, cost=None):
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, (int, float))):
            cost = None
        now = self.clock()
        # Read first (releases are rare): the history row needs the attempt and when it started.
        row = conn.execute(SQL_HOLDER, (task_id, worker_id, attempt, attempt)).fetchone()
        if row is None:
            return False
        conn.execute(SQL_RELEASE, (now + delay, now, cost, cost, task_id, worker_id, attempt, attempt))
        self._event(conn, task_id, "released", worker_id, row["attempt"], reason, now=now, cost=cost,
                    started=row["started_at"])
        if cost:
            self._enforce_budget(conn, row["job_id"])
        return True

    def acknowledge_cancel(self, task_id, worker_id, attempt=None, outcome=None):
        """The holder stopped a task whose cancel was requested: it ends cancelled."""
        with self._write(notify=True) as conn:
            return self._acknowledge_cancel(conn, task_id, worker_id, attempt, outcome)

    def _acknowledge_cancel(self, conn, task_id, worker_id, attempt=None, outcome=None):
        text, outcome, cost = _split_result(outcome)
        row = self._finish(conn, task_id, worker_id, attempt, "cancelled", text, "cancelled by request",
                           outcome, cost, "cancelled")
        if row is None:
            return False
        self._skip_dependents(conn, task_id, f"dependency #{task_id} cancelled")
        return True

    def recover_stale(self, worker_id=None):
        """Return tasks whose lease expired (or, with `worker_id`, that worker's tasks at once) to
        pending, or to failed when out of attempts. Returns the recovered task ids."""
        recovered = []
        # Read first: workers call this every lease/2, and taking the write lock to find nothing
        # would cost each of them a commit and stall the others' claims.
        if worker_id is None:
            if not self._read(SQL_ANY_STALE, (self.clock(),)):
                return recovered
        elif not self._read(SQL_ANY_WORKER_TASK, (worker_id,)):
            return recovered
        with self._write() as conn:
            now = self.clock()
            if worker_id is None:
                rows = conn.execute(SQL_STALE, (now,)).fetchall()
                why = "lease expired"
            else:
                rows = conn.execute(SQL_WORKER_TASKS, (worker_id,)).fetchall()
                why = f"worker {worker_id} died"
            for row in rows:
                used = row["attempt"] - row["attempt_base"]
                # What it was doing names the likely cause (a setup command, say), not just the death.
                doing = f" (while: {row['activity']})" if row["activity"] else ""
                if row["cancel_requested"]:
                    conn.execute(SQL_FORCE_FINISH, ("cancelled", now, now, "cancelled by request", row["id"]))
                    self._event(conn, row["id"], "cancelled", row["worker_id"], row["attempt"], why, now=now,
                                started=row["started_at"])
                    self._skip_dependents(conn, row["id"], f"dependency #{row['id']} cancelled")
                elif used < row["max_attempts"]:
                    conn.execute(SQL_REQUEUE, (now, now, f"{why} (attempt {used}){doing}", None, None, 0, None, None, 0,
                                               row["id"]))
                    self._event(conn, row["id"], "recovered", row["worker_id"], row["attempt"], why, now=now,
                                started=row["started_at"])
                else:
                    error = f"{why} on attempt {used}/{row['max_attempts']}; no attempts left{doing}"
                    conn.execute(SQL_FORCE_FINISH, ("failed", now, now, error, row["id"]))
                    self._event(conn, row["id"], "failed", row["worker_id"], row["attempt"], error, now=now,
                                started=row["started_at"])
                    self._skip_dependents(conn, row["id"], f"dependency #{row['id']} failed")
                recovered.append(row["id"])
        if recovered:
            self.notify_waiters()
        return recovered

    # --- dependents, cancel, retry ---

    def _skip_dependents(self, conn, task_id, reason):
        now = self.clock()
        rows = conn.execute(SQL_PENDING_DESCENDANTS, (task_id,)).fetchall()
        for row in rows:
            conn.execute(SQL_SKIP, (now, now, reason, row[0]))
            self._event(conn, row[0], "skipped", detail=reason, now=now)
        return [r[0] for r in rows]

    def _enforce_budget(self, conn, job_id):
        """Skip the job's pending tasks once what it spent (every attempt of every task) reached
        its budget. True when the budget is spent."""
        if job_id is None:
            return False
        job = conn.execute(SQL_JOB_BUDGET, (job_id,)).fetchone()
        if job is None or job[0] is None:
            return False
        spent = conn.execute(SQL_JOB_SPENT, (job_id,)).fetchone()[0]
        if spent < job[0]:
            return False
        now = self.clock()
        reason = f"job budget {task_report.fmt_cost(job[0])} reached (spent {task_report.fmt_cost(spent)})"
        for (tid,) in conn.execute(SQL_JOB_PENDING, (job_id,)).fetchall():
            conn.execute(SQL_SKIP, (now, now, reason, tid))
            self._event(conn, tid, "skipped", detail=reason, now=now)
        return True

    def cancel_task(self, task_id):
        """Cancel a task: pending becomes cancelled (dependents skipped); running gets a cancel
        request its worker sees on the next heartbeat. Returns the new status, or None if unknown."""
        with self._write(notify=True) as conn:
            return self._cancel(conn, task_id)

    def _cancel(self, conn, task_id, skip_dependents=True):
        now = self.clock()
        row = conn.execute(SQL_TASK_STATUS, (task_id,)).fetchone()
        if row is None:
            return None
        if row["status"] == "pending":
            conn.execute(SQL_FORCE_FINISH, ("cancelled", now, now, "cancelled by request", task_id))
            self._event(conn, task_id, "cancelled", now=now)
            if skip_dependents:
                self._skip_dependents(conn, task_id, f"dependency #{task_id} cancelled")
            return "cancelled"
        if row["status"] == "in_progress":
            conn.execute(SQL_REQUEST_CANCEL, (now, task_id))
            self._event(conn, task_id, "cancel_requested", now=now)
            return "cancel_requested"
        return row["status"]

    def cancel_job(self, job_id):
        """Cancel every unfinished task of a job. Returns {task_id: new status}."""
        with self._write(notify=True) as conn:
            ids = [r[0] for r in conn.execute(
                SQL_JOB_UNFINISHED, (job_id,)).fetchall()]
            # Every task of the job first: skipping dependents as we go would turn the job's later
            # tasks into "skipped" before their turn, and they would read as not cancelled.
            changed = {tid: self._cancel(conn, tid, skip_dependents=False) for tid in ids}
            for tid, status in changed.items():
                if status == "cancelled":  # what still waits on it lies outside the job
                    self._skip_dependents(conn, tid, f"dependency #{tid} cancelled")
            return changed

    def retry_task(self, task_id):
        """Put a failed or cancelled task back to pending with a fresh set of attempts, and revive
        the dependents that were skipped because of it. Returns the ids made pending."""
        with self._write(notify=True) as conn:
            now = self.clock()
            row = conn.execute(SQL_TASK_STATUS, (task_id,)).fetchone()
            if row is None:
                raise KeyError(task_id)
            if row["status"] not in ("failed", "cancelled", "skipped"):
                raise ValueError(f"task {task_id} is {row['status']}; only failed, cancelled or skipped tasks can be retried")
            if row["status"] == "skipped":
                blockers = conn.execute(SQL_DEAD_DEPS, (task_id,)).fetchall()
                if blockers:
                    raise ValueError(f"task {task_id} was skipped because dependency #{blockers[0][0]} "
                                     f"is {blockers[0][1]}; retry #{blockers[0][0]} instead")
            revived = [task_id]
            conn.execute(SQL_RETRY, (now, task_id))
            self._event(conn, task_id, "retried", now=now)
            # Dependents were skipped in dependency order; revive them the same way, keeping any
            # that still depend on something else that is dead.
            for (dep_id,) in conn.execute(SQL_SKIPPED_DESCENDANTS, (task_id,)).fetchall():
                if conn.execute(SQL_DEAD_DEPS, (dep_id,)).fetchone() is None:
                    conn.execute(SQL_RETRY, (now, dep_id))
                    self._event(conn, dep_id, "retried", detail=f"dependency #{task_id} retried", now=now)
                    revived.append(dep_id)
            return revived

    # --- reading ---

    def get_task(self, task_id):
        rows = self._read(SQL_TASK, (task_id,))
        if not rows:
            return None
        deps = [r[0] for r in self._read(SQL_DEPENDENCIES, (task_id,))]
        return Task.from_row(rows[0], deps, root=self.cfg.root)

    def get_dependents(self, task_id):
        return [r[0] for r in self._read(SQL_DEPENDENTS, (task_id,))]

    def list_tasks(self, status=None, job_id=None, limit=None, offset=0, worker_id=None, order="desc"):
        """Tasks, newest first by default. `status` may be one status or a list of them."""
        if order == "desc" and worker_id is None:
            return self.recent_tasks(status, job_id, limit, offset)
        where, params = [], []
        if status is not None:
            statuses = [status] if isinstance(status, str) else list(status)
            bad = [s for s in statuses if s not in STATUSES]
            if bad:
                raise ValueError(f"status: unknown {bad[0]!r} (known: {', '.join(STATUSES)})")
            where.append(f"status IN ({','.join(repr(s) for s in statuses)})")
        if job_id is not None:
            where.append("job_id = ?")
            params.append(job_id)
        if worker_id is not None:
            where.append("worker_id = ?")
            params.append(worker_id)
        sql = SQL_TASKS
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id " + ("ASC" if order == "asc" else "DESC")
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [int(limit), int(offset)]
        return self._tasks_with_deps(self._read(sql, params))

    def _tasks_with_deps(self, rows):
        deps = {}
        for chunk in range(0, len(rows), 500):
            part = [r["id"] for r in rows[chunk:chunk + 500]]
            for r in self._read(SQL_DEPENDENCIES_OF.format(marks=",".join("?" * len(part))), part):
                deps.setdefault(r[0], []).append(r[1])
        return [Task.from_row(r, deps.get(r["id"], []), root=self.cfg.root) for r in rows]

    def get_events(self, task_id):
        """The task's history, oldest first: dicts of at, event, worker_id, attempt, detail, cost_usd."""
        events = []
        for row in self._read(SQL_EVENTS, (task_id,)):
            event = dict(zip(row.keys(), row))
            started = event.pop("started_at")
            # (A database from before schema 6 stored the claim itself: not shown twice.)
            if started is not None and not _has_claim(events, event["attempt"]):
                self._claimed_entry(events, started, event["worker_id"], event["attempt"])
            events.append(event)
        task = self._read(SQL_TASK_ATTEMPT, (task_id,))
        if not task or task[0]["status"] not in ("in_progress", "completed"):
            return events
        # The running attempt, and the one that completed the task, are kept by the task row.
        task = task[0]
        if task["started_at"] is not None and not _has_claim(events, task["attempt"]):
            self._claimed_entry(events, task["started_at"], task["worker_id"], task["attempt"])
        # (A database from before schema 7 stored the completion too: not shown twice.)
        if task["status"] == "completed" and not any(e["event"] == "completed" for e in events):
            outcome = json.loads(task["outcome"]) if task["outcome"] else None
            events.append({"at": task["finished_at"], "event": "completed", "worker_id": task["worker_id"],
                           "attempt": task["attempt"], "detail": None, "cost_usd": _split_result(outcome)[2]})
        return events

    @staticmethod
    def _claimed_entry(events, started, worker_id, attempt):
        # Stored once, with the attempt's end (schema 6); shown where it happened: before what the
        # attempt's own time saw (a cancel request), after everything earlier.
        at = len(events)
        while at and events[at - 1]["event"] == "cancel_requested" and events[at - 1]["at"] >= started:
            at -= 1
        events.insert(at, {"at": started, "event": "claimed", "worker_id": worker_id, "attempt": attempt,
                           "detail": None, "cost_usd": None})

    def get_stats(self, job_id=None):
        """A count per status, `total`, and `cost_usd` (all tasks, or one job's)."""
        if job_id is None:
            rows = self._read(SQL_COUNTS)
            running = self._read(SQL_RUNNING_COUNT)[0][0]
        else:
            rows = self._read(SQL_JOB_COUNTS, (job_id,))
            running = self._read(SQL_JOB_RUNNING_COUNT, (job_id,))[0][0]
        stats = {s: 0 for s in STATUSES}
        cost = 0.0
        denied = 0
        for status, n, c, d in rows:
            stats[status] = stats.get(status, 0) + n
            cost += c or 0.0
            if status == "completed":
                denied += d or 0
        # The 'pending' count holds every unfinished task (schema 5): the running ones are apart.
        stats["in_progress"] = running
        stats["pending"] -= running
        stats["total"] = sum(stats[s] for s in STATUSES)
        stats["cost_usd"] = round(cost, 6)
        # Completed, but some of the run's tool calls were denied: done, yet not as asked.
        stats["denied"] = denied
        return stats

    def integration_counts(self, job_id=None):
        """The merge queue's integration tasks (metadata "klauss_integration", integration.py) among
        get_stats(job_id)'s: a count per status and `total`, read from indexes only. (They run no
        claude, so none has a denial: get_stats' `denied` is the user's.)"""
        job = () if job_id is None else (job_id,)
        total = self._read(SQL_INTEGRATION_TOTAL if job_id is None else SQL_JOB_INTEGRATION_TOTAL, job)[0][0]
        counts = {s: 0 for s in STATUSES}
        counts["total"] = total
        if total:
            counts.update(self._read(SQL_INTEGRATION_COUNTS if job_id is None else SQL_JOB_INTEGRATION_COUNTS, job))
        # Finished tasks are nearly all completed and have no index of their own: the rest of them.
        counts["completed"] = counts["total"] - sum(n for s, n in counts.items() if s not in ("completed", "total"))
        return {**{s: counts[s] for s in STATUSES}, "total": counts["total"]}

    def purge(self, older_than, statuses=None):
        """Delete finished tasks that finished more than `older_than` seconds ago. Returns the count.
        Tasks that unfinished tasks still depend on are kept."""
        statuses = list(statuses or FINISHED)
        bad = [s for s in statuses if s not in FINISHED]
        if bad:
            raise ValueError(f"status: only finished tasks can be purged ({', '.join(FINISHED)}), got {bad[0]!r}")
        if isinstance(older_than, bool) or not isinstance(older_than, (int, float)) or older_than < 0:
            raise ValueError(f"older_than: expected seconds >= 0, got {older_than!r}")
        with self._write() as conn:
            cutoff = self.clock() - older_than
            cur = conn.execute(
                SQL_PURGE.format(marks=",".join("?" * len(statuses))),
                [cutoff, *statuses])
            return cur.rowcount

    # --- jobs ---

    def create_job(self, description, orchestrator_id=None, metadata=None, max_budget_usd=None):
        """A new job without tasks yet; its id."""
        validation.check_job(description, orchestrator_id, metadata, max_budget_usd)
        return self.insert_job(description, orchestrator_id, metadata, max_budget_usd)

    def submit_job(self, description, tasks, orchestrator_id=None, metadata=None, max_budget_usd=None,
                   plan_hash=None):
        """Create a job and its tasks in one transaction: both or neither. Returns (job_id, task ids).
        `plan_hash` identifies the plan it came from (see unfinished_job)."""
        validation.check_job(description, orchestrator_id, metadata, max_budget_usd)
        job_id = self.new_job_id()
        if isinstance(tasks, (list, tuple)):
            tasks = [{**t, "job_id": job_id} if isinstance(t, dict) else t for t in tasks]
        return self.insert_job(description, orchestrator_id, metadata, max_budget_usd, job_id=job_id,
                               prepared=validation.prepare(self.cfg, tasks), plan_hash=plan_hash)

    def new_job_id(self):
        return "job-" + time.strftime("%Y%m%d", time.gmtime(self.clock())) + "-" + os.urandom(3).hex()

    def insert_job(self, description, orchestrator_id, metadata, max_budget_usd, job_id=None, prepared=None,
                   plan_hash=None):
        """Write a job (checked by validation.check_job) and, with `prepared`, its tasks in the same
        transaction. The job id, or (job id, task ids) with `prepared`."""
        job = (job_id or self.new_job_id(), description, orchestrator_id, _dumps(metadata or {}), max_budget_usd,
               self.clock())
        with self._write(notify=prepared is not None) as conn:
            conn.execute(SQL_INSERT_JOB, job)
            if plan_hash is not None:
                conn.execute(SQL_JOB_PLAN_HASH, (str(plan_hash), job[0]))
            if prepared is None:
                return job[0]
            return job[0], self._insert(conn, *prepared)

    def unfinished_job(self, plan_hash):
        """The newest job made from this plan that still has pending or running tasks, or None."""
        for (job_id,) in self._read(SQL_JOBS_OF_PLAN, (str(plan_hash),)):
            stats = self.get_stats(job_id)
            if stats["pending"] or stats["in_progress"]:
                return job_id
        return None

    def update_job_metadata(self, job_id, changes, expect=None):
        """Merge `changes` into a job's metadata (e.g. the worktree base commit) and return it.
        With `expect` ({key: value}), only if each key still holds that value (a missing key holds
        None): a compare-and-swap for state that several hosts read, merge and write back. None,
        and nothing written, when one does not."""
        with self._write() as conn:
            row = conn.execute(SQL_JOB_METADATA, (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            meta = json.loads(row[0])
            if expect and any(meta.get(key) != value for key, value in expect.items()):
                return None
            meta.update(changes)
            conn.execute(SQL_SET_JOB_METADATA, (_dumps(meta), job_id))
            return meta

    def get_job(self, job_id):
        rows = self._read(SQL_JOB, (job_id,))
        if not rows:
            return None
        job = dict(rows[0])
        job["metadata"] = json.loads(job["metadata"])
        job["stats"] = self.get_stats(job_id)
        return job

    def list_jobs(self, limit=None):
        sql = SQL_JOBS
        params = []
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        jobs = []
        for row in self._read(sql, params):
            job = dict(row)
            job["metadata"] = json.loads(job["metadata"])
            job["stats"] = self.get_stats(job["id"])
            jobs.append(job)
        return jobs

    # --- workers and pool-wide flags ---

    def register_worker(self, worker_id, pid=None, state=states.STARTING, info=None):
        now = self.clock()
        with self._write() as conn:
            conn.execute(SQL_REGISTER_WORKER,
                         (worker_id, pid if pid is not None else os.getpid(), state, now, now, _dumps(info or {})))

    def worker_heartbeat(self, worker_id, state=None, current_task=None, info=None):
        """Record that a worker is alive, and optionally its state, current task and details."""
        now = self.clock()
        with self._write() as conn:
            cur = conn.execute(SQL_WORKER_HEARTBEAT, (now, state, current_task, worker_id))
            if info is not None and cur.rowcount:
                conn.execute(SQL_WORKER_INFO, (_dumps(info), worker_id))
            return cur.rowcount == 1

    def list_workers(self):
        workers = []
        for row in self._read(SQL_WORKERS):
            w = dict(row)
            w["info"] = json.loads(w["info"])
            workers.append(w)
        return workers

    def unregister_worker(self, worker_id):
        with self._write() as conn:
            return conn.execute(SQL_UNREGISTER_WORKER, (worker_id,)).rowcount == 1

    def set_flag(self, key, value, until=None):
        """Set a pool-wide flag (e.g. "paused" until a usage limit resets); value is JSON-able."""
        with self._write(notify=True) as conn:
            conn.execute(SQL_SET_FLAG,
                         (key, _dumps(value), until, self.clock()))

    def running_coordinator(self):
        """The live coordinator's flag value for this database, or None (see running_coordinator)."""
        return running_coordinator(self)

    def get_flag(self, key):
        """The flag's {"value", "until", "updated_at"}, or None if unset or its `until` has passed."""
        rows = self._read(SQL_FLAG, (key,))
        if not rows:
            return None
        value, until, updated = rows[0]
        if until is not None and until <= self.clock():
            return None
        return {"value": json.loads(value), "until": until, "updated_at": updated}

    def list_flags(self, prefix=""):
        """{key: flag} for the live flags whose key starts with `prefix`."""
        now = self.clock()
        rows = self._read(SQL_FLAGS_FROM, (prefix, prefix + "\uffff", now))
        return {k: {"value": json.loads(v), "until": u, "updated_at": t} for k, v, u, t in rows}

    def clear_flag(self, key):
        with self._write(notify=True) as conn:
            return conn.execute(SQL_CLEAR_FLAG, (key,)).rowcount == 1

    # --- queries for the CLI and dashboard

    def recent_tasks(self, status=None, job_id=None, limit=50, offset=0):
        """Newest tasks first, like `list_tasks`, but reading about `offset + limit` rows however many
        tasks the table holds, so a screenful costs the same at 100 tasks or 1,000,000. `status` is
        one status or a list; `limit=None` returns every match."""
        statuses = None if status is None else sorted({status} if isinstance(status, str) else set(status))
        bad = [s for s in statuses or () if s not in STATUSES]
        if bad:
            raise ValueError(f"status: unknown {bad[0]!r} (known: {', '.join(STATUSES)})")
        _require_int("limit", limit, minimum=0)
        _require_int("offset", offset, minimum=0, allow_none=False)
        if statuses is not None and len(statuses) > 1:
            # One bounded query per status, merged: a single scan for a common and a rare status
            # together would walk back to the oldest rare one.
            window = None if limit is None else offset + limit
            merged = sorted((t for s in statuses for t in self.recent_tasks(s, job_id, window)),
                            key=lambda t: t.id, reverse=True)
            return merged[offset:None if limit is None else offset + limit]
        # The trigger-kept counts bound the matches, so a backwards scan of ids for a status stops
        # at its last match instead of running on to the start of the table.
        if statuses is not None or job_id is not None:
            counts = self.get_stats(job_id)
            matches = counts["total"] if statuses is None else counts[statuses[0]]
            limit = max(0, matches - offset) if limit is None else max(0, min(limit, matches - offset))
        if limit == 0:
            return []
        where, params, index = [], [], ""
        if statuses is not None:
            # SQLite uses a partial index only when the query repeats the index's own WHERE term,
            # and without ANALYZE statistics it prefers the rowid order, hence INDEXED BY.
            if statuses[0] in ("failed", "cancelled", "skipped"):
                index = " INDEXED BY tasks_unsuccessful"
                where.append(_UNSUCCESSFUL)
            elif statuses[0] == "in_progress":
                index = " INDEXED BY tasks_open"
            where.append(f"status = {statuses[0]!r}")
        if job_id is not None:
            where.append("job_id = ?")
            params.append(job_id)
        sql = SQL_TASKS + index
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC"
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        return self._tasks_with_deps(self._read(sql, params))


# --- this database's pool processes --------------------------------------------------------------
# Process identity lives in processes.py; the names stay here for existing callers.

COORDINATOR_FLAG = flags.COORDINATOR
pid_alive = processes.pid_alive
process_args = processes.process_args
is_our_process = processes.is_our_process
running_coordinator = processes.running_coordinator


class _Connection(sqlite3.Connection):
    """sqlite3's connection plus `tuples`: one cursor, reused, whose rows are plain tuples. A
    worker's step runs its statements there: each `execute` of the connection makes a cursor, and a
    sqlite3.Row is made for every row (PostgreSQL's Connection offers itself as `tuples`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.tuples = self.cursor()  # made before row_factory is set: its rows stay tuples


class _Transaction:
    """TaskQueue._write's transaction: a class rather than a generator, whose context manager
    costs a worker's step more than some of its statements."""

    __slots__ = ("queue", "notify", "conn")

    def __init__(self, queue, notify):
        self.queue = queue
        self.notify = notify

    def __enter__(self):
        conn = self.conn = self.queue._connect()
        # Straight to SQLite; _retry (and its closure) only once the lock or the file says no.
        try:
            conn.tuples.execute(SQL_BEGIN)
        except sqlite3.DatabaseError as exc:
            self.queue._again(conn, SQL_BEGIN, exc)
        return conn

    def __exit__(self, kind, exc, tb):
        queue, conn = self.queue, self.conn
        if kind is not None:
            conn.execute(SQL_ROLLBACK)
            if isinstance(exc, sqlite3.OperationalError) and is_disk_full(exc):
                raise DiskFull(f"disk full: cannot write the database {queue.db_path} ({exc}); "
                               "free some space on that disk") from None
            if type(exc) is sqlite3.DatabaseError:
                raise queue._broken(exc) from None
            return False
        try:
            conn.tuples.execute(SQL_COMMIT)
        except sqlite3.DatabaseError as exc:
            queue._again(conn, SQL_COMMIT, exc)
        if self.notify:
            queue.notify_waiters()
        return False


def _file_identity(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


class Waker:
    """Block until the queue changes, without polling: a FIFO in the database's wake directory
    that `TaskQueue.notify_waiters` writes to after every state change. Opened read-write so it
    never reports end-of-file when no writer is connected."""

    def __new__(cls, queue, name):
        # Another backend wakes its waiters its own way (PostgreSQL: LISTEN/NOTIFY).
        own = getattr(queue, "waker_class", Waker)
        return super().__new__(own if cls is Waker else cls)

    def __init__(self, queue, name):
        wake_dir = config.ensure_private_dir(queue.wake_dir)
        name = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in name)
        self.path = wake_dir / f"{name}-{os.getpid()}.fifo"
        # Made under a temporary name and renamed once open, so a notifier never sees it readerless
        # (which it would take for a dead process's FIFO and remove).
        tmp = wake_dir / f".{name}-{os.getpid()}-{os.urandom(3).hex()}.tmp"
        os.mkfifo(tmp, 0o600)
        self.fd = os.open(tmp, os.O_RDWR | os.O_NONBLOCK)
        os.replace(tmp, self.path)

    def wait(self, timeout):
        """True if woken (by a change or by wake()), False when `timeout` seconds passed."""
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return False
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass
        return True

    def wake(self):
        """Wake our own wait (safe from a signal handler)."""
        try:
            os.write(self.fd, b"\0")
        except OSError:
            pass

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
            _unlink_quietly(self.path)


def _padded_holds(holds):
    """The five keys SQL_PICK_UNLESS_PAUSED takes: fewer repeat the last, more are cut."""
    keys = list(holds or (flags.PAUSED, flags.CONFIG_ERROR))
    keys += [keys[-1]] * (5 - len(keys))
    return tuple(keys[:5])


_DEFAULT_HOLDS = _padded_holds(None)


def _split_result(result):
    """(text, outcome dict, cost) from a result given as text or as a dict of outcome details."""
    if result is None:
        return None, None, None
    if isinstance(result, dict):
        text = result.get("result")
        cost = result.get("total_cost_usd")
        if cost is not None and (isinstance(cost, bool) or not isinstance(cost, (int, float))):
            cost = None
        return (None if text is None else str(text)), result, cost
    return str(result), None, None


def _completion(result):
    """What a completion stores of `result`: (text, outcome JSON, denied tool calls, cost)."""
    text, outcome, cost = _split_result(result)
    if outcome is None:
        return text, None, 0, cost
    return text, _outcome_json(outcome), _denied(outcome), cost


def _has_claim(events, attempt):
    return any(e["event"] == "claimed" and e["attempt"] == attempt for e in events)


def _outcome_json(outcome):
    """The outcome as stored: its "result" text lives in the `result` column only (Task.from_row
    puts it back), so a completion writes the answer once, not twice."""
    if outcome is None:
        return None
    return _dumps({k: v for k, v in outcome.items() if k != "result"})


def _denied(outcome):
    """How many tool calls the run's outcome says were denied."""
    denials = outcome.get("permission_denials") if isinstance(outcome, dict) else None
    return len(denials) if isinstance(denials, list) else 0


def _split_sql(script):
    """Split a migration script into statements (sqlite3.complete_statement knows about triggers)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            if current.strip():
                statements.append(current.strip())
            current = ""
    if current.strip():
        statements.append(current.strip())
    return statements


# --- SQL used by the methods above ---------------------------------------------------------------

SQL_EVENT = """
INSERT INTO task_events (task_id, seq, at, event, worker_id, attempt, detail, cost_usd, started_at)
VALUES (?1, (SELECT ifnull(max(seq), 0) + 1 FROM task_events WHERE task_id = ?1), ?2, ?3, ?4, ?5, ?6, ?7, ?8)
"""

SQL_INSERT_JOB = """
INSERT INTO jobs (id, description, orchestrator_id, metadata, max_budget_usd, created_at) VALUES (?, ?, ?, ?, ?, ?)
"""

SQL_INSERT_TASK = """
INSERT INTO tasks (job_id, parent_id, prompt, working_dir, context_files, expected_outputs, metadata,
                   priority, status, deps_remaining, max_attempts, timeout, created_at, updated_at,
                   error, finished_at, ref)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

# Walks the partial index of unfinished tasks from its runnable ones, in priority order; only tasks
# waiting for a retry time (few) are ever stepped over. INDEXED BY because without ANALYZE statistics the planner may scan
# the table (or another index) and sort every pending task on each claim. The whole row: the
# claimed Task is made from it (id and job_id come first, as _claim reads them), less the columns
# the claim sets (each column read costs the sqlite3 module a conversion and a Python object).
_PICK_COLUMNS = ("id", "job_id", "parent_id", "prompt", "working_dir", "context_files", "expected_outputs",
                 "metadata", "priority", "attempt", "attempt_base", "max_attempts", "timeout", "not_before",
                 "created_at", "finished_at", "result", "error", "outcome", "cost_usd", "ref", "denied")
# ...and those the claim sets, in the order _claim gives their values.
_CLAIMED_COLUMNS = _PICK_COLUMNS + ("status", "worker_id", "lease_expires_at", "started_at", "updated_at",
                                    "cancel_requested", "activity", "deps_remaining")
# `attempt` is read as the claim leaves it.
SQL_PICK = f"""
SELECT {", ".join("attempt + 1" if name == "attempt" else name for name in _PICK_COLUMNS)} FROM tasks INDEXED BY tasks_open
WHERE status = 'pending' AND deps_remaining = 0 AND not_before <= ?1
ORDER BY priority DESC, id LIMIT 1
"""

_SQL_CLAIM_SET = """
UPDATE tasks SET status = 'in_progress', worker_id = ?, attempt = attempt + 1, lease_expires_at = ?,
                 started_at = ?, updated_at = ?, cancel_requested = 0, activity = NULL
"""
SQL_CLAIM_ID = _SQL_CLAIM_SET + "WHERE id = ?"

SQL_NEXT_NOT_BEFORE = "SELECT min(not_before) FROM tasks WHERE status = 'pending' AND deps_remaining = 0"

# "(? IS NULL OR attempt = ?)": callers that know their attempt are fenced by it too.
_HOLDER = "id = ? AND worker_id = ? AND status = 'in_progress' AND (? IS NULL OR attempt = ?)"

SQL_HOLDER = f"SELECT * FROM tasks WHERE {_HOLDER}"

SQL_HOLDER_JOB_WAITED_ON = f"""
SELECT job_id, EXISTS (SELECT 1 FROM task_deps WHERE depends_on = tasks.id) FROM tasks WHERE {_HOLDER}
"""

SQL_HEARTBEAT = f"UPDATE tasks SET lease_expires_at = ?, updated_at = ? WHERE {_HOLDER}"

SQL_TASK = "SELECT * FROM tasks WHERE id = ?"
SQL_TASKS = "SELECT * FROM tasks"  # list_tasks and recent_tasks add their WHERE, order and limit

SQL_COUNTS = "SELECT status, sum(n), sum(cost), sum(denied) FROM task_counts GROUP BY status"
SQL_JOB_COUNTS = "SELECT status, n, cost, denied FROM task_counts WHERE job_id = ?"
SQL_RUNNING_COUNT = "SELECT count(*) FROM tasks INDEXED BY tasks_open WHERE status = 'in_progress'"
SQL_JOB_RUNNING_COUNT = SQL_RUNNING_COUNT + " AND job_id = ?"
SQL_TASK_ATTEMPT_JOB = "SELECT attempt, job_id, started_at FROM tasks WHERE id = ?"
SQL_CANCEL_REQUESTED = "SELECT cancel_requested FROM tasks WHERE id = ?"

# A worker's own claim, completion or heartbeat sets its row in the same transaction.
SQL_WORKER_BEAT = "UPDATE workers SET last_heartbeat = ?, state = ?, current_task = ?, info = ? WHERE worker_id = ?"

# A worker finishing a task claims no next one while a pool-wide flag that stops claims is live
# (read in the same statement: one fewer per task).
# Which flags hold a worker depends on its host and login (flags.holds: five keys). One lookup
# per key: `key IN (...)` would build a temporary table on every pick.
SQL_PICK_UNLESS_PAUSED = SQL_PICK.replace("ORDER BY", "".join(f"""AND NOT EXISTS (
    SELECT 1 FROM pool_flags WHERE key = ?{n} AND (until IS NULL OR until > ?1))
""" for n in range(2, 7)) + "ORDER BY")

SQL_ACTIVITY = f"UPDATE tasks SET activity = ? WHERE {_HOLDER}"

# A task's cost is the sum over its attempts: each run's cost is added, never put in place of the
# earlier ones (the parameter is given twice: a run without a known cost adds nothing).
_ADD_COST = "cost_usd = CASE WHEN ? IS NULL THEN cost_usd ELSE ifnull(cost_usd, 0) + ? END"

SQL_FINISH = f"""
UPDATE tasks SET status = ?, finished_at = ?, updated_at = ?, result = ?, error = ?, outcome = ?, denied = ?,
                 {_ADD_COST}, lease_expires_at = NULL, activity = NULL
WHERE {_HOLDER}
"""

# SQL_FINISH for a completion: its constants written in, the time bound once (10 values, not 13).
# A value tested with IS NULL is bound apart from its other use (PostgreSQL types each parameter once).
SQL_COMPLETE = """
UPDATE tasks SET status = 'completed', finished_at = ?1, updated_at = ?1, result = ?2, error = NULL, outcome = ?3,
                 denied = ?4, cost_usd = CASE WHEN ?5 IS NULL THEN cost_usd ELSE ifnull(cost_usd, 0) + ?6 END,
                 lease_expires_at = NULL, activity = NULL
WHERE id = ?7 AND worker_id = ?8 AND status = 'in_progress' AND (?9 IS NULL OR attempt = ?10)
"""

SQL_REQUEUE = f"""
UPDATE tasks SET status = 'pending', not_before = ?, updated_at = ?, error = ?, result = ?, outcome = ?,
                 denied = ?, {_ADD_COST}, cancel_requested = ?, worker_id = NULL,
                 lease_expires_at = NULL, activity = NULL, started_at = NULL
WHERE id = ?
"""

SQL_RELEASE = f"""
UPDATE tasks SET status = 'pending', not_before = ?, updated_at = ?, attempt_base = attempt_base + 1,
                 {_ADD_COST}, worker_id = NULL, lease_expires_at = NULL, activity = NULL, started_at = NULL
WHERE {_HOLDER}
"""

SQL_FORCE_FINISH = """
UPDATE tasks SET status = ?, finished_at = ?, updated_at = ?, error = ?, lease_expires_at = NULL, activity = NULL
WHERE id = ?
"""

# tasks_unsuccessful's own condition, word for word: SQLite uses a partial index only for a query
# that repeats it.
_UNSUCCESSFUL = "(status = 'failed' OR status = 'cancelled' OR status = 'skipped')"

SQL_STALE = "SELECT * FROM tasks WHERE status = 'in_progress' AND lease_expires_at < ?"

SQL_WORKER_TASKS = "SELECT * FROM tasks WHERE status = 'in_progress' AND worker_id = ?"
SQL_ANY_STALE = "SELECT 1 FROM tasks INDEXED BY tasks_open WHERE status = 'in_progress' AND lease_expires_at < ? LIMIT 1"
SQL_ANY_WORKER_TASK = "SELECT 1 FROM tasks WHERE status = 'in_progress' AND worker_id = ? LIMIT 1"

SQL_UNBLOCK_DEPENDENTS = """
UPDATE tasks SET deps_remaining = deps_remaining - 1
WHERE id IN (SELECT task_id FROM task_deps WHERE depends_on = ?)
"""

SQL_SKIP = """
UPDATE tasks SET status = 'skipped', finished_at = ?, updated_at = ?, error = ?
WHERE id = ? AND status = 'pending'
"""

# Every task that depends on ?, directly or through others, and is now in the given status.
_SQL_DESCENDANTS = """
WITH RECURSIVE down(id) AS (
    SELECT task_id FROM task_deps WHERE depends_on = ?
    UNION
    SELECT d.task_id FROM task_deps d JOIN down ON d.depends_on = down.id
)
SELECT id FROM tasks WHERE id IN (SELECT id FROM down) AND status = '{status}' ORDER BY id
"""
SQL_PENDING_DESCENDANTS = _SQL_DESCENDANTS.format(status="pending")
SQL_SKIPPED_DESCENDANTS = _SQL_DESCENDANTS.format(status="skipped")

SQL_DEAD_DEPS = """
SELECT t.id, t.status FROM task_deps d JOIN tasks t ON t.id = d.depends_on
WHERE d.task_id = ? AND t.status IN ('failed', 'cancelled', 'skipped')
"""

# A retried task gets a fresh set of attempts: attempt_base catches up with attempt, which itself
# keeps counting so the fencing of old holders still holds.
SQL_RETRY = """
UPDATE tasks SET status = 'pending', attempt_base = attempt, not_before = 0, updated_at = ?,
                 finished_at = NULL, error = NULL, cancel_requested = 0, worker_id = NULL,
                 lease_expires_at = NULL,
                 deps_remaining = (SELECT count(*) FROM task_deps d JOIN tasks t ON t.id = d.depends_on
                                   WHERE d.task_id = tasks.id AND t.status != 'completed')
WHERE id = ?
"""

# Statements of the methods above that the first part of this section does not hold, in the order
# of the methods: the connection, migrations, adding, budgets, cancel, reading, jobs, workers, flags.

# Checkpoints copy the WAL back into the database (and fsync it): done inline by whichever commit
# crosses the threshold, they stall that claim. The coordinator checkpoints in the background
# every few seconds (checkpoint()), so at a pool's usual pace the threshold is never reached.
SQL_WAL = "PRAGMA journal_mode=WAL"
SQL_CONNECTION_PRAGMAS = ("PRAGMA synchronous=NORMAL", f"PRAGMA wal_autocheckpoint={WAL_AUTOCHECKPOINT_PAGES}",
                          f"PRAGMA journal_size_limit={WAL_LIMIT_BYTES}", "PRAGMA foreign_keys=ON")
SQL_BEGIN = "BEGIN IMMEDIATE"
SQL_COMMIT = "COMMIT"
SQL_ROLLBACK = "ROLLBACK"
SQL_CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"
SQL_CHECKPOINT_TRUNCATE = "PRAGMA wal_checkpoint(TRUNCATE)"
SQL_BUSY_TIMEOUT_SHORT = "PRAGMA busy_timeout=100"
SQL_BUSY_TIMEOUT = "PRAGMA busy_timeout=5000"
SQL_VERSION = "PRAGMA user_version"
SQL_SET_VERSION = f"PRAGMA user_version = {SCHEMA_VERSION}"
SQL_ANY_TABLE = "SELECT count(*) FROM sqlite_master"

SQL_STATUSES_OF = "SELECT id, status FROM tasks WHERE id IN ({marks})"
SQL_JOB_EXISTS = "SELECT 1 FROM jobs WHERE id = ?"
SQL_TASK_EXISTS = "SELECT 1 FROM tasks WHERE id = ?"
SQL_INSERT_DEP = "INSERT INTO task_deps (task_id, depends_on) VALUES (?, ?)"
# A new task's history starts at seq 1 (and a task skipped at once has its seq 2).
SQL_EVENT_CREATED = "INSERT INTO task_events (task_id, seq, at, event) VALUES (?, 1, ?, 'created')"
SQL_EVENT_SKIPPED_AT_ONCE = "INSERT INTO task_events (task_id, seq, at, event, detail) VALUES (?, 2, ?, 'skipped', ?)"

SQL_JOB_BUDGET = "SELECT max_budget_usd FROM jobs WHERE id = ?"
SQL_JOB_SPENT = "SELECT ifnull(sum(cost), 0) FROM task_counts WHERE job_id = ?"
# Merge-queue work (integration.py) runs no claude and costs nothing: a spent budget does not stop it.
_COSTS_NOTHING = """metadata LIKE '%"klauss_integration":{%'"""
SQL_COSTS_NOTHING = f"SELECT 1 FROM tasks WHERE id = ? AND {_COSTS_NOTHING}"
SQL_JOB_PENDING = f"SELECT id FROM tasks WHERE job_id = ? AND status = 'pending' AND NOT {_COSTS_NOTHING}"
# integration_counts: how many there are (of a job: its tasks probed by id), then, when there are
# any, the unfinished and unsuccessful ones (their indexes probed by id); every read in an index.
_INTEGRATION = _COSTS_NOTHING.replace("metadata", "i.metadata")
SQL_INTEGRATION_TOTAL = f"SELECT count(*) FROM tasks i INDEXED BY tasks_integration WHERE {_INTEGRATION}"
SQL_JOB_INTEGRATION_TOTAL = f"""SELECT count(*) FROM tasks t INDEXED BY tasks_job CROSS JOIN tasks i INDEXED BY tasks_integration
WHERE t.job_id = ?1 AND i.id = t.id AND {_INTEGRATION}"""
_SQL_INTEGRATION_COUNTS = f"""
SELECT t.status, count(*) FROM tasks t INDEXED BY tasks_open CROSS JOIN tasks i INDEXED BY tasks_integration
WHERE (t.status = 'pending' OR t.status = 'in_progress') AND i.id = t.id AND {{job}}{_INTEGRATION} GROUP BY t.status
UNION ALL
SELECT t.status, count(*) FROM tasks t INDEXED BY tasks_unsuccessful CROSS JOIN tasks i INDEXED BY tasks_integration
WHERE (t.status = 'failed' OR t.status = 'cancelled' OR t.status = 'skipped') AND i.id = t.id
  AND {{job}}{_INTEGRATION} GROUP BY t.status
"""
SQL_INTEGRATION_COUNTS = _SQL_INTEGRATION_COUNTS.replace("{job}", "")
SQL_JOB_INTEGRATION_COUNTS = _SQL_INTEGRATION_COUNTS.replace("{job}", "i.job_id = ?1 AND ")
SQL_TASK_STATUS = "SELECT status FROM tasks WHERE id = ?"
SQL_REQUEST_CANCEL = "UPDATE tasks SET cancel_requested = 1, updated_at = ? WHERE id = ?"
SQL_JOB_UNFINISHED = "SELECT id FROM tasks WHERE job_id = ? AND status IN ('pending', 'in_progress') ORDER BY id"

SQL_DEPENDENCIES = "SELECT depends_on FROM task_deps WHERE task_id = ? ORDER BY depends_on"
SQL_DEPENDENTS = "SELECT task_id FROM task_deps WHERE depends_on = ? ORDER BY task_id"
SQL_DEPENDENCIES_OF = "SELECT task_id, depends_on FROM task_deps WHERE task_id IN ({marks}) ORDER BY depends_on"
SQL_EVENTS = """
SELECT at, event, worker_id, attempt, detail, cost_usd, started_at FROM task_events WHERE task_id = ? ORDER BY seq
"""
SQL_TASK_ATTEMPT = "SELECT status, worker_id, attempt, started_at, finished_at, outcome FROM tasks WHERE id = ?"
SQL_PURGE = """
DELETE FROM tasks WHERE finished_at < ? AND status IN ({marks})
AND NOT EXISTS (SELECT 1 FROM task_deps d JOIN tasks t ON t.id = d.task_id
                WHERE d.depends_on = tasks.id AND t.status IN ('pending', 'in_progress'))
"""

SQL_JOB_PLAN_HASH = "UPDATE jobs SET plan_hash = ? WHERE id = ?"
SQL_JOBS_OF_PLAN = "SELECT id FROM jobs WHERE plan_hash = ? ORDER BY rowid DESC"
SQL_JOB_METADATA = "SELECT metadata FROM jobs WHERE id = ?"
SQL_SET_JOB_METADATA = "UPDATE jobs SET metadata = ? WHERE id = ?"
SQL_JOB = "SELECT * FROM jobs WHERE id = ?"
SQL_JOBS = "SELECT * FROM jobs ORDER BY rowid DESC"  # newest first, without sorting the table

SQL_REGISTER_WORKER = """
INSERT OR REPLACE INTO workers (worker_id, pid, state, current_task, started_at, last_heartbeat, info)
VALUES (?, ?, ?, NULL, ?, ?, ?)
"""
SQL_WORKER_HEARTBEAT = """
UPDATE workers SET last_heartbeat = ?, state = ifnull(?, state), current_task = ? WHERE worker_id = ?
"""
SQL_WORKER_INFO = "UPDATE workers SET info = ? WHERE worker_id = ?"
SQL_WORKERS = "SELECT * FROM workers ORDER BY worker_id"
SQL_UNREGISTER_WORKER = "DELETE FROM workers WHERE worker_id = ?"

SQL_SET_FLAG = "INSERT OR REPLACE INTO pool_flags (key, value, until, updated_at) VALUES (?, ?, ?, ?)"
SQL_FLAG = "SELECT value, until, updated_at FROM pool_flags WHERE key = ?"
SQL_FLAGS_FROM = "SELECT key, value, until, updated_at FROM pool_flags WHERE key >= ? AND key < ? AND (until IS NULL OR until > ?)"
SQL_CLEAR_FLAG = "DELETE FROM pool_flags WHERE key = ?"
