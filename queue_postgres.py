"""The PostgreSQL backend of the task queue, for pools on several machines sharing one queue.

A `postgresql://` URL (KLAUSS_DB, --db or `[paths] db`) makes `claude_queue.TaskQueue(url)` a
PostgresTaskQueue. It keeps the storage contract in claude_queue's docstring by running the very
same methods: only what is particular to SQLite is replaced here - the connection, the ownership of
transactions, wake-ups, checkpoints, migrations, and the statements whose dialect differs. The
methods execute claude_queue's SQL_* constants; `_translate` maps each to PostgreSQL, through
PG_SQL (by constant name) where the dialect differs and otherwise mechanically (placeholders,
`ifnull`, SQLite's INDEXED BY hints), so each backend's SQL is in one place.

Transactions. As SQLite's BEGIN IMMEDIATE does, a write transaction takes one lock per database
(a transaction-level advisory lock) before it reads what it will change, so the queue's
read-then-write steps keep the meaning they have on SQLite: no lost update, no deadlock between
writers. Claims alone share that lock with each other: a claim picks its task with FOR UPDATE SKIP
LOCKED and writes only rows it locked (its task, its worker's row, and, when the job's budget is
spent, the job's pending tasks no other claim holds), so claims run side by side, never beside
another writer. Reads take no lock (autocommit).

Fast paths. A worker's steps - a completion with the next claim, a claim, a lease renewal - are
each one call of a PL/pgSQL function (PG_MIGRATIONS 2 to 4): one round trip and one commit, where the
general path pays one round trip per statement it reads. They change only the rows of their own
task and worker, so they take the write lock shared, as claims do, and run side by side. A
completion of a task with dependents (their counters are other tasks' rows) or in a job with a
budget, and a claim that meets a spent budget, go the general path (the function changes nothing
then), as do failures, releases, cancels, recovery and submissions.

Wake-ups. A commit that wakes waiters sends NOTIFY in the same transaction (delivered when it
commits); a Waker LISTENs on its own connection and blocks on its socket with select.

Migrations. PG_MIGRATIONS[i] upgrades a database from version i to i+1, recorded in the table
klauss_schema; the first builds the schema SQLite reaches with claude_queue.MIGRATIONS.

psycopg 3 (requirements-postgres.txt) is imported only here, so nothing on a machine that uses
SQLite needs it.
"""

import os
import re
import select
import textwrap
import threading
import time
from contextlib import contextmanager

import claude_queue
import config
import flags
import hints
import states

WAKE_CHANNEL = "klauss_wake"
# Keys of pg_advisory_xact_lock: every write transaction takes WRITE_LOCK (the one-writer rule
# SQLite has built in).
WRITE_LOCK = 0x6B6C61757373  # "klauss"
CONNECT_TIMEOUT_SECONDS = 10
SQL_LOCK = f"SELECT pg_advisory_xact_lock({WRITE_LOCK})"
SQL_SERVER_EPOCH = "SELECT extract(epoch FROM clock_timestamp())"
SQL_LOCK_SHARED = f"SELECT pg_advisory_xact_lock_shared({WRITE_LOCK})"
SQL_NOTIFY = f"NOTIFY {WAKE_CHANNEL}"
# Raised by a fast path's function that met a case it leaves to the general path (its changes undone).
GENERAL_PATH = "KL001"

# The counts trigger's move of a task from its old bucket to its new one: schema 1 wrote it, schema 3
# keeps it word for word under a new condition.
_COUNTS_MOVE = """        IF TG_OP IN ('UPDATE', 'DELETE') THEN
            UPDATE task_counts SET n = n - 1, cost = cost - coalesce(OLD.cost_usd, 0),
                                   denied = denied - (OLD.denied > 0)::int
            WHERE job_id = coalesce(OLD.job_id, '') AND status = klauss_count_bucket(OLD.status);
        END IF;
        IF TG_OP IN ('UPDATE', 'INSERT') THEN
            INSERT INTO task_counts AS c VALUES (coalesce(NEW.job_id, ''), klauss_count_bucket(NEW.status), 1,
                                                 coalesce(NEW.cost_usd, 0), (NEW.denied > 0)::int)
            ON CONFLICT (job_id, status) DO UPDATE SET n = c.n + 1, cost = c.cost + coalesce(NEW.cost_usd, 0),
                                                       denied = c.denied + (NEW.denied > 0)::int;
        END IF;
"""

# The fast path's completion of the task it holds (schema 2; schema 3's function keeps it).
_FAST_COMPLETE = """        IF done = 1 THEN
            UPDATE tasks SET status = 'completed', finished_at = p_now, updated_at = p_now, result = p_result,
                             error = NULL, outcome = p_outcome, denied = p_denied,
                             cost_usd = CASE WHEN p_cost IS NULL THEN cost_usd ELSE coalesce(cost_usd, 0) + p_cost END,
                             lease_expires_at = NULL, activity = NULL
            WHERE id = p_task;
        END IF;
"""

# The fast path's claim of the best runnable task into `claimed` (schema 2's klauss_claim; schema 3
# runs it inside the completion, one level deeper).
_FAST_CLAIM = """        UPDATE tasks SET status = 'in_progress', worker_id = p_worker, attempt = attempt + 1,
                         lease_expires_at = p_now + p_lease, started_at = p_now, updated_at = p_now,
                         cancel_requested = 0, activity = NULL
        WHERE id = (SELECT id FROM tasks WHERE status = 'pending' AND deps_remaining = 0 AND not_before <= p_now
                    AND (p_holds IS NULL OR NOT EXISTS (SELECT 1 FROM pool_flags WHERE key = ANY (p_holds)
                                                        AND (until IS NULL OR until > p_now)))
                    ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED)
        RETURNING * INTO claimed;
"""
_FAST_CLAIM_NESTED = textwrap.indent(_FAST_CLAIM, "    ")
# Schema 4's claim in the completion: the hold flags matched by a test no index serves (see there).
_FAST_CLAIM_FLAGS_SCANNED = _FAST_CLAIM_NESTED.replace("key = ANY (p_holds)", "array_position(p_holds, key) IS NOT NULL")

PG_MIGRATIONS = [
    # 1: the schema of claude_queue.MIGRATIONS 1-6, in PostgreSQL's dialect. Jobs carry a sequence
    # number (SQLite lists them by rowid).
    """
    CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        description TEXT NOT NULL,
        orchestrator_id TEXT,
        metadata TEXT NOT NULL DEFAULT '{}',
        max_budget_usd DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        plan_hash TEXT,
        seq BIGINT GENERATED ALWAYS AS IDENTITY
    );
    CREATE INDEX jobs_seq ON jobs (seq);
    CREATE INDEX jobs_plan_hash ON jobs (plan_hash) WHERE plan_hash IS NOT NULL;

    CREATE TABLE tasks (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        job_id TEXT REFERENCES jobs(id) ON DELETE SET NULL,
        parent_id BIGINT REFERENCES tasks(id) ON DELETE SET NULL,
        prompt TEXT NOT NULL,
        working_dir TEXT,
        context_files TEXT NOT NULL DEFAULT '[]',
        expected_outputs TEXT NOT NULL DEFAULT '[]',
        metadata TEXT NOT NULL DEFAULT '{}',
        priority BIGINT NOT NULL DEFAULT 0,
        status TEXT NOT NULL DEFAULT 'pending',
        deps_remaining BIGINT NOT NULL DEFAULT 0,
        attempt BIGINT NOT NULL DEFAULT 0,
        attempt_base BIGINT NOT NULL DEFAULT 0,
        max_attempts BIGINT NOT NULL,
        timeout DOUBLE PRECISION,
        not_before DOUBLE PRECISION NOT NULL DEFAULT 0,
        worker_id TEXT,
        lease_expires_at DOUBLE PRECISION,
        cancel_requested BIGINT NOT NULL DEFAULT 0,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        result TEXT,
        error TEXT,
        outcome TEXT,
        cost_usd DOUBLE PRECISION,
        activity TEXT,
        ref TEXT,
        denied BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX tasks_claimable ON tasks (priority DESC, id) WHERE status = 'pending' AND deps_remaining = 0;
    CREATE INDEX tasks_running ON tasks (worker_id) WHERE status = 'in_progress';
    CREATE INDEX tasks_unsuccessful ON tasks (status, id) WHERE status IN ('failed', 'cancelled', 'skipped');
    CREATE INDEX tasks_job ON tasks (job_id, id) WHERE job_id IS NOT NULL;
    CREATE INDEX tasks_parent ON tasks (parent_id) WHERE parent_id IS NOT NULL;

    CREATE TABLE task_deps (
        task_id BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        depends_on BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        PRIMARY KEY (task_id, depends_on)
    );
    CREATE INDEX task_deps_reverse ON task_deps (depends_on, task_id);

    CREATE TABLE task_events (
        task_id BIGINT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
        seq BIGINT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        event TEXT NOT NULL,
        worker_id TEXT,
        attempt BIGINT,
        detail TEXT,
        cost_usd DOUBLE PRECISION,
        started_at DOUBLE PRECISION,
        PRIMARY KEY (task_id, seq)
    );

    CREATE TABLE workers (
        worker_id TEXT PRIMARY KEY,
        pid BIGINT,
        state TEXT NOT NULL,
        current_task BIGINT,
        started_at DOUBLE PRECISION NOT NULL,
        last_heartbeat DOUBLE PRECISION NOT NULL,
        info TEXT NOT NULL DEFAULT '{}'
    );

    CREATE TABLE pool_flags (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        until DOUBLE PRECISION,
        updated_at DOUBLE PRECISION NOT NULL
    );

    -- Unfinished tasks (pending and running) share one 'pending' bucket, as in SQLite's schema 5.
    CREATE TABLE task_counts (
        job_id TEXT NOT NULL,
        status TEXT NOT NULL,
        n BIGINT NOT NULL,
        cost DOUBLE PRECISION NOT NULL,
        denied BIGINT NOT NULL DEFAULT 0,
        PRIMARY KEY (job_id, status)
    );
    CREATE FUNCTION klauss_count_bucket(status TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE
        AS $$ SELECT CASE status WHEN 'in_progress' THEN 'pending' ELSE status END $$;
    CREATE FUNCTION klauss_task_counts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
{_COUNTS_MOVE}        RETURN NULL;
    END $$;
    CREATE TRIGGER task_counts_insert_delete AFTER INSERT OR DELETE ON tasks
        FOR EACH ROW EXECUTE FUNCTION klauss_task_counts();
    CREATE TRIGGER task_counts_update AFTER UPDATE OF status, cost_usd, job_id, denied ON tasks FOR EACH ROW
        WHEN ((OLD.status IS DISTINCT FROM NEW.status
               AND NOT (OLD.status IN ('pending', 'in_progress') AND NEW.status IN ('pending', 'in_progress')))
              OR OLD.cost_usd IS DISTINCT FROM NEW.cost_usd OR OLD.job_id IS DISTINCT FROM NEW.job_id
              OR OLD.denied IS DISTINCT FROM NEW.denied)
        EXECUTE FUNCTION klauss_task_counts();
    """,
    # 2: a worker's steps as functions (one round trip each); see "Fast paths" in the module docstring.
    f"""
    CREATE FUNCTION klauss_claim(p_worker TEXT, p_now DOUBLE PRECISION, p_lease DOUBLE PRECISION, p_holds TEXT[],
                                 p_info TEXT, p_busy TEXT) RETURNS json LANGUAGE plpgsql AS $$
    DECLARE
        claimed tasks;
    BEGIN
        PERFORM pg_advisory_xact_lock_shared({WRITE_LOCK});
{_FAST_CLAIM}        IF NOT FOUND THEN
            RETURN NULL;
        END IF;
        -- A job whose budget is spent has its pending tasks skipped: the general path's work (the
        -- exception undoes this call's changes).
        IF claimed.job_id IS NOT NULL AND EXISTS (
                SELECT 1 FROM jobs WHERE id = claimed.job_id AND max_budget_usd IS NOT NULL
                AND max_budget_usd <= (SELECT coalesce(sum(cost), 0) FROM task_counts WHERE job_id = claimed.job_id)) THEN
            RAISE EXCEPTION 'the general path' USING ERRCODE = '{GENERAL_PATH}';
        END IF;
        IF p_info IS NOT NULL THEN
            UPDATE workers SET last_heartbeat = p_now, state = p_busy, current_task = claimed.id, info = p_info
            WHERE worker_id = p_worker;
        END IF;
        RETURN row_to_json(claimed);
    END $$;

    CREATE FUNCTION klauss_complete_and_claim(
        p_task BIGINT, p_worker TEXT, p_attempt BIGINT, p_now DOUBLE PRECISION, p_result TEXT, p_outcome TEXT,
        p_denied BIGINT, p_cost DOUBLE PRECISION, p_claim BOOLEAN, p_lease DOUBLE PRECISION, p_holds TEXT[],
        p_info TEXT, p_busy TEXT, p_idle TEXT, OUT done INT, OUT task json) LANGUAGE plpgsql AS $$
    BEGIN
        -- Only this task's row changes (and the worker's): the shared lock keeps out the writers
        -- that read before they write (cancel, recovery, submissions), while finishes and claims
        -- run side by side. Dependents (other tasks' rows) and a job's budget: the general path
        -- (done = -1, nothing changed).
        PERFORM pg_advisory_xact_lock_shared({WRITE_LOCK});
        IF EXISTS (SELECT 1 FROM task_deps WHERE depends_on = p_task)
           OR EXISTS (SELECT 1 FROM tasks t JOIN jobs j ON j.id = t.job_id
                      WHERE t.id = p_task AND j.max_budget_usd IS NOT NULL) THEN
            done := -1;
            RETURN;
        END IF;
        -- The holder's history row first (it locks the task's row), the claim, and the task's
        -- own update last: the counters it moves (task_counts, shared by every task of a job)
        -- stay locked only from there to the commit.
        INSERT INTO task_events (task_id, seq, at, event, worker_id, attempt, detail, cost_usd, started_at)
        SELECT p_task, (SELECT coalesce(max(seq), 0) + 1 FROM task_events WHERE task_id = p_task), p_now,
               'completed', p_worker, attempt, NULL, p_cost, started_at
        FROM tasks WHERE id = p_task AND worker_id = p_worker AND status = 'in_progress'
                         AND (p_attempt IS NULL OR attempt = p_attempt)
        FOR UPDATE;
        done := CASE WHEN FOUND THEN 1 ELSE 0 END;
        IF p_claim THEN
            task := klauss_claim(p_worker, p_now, p_lease, p_holds, p_info, p_busy);
        END IF;
        IF task IS NULL AND p_info IS NOT NULL THEN
            UPDATE workers SET last_heartbeat = p_now, state = p_idle, current_task = NULL, info = p_info
            WHERE worker_id = p_worker;
        END IF;
{_FAST_COMPLETE}        PERFORM pg_notify('{WAKE_CHANNEL}', '');
    END $$;

    CREATE FUNCTION klauss_renew_lease(p_task BIGINT, p_worker TEXT, p_attempt BIGINT, p_now DOUBLE PRECISION,
                                       p_lease DOUBLE PRECISION, p_info TEXT, p_busy TEXT)
        RETURNS BIGINT LANGUAGE plpgsql AS $$
    DECLARE
        cancel BIGINT;
    BEGIN
        PERFORM pg_advisory_xact_lock_shared({WRITE_LOCK});
        UPDATE tasks SET lease_expires_at = p_now + p_lease, updated_at = p_now
        WHERE id = p_task AND worker_id = p_worker AND status = 'in_progress'
              AND (p_attempt IS NULL OR attempt = p_attempt)
        RETURNING cancel_requested INTO cancel;
        IF FOUND AND p_info IS NOT NULL THEN
            UPDATE workers SET last_heartbeat = p_now, state = p_busy, current_task = p_task, info = p_info
            WHERE worker_id = p_worker;
        END IF;
        RETURN cancel;
    END $$;
    """,
    # 3: a completion with the next claim costs the server about a quarter less (SQLite's schema 7).
    # The counts' trigger is named for finished_at, not status: every statement that moves a task
    # into or out of a finished status sets finished_at, so a claim (status only) runs no trigger.
    # Its condition moves from WHEN into the body, word for word: PostgreSQL parses a trigger's WHEN
    # anew in every statement that could fire it (a tenth of a completion's work), and the
    # statements that fire it without moving a count (a retry that adds no cost) are rare.
    # The completion writes no history row (the completed task's row keeps its last attempt, as on
    # SQLite: get_events shows it from there), claims inline (one function's start-up, not two),
    # returns the claimed row as it is (not as JSON: the client reads its columns as they come), and
    # its plans are generic: its statements are otherwise planned anew on every call.
    f"""
    CREATE OR REPLACE FUNCTION klauss_task_counts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' AND NOT ((OLD.status IS DISTINCT FROM NEW.status
               AND NOT (OLD.status IN ('pending', 'in_progress') AND NEW.status IN ('pending', 'in_progress')))
              OR OLD.cost_usd IS DISTINCT FROM NEW.cost_usd OR OLD.job_id IS DISTINCT FROM NEW.job_id
              OR OLD.denied IS DISTINCT FROM NEW.denied) THEN
            RETURN NULL;
        END IF;
{_COUNTS_MOVE}        RETURN NULL;
    END $$;
    DROP TRIGGER task_counts_update ON tasks;
    CREATE TRIGGER task_counts_update AFTER UPDATE OF finished_at, cost_usd, job_id, denied ON tasks FOR EACH ROW
        EXECUTE FUNCTION klauss_task_counts();

    ALTER FUNCTION klauss_claim(TEXT, DOUBLE PRECISION, DOUBLE PRECISION, TEXT[], TEXT, TEXT)
        SET plan_cache_mode = force_generic_plan;
    ALTER FUNCTION klauss_renew_lease(BIGINT, TEXT, BIGINT, DOUBLE PRECISION, DOUBLE PRECISION, TEXT, TEXT)
        SET plan_cache_mode = force_generic_plan;

    DROP FUNCTION klauss_complete_and_claim(BIGINT, TEXT, BIGINT, DOUBLE PRECISION, TEXT, TEXT, BIGINT,
                                            DOUBLE PRECISION, BOOLEAN, DOUBLE PRECISION, TEXT[], TEXT, TEXT, TEXT);
    CREATE FUNCTION klauss_complete_and_claim(
        p_task BIGINT, p_worker TEXT, p_attempt BIGINT, p_now DOUBLE PRECISION, p_result TEXT, p_outcome TEXT,
        p_denied BIGINT, p_cost DOUBLE PRECISION, p_claim BOOLEAN, p_lease DOUBLE PRECISION, p_holds TEXT[],
        p_info TEXT, p_busy TEXT, p_idle TEXT, OUT done INT, OUT task tasks) LANGUAGE plpgsql
        SET plan_cache_mode = force_generic_plan AS $$
    DECLARE
        claimed tasks;
        job TEXT;
        waited BOOLEAN;
    BEGIN
        -- Only this task's row changes (and the worker's, and the one it claims): the shared lock
        -- keeps out the writers that read before they write (cancel, recovery, submissions), while
        -- finishes and claims run side by side. Dependents (other tasks' rows) and a job's budget:
        -- the general path (done = -1, nothing changed).
        PERFORM pg_advisory_xact_lock_shared({WRITE_LOCK});
        SELECT t.job_id, EXISTS (SELECT 1 FROM task_deps WHERE depends_on = p_task) INTO job, waited
        FROM tasks t WHERE id = p_task AND worker_id = p_worker AND status = 'in_progress'
                           AND (p_attempt IS NULL OR attempt = p_attempt)
        FOR UPDATE;
        IF NOT FOUND THEN
            done := 0;
        ELSIF waited OR (job IS NOT NULL AND EXISTS (SELECT 1 FROM jobs WHERE id = job AND max_budget_usd IS NOT NULL)) THEN
            done := -1;
            RETURN;
        ELSE
            done := 1;
        END IF;
        -- The task's row is locked; the claim, then the task's own update last: the counters it
        -- moves (task_counts, shared by every task of a job) stay locked only from there to the commit.
        IF p_claim THEN
{_FAST_CLAIM_NESTED}            -- A job whose budget is spent has its pending tasks skipped: the general path's work
            -- (the exception undoes this call's changes).
            IF FOUND AND claimed.job_id IS NOT NULL AND EXISTS (
                    SELECT 1 FROM jobs WHERE id = claimed.job_id AND max_budget_usd IS NOT NULL
                    AND max_budget_usd <= (SELECT coalesce(sum(cost), 0) FROM task_counts WHERE job_id = claimed.job_id)) THEN
                RAISE EXCEPTION 'the general path' USING ERRCODE = '{GENERAL_PATH}';
            END IF;
        END IF;
        IF p_info IS NOT NULL THEN
            UPDATE workers SET last_heartbeat = p_now, state = CASE WHEN claimed.id IS NULL THEN p_idle ELSE p_busy END,
                               current_task = claimed.id, info = p_info
            WHERE worker_id = p_worker;
        END IF;
{_FAST_COMPLETE}        IF claimed.id IS NOT NULL THEN
            task := claimed;
        END IF;
        PERFORM pg_notify('{WAKE_CHANNEL}', '');
    END $$;
    """,
    # 4: a completion with the next claim costs the server a sixth less (counted in instructions:
    # on a shared machine its time varies more than that).
    # The counts' trigger moves a task between two buckets in one statement, a two-row upsert (-1
    # from the old bucket, +1 to the new; SQLite's schema 8), where it ran an UPDATE and an upsert.
    # A change within one bucket (a cost added to a task that stays unfinished) keeps the two
    # statements: one upsert cannot change a row twice.
    # The completion is one UPDATE, its conditions (the holder's, no dependents, no budget) in its
    # WHERE, where it read the holder's row first; what fails them raises, after the claim (the
    # general path, nothing changed). A condition with a subquery is a query of its own in PL/pgSQL,
    # started even when its first term is false: the claimed job's budget check runs under a plain
    # IF on its job. A pool has a few flags: the claim reads them from the table's one page,
    # where an index scan for a list of keys costs more to start than the scan itself. The function
    # returns a named type: the result of one with OUT parameters is described anew from its
    # catalog entry, several times in every call.
    f"""
    CREATE OR REPLACE FUNCTION klauss_task_counts() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP = 'UPDATE' THEN
            IF coalesce(OLD.job_id, '') <> coalesce(NEW.job_id, '')
               OR klauss_count_bucket(OLD.status) <> klauss_count_bucket(NEW.status) THEN
                INSERT INTO task_counts AS c VALUES
                    (coalesce(OLD.job_id, ''), klauss_count_bucket(OLD.status), -1, -coalesce(OLD.cost_usd, 0),
                     -(OLD.denied > 0)::int),
                    (coalesce(NEW.job_id, ''), klauss_count_bucket(NEW.status), 1, coalesce(NEW.cost_usd, 0),
                     (NEW.denied > 0)::int)
                ON CONFLICT (job_id, status) DO UPDATE SET n = c.n + excluded.n, cost = c.cost + excluded.cost,
                                                           denied = c.denied + excluded.denied;
                RETURN NULL;
            END IF;
            IF OLD.cost_usd IS NOT DISTINCT FROM NEW.cost_usd AND OLD.denied IS NOT DISTINCT FROM NEW.denied THEN
                RETURN NULL;  -- the same bucket, the same cost and denials: nothing to move
            END IF;
        END IF;
{_COUNTS_MOVE}        RETURN NULL;
    END $$;

    DROP FUNCTION klauss_complete_and_claim(BIGINT, TEXT, BIGINT, DOUBLE PRECISION, TEXT, TEXT, BIGINT,
                                            DOUBLE PRECISION, BOOLEAN, DOUBLE PRECISION, TEXT[], TEXT, TEXT, TEXT);
    CREATE TYPE klauss_completion AS (done INT, task tasks);
    CREATE FUNCTION klauss_complete_and_claim(
        p_task BIGINT, p_worker TEXT, p_attempt BIGINT, p_now DOUBLE PRECISION, p_result TEXT, p_outcome TEXT,
        p_denied BIGINT, p_cost DOUBLE PRECISION, p_claim BOOLEAN, p_lease DOUBLE PRECISION, p_holds TEXT[],
        p_info TEXT, p_busy TEXT, p_idle TEXT) RETURNS klauss_completion LANGUAGE plpgsql
        SET plan_cache_mode = force_generic_plan AS $$
    DECLARE
        done INT;
        claimed tasks;
    BEGIN
        -- Only this task's row changes (and the worker's, and the one it claims): the shared lock
        -- keeps out the writers that read before they write (cancel, recovery, submissions), while
        -- finishes and claims run side by side. Dependents (other tasks' rows) and a job's budget:
        -- the general path (the exception undoes this call's changes).
        PERFORM pg_advisory_xact_lock_shared({WRITE_LOCK});
        -- The claim, then the task's own update last: the counters it moves (task_counts, shared
        -- by every task of a job) stay locked only from there to the commit.
        IF p_claim THEN
{_FAST_CLAIM_FLAGS_SCANNED}            -- A job whose budget is spent has its pending tasks skipped: the general path's work
            -- (the exception undoes this call's changes).
            IF FOUND AND claimed.job_id IS NOT NULL THEN
                IF EXISTS (SELECT 1 FROM jobs WHERE id = claimed.job_id AND max_budget_usd IS NOT NULL
                           AND max_budget_usd <= (SELECT coalesce(sum(cost), 0) FROM task_counts
                                                  WHERE job_id = claimed.job_id)) THEN
                    RAISE EXCEPTION 'the general path' USING ERRCODE = '{GENERAL_PATH}';
                END IF;
            END IF;
        END IF;
        IF p_info IS NOT NULL THEN
            UPDATE workers SET last_heartbeat = p_now, state = CASE WHEN claimed.id IS NULL THEN p_idle ELSE p_busy END,
                               current_task = claimed.id, info = p_info
            WHERE worker_id = p_worker;
        END IF;
        UPDATE tasks SET status = 'completed', finished_at = p_now, updated_at = p_now, result = p_result,
                         error = NULL, outcome = p_outcome, denied = p_denied,
                         cost_usd = CASE WHEN p_cost IS NULL THEN cost_usd ELSE coalesce(cost_usd, 0) + p_cost END,
                         lease_expires_at = NULL, activity = NULL
        WHERE id = p_task AND worker_id = p_worker AND status = 'in_progress' AND (p_attempt IS NULL OR attempt = p_attempt)
              AND NOT EXISTS (SELECT 1 FROM task_deps WHERE depends_on = p_task)
              AND (job_id IS NULL OR NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = tasks.job_id
                                                                         AND j.max_budget_usd IS NOT NULL));
        IF FOUND THEN
            done := 1;
        ELSIF EXISTS (SELECT 1 FROM tasks WHERE id = p_task AND worker_id = p_worker AND status = 'in_progress'
                      AND (p_attempt IS NULL OR attempt = p_attempt)) THEN
            RAISE EXCEPTION 'the general path' USING ERRCODE = '{GENERAL_PATH}';
        ELSE
            done := 0;  -- no longer this holder's: fenced, nothing recorded
        END IF;
        PERFORM pg_notify('{WAKE_CHANNEL}', '');
        IF claimed.id IS NULL THEN
            RETURN ROW(done, NULL::tasks);
        END IF;
        RETURN ROW(done, claimed);
    END $$;
    """,
    # 5: the merge queue's integration tasks have an index of their own (SQLite's schema 10), read
    # by integration_counts; its condition is claude_queue._COSTS_NOTHING word for word, which is
    # what lets the planner use it. Keyed by id, as there: an update of a task's status is not slowed.
    """
    CREATE INDEX tasks_integration ON tasks (id, job_id)
        WHERE metadata LIKE '%"klauss_integration":{%';
    """,
]
PG_MIGRATIONS = [m.replace("{_COUNTS_MOVE}", _COUNTS_MOVE) for m in PG_MIGRATIONS]
SCHEMA_VERSION = len(PG_MIGRATIONS)

_JOB_COLUMNS = "id, description, orchestrator_id, metadata, max_budget_usd, created_at, plan_hash"
_PICK = """
SELECT id, job_id FROM tasks
WHERE status = 'pending' AND deps_remaining = 0 AND not_before <= ?1{unless_paused}
ORDER BY priority DESC, id LIMIT 1 FOR UPDATE SKIP LOCKED
"""

# The statements of claude_queue whose PostgreSQL form differs, by constant name. Written with
# SQLite's placeholders (? and ?N); _translate turns them into psycopg's.
PG_SQL = {
    # Claims skip rows another transaction holds instead of waiting for them.
    "SQL_PICK": _PICK.format(unless_paused=""),
    "SQL_PICK_UNLESS_PAUSED": _PICK.format(unless_paused="""
      AND NOT EXISTS (SELECT 1 FROM pool_flags WHERE key IN (?2, ?3, ?4, ?5, ?6)
                      AND (until IS NULL OR until > ?1))"""),
    # Claims run side by side (PostgresTaskQueue.claim_task): a claim that finds its job's budget
    # spent skips the pending tasks no other claim holds.
    "SQL_JOB_PENDING": "SELECT id FROM tasks WHERE job_id = ? AND status = 'pending' FOR UPDATE SKIP LOCKED",
    # No lastrowid: the new id comes back from RETURNING.
    "SQL_INSERT_TASK": claude_queue.SQL_INSERT_TASK.rstrip() + " RETURNING id",
    # sum() of BIGINT is NUMERIC (a Decimal in Python).
    "SQL_COUNTS": "SELECT status, sum(n)::bigint, sum(cost), sum(denied)::bigint FROM task_counts GROUP BY status",
    # No rowid: jobs keep their order of creation in `seq`.
    "SQL_JOBS_OF_PLAN": "SELECT id FROM jobs WHERE plan_hash = ? ORDER BY seq DESC",
    "SQL_JOB": f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?",
    "SQL_JOBS": f"SELECT {_JOB_COLUMNS} FROM jobs ORDER BY seq DESC",
    "SQL_REGISTER_WORKER": """
INSERT INTO workers (worker_id, pid, state, current_task, started_at, last_heartbeat, info)
VALUES (?, ?, ?, NULL, ?, ?, ?)
ON CONFLICT (worker_id) DO UPDATE SET pid = excluded.pid, state = excluded.state, current_task = NULL,
    started_at = excluded.started_at, last_heartbeat = excluded.last_heartbeat, info = excluded.info
""",
    "SQL_SET_FLAG": """
INSERT INTO pool_flags (key, value, until, updated_at) VALUES (?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET value = excluded.value, until = excluded.until, updated_at = excluded.updated_at
""",
    # Prefix ranges compare code points, as SQLite does, whatever the database's collation.
    "SQL_FLAGS_FROM": """SELECT key, value, until, updated_at FROM pool_flags
WHERE key COLLATE "C" >= ? AND key COLLATE "C" < ? AND (until IS NULL OR until > ?)""",
    "SQL_WORKERS": 'SELECT * FROM workers ORDER BY worker_id COLLATE "C"',
}

# The fast paths (PG_MIGRATIONS 2 to 4), in psycopg's placeholders. The flags that hold a claim go as
# one text (HOLDS_SEPARATOR between keys): cheaper to send than an array.
HOLDS_SEPARATOR = "\x1f"
_HOLDS = f"string_to_array(%s, chr({ord(HOLDS_SEPARATOR)}))"
SQL_FAST_CLAIM = f"SELECT klauss_claim(%s, %s::float8, %s::float8, {_HOLDS}, %s, '{states.BUSY}')"
# A completion's answer is `done`, then the claimed task's columns (all NULL when none was claimed).
SQL_FAST_COMPLETE = ("SELECT r.done, (r.task).* FROM klauss_complete_and_claim(%s::bigint, %s, %s::bigint, "
                     f"%s::float8, %s, %s, %s::bigint, %s::float8, %s, %s::float8, {_HOLDS}, %s, '{states.BUSY}', "
                     f"'{states.IDLE}') r")
SQL_FAST_RENEW = f"SELECT klauss_renew_lease(%s::bigint, %s, %s::bigint, %s::float8, %s::float8, %s, '{states.BUSY}')"

# Statements whose cursor must offer lastrowid (the first column of the row they return).
_RETURNS_ID = {"SQL_INSERT_TASK"}

_by_text = {}
_translated = {}
_lock = threading.Lock()


def _overrides():
    # Keyed by the SQLite text of the constant now in claude_queue, so an edit there keeps its override.
    if not _by_text:
        for name, pg in PG_SQL.items():
            _by_text[getattr(claude_queue, name)] = (pg, name in _RETURNS_ID)
        # list_jobs(limit) adds a LIMIT to SQL_JOBS.
        _by_text[claude_queue.SQL_JOBS + " LIMIT ?"] = (PG_SQL["SQL_JOBS"] + " LIMIT ?", False)
    return _by_text


def _translate(sql):
    """(PostgreSQL text, named parameters?, returns an id?) for one of claude_queue's statements."""
    hit = _translated.get(sql)
    if hit is not None:
        return hit
    text, returns_id = _overrides().get(sql, (sql, False))
    text = re.sub(r"\s+INDEXED BY \w+", "", text)
    text = re.sub(r"\bifnull\(", "coalesce(", text)
    text = text.replace("%", "%%")
    # A NULL parameter has no type the server could infer from `? IS NULL` alone.
    text = re.sub(r"(\?\d*) IS NULL", r"CAST(\1 AS TEXT) IS NULL", text)
    named = re.search(r"\?\d", text) is not None
    text = re.sub(r"\?(\d+)", r"%(p\1)s", text) if named else text.replace("?", "%s")
    hit = (text, named, returns_id)
    with _lock:
        _translated[sql] = hit
    return hit


def driver():
    """psycopg, or a QueueError that says what to install."""
    try:
        import psycopg
    except ImportError:
        req = os.path.join(os.path.dirname(hints.manage_path()), "requirements-postgres.txt")
        raise claude_queue.DriverMissing(f"a postgresql:// database needs the psycopg driver: "
                                         f"pip install -r {req}") from None
    return psycopg


class Row:
    """A result row as the queue's methods read sqlite3.Row: by index, by column name, keys()."""

    __slots__ = ("_values", "_index")

    def __init__(self, values, index):
        self._values = values
        self._index = index

    def __getitem__(self, key):
        if isinstance(key, str):
            return self._values[self._index[key]]
        return self._values[key]

    def keys(self):
        return list(self._index)

    def __iter__(self):
        return iter(self._values)

    def __len__(self):
        return len(self._values)

    def __repr__(self):
        return f"Row({dict(zip(self._index, self._values))!r})"


def _row_factory(cursor):
    index = {column.name: i for i, column in enumerate(cursor.description or ())}
    return lambda values: Row(values, index)


class _Inserted:
    """The cursor of an INSERT ... RETURNING id, seen as sqlite3's cursor with its lastrowid."""

    def __init__(self, cursor):
        row = cursor.fetchone()
        self.lastrowid = row[0] if row is not None else None
        self.rowcount = cursor.rowcount


class _Sent:
    """The cursor of a statement sent in a write transaction's pipeline: its results (rows, the
    count of rows it changed) are waited for only when read, so statements nobody reads (history
    rows, dependents' counters) cost no round trip of their own."""

    __slots__ = ("_cursor", "_pipeline")

    def __init__(self, cursor, pipeline):
        self._cursor = cursor
        self._pipeline = pipeline

    @property
    def rowcount(self):
        self._pipeline.sync()
        return self._cursor.rowcount

    # A read ends the pipeline's run of statements with a sync, not a flush: it costs the same round
    # trip, and the server then sees the client's turn as "idle in transaction", the state its
    # idle_in_transaction_session_timeout ends (see PostgresTaskQueue._connect).
    def fetchone(self):
        self._pipeline.sync()
        return self._cursor.fetchone()

    def fetchall(self):
        self._pipeline.sync()
        return self._cursor.fetchall()

    def __iter__(self):
        return iter(self.fetchall())


class Connection:
    """A psycopg connection seen as the sqlite3 connection the queue's methods use: execute() and
    executemany() take claude_queue's statements, with SQLite's placeholders."""

    def __init__(self, raw):
        self.raw = raw
        self.pipeline = None  # inside a write transaction (PostgresTaskQueue._write)
        # The fast paths' cursor, reused, with plain tuples: Row's index of names would be built
        # anew for every result. `columns`: that index for a completion's answer, by its width.
        self.fast = raw.cursor(row_factory=driver().rows.tuple_row)
        self.columns = {}
        # claude_queue's hot statements go to `tuples` (sqlite3: a reused cursor of plain tuples)
        # and read rows by position, which Row allows.
        self.tuples = self

    def execute(self, sql, params=()):
        text, named, returns_id = _translate(sql)
        cursor = self.raw.cursor()
        cursor.execute(text, _params(params, named))
        if returns_id:
            return _Inserted(cursor)
        return cursor if self.pipeline is None else _Sent(cursor, self.pipeline)

    def executemany(self, sql, rows):
        text, named, _ = _translate(sql)
        rows = [_params(r, named) for r in rows]
        if rows:
            self.raw.cursor().executemany(text, rows)

    def close(self):
        self.raw.close()


def _info(worker_info):
    return None if worker_info is None else claude_queue._dumps(worker_info)


def _params(params, named):
    if named:
        return {f"p{i}": v for i, v in enumerate(params, 1)}
    return list(params)


UNREACHABLE_FIX = ("check the URL (--db, KLAUSS_DB or [paths] db), that the server is up and lets this host and user "
                   "in (pg_hba.conf), then run the command again")


def connect(url):
    """A connection to the database at `url`: autocommit (the queue opens its own transactions)."""
    psycopg = driver()
    try:
        raw = psycopg.connect(url, autocommit=True, row_factory=_row_factory,
                              connect_timeout=CONNECT_TIMEOUT_SECONDS)
    except psycopg.Error as exc:
        raise claude_queue.DatabaseUnavailable(f"cannot connect to {_redacted(url)}: {_first_line(exc)}",
                                               UNREACHABLE_FIX) from None
    return raw


def _redacted(url):
    return config.DatabaseUrl(str(url), ".").redacted()


def _offset(raw):
    """The server's clock minus ours, measured once (to half a round trip)."""
    before = time.time()
    server = raw.execute(SQL_SERVER_EPOCH).fetchone()[0]
    after = time.time()
    return float(server) - (before + after) / 2


def _first_line(exc):
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class PostgresTaskQueue(claude_queue.TaskQueue):
    """claude_queue.TaskQueue over a PostgreSQL database (see the module docstring)."""

    def __init__(self, db_path=None, clock=None, cfg=None):
        url = str(db_path) if db_path is not None else str(cfg.db_path)
        if cfg is None or str(cfg.db_path) != url:
            cfg = config.load_config(db=url) if cfg is None else cfg
        driver()
        self.cfg = cfg
        self.db_url = url
        self.db_path = config.DatabaseUrl(url, cfg.state_dir)
        # Hosts stamp and judge leases, heartbeats and flags by this clock: the server's (through
        # its offset from ours, measured on each new connection), so that they agree with each other
        # whatever their own clocks say.
        self._offset = 0.0
        self.clock = clock or self._server_clock
        self._local = threading.local()
        self.pinned = False
        self._identity = None
        self._wake = None
        self.read_only = False
        self.waker_class = PgWaker
        self._migrated = False
        self._connect()

    def __repr__(self):
        return f"PostgresTaskQueue({self.db_path.redacted()!r})"

    # --- connection and transactions ---

    def _connect(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.raw.closed and not conn.raw.broken:
            return conn
        conn = Connection(connect(self.db_url))
        self._offset = _offset(conn.raw)
        # A host cut off inside a transaction would hold the write lock, and every host's writes,
        # until the server's TCP gives up on it, hours later: the server probes a silent client,
        # gives up on data it does not acknowledge, and ends its session within about a lease
        # (over TCP; a unix socket ignores these). A client that is still connected but no longer
        # moves (stopped with ^Z or SIGSTOP, hung, in a debugger) answers those probes: the server
        # ends its transaction once it has sat idle a lease, and its statement then fails, undone.
        lease = self.cfg["workers"]["lease_seconds"]
        conn.raw.execute(f"SET tcp_keepalives_idle = {max(1, int(lease / 3))}; "
                         f"SET tcp_keepalives_interval = {max(1, int(lease / 6))}; SET tcp_keepalives_count = 3; "
                         f"SET tcp_user_timeout = {int(lease * 1000)}; "
                         f"SET idle_in_transaction_session_timeout = {int(lease * 1000)}")
        self._local.conn = conn
        if not self._migrated:
            try:
                self._migrate(conn)
            except BaseException:
                self._local.conn = None
                conn.close()
                raise
            self._migrated = True
        return conn

    def close(self):
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def db_replaced(self):
        return None  # a server's database is not a file that can be swapped under the pool

    def checkpoint(self):
        return None  # the server checkpoints its own log

    def _retry(self, fn):
        return fn()

    def _lost(self, exc):
        self.close()
        return claude_queue.DatabaseUnavailable(f"lost the connection to {self.db_path.redacted()}: {_first_line(exc)}",
                                                UNREACHABLE_FIX)

    def claim_task(self, worker_id, lease_seconds=None, worker_info=None):
        """As TaskQueue.claim_task, with the write lock shared: claims run side by side, each
        skipping the rows the others hold (FOR UPDATE SKIP LOCKED)."""
        row = self._call(SQL_FAST_CLAIM, (worker_id, self.clock(), self._lease(lease_seconds), None,
                                          _info(worker_info)))
        if row is not None:
            return self._task(row[0])
        with self._write(shared=True) as conn:
            row = self._claim(conn, worker_id, lease_seconds, worker_info)
        return None if row is None else claude_queue.Task.from_row(row, root=self.cfg.root)

    def finish_and_claim(self, action, task_id, worker_id, attempt=None, claim_next=False, lease_seconds=None,
                         worker_info=None, holds=None, flag=None, **details):
        """As TaskQueue.finish_and_claim; a completion is one call of klauss_complete_and_claim
        unless that leaves it to the general path."""
        if action == "complete" and flag is None and set(details) <= {"result"}:
            text, stored, denied, cost = claude_queue._completion(details.get("result"))
            row = self._call(SQL_FAST_COMPLETE, (
                task_id, worker_id, attempt, self.clock(), text, stored, denied, cost, bool(claim_next),
                self._lease(lease_seconds),
                HOLDS_SEPARATOR.join(holds or (flags.PAUSED, flags.CONFIG_ERROR)), _info(worker_info)))
            if row is not None and row[0] >= 0:
                return bool(row[0]), self._claimed(row)
        return super().finish_and_claim(action, task_id, worker_id, attempt=attempt, claim_next=claim_next,
                                        lease_seconds=lease_seconds, worker_info=worker_info, holds=holds,
                                        flag=flag, **details)

    def complete_task(self, task_id, worker_id, result=None, attempt=None):
        return self.finish_and_claim("complete", task_id, worker_id, attempt=attempt, result=result)[0]

    def renew_lease(self, task_id, worker_id, attempt=None, lease_seconds=None, worker_info=None):
        row = self._call(SQL_FAST_RENEW, (task_id, worker_id, attempt, self.clock(), self._lease(lease_seconds),
                                          _info(worker_info)))
        return None if row[0] is None else bool(row[0])

    def heartbeat(self, task_id, worker_id, attempt=None, lease_seconds=None):
        return self.renew_lease(task_id, worker_id, attempt, lease_seconds) is not None

    def _lease(self, lease_seconds):
        return lease_seconds if lease_seconds is not None else self.cfg["workers"]["lease_seconds"]

    def _task(self, data):
        """A Task from a function's row_to_json of a tasks row (None stays None)."""
        if data is None:
            return None
        return claude_queue.Task.from_row(Row(list(data.values()), {k: i for i, k in enumerate(data)}),
                                          root=self.cfg.root)

    def _claimed(self, row):
        """The Task whose columns follow `done` in a completion's answer (None when their id is NULL)."""
        if row[1] is None:
            return None
        index = self._local.conn.columns.get(len(row))
        if index is None:
            names = [c.name for c in self._local.conn.fast.description[1:]]
            index = self._local.conn.columns[len(row)] = {name: i for i, name in enumerate(names)}
        return claude_queue.Task.from_row(Row(row[1:], index), root=self.cfg.root)

    def _call(self, sql, params):
        """One statement in its own transaction (a fast path's function): its first row, a tuple, or
        None when the function left the step to the general path (GENERAL_PATH, nothing changed)."""
        psycopg = driver()
        conn = self._connect()
        try:
            return conn.fast.execute(sql, params).fetchone()
        except psycopg.OperationalError as exc:
            raise self._lost(exc) from None
        except psycopg.DataError as exc:
            raise ValueError(f"the database refused a value: {_first_line(exc)}") from None
        except psycopg.Error as exc:
            if exc.sqlstate == GENERAL_PATH:
                return None
            if conn.raw.broken or conn.raw.closed:
                raise self._lost(exc) from None
            raise claude_queue.QueueError(f"database {self.db_path.redacted()}: {_first_line(exc)}") from exc

    @contextmanager
    def _write(self, notify=False, shared=False):
        """The one owner of write transactions: BEGIN, the database's write lock, then COMMIT or
        ROLLBACK; with `notify`, NOTIFY in the same transaction (delivered at its commit). A claim
        takes the lock `shared`: it writes only the rows it locked itself."""
        psycopg = driver()
        conn = self._connect()
        raw = conn.raw
        committing = False
        try:
            # Pipelined: the statements go out without waiting for each other's answers, and a
            # transaction waits only where it reads a result (and once at its commit).
            with raw.pipeline() as conn.pipeline:
                raw.execute("BEGIN")
                raw.execute(SQL_LOCK_SHARED if shared else SQL_LOCK)
                yield conn
                if notify:
                    raw.execute(SQL_NOTIFY)
                committing = True
                raw.execute("COMMIT")
        except BaseException as exc:
            conn.pipeline = None
            if isinstance(exc, psycopg.OperationalError) or raw.broken or raw.closed:
                self.close()
                # After COMMIT was sent, whether it committed is unknown; every holder action is
                # fenced, so a retry by the caller can never apply an outcome twice.
                raise self._lost(exc) from None
            if not committing or raw.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                try:
                    raw.execute("ROLLBACK")
                except psycopg.Error:
                    self.close()
            if isinstance(exc, psycopg.DataError):
                # Input PostgreSQL cannot store (a NUL character in a text): bad input, nothing written.
                raise ValueError(f"the database refused a value: {_first_line(exc)}") from None
            if isinstance(exc, psycopg.Error):
                raise claude_queue.QueueError(f"database {self.db_path.redacted()}: {_first_line(exc)}") from exc
            raise
        finally:
            conn.pipeline = None

    def _read(self, sql, params=()):
        psycopg = driver()
        try:
            return self._connect().execute(sql, params).fetchall()
        except psycopg.OperationalError:
            self.close()  # a connection the server dropped (a restart, a cut link): once more, anew
        try:
            return self._connect().execute(sql, params).fetchall()
        except psycopg.OperationalError as exc:
            raise self._lost(exc) from None

    @property
    def wake_dir(self):
        return None

    def notify_waiters(self):
        """Wake every process LISTENing on this database (idle workers, waiting orchestrators)."""
        psycopg = driver()
        try:
            self._connect().raw.execute(f"NOTIFY {WAKE_CHANNEL}")
        except psycopg.OperationalError:
            self.close()  # nobody is woken; waiters time out and look again

    # --- schema ---

    def schema_version(self, conn=None):
        """The version recorded in klauss_schema; 0 for a database without Klauss's tables."""
        conn = conn or self._connect()
        # A query of the catalog, not to_regclass(): its cache would still say "missing" after
        # another process created the table while we waited for the lock.
        if not conn.raw.execute("SELECT EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = current_schema() "
                                "AND tablename = 'klauss_schema')").fetchone()[0]:
            return 0
        row = conn.raw.execute("SELECT max(version) FROM klauss_schema").fetchone()
        return row[0] or 0

    def _migrate(self, conn):
        if self.schema_version(conn) == SCHEMA_VERSION:
            return
        raw = conn.raw
        with raw.transaction():
            # One process migrates; the others wait for it, then find the work done.
            raw.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            version = self.schema_version(conn)
            if version == 0 and raw.execute(
                    "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()").fetchone()[0]:
                raise claude_queue.DatabaseBroken(
                    f"{self.db_path.redacted()} is not a Klauss database (it has tables of its own and no "
                    "klauss_schema)", "name another database in the URL, or create an empty one for Klauss")
            if version > SCHEMA_VERSION:
                raise claude_queue.QueueError(
                    f"database {self.db_path.redacted()} has schema version {version}, newer than this Klauss "
                    f"({SCHEMA_VERSION}); update Klauss")
            if version == 0:
                raw.execute("CREATE TABLE klauss_schema (version INTEGER NOT NULL)")
            for number in range(version, SCHEMA_VERSION):
                raw.execute(PG_MIGRATIONS[number])
            raw.execute("DELETE FROM klauss_schema")
            raw.execute("INSERT INTO klauss_schema (version) VALUES (%s)", (SCHEMA_VERSION,))

    def server_version(self):
        """The server's version, e.g. "15.4"."""
        return self._connect().raw.execute("SHOW server_version").fetchone()[0]

    def _server_clock(self):
        return time.time() + self._offset

    def clock_offset(self):
        """Seconds the server's clock is ahead of this host's (negative: behind), to a round trip."""
        return _offset(self._connect().raw)


class PgWaker(claude_queue.Waker):
    """A Waker that LISTENs: its own connection, blocked on with select until a NOTIFY arrives or
    wake() writes to its pipe. Costs no CPU while idle."""

    def __init__(self, queue, name):
        self.url = queue.db_url
        self.path = None  # no file of its own
        self.fd = None
        self._conn = None
        self._pipe = os.pipe()
        for end in self._pipe:
            os.set_blocking(end, False)
        self._listen()

    def _listen(self):
        try:
            self._conn = connect(self.url)
            self._conn.execute(f"LISTEN {WAKE_CHANNEL}")
        except (claude_queue.QueueError, driver().Error):
            self._drop()

    def _drop(self):
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                pass
        self._conn = None

    def _drain(self):
        """How many notifications arrived, reading what the socket holds without blocking."""
        try:
            return sum(1 for _ in self._conn.notifies(timeout=0))
        except driver().Error:
            self._drop()
            return 1  # woken by the loss: the caller looks again

    def wait(self, timeout):
        """True if woken (by a change or by wake()), False when `timeout` seconds passed."""
        deadline = time.monotonic() + max(0.0, timeout)
        if self._conn is None:
            self._listen()
            if self._conn is None:
                # The server is out of reach: wait out the timeout (or a wake()) and let the caller poll.
                ready, _, _ = select.select([self._pipe[0]], [], [], max(0.0, timeout))
                return bool(ready) and self._drain_pipe()
        if self._drain():
            self._drain_pipe()
            return True
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._conn.fileno(), self._pipe[0]], [], [], max(0.0, left))
            if not ready:
                return False
            woken = self._drain_pipe() if self._pipe[0] in ready else False
            if self._conn is not None and self._conn.fileno() in ready:
                woken = bool(self._drain()) or woken
            if woken:
                return True
            if left <= 0:
                return False

    def _drain_pipe(self):
        got = False
        try:
            while os.read(self._pipe[0], 4096):
                got = True
        except BlockingIOError:
            pass
        return got

    def wake(self):
        """Wake our own wait (safe from a signal handler)."""
        try:
            os.write(self._pipe[1], b"\0")
        except OSError:
            pass

    def close(self):
        self._drop()
        if self._pipe is not None:
            for end in self._pipe:
                os.close(end)
            self._pipe = None
