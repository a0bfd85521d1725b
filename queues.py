"""queues.py: how a program opens the project's queue, by one rule for every front end
(submit_task.py, the dashboard, the pool and admin commands).

A missing database is created only by a caller that writes (`create`); its state directory is
made then, and a database named by --db must be in an existing directory. A caller that only looks creates nothing: a missing database is an error
when it `must_exist` (a database named by --db or KLAUSS_DB, or a command that needs real jobs),
otherwise an empty queue in memory, so looking at a fresh project shows nothing and writes
nothing. An existing database opens even when its state directory is read-only (the queue then
reads it read-only)."""

import claude_queue


def open_queue(cfg, create=True, must_exist=False):
    if not cfg.db_path.exists() and not create:
        if must_exist:
            raise claude_queue.QueueError(f"no database at {cfg.db_path}; pass the right --db, or submit a task first")
        return empty_queue(cfg)
    # A named database must be in an existing directory (the queue says so); only a database kept
    # in its state directory (the project's own) has that directory made for it.
    if cfg.db_path.parent.is_dir() or cfg.db_path.parent == cfg.state_dir:
        try:
            cfg.ensure_state_dir()
        except OSError:
            if not cfg.db_path.exists():
                raise
    return claude_queue.TaskQueue(str(cfg.db_path), cfg=cfg)


def empty_queue(cfg):
    """A queue with nothing in it, in memory: what a database that is missing (or being cleaned
    away) reads as."""
    return claude_queue.TaskQueue(":memory:", cfg=cfg)
