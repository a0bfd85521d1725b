"""submit_task.py: commands, --json shapes, exit codes, and bad input that must change nothing.

Most tests run the CLI as a subprocess (the contract is exit code, stdout and one line of stderr);
--wait runs in-process with a fake sleep that finishes the task, so no test waits for real time."""

import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import claude_queue
import config
import submit_task
from conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = str(ROOT / "submit_task.py")


@pytest.fixture
def project(tmp_path):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "src" / "app.py").write_text("print('hi')\n")
    (proj / "notes.txt").write_text("a file, not a directory\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (proj / "escape").symlink_to(outside)
    return proj


def run_process(project, *args, stdin=None, db="q.db", env=None):
    """The CLI as a real process in `project`, its database at project/q.db (unless db=None)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    full_env.update(env or {})
    argv = [sys.executable, SCRIPT, *args] + (["--db", db] if db else [])
    out = subprocess.run(argv, cwd=str(project), input=stdin, capture_output=True, timeout=60, env=full_env,
                         text=not isinstance(stdin, bytes))
    stderr = out.stderr if isinstance(out.stderr, str) else out.stderr.decode()
    assert "Traceback" not in stderr, stderr
    return out.returncode, out.stdout, stderr


@pytest.fixture
def cli(monkeypatch, capsys):
    """cli(project, *args, stdin=None, db="q.db", env=None) -> (exit code, stdout, stderr), run
    in-process: the same main() as the real program, at a fraction of a process start-up."""
    def call(project, *args, stdin=None, db="q.db", env=None):
        data = stdin.encode("utf-8", "surrogatepass") if isinstance(stdin, str) else (stdin or b"")
        with monkeypatch.context() as m:
            m.chdir(project)
            for key, value in (env or {}).items():
                m.setenv(key, value)
            m.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
            try:
                rc = submit_task.main([*args] + (["--db", db] if db else []))
            except SystemExit as exc:  # --help
                rc = exc.code
        out, err = capsys.readouterr()
        assert "Traceback" not in err and "internal error" not in err, err
        return rc, out, err
    return call


def open_queue(project, clock=None):
    db = project / "q.db"
    return claude_queue.TaskQueue(str(db), clock=clock, cfg=config.load_config(db=str(db), cwd=project, env={}))


def fingerprint(project):
    """Row counts of every table that a submit, cancel, retry or purge touches."""
    db = project / "q.db"
    if not db.exists():
        return None
    conn = sqlite3.connect(str(db))
    try:
        return {t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                for t in ("tasks", "task_deps", "task_events", "jobs")}
    finally:
        conn.close()


@pytest.fixture
def seeded(project):
    """A database holding one job and two tasks, so 'unchanged' means something."""
    q = open_queue(project)
    job = q.create_job("seed job")
    q.add_tasks([{"prompt": "seed one", "job_id": job}, {"prompt": "seed two"}])
    q.close()
    return project


def one_line_error(rc, stderr, code=2):
    assert rc == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


# --- submit --------------------------------------------------------------------------------------

def test_submit_prints_the_id_and_stores_every_field(cli, seeded):
    q = open_queue(seeded)
    job = q.list_jobs()[0]["id"]
    rc, out, err = cli(seeded, "submit", "Write the login form", "--dir", "src", "--context", "*.py", "lib/*.py",
                       "--outputs", "login.py", "--priority", "3", "--metadata", '{"max_turns": 5}',
                       "--job", job, "--depends-on", "1", "2", "--timeout", "90", "--max-attempts", "2",
                       "--model", "haiku")
    assert (rc, err) == (0, "")
    t = q.get_task(int(out))
    assert (t.prompt, t.working_dir, t.context_files, t.expected_outputs) == (
        "Write the login form", str(seeded / "src"), ["*.py", "lib/*.py"], ["login.py"])
    assert (t.priority, t.job_id, t.depends_on, t.timeout, t.max_attempts) == (3, job, [1, 2], 90, 2)
    assert t.metadata == {"max_turns": 5, "model": "haiku"}


def test_submit_reads_the_prompt_from_stdin_and_keeps_large_prompts_whole(cli, project):
    prompt = "Refactor this:\n" + "x = 1\n" * 50_000  # 300 kB
    rc, out, _ = cli(project, "submit", "-", "--json", stdin=prompt)
    assert rc == 0 and json.loads(out) == {"id": 1}
    assert open_queue(project).get_task(1).prompt == prompt


def test_prompts_over_the_documented_limit_are_refused_not_truncated(cli, project):
    rc, _, err = cli(project, "submit", "-", stdin="y" * (config.MAX_PROMPT_BYTES + 1))
    assert "prompt:" in one_line_error(rc, err) and f"limit of {config.MAX_PROMPT_BYTES}" in err
    assert fingerprint(project)["tasks"] == 0


def test_global_options_go_before_or_after_the_command(cli, project):
    assert cli(project, "--db", "q.db", "submit", "a", db=None)[0] == 0
    rc, out, _ = cli(project, "--json", "list")
    assert rc == 0 and [t["prompt"] for t in json.loads(out)] == ["a"]


@pytest.mark.parametrize("args, stdin, field", [
    (["submit", "x", "--priority", "high"], None, "--priority"),
    (["submit", "x", "--priority", "-1"], None, "priority"),
    (["submit", "x", "--priority", "99999999999999999999999"], None, "--priority"),
    (["submit", "x", "--timeout", "-5"], None, "timeout"),
    (["submit", "x", "--timeout", "soon"], None, "--timeout"),
    (["submit", "x", "--max-attempts", "0"], None, "max_attempts"),
    (["submit", ""], None, "prompt"),
    (["submit", "   "], None, "prompt"),
    (["submit", "-"], "a\x00b", "NUL"),
    (["submit", "-"], "", "prompt"),
    (["submit", "x", "--metadata", "{oops"], None, "--metadata"),
    (["submit", "x", "--metadata", "[1, 2]"], None, "--metadata"),
    (["submit", "x", "--model", ""], None, "--model"),
    (["submit", "x", "--dir", "missing"], None, "working_dir"),
    (["submit", "x", "--dir", "notes.txt"], None, "working_dir"),
    (["submit", "x", "--dir", "/"], None, "working_dir"),
    (["submit", "x", "--dir", ".."], None, "working_dir"),
    (["submit", "x", "--dir", "escape"], None, "working_dir"),
    (["submit", "x", "--context", "../../etc/*.conf"], None, "context_files"),
    (["submit", "x", "--context", "escape/*.txt"], None, "context_files"),
    (["submit", "x", "--dir", "src", "--outputs", "../../out.txt"], None, "expected_outputs"),
    (["submit", "x", "--outputs", "/etc/passwd"], None, "expected_outputs"),
    (["submit", "x", "--depends-on", "99"], None, "depends_on"),
    (["submit", "x", "--depends-on", "first"], None, "--depends-on"),
    (["submit", "x", "--job", "job-nope"], None, "job_id"),
    (["submit", "x", "--priorty", "2"], None, "--priorty"),
    (["submit", "x", "--timeout-wait", "5"], None, "--timeout-wait goes with --wait"),
    (["submit"], None, "PROMPT"),
    (["frobnicate"], None, "frobnicate"),
    ([], None, "COMMAND"),
])
def test_bad_submit_input_is_one_line_exit_2_and_changes_nothing(cli, seeded, args, stdin, field):
    before = fingerprint(seeded)
    rc, out, err = cli(seeded, *args, stdin=stdin)
    assert field in one_line_error(rc, err) and out == ""
    assert fingerprint(seeded) == before


def test_invalid_utf8_on_stdin_is_refused(cli, seeded):
    before = fingerprint(seeded)
    rc, _, err = cli(seeded, "submit", "-", stdin=b"caf\xe9")
    assert "UTF-8" in one_line_error(rc, err) and fingerprint(seeded) == before


def test_external_dirs_are_allowed_when_the_config_says_so(cli, project, tmp_path):
    (project / ".klauss.toml").write_text(f'[safety]\nallowed_dirs = ["{tmp_path / "outside"}"]\n')
    assert cli(project, "submit", "x", "--dir", str(tmp_path / "outside"))[0] == 0
    assert cli(project, "submit", "x", "--dir", "escape")[0] == 0  # the symlink resolves into it
    assert cli(project, "submit", "x", "--dir", "/")[0] == 2


def test_a_bad_config_file_is_a_one_line_error(cli, project):
    (project / ".klauss.toml").write_text("[queue]\nmax_attempts = 'three'\n")
    rc, _, err = cli(project, "submit", "x")
    assert ".klauss.toml" in one_line_error(rc, err) and "queue.max_attempts" in err



@pytest.mark.parametrize("args, stdin, code, expected", [
    (["submit", "Add docstrings"], None, 0, "1\n"),
    (["submit", "-", "--json"], "from stdin", 0, '{\n  "id": 1\n}\n'),
    (["submit", "x", "--priority", "high"], None, 2, "--priority: expected an integer, got 'high'"),
    (["submit", "-"], "a\x00b", 2, "prompt: contains a NUL byte"),
    (["submit", "x", "--dir", "escape"], None, 2, "working_dir: escape is outside the project"),
    (["submit-file", "-"], "[{", 2, "stdin: invalid JSON at line 1 column 3"),
    (["show", "7"], None, 2, "no database at"),
    (["list"], None, 2, "no database at"),
])
def test_the_real_program_exit_codes_and_streams(project, args, stdin, code, expected):
    rc, out, err = run_process(project, *args, stdin=stdin)
    if code == 0:
        assert (rc, out, err) == (0, expected, "")
    else:
        assert expected in one_line_error(rc, err, code) and out == ""

# --- the database path ---------------------------------------------------------------------------

def test_database_in_a_missing_directory(cli, project):
    rc, _, err = cli(project, "submit", "x", db="nowhere/q.db")
    assert "does not exist" in one_line_error(rc, err)
    assert not (project / "nowhere").exists()
    rc, _, err = cli(project, "submit", "x", env={"KLAUSS_DB": str(project / "nowhere" / "q.db")}, db=None)
    assert "does not exist" in one_line_error(rc, err) and not (project / "nowhere").exists()


def test_database_that_is_not_a_database(cli, project):
    (project / "junk.db").write_text("not sqlite at all " * 100)
    rc, _, err = cli(project, "submit", "x", db="junk.db")
    assert "junk.db" in one_line_error(rc, err)
    (project / "dir.db").mkdir()
    rc, _, err = cli(project, "submit", "x", db="dir.db")
    assert "dir.db" in one_line_error(rc, err)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_database_without_permission(cli, seeded):
    before = fingerprint(seeded)
    (seeded / "q.db").chmod(0o444)
    try:
        rc, _, err = cli(seeded, "submit", "x")
        assert "q.db" in one_line_error(rc, err)
    finally:
        (seeded / "q.db").chmod(0o644)
    assert fingerprint(seeded) == before
    locked = seeded / "locked"
    locked.mkdir(mode=0o500)
    rc, _, err = cli(seeded, "submit", "x", db="locked/q.db")
    assert "q.db" in one_line_error(rc, err)


def test_read_only_commands_never_create_a_database(cli, project):
    for args in (["list"], ["stats"], ["show", "1"], ["jobs"]):
        rc, _, err = cli(project, *args, db="typo.db")
        assert "no database" in one_line_error(rc, err)
    assert not (project / "typo.db").exists()


# --- submit-file ---------------------------------------------------------------------------------

def write(project, data, name="tasks.json"):
    path = project / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return name


def test_submit_file_with_refs_between_entries(cli, seeded):
    name = write(seeded, [
        {"ref": "tests", "prompt": "Write tests", "depends_on": ["api"], "priority": 2},  # refers forward
        {"ref": "api", "prompt": "Write the API", "expected_outputs": ["api.py"], "working_dir": "src"},
        {"prompt": "Review", "depends_on": ["api", "tests", 1], "metadata": {"model": "opus"}},
    ])
    rc, out, err = cli(seeded, "submit-file", name)
    assert (rc, err) == (0, "")
    tests, api, review = map(int, out.split())
    q = open_queue(seeded)
    assert q.get_task(tests).depends_on == [api]
    assert q.get_task(review).depends_on == sorted([1, api, tests])
    assert q.get_task(api).working_dir == str(seeded / "src")


def test_submit_file_single_object_stdin_and_json_output(cli, seeded):
    job = open_queue(seeded).list_jobs()[0]["id"]
    rc, out, _ = cli(seeded, "submit-file", "-", "--json", "--job", job, stdin=json.dumps({"prompt": "one"}))
    assert rc == 0 and json.loads(out) == {"ids": [3]}
    assert open_queue(seeded).get_task(3).job_id == job


@pytest.mark.parametrize("content, expected", [
    ('[{"prompt": "a"},', "invalid JSON at line 1"),
    ("", "empty"),
    ('"just a string"', "a string"),
    ("42", "a number"),
    ("[]", "empty"),
    ('[{"prompt": NaN}]', "NaN"),
    ('[{"prompt": "a", "prompt": "b"}]', "duplicate key 'prompt'"),
    ([{"prompt": "ok"}, "not an object"], "task 1: expected a JSON object with a prompt, got a string"),
    ([{"prompt": "ok"}, {"working_dir": "src"}], "task 1: prompt: required"),
    ([{"prompt": "ok"}, {"prompt": ""}], "task 1: prompt"),
    ([{"prompt": "ok"}, {"prompt": "a\x00b"}], "task 1: prompt: contains a NUL"),
    ([{"prompt": "ok"}, {"prompt": 7}], "task 1: prompt"),
    ([{"prompt": "ok"}, {"prompt": "x", "priority": "high"}], "task 1: priority"),
    ([{"prompt": "ok"}, {"prompt": "x", "priority": 10 ** 30}], "task 1: priority"),
    ([{"prompt": "ok"}, {"prompt": "x", "timeout": -5}], "task 1: timeout"),
    ('[{"prompt": "ok"}, {"prompt": "x", "timeout": 1e999}]', "task 1: timeout"),
    ([{"prompt": "ok"}, {"prompt": "x", "max_attempts": 1.5}], "task 1: max_attempts"),
    ([{"prompt": "ok"}, {"prompt": "x", "context_files": "a.js"}], "task 1: context_files"),
    ([{"prompt": "ok"}, {"prompt": "x", "expected_outputs": [3]}], "task 1: expected_outputs"),
    ([{"prompt": "ok"}, {"prompt": "x", "metadata": "fast"}], "task 1: metadata"),
    ([{"prompt": "ok"}, {"prompt": "x", "promt": "typo", "prioritty": 1}], "task 1: unknown field(s): prioritty, promt"),
    ([{"prompt": "ok"}, {"id": 2, "prompt": "x"}], 'task 1: id: ids are given by the queue'),
    ([{"prompt": "ok"}, {"prompt": "x", "working_dir": "missing"}], "task 1: working_dir: missing does not exist"),
    ([{"prompt": "ok"}, {"prompt": "x", "working_dir": "notes.txt"}], "task 1: working_dir: notes.txt is not a directory"),
    ([{"prompt": "ok"}, {"prompt": "x", "working_dir": "/tmp"}], "task 1: working_dir: /tmp is outside the project"),
    ([{"prompt": "ok"}, {"prompt": "x", "working_dir": "src/../.."}], "task 1: working_dir"),
    ([{"prompt": "ok"}, {"prompt": "x", "working_dir": "escape"}], "task 1: working_dir"),
    ([{"prompt": "ok"}, {"prompt": "x", "context_files": ["escape/*"]}], "task 1: context_files"),
    ([{"prompt": "ok"}, {"prompt": "x", "context_files": ["../*"]}], "task 1: context_files"),
    ([{"prompt": "ok"}, {"prompt": "x", "expected_outputs": ["/abs/out.txt"]}], "task 1: expected_outputs"),
    ([{"prompt": "ok"}, {"prompt": "x", "depends_on": [99]}], "task 1: depends_on: unknown task id(s) 99"),
    ([{"prompt": "ok"}, {"prompt": "x", "depends_on": ["nobody"]}], "task 1: depends_on: unknown task 'nobody'"),
    ([{"prompt": "ok"}, {"prompt": "x", "depends_on": 1}], "task 1: depends_on"),
    ([{"prompt": "ok"}, {"prompt": "x", "job_id": "job-nope"}], "task 1: job_id: unknown job"),
    ([{"prompt": "ok"}, {"prompt": "x", "parent_id": 99}], "task 1: parent_id: unknown task id 99"),
    ([{"ref": "a", "prompt": "x", "depends_on": ["b"]}, {"ref": "b", "prompt": "y", "depends_on": ["a"]}],
     "depends_on: dependency cycle"),
    ([{"ref": "a", "prompt": "x", "depends_on": ["a"]}], "task 0: depends_on: a task cannot depend on itself"),
    ([{"ref": "a", "prompt": "x"}, {"ref": "a", "prompt": "y"}], "task 1: ref 'a' is used twice"),
    ({"prompt": "x", "priority": "high"}, "priority: expected an integer"),
])
def test_bad_task_files_are_refused_whole_naming_entry_and_field(cli, seeded, content, expected):
    before = fingerprint(seeded)
    rc, out, err = cli(seeded, "submit-file", write(seeded, content))
    assert expected in one_line_error(rc, err) and out == ""
    assert fingerprint(seeded) == before


def test_unreadable_task_files(cli, seeded):
    before = fingerprint(seeded)
    rc, _, err = cli(seeded, "submit-file", "missing.json")
    assert "missing.json: cannot read" in one_line_error(rc, err)
    rc, _, err = cli(seeded, "submit-file", "src")
    assert "src: cannot read" in one_line_error(rc, err)
    (seeded / "latin1.json").write_bytes(b'[{"prompt": "caf\xe9"}]')
    rc, _, err = cli(seeded, "submit-file", "latin1.json")
    assert "UTF-8" in one_line_error(rc, err)
    assert fingerprint(seeded) == before


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_task_file_without_read_permission(cli, seeded):
    path = seeded / write(seeded, [{"prompt": "x"}])
    path.chmod(0)
    rc, _, err = cli(seeded, "submit-file", path.name)
    assert "Permission denied" in one_line_error(rc, err)


def test_submit_file_help_documents_the_dependency_convention(cli, project):
    rc, out, _ = cli(project, "submit-file", "--help", db=None)
    assert rc == 0 and '"ref"' in out and "depends_on" in out


# --- list, show, stats, jobs ---------------------------------------------------------------------

@pytest.fixture
def busy(project):
    """Tasks in every interesting state, with the details a worker records."""
    q = open_queue(project)
    job = q.create_job("Build auth", max_budget_usd=50)
    ids = q.add_tasks([{"prompt": f"task {i}", "job_id": job if i < 3 else None} for i in range(6)])
    t = q.claim_task("w1")
    q.complete_task(t.id, "w1", {
        "result": "Added docstrings to 4 functions.", "total_cost_usd": 0.0421, "num_turns": 7,
        "usage": {"input_tokens": 1200, "output_tokens": 340, "cache_read_input_tokens": 5000,
                  "cache_creation_input_tokens": 0},
        "outputs_verified": ["src/app.py"], "outputs_missing": [], "transcript": "/logs/task-1.jsonl"})
    t = q.claim_task("w1")
    q.fail_task(t.id, "w1", "claude exited 1: tests failed", retryable=False,
                outcome={"result": None, "total_cost_usd": 0.01, "error_class": "task_error"})
    t = q.claim_task("w2")
    q.set_activity(t.id, "w2", "Edit src/auth.py")
    q.cancel_task(ids[4])
    q.close()
    return project, job, ids


def test_list_table_filters_and_json(cli, busy):
    project, job, ids = busy
    rc, out, _ = cli(project, "list")
    lines = out.splitlines()
    assert rc == 0 and lines[0].split() == submit_task.TASK_HEADERS
    assert [line.split()[0] for line in lines[1:]] == [f"#{i}" for i in reversed(ids)]
    rc, out, _ = cli(project, "list", "--status", "failed,cancelled", "--json")
    rows = json.loads(out)
    assert {r["status"] for r in rows} == {"failed", "cancelled"} and len(rows) == 2
    assert {"id", "prompt", "status", "priority", "attempts_used", "max_attempts", "worker_id", "cost_usd",
            "depends_on", "outcome", "activity"} <= set(rows[0])
    rc, out, err = cli(project, "list", "--job", job, "--limit", "2", "--json")
    assert [r["id"] for r in json.loads(out)] == [3, 2] and "--limit 0" not in err  # --json: no hint
    rc, out, err = cli(project, "list", "--job", job, "--limit", "2")
    assert len(out.splitlines()) == 3 and "newest 2 of 3" in err
    assert cli(project, "list", "--job", "job-nope")[0] == 1


def test_show_prints_everything_a_user_needs(cli, busy):
    project, job, ids = busy
    rc, out, _ = cli(project, "show", "1")
    assert rc == 0
    for text in ("Task #1: completed", "Added docstrings to 4 functions.", "$0.0421", "1,200 in", "340 out",
                 "5,000 cache read", "Verified:", "src/app.py", "/logs/task-1.jsonl", "History:", "created",
                 "claimed", f"Job:         {job}", "Turns:       7"):
        assert text in out, text
    rc, out, _ = cli(project, "show", "#2")
    assert "claude exited 1: tests failed" in out and "task_error" in out
    rc, out, _ = cli(project, "show", "3", "--json")
    data = json.loads(out)
    assert data["activity"] == "Edit src/auth.py" and data["status"] == "in_progress"
    assert [e["event"] for e in data["events"]] == ["created", "claimed"] and data["dependents"] == []
    tasks_log = project / "q.db.klauss" / "logs" / "tasks"  # --db q.db keeps its logs in a directory named after it
    tasks_log.mkdir(parents=True)
    for attempt in (1, 2, 10):
        (tasks_log / f"task-3-attempt-{attempt}.jsonl").write_text("{}\n")
    assert data["transcript"] is None
    rc, out, _ = cli(project, "show", "3")
    assert f"Transcript:  {tasks_log / 'task-3-attempt-10.jsonl'}" in out
    rc, _, err = cli(project, "show", "42")
    assert one_line_error(rc, err, code=1) == "task 42 not found"


def test_stats_and_jobs(cli, busy):
    project, job, _ = busy
    rc, out, _ = cli(project, "stats", "--json")
    stats = json.loads(out)
    assert rc == 0 and stats == {"pending": 2, "in_progress": 1, "completed": 1, "failed": 1, "cancelled": 1,
                                 "skipped": 0, "total": 6, "cost_usd": pytest.approx(0.0521), "denied": 0}
    rc, out, _ = cli(project, "stats", "--job", job)
    assert "Build auth" in out and "total" in out and "$50.00" in out
    assert cli(project, "stats", "--job", "job-nope")[0] == 1
    rc, out, _ = cli(project, "jobs")
    assert job in out and "3/3" not in out and "2/3" in out and "Build auth" in out
    rc, out, _ = cli(project, "jobs", "--json")
    [data] = json.loads(out)
    assert data["id"] == job and data["stats"]["total"] == 3


# --- cancel, retry, purge ------------------------------------------------------------------------

def test_cancel_by_id_and_by_job(cli, busy):
    project, job, ids = busy
    rc, out, err = cli(project, "cancel", "6", "3", "--json")
    assert rc == 0 and json.loads(out) == [{"id": 6, "status": "cancelled"}, {"id": 3, "status": "cancel_requested"}]
    rc, out, err = cli(project, "cancel", "1", "99")
    assert rc == 1 and "task 1 is already completed" in err and "task 99 not found" in err
    rc, out, err = cli(project, "cancel", "6")
    assert rc == 0 and "already cancelled" in err
    rc, out, _ = cli(project, "cancel", "--job", job)
    assert rc == 0 and out.strip() == "#3 cancel requested; its worker stops it within a heartbeat"
    assert one_line_error(*cli(project, "cancel")[::2]).endswith("give task ids or --job ID")
    assert "not both" in one_line_error(*cli(project, "cancel", "1", "--job", job)[::2])
    assert cli(project, "cancel", "--job", "job-nope")[0] == 1


def test_retry_by_id_and_all_failed(cli, busy):
    project, job, ids = busy
    rc, out, err = cli(project, "retry", "2", "--json")
    assert rc == 0 and json.loads(out) == [{"id": 2, "revived": [2]}]
    rc, out, err = cli(project, "retry", "6", "99")
    assert rc == 1 and "task 6 is pending" in err and "task 99 not found" in err
    q = open_queue(project)
    assert q.get_task(2).status == "pending"
    t = q.claim_task("w3")
    q.fail_task(t.id, "w3", "boom", retryable=False)
    rc, out, _ = cli(project, "retry", "--failed", "--job", job)
    assert rc == 0 and out.strip() == f"#{t.id} queued again"
    assert "--failed" in one_line_error(*cli(project, "retry", "--job", job)[::2])
    assert cli(project, "retry", "--failed")[0] == 0


def test_purge(cli, busy):
    project, _, _ = busy
    before = fingerprint(project)
    assert "status" in one_line_error(*cli(project, "purge", "--older-than", "0", "--status", "pending")[::2])
    assert "--older-than" in one_line_error(*cli(project, "purge")[::2])
    assert fingerprint(project) == before
    rc, out, _ = cli(project, "purge", "--older-than", "30")
    assert rc == 0 and out.strip() == "purged 0 tasks"
    rc, out, _ = cli(project, "purge", "--older-than", "0", "--status", "failed", "--json")
    assert json.loads(out) == {"purged": 1}
    assert fingerprint(project)["tasks"] == before["tasks"] - 1


# --- --wait ----------------------------------------------------------------------------------------

def test_wait_end_to_end_prints_the_result(project):
    """The real CLI waits while this test plays the worker (polling for the task, with a deadline)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    env["KLAUSS_AUTO_START"] = "0"  # this test is the worker
    proc = subprocess.Popen([sys.executable, SCRIPT, "submit", "do it", "--wait", "--db", "q.db"], cwd=str(project),
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        q = open_queue_when_ready(project)
        task = wait_for(lambda: q.claim_task("w1") or proc.poll() is not None, what="the CLI to queue its task")
        assert task is not True, "the CLI exited without queueing its task"
        q.complete_task(task.id, "w1", {"result": "All done.", "total_cost_usd": 0.01})
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out) == (0, "All done.\n") and "task 1 queued" in err


def open_queue_when_ready(project):
    wait_for((project / "q.db").exists, what="the CLI to create its database")
    return open_queue(project)


def test_wait_reports_the_error_of_a_failed_task(project, capsys):
    q = open_queue(project)
    q.cfg["workers"]["auto_start"] = False  # this test is the worker
    task_id = q.add_task("do it")

    def worker(seconds):
        t = q.claim_task("w1")
        q.fail_task(t.id, "w1", "claude is not logged in", retryable=False)

    with pytest.raises(submit_task.CliError) as exc:
        submit_task.wait_for(q, task_id, as_json=True, sleep=worker)
    assert exc.value.code == 1 and str(exc.value) == "task 1 failed: claude is not logged in"
    out, err = capsys.readouterr()
    assert json.loads(out)["status"] == "failed" and "no Klauss workers are running" in err


def test_wait_prints_the_result_and_stays_quiet_when_workers_run(project, capsys):
    q = open_queue(project)
    task_id = q.add_task("do it")
    q.register_worker("w1")

    def worker(seconds):
        assert seconds == submit_task.WAIT_POLL_SECONDS
        t = q.claim_task("w1")
        q.complete_task(t.id, "w1", {"result": "All done.", "total_cost_usd": 0.01})

    assert submit_task.wait_for(q, task_id, sleep=worker) == 0
    out, err = capsys.readouterr()
    assert out == "All done.\n" and "no Klauss workers" not in err


def test_wait_gives_up_after_timeout_wait(project):
    q = open_queue(project)
    q.cfg["workers"]["auto_start"] = False  # this test is the worker
    task_id = q.add_task("do it")
    ticks = iter(range(0, 1000, 10))
    with pytest.raises(submit_task.CliError) as exc:
        submit_task.wait_for(q, task_id, timeout=25, sleep=lambda s: None, clock=lambda: next(ticks))
    assert exc.value.code == 1 and "task 1 is still pending after 25s; it stays queued" in str(exc.value)
    assert q.get_task(task_id).status == "pending"
