"""Gaps a user meets from a project root (Klauss in klauss/): one exit code and one message for a
database that cannot be reached, usage errors that name the command as typed, and counts that
keep the merge queue's integration tasks apart from the user's tasks."""

import re
import sqlite3
import subprocess
import sys

import pytest

from conftest import SubmoduleProject, fake

# Nothing listens on port 1 (a privileged port no test server takes): the connection is refused at once.
DOWN_URL = "postgresql://bob:s3cretpw@127.0.0.1:1/klauss"


@pytest.fixture
def project(tmp_path):
    return SubmoduleProject(tmp_path)


def test_a_database_server_that_is_down_is_exit_1_with_one_message_in_every_command(project, monkeypatch, capsys):
    """Each program as a program (manage.sh's four, and two run directly); their other commands
    through the same entry points in this process (a start costs ~0.35 s of CPU here, most of it
    importing psycopg)."""
    pytest.importorskip("psycopg")
    import claude_coordinator
    import orchestrator
    import submit_task

    project.env["KLAUSS_DB"] = DOWN_URL
    plan = project.plan("plan.json", {"description": "d", "tasks": [{"id": "a", "prompt": "p"}]})
    commands = [["klauss/manage.sh", *args] for args in (
        ["status"], ["list"], ["dashboard", "--once"], ["run", plan, "--yes"])]
    commands += [[sys.executable, "klauss/submit_task.py", "list"],
                 [sys.executable, "klauss/orchestrator.py", "wait", "job-1"]]
    calls = [(claude_coordinator.main, args) for args in (["start", "1"], ["stop"], ["ps"])]
    calls += [(submit_task.main, args) for args in (
        ["list", "--json"], ["submit", "hello"], ["stats"], ["jobs"], ["show", "1"], ["cancel", "1"])]
    calls += [(orchestrator.cli, args) for args in (["wait", "1"], ["status", "job-1"], ["run", plan, "--yes"])]
    for var, value in project.env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.chdir(project.root)

    def in_process(main, args):
        capsys.readouterr()
        code = main(args)
        return subprocess.CompletedProcess(args, code, *capsys.readouterr())

    messages = set()
    for argv in commands + calls:
        done = project.run(*argv, check=False) if isinstance(argv, list) else in_process(*argv)
        assert done.returncode == 1, (argv, done.returncode, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1, (argv, done.stderr)
        assert "s3cretpw" not in done.stdout + done.stderr
        assert "postgresql://bob:***@127.0.0.1:1/klauss" in lines[0], (argv, lines[0])
        assert "server is up" in lines[0] and "then run the command again" in lines[0], (argv, lines[0])
        messages.add(lines[0].split("error: ", 1)[1])
    assert len(messages) == 1, messages  # the same message, whichever program printed it


def test_an_mcp_tool_says_the_same_when_the_database_server_is_down(project):
    pytest.importorskip("psycopg")
    import json

    project.env["KLAUSS_DB"] = DOWN_URL
    requests = [{"jsonrpc": "2.0", "id": 1, "method": "initialize",
                 "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}},
                {"jsonrpc": "2.0", "method": "notifications/initialized"},
                {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "worker_status", "arguments": {}}}]
    done = subprocess.run(["klauss/manage.sh", "mcp"], cwd=str(project.root), env=project.env, capture_output=True,
                          text=True, timeout=60, input="".join(json.dumps(r) + "\n" for r in requests))
    answers = {m.get("id"): m for m in map(json.loads, done.stdout.splitlines())}
    result = answers[2]["result"]
    text = result["content"][0]["text"]
    assert result["isError"] is True
    assert "postgresql://bob:***@127.0.0.1:1/klauss" in text and "server is up" in text and "s3cretpw" not in text


def test_a_sqlite_database_locked_for_good_is_exit_1_too(tmp_path, monkeypatch, capsys):
    import claude_queue
    import submit_task

    db = tmp_path / "q.db"
    assert submit_task.main(["submit", "first", "--db", str(db)]) == 0
    monkeypatch.setattr(claude_queue, "BUSY_RETRY_SECONDS", 0.2)
    # The connection's own busy timeout (5 s, set when it opens) would make each try wait that long.
    real_open = claude_queue.TaskQueue._open

    def impatient_open(queue):
        conn = real_open(queue)
        conn.execute("PRAGMA busy_timeout=20")
        return conn
    monkeypatch.setattr(claude_queue.TaskQueue, "_open", impatient_open)
    holder = sqlite3.connect(str(db), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        capsys.readouterr()
        assert submit_task.main(["submit", "second", "--db", str(db)]) == 1
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    err = capsys.readouterr().err
    assert "stayed locked" in err and len(err.strip().splitlines()) == 1


def test_the_postgres_fix_is_what_doctor_prints_too():
    pytest.importorskip("psycopg")
    import claude_queue
    import queue_postgres

    with pytest.raises(claude_queue.DatabaseUnavailable) as err:
        queue_postgres.connect(DOWN_URL)
    assert err.value.fix == queue_postgres.UNREACHABLE_FIX
    assert "s3cretpw" not in str(err.value)


# Every command manage.sh dispatches, with what it needs to get as far as an unknown option.
MANAGE_COMMANDS = {
    "start": [], "stop": [], "kill": [], "restart": [], "resize": ["2"], "status": [], "workers": [], "ps": [],
    "logs": [], "init-config": [], "clean": [], "doctor": [], "dashboard": [], "run": ["plan.json"],
    "wait": ["1"], "install-claude": [], "mcp": [], "submit": ["hello"], "submit-file": ["tasks.json"],
    "list": [], "show": ["1"], "stats": [], "jobs": [], "cancel": ["1"], "retry": ["1"],
    "purge": ["--older-than", "1"], "merge": ["job-1"], "worktrees": [], "clean-worktrees": [],
}


def _manage_dispatch(manage):
    """manage.sh's case: each command -> (the program its branch runs, whether it passes the command on)."""
    dispatch, commands = {}, None
    for line in manage.split('case "$cmd" in', 1)[1].split("esac", 1)[0].splitlines():
        line = line.strip()
        if line.endswith(")"):
            commands = [] if line.startswith(("help", "*")) else [w.strip() for w in line[:-1].split("|")]
        elif commands:
            program = "claude_coordinator.py" if line.startswith("coordinator ") else re.search(r"/(\w+\.py)", line)[1]
            dispatch.update((c, (program, '"$cmd"' in line)) for c in commands)
            commands = None
    return dispatch


def test_every_manage_sh_commands_usage_error_names_that_command_and_a_help_that_runs(project, monkeypatch, capsys):
    """The first command of each of manage.sh's branches through manage.sh, its usage error and its
    --help as printed; the others through the entry point their branch runs, in this process, as
    manage.sh runs it (KLAUSS_VIA=manage.sh), since a start costs ~0.25 s of CPU here."""
    import claude_coordinator
    import claude_dashboard
    import hints
    import klauss_mcp
    import orchestrator
    import submit_task

    manage = (project.root / "klauss" / "manage.sh").read_text()
    dispatch = _manage_dispatch(manage)
    assert set(dispatch) == set(MANAGE_COMMANDS)  # a new command gets checked here too
    mains = {"claude_coordinator.py": claude_coordinator.main, "submit_task.py": submit_task.main,
             "claude_dashboard.py": claude_dashboard.main, "orchestrator.py": orchestrator.cli,
             "klauss_mcp.py": klauss_mcp.main}
    assert {program for program, _ in dispatch.values()} == set(mains)
    for var, value in project.env.items():
        monkeypatch.setenv(var, value)
    monkeypatch.chdir(project.root)
    # What these modules take from the environment at import when manage.sh in klauss/ runs them.
    monkeypatch.setattr(hints, "VIA_MANAGE", True)
    monkeypatch.setattr(hints, "KLAUSS_DIR", str(project.root / "klauss"))
    monkeypatch.setattr(submit_task, "PROG", hints.prog("submit_task.py"))
    monkeypatch.setattr(claude_dashboard, "PROG", hints.prog("claude_dashboard.py", "dashboard"))

    def in_process(command, *args):
        program, passes_command = dispatch[command]
        argv = [command, *args] if passes_command else list(args)
        capsys.readouterr()
        try:
            code = mains[program](argv)
        except SystemExit as exc:  # argparse's --help
            code = exc.code
        return subprocess.CompletedProcess(argv, code, *capsys.readouterr())

    as_programs = set()
    for command, args in MANAGE_COMMANDS.items():
        as_program = dispatch[command][0] not in as_programs
        as_programs.add(dispatch[command][0])
        done = project.manage(command, *args, "--bogus") if as_program else in_process(command, *args, "--bogus")
        assert done.returncode == 2, (command, done.returncode, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert lines == [f"manage.sh {command}: error: unrecognized arguments: --bogus "
                         f"(see klauss/manage.sh {command} --help)"], (command, done.stderr)
        helped = (project.run_hint(f"klauss/manage.sh {command} --help") if as_program
                  else in_process(command, "--help"))
        assert helped.returncode == 0 and f"manage.sh {command}" in helped.stdout, (command, helped.stdout)
    assert as_programs == set(mains)


def test_a_pool_commands_own_usage_errors_name_it_too(project):
    done = project.manage("start", "2", "--workers", "3")
    assert done.returncode == 2
    assert done.stderr.strip() == "manage.sh start: error: N and --workers disagree (see klauss/manage.sh start --help)"


def test_wait_takes_db_after_the_command_as_every_command_does(project, tmp_path):
    db = str(tmp_path / "elsewhere.db")
    assert project.manage("submit", "hello", "--db", db).returncode == 0
    done = project.manage("wait", "7", "--db", db)
    assert done.returncode == 1 and "task 7 not found" in done.stderr, done.stderr


def test_list_and_stats_count_the_users_tasks_as_status_job_does(project):
    import json

    plan = project.plan("plan.json", {
        "description": "two edits", "isolation": "worktree", "verify": [sys.executable, "-c", "pass"],
        "tasks": [{"id": "a", "prompt": "write a\n" + fake("write", "a.txt", content="a\n")},
                  {"id": "b", "prompt": "write b\n" + fake("write", "b.txt", content="b\n")}]})
    try:
        done = project.manage("run", plan, "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
    finally:
        project.manage("kill")
    [job] = json.loads(project.manage("jobs", "--json").stdout)
    status = json.loads(project.run(sys.executable, "klauss/orchestrator.py", "status", job["id"], "--json").stdout)
    assert status["total"] == job["stats"]["total"] == 2  # the job's view: two tasks of the user's

    listed = project.manage("list")
    assert listed.returncode == 0 and "integrate task" not in listed.stdout
    assert len(listed.stdout.strip().splitlines()) == 1 + 2, listed.stdout
    assert "2 integration tasks of the merge queue not listed; --all lists them" in listed.stderr
    assert [t["prompt"].split("\n")[0] for t in json.loads(project.manage("list", "--json").stdout)] == ["write b", "write a"]
    assert len(json.loads(project.manage("list", "--job", job["id"], "--json").stdout)) == 2

    everything = project.manage("list", "--all")
    merge_rows = [line for line in everything.stdout.splitlines() if "[merge queue] " in line]
    assert len(merge_rows) == 2 and len(everything.stdout.strip().splitlines()) == 1 + 4, everything.stdout
    marked = [t for t in json.loads(project.manage("list", "--all", "--json").stdout) if "integration" in t]
    assert sorted(t["integration"]["integrates"] for t in marked) == [1, 2]

    for args in (["stats", "--job", job["id"]], ["stats"]):
        stats = json.loads(project.manage(*args, "--json").stdout)
        assert stats["total"] == stats["completed"] == 2 and stats["integration_tasks"] == 2, (args, stats)
        assert stats["cost_usd"] == status["cost_usd"]  # what the merge queue cost is the job's
        text = project.manage(*args).stdout
        assert "total               2  (100% finished)" in text, text
        assert "integration         2  the merge queue's own tasks" in text, text


def test_list_fills_its_limit_with_the_users_tasks_past_a_run_of_integration_tasks(make_queue):
    import integration

    q = make_queue()
    mine = q.add_tasks([{"prompt": f"mine {i}"} for i in range(3)])
    q.add_tasks([{"prompt": f"integrate task #{i}", "metadata": {integration.KIND: {"task": i}}} for i in mine * 3])
    assert [t.id for t in integration.recent_user_tasks(q, limit=2)] == mine[::-1][:2]
    assert [t.id for t in integration.recent_user_tasks(q)] == mine[::-1]
    assert [t.id for t in integration.recent_user_tasks(q, status=["pending", "failed"], limit=5)] == mine[::-1]
