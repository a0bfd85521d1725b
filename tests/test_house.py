"""One house (issue 14): each concern in one place. Presentation is told by task_report alone."""

import re
from pathlib import Path

import claude_cli
import claude_dashboard
import task_report

ROOT = Path(__file__).resolve().parent.parent


def _dashboard_text(rows):
    return "\n".join("".join(part for part, _ in row) for row in rows)


def test_the_dashboard_details_tell_what_show_tells(make_queue, clock):
    q = make_queue(clock=clock)
    first = q.add_task("first")
    tid = q.add_task("Refactor the parser\nwith care", depends_on=[first], metadata={"team": "core"})
    dependent = q.add_task("after", depends_on=[tid])
    q.claim_task("w")
    q.complete_task(first, "w", {"result": "ok"}, attempt=1)
    t = q.claim_task("w")
    q.complete_task(t.id, "w", {"result": "Done.", "session_id": "sess-1", "num_turns": 4, "exit_code": 0,
                                "total_cost_usd": 0.5, "usage": {"input_tokens": 10, "output_tokens": 2}},
                    attempt=t.attempt)
    task, events = q.get_task(tid), q.get_events(tid)
    shown = task_report.describe_task(task, events, [dependent], "/logs/x.jsonl", clock.now)
    board = _dashboard_text(claude_dashboard.Dashboard._describe(task, events, clock.now, 200, [dependent],
                                                                 "/logs/x.jsonl"))
    # Every field of `show` is in the dashboard's details, laid out the same way (its own details
    # once left out the session, turns, exit code, dependents, metadata and the transcript it found).
    fields = [line.strip() for line in shown if re.match(r"  [A-Z][\w ]*: ", line)]
    assert any(f.startswith("Session:") for f in fields) and any(f.startswith("Dependents:") for f in fields)
    for line in fields:
        assert line in board, line
    assert "Status:      completed" in board and "Refactor the parser" in board and "Done." in board


def test_shortening_lives_in_task_report():
    assert claude_cli.describe_tool_use("Bash", {"command": "x" * 100}) == "Bash: " + "x" * 59 + "…"
    assert not hasattr(claude_cli, "_shorten")
    sources = {name: (ROOT / name).read_text() for name in ("worktrees.py", "admin.py", "claude_cli.py")}
    assert "[:72]" not in sources["worktrees.py"] and "[:100]" not in sources["admin.py"]
    assert "def _describe" in (ROOT / "claude_dashboard.py").read_text()  # a layout, not a describer:
    assert "field(\"Job\"" not in (ROOT / "claude_dashboard.py").read_text()
    assert task_report.opening_line("\n\n  Fix   it\nmore") == "Fix   it"
    assert task_report.shorten(task_report.opening_line("a" * 80), 72) == "a" * 71 + "…"


def test_the_queue_checks_every_submission_without_importing_the_submit_path(make_queue, tmp_path):
    import claude_queue
    source = Path(claude_queue.__file__).read_text()
    assert "import submission" not in source and "import worktrees" not in source
    q = make_queue()
    # What reaches claude's flags is checked by the bare TaskQueue API too (validation.py).
    for bad in ({"allowed_tools": "Edit"}, {"repo": str(tmp_path)}):
        try:
            q.add_task("x", metadata=bad)
        except ValueError as exc:
            assert "metadata" in str(exc), exc
        else:
            raise AssertionError(f"accepted {bad}")
        try:
            q.submit_job("j", [{"prompt": "x", "metadata": bad}])
        except ValueError:
            pass
        else:
            raise AssertionError(f"submit_job accepted {bad}")
    assert q.list_tasks() == [] and q.list_jobs() == []


def test_each_module_asks_process_identity_of_processes_py():
    # claude_queue keeps the old names for existing callers; the modules use processes.py, its home.
    for path in ROOT.glob("*.py"):
        text = path.read_text()
        assert not re.search(r"claude_queue\.(pid_alive|process_args|is_our_process|running_coordinator)\b", text), \
            path.name


def test_module_docstrings_say_what_the_modules_hold():
    import claude_cli
    import orchestrator
    for command in ("status", "collect", "cancel", "retry", "merge", "install-claude"):
        assert command in orchestrator.__doc__, command
    assert "only user" not in claude_cli.__doc__ and "validation.py" in claude_cli.__doc__
    assert "internal_error" in __import__("cli_args").__doc__
