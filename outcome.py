"""The Outcome type: what a finished attempt left behind. The worker makes it (claude_worker.
Worker.record), the queue stores it as JSON (Task.outcome, with "result" kept apart in its own
column), and the presentation, synthesis, merge and dashboard read it.

A module of its own because a TypedDict needs the typing module, which every program would
otherwise load at start (claude_queue is imported by all of them) for a type that is a plain dict
at run time: nothing here is imported on the way to running a task; type checkers and
tests/test_shared_names.py read it."""

from typing import Optional, TypedDict


class Outcome(TypedDict, total=False):
    """The keys an outcome may hold; naming them here changes nothing stored."""
    # from claude's final "result" message (claude_cli.StreamState)
    result: Optional[str]
    session_id: Optional[str]
    total_cost_usd: Optional[float]
    usage: Optional[dict]
    num_turns: Optional[int]
    duration_ms: Optional[int]
    model: Optional[str]
    permission_denials: list
    # from the run itself (claude_worker.Worker.record)
    wall_seconds: float
    exit_code: Optional[int]
    outputs_verified: list[str]
    outputs_missing: list[str]
    files_changed: list[str]
    stderr_tail: str
    transcript: str
    warnings: list[str]
    error_class: str  # claude_cli.classify's verdict kind, or "cancelled" / "timeout"
    # with worktree isolation (worktrees.TaskTree.finish and merge)
    worktree: str
    branch: str
    commit: Optional[str]
    worktree_error: str
    merge: str  # "none", "branch", "merged", "conflict" or "error"
    merged_into: Optional[str]
    merge_commit: str
    conflicts: list[str]
