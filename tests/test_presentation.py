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


def test_one_parser_for_one_line_usage_errors():
    import pytest

    import cli_args
    for argv, words, hint in ((["claude_dashboard.py", "--status", "nope"], ("dashboard",), "dashboard --help"),
                              (["submit_task.py", "--priority", "x"], None, "submit --help")):
        parser = cli_args.Parser(prog=argv[0] if words else "submit_task.py submit", command=words)
        parser.add_argument("--status", type=cli_args.status_arg)
        parser.add_argument("--priority", type=cli_args.int_arg)
        with pytest.raises(cli_args.CliError) as error:
            parser.parse_args(argv[1:])
        assert error.value.code == 2 and len(str(error.value).splitlines()) == 1 and hint in str(error.value)
    assert cli_args.statuses_arg("running,failed") == ["in_progress", "failed"]


def test_one_rule_opens_the_queue(tmp_path):
    import pytest

    import claude_queue
    import config
    import queues
    cfg = config.load_config(cwd=tmp_path, env={})
    assert queues.open_queue(cfg, create=False).list_tasks() == []  # looking at a fresh project
    assert not cfg.state_dir.exists()  # ... writes nothing
    named = config.load_config(db=str(tmp_path / "typo.db"), cwd=tmp_path, env={})
    with pytest.raises(claude_queue.QueueError, match="no database at"):
        queues.open_queue(named, create=False, must_exist=True)
    queues.open_queue(cfg).close()
    assert cfg.db_path.exists() and (cfg.state_dir / ".gitignore").exists()


def test_progress_lines_are_told_in_task_report():
    stats = {"pending": 1, "in_progress": 1, "completed": 2, "failed": 1, "skipped": 0, "cancelled": 1}
    status = {"job_id": "job-1", "done": 4, "total": 6, "stats": stats, "cost_usd": 0.5, "max_budget_usd": 2,
              "finished": False, "pool": {"state": "paused", "text": "The pool is paused."}}
    assert task_report.progress_line(status, 41.6) == (
        "[job-1] 4/6 done · 1 running · 1 failed · 1 skipped/cancelled · $0.5000 · The pool is paused. · 42s")
    assert task_report.progress_line(status).endswith("The pool is paused.")
    assert task_report.job_status_line(status, "The pool is paused.") == (
        "4/6 done · 1 running · 1 pending · 2 completed · 1 failed · 1 cancelled · cost $0.5000 of $2.0000 budget"
        " · The pool is paused.")
    for module in (klauss_mcp, orchestrator):
        assert "skipped/cancelled" not in open(module.__file__).read() and "budget\"" not in open(module.__file__).read()


def test_a_bug_is_one_line_naming_where_it_happened():
    import cli_args
    try:
        {}["missing"]
    except KeyError as exc:
        line = cli_args.internal_error("submit_task.py", exc)
    assert line.startswith("submit_task.py: internal error: KeyError: 'missing' (at test_presentation.py:")
    assert line.endswith("please report it") and "\n" not in line


def test_mcp_task_and_job_lines_are_told_in_task_report():
    import time

    import claude_queue
    import config
    q = claude_queue.TaskQueue(":memory:", cfg=config.load_config(env={}))
    job = q.create_job("Build  the thing\nwith detail")
    ids = q.add_tasks([{"prompt": "first\nmore", "job_id": job}, {"prompt": "second", "job_id": job}])
    q.claim_task("worker_1")
    first = q.get_task(ids[0])
    assert task_report.task_markdown_line(first) == f"- #{ids[0]} running on worker_1: first"
    (listed,) = q.list_jobs()
    line = task_report.job_markdown_line(listed, time.time())
    assert line.startswith(f"- `{job}` — Build  the thing — 0/2 done · 1 running · ")
    assert "def _task_lines" in open(klauss_mcp.__file__).read() and " on {t.worker_id}" not in open(klauss_mcp.__file__).read()
