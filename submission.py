"""Submission: the front ends' one path into the queue (submit_task.py, the orchestrator's plan and
run, MCP submit_job through the orchestrator):

    entries ──annotate (worktree isolation: base commit, repo)──▶ TaskQueue.add_tasks / submit_job:
    validation.py (fields, text, claude metadata, project boundary, refs and cycles) ──▶ one insert

Annotation needs git (worktrees.py), which sits above the queue, so it is done here; the checks live
below the queue in validation.py, so TaskQueue's own methods run them for every caller and the
imports go one way: front ends -> submission -> worktrees -> claude_queue -> validation.

The worker does not validate again; it keeps only its defence-in-depth checks (the project boundary,
which the config may have moved since submit, and claude_cli.build_argv's own argv check).
"""

import validation
import worktrees


def annotate(queue, entries, job_metadata=None, cwd=None):
    """The entries with worktree isolation filled in (see worktrees.annotate_tasks). `job_metadata`
    is the job's when it is being created with the tasks."""
    # Several hosts share the queue: a task that edits in place would strand its edits on one machine.
    worktrees.refuse_shared_edits(queue.cfg, queue, entries, job_metadata=job_metadata, get_job=queue.get_job)
    return worktrees.annotate_tasks(queue.cfg, entries, job_metadata=job_metadata, get_job=queue.get_job, cwd=cwd)


def prepare(queue, entries, job_metadata=None, cwd=None):
    """A batch annotated and checked completely before any write: (normalized tasks, insertion
    order) for `queue.insert_prepared`. ValueError names the task (in a batch) and the field."""
    if not isinstance(entries, (list, tuple)):
        raise ValueError(f"tasks: expected a list, got {type(entries).__name__}")
    return validation.prepare(queue.cfg, annotate(queue, entries, job_metadata, cwd), cwd)


def add_task(queue, prompt, **fields):
    """Queue one task (fields as TaskQueue.add_task's); its id."""
    return add_tasks(queue, [{"prompt": prompt, **fields}])[0]


def add_tasks(queue, entries):
    """Queue all entries or none; their ids, in order."""
    return queue.add_tasks(annotate(queue, entries))


def create_job(queue, description, orchestrator_id=None, metadata=None, max_budget_usd=None):
    """A new job without tasks yet; its id. (Nothing to annotate: here so front ends have one door.)"""
    return queue.create_job(description, orchestrator_id=orchestrator_id, metadata=metadata,
                            max_budget_usd=max_budget_usd)


def submit_job(queue, description, tasks, orchestrator_id=None, metadata=None, max_budget_usd=None,
               plan_hash=None):
    """A job and its tasks in one transaction: both or neither. Returns (job_id, task ids)."""
    # The job first: its metadata steers the annotation.
    validation.check_job(description, orchestrator_id, metadata, max_budget_usd)
    tasks = annotate(queue, tasks, job_metadata=metadata or {})
    return queue.submit_job(description, tasks, orchestrator_id=orchestrator_id, metadata=metadata,
                            max_budget_usd=max_budget_usd, plan_hash=plan_hash)
