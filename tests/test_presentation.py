"""Presentation in one home: every front end shortens text with task_report.shorten."""

import claude_dashboard
import klauss_mcp
import orchestrator
import submit_task
import task_report


def test_one_shortener_keeps_each_front_ends_rules():
    long = "Refactor   the database layer, carefully and slowly"
    assert submit_task.one_line(long, 20) == "Refactor the data..."
    assert claude_dashboard.shorten("漢字漢字漢字", 7) == "漢字..."  # terminal cells, wide characters count two
    assert klauss_mcp._title(long + "\nsecond line", 20) == "Refactor   the data…"
    assert orchestrator._title(long, 20) == "Refactor   the…"  # never mid-word
    assert task_report.shorten(long, 2, ellipsis="...") == "Re"
    assert task_report.shorten(None, 5) == ""


def test_the_front_ends_share_the_shortener_rather_than_copy_it():
    for module in (claude_dashboard, klauss_mcp, orchestrator, submit_task):
        source = open(module.__file__).read()
        assert "+ \"…\"" not in source and "+ \"...\"" not in source, module.__name__
