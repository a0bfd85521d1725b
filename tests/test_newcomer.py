"""What a new user meets first: one word for a running task, one-line errors with the documented
exit codes (0, 1, 2), the original documentation's habits, and small things that tripped users."""

import json
import os
import re
import subprocess
import sys
import time

import pytest
import test_worktrees

import claude_queue
import config
import orchestrator
import submit_task
from conftest import ROOT, fake
from orchestrator import ClaudeOrchestrator

MANAGE = ROOT / "manage.sh"
git_project = test_worktrees.repo  # the fixture `repo`: a git project with the fake claude on PATH


def run(cwd, *args, env=None, input=None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    full_env.update(env or {})
    out = subprocess.run([str(MANAGE), *map(str, args)], cwd=str(cwd), env=full_env, capture_output=True,
                         text=True, timeout=120, input=input, stdin=None if input is not None else subprocess.DEVNULL)
    assert "Traceback" not in out.stderr, out.stderr
    return out


def cli(capsys, monkeypatch, cwd, *args):
    monkeypatch.chdir(cwd)
    rc = submit_task.main(list(args))
    out, err = capsys.readouterr()
    assert "internal error" not in err, err
    return rc, out, err


# --- item 5: one vocabulary, one-line errors, documented exit codes -------------------------------

@pytest.fixture
def running_task(tmp_path):
    db = tmp_path / "q.db"
    q = claude_queue.TaskQueue(str(db), cfg=config.load_config(db=str(db), cwd=tmp_path, env={}))
    q.add_tasks([{"prompt": "busy one"}, {"prompt": "waiting one"}])
    task = q.claim_task("worker_1")
    q.close()
    return tmp_path, task.id


def test_a_running_task_is_called_running_everywhere_a_person_reads(capsys, monkeypatch, running_task):
    cwd, tid = running_task
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)  # the listings compared below show "0.2s ago"
    rc, out, _ = cli(capsys, monkeypatch, cwd, "list", "--db", "q.db")
    assert rc == 0 and "running" in out and "in_progress" not in out
    rc, out, err = cli(capsys, monkeypatch, cwd, "list", "--status", "running", "--db", "q.db")
    assert rc == 0, err
    assert [line.split()[0] for line in out.splitlines()[1:]] == [f"#{tid}"]
    # The stored value stays accepted (it is what JSON carries).
    rc, alias, _ = cli(capsys, monkeypatch, cwd, "list", "--status", "in_progress", "--db", "q.db")
    assert rc == 0 and alias == out
    rc, out, _ = cli(capsys, monkeypatch, cwd, "list", "--status", "running,pending", "--json", "--db", "q.db")
    assert sorted(t["status"] for t in json.loads(out)) == ["in_progress", "pending"]
    rc, out, _ = cli(capsys, monkeypatch, cwd, "stats", "--db", "q.db")
    assert "running" in out and "in_progress" not in out
    rc, out, _ = cli(capsys, monkeypatch, cwd, "show", str(tid), "--db", "q.db")
    assert out.startswith(f"Task #{tid}: running")
    rc, _, err = cli(capsys, monkeypatch, cwd, "list", "--status", "busy", "--db", "q.db")
    assert rc == 2 and "running" in err and "in_progress" not in err and len(err.splitlines()) == 1
    out = run(cwd, "logs", "task", tid, "--db", "q.db")
    assert out.stdout.startswith(f"task {tid}: running")
    out = run(cwd, "dashboard", "--once", "--status", "running", "--db", "q.db")
    assert out.returncode == 0 and "Tasks (running)" in out.stdout and "busy one" in out.stdout, out.stderr
    assert "waiting one" not in out.stdout


def test_start_without_claude_is_one_line_with_the_fix_and_exit_2(pool_project):
    out = run(pool_project, "start", "2", env={"PATH": os.environ["PATH"], "KLAUSS_CLAUDE": "no-such-claude-cli"})
    assert out.returncode == 2, out.stdout + out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert "claude CLI not found" in lines[0] and "npm install -g @anthropic-ai/claude-code" in lines[0]
    assert "KLAUSS_CLAUDE" in lines[0]


def test_a_pool_already_running_is_said_not_an_error(pool_project):
    first = run(pool_project, "start", "1")
    assert first.returncode == 0, first.stderr
    again = run(pool_project, "start", "2")
    assert again.returncode == 0 and again.stderr == ""
    assert "already running" in again.stdout and "manage.sh stop" in again.stdout
    assert run(pool_project, "stop").returncode == 0


def test_foreground_run_beside_a_running_pool_exits_0(pool_project):
    assert run(pool_project, "start", "1").returncode == 0
    out = subprocess.run([sys.executable, str(ROOT / "claude_coordinator.py"), "1"], cwd=str(pool_project),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "already running" in out.stdout, out.stderr
    assert run(pool_project, "stop").returncode == 0


# --- item 6: habits from the original documentation work, or are told ----------------------------

def test_a_relative_database_path_is_warned_about_once_naming_the_projects(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    project_db = config.load_config(env={}).db_path
    q = claude_queue.TaskQueue("claude_tasks.db")  # the original documentation's habit
    claude_queue.TaskQueue("claude_tasks.db").close()
    err = capsys.readouterr().err
    assert err.count("warning") == 1 and str(project_db) in err and str(tmp_path / "claude_tasks.db") in err
    q.close()
    for quiet in (None, str(project_db), str(tmp_path / "elsewhere.db"), ".klauss/claude_tasks.db"):
        claude_queue.TaskQueue(quiet).close()  # the project's own, or a path chosen on purpose
    assert capsys.readouterr().err == ""


def test_a_fresh_project_shows_an_empty_queue(tmp_path):
    for command in (["list"], ["stats"], ["jobs"], ["dashboard", "--once"]):
        out = run(tmp_path, *command)
        assert out.returncode == 0, out.stderr
        assert "no database" not in out.stdout + out.stderr
    assert "0 pending" in out.stdout
    out = run(tmp_path, "list", "--db", "typo.db")  # a database named on purpose must exist
    assert out.returncode == 2 and "typo.db" in out.stderr and len(out.stderr.splitlines()) == 1


def test_databases_in_a_shared_directory_keep_their_state_apart(pool_project, tmp_path):
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    dbs = [shared / "claude_tasks.db", shared / "other.db"]
    try:
        for db in dbs:  # before, the second start found the first one's lock in the same directory
            out = run(pool_project, "start", "1", "--db", db)
            assert out.returncode == 0 and "pool started" in out.stdout, out.stderr
        own = {p.name for p in shared.iterdir()}
        assert own <= {"claude_tasks.db", "claude_tasks.db-wal", "claude_tasks.db-shm", "claude_tasks.db.klauss",
                       "other.db", "other.db-wal", "other.db-shm", "other.db.klauss"}, own
        for db in dbs:
            state = shared / (db.name + ".klauss")
            assert (state / "coordinator.lock").exists() and (state / "logs" / "worker_1.log").exists()
            assert (state / "wake").is_dir()
            assert f"for {db} " in run(pool_project, "logs", "--db", db).stdout
    finally:
        for db in dbs:
            run(pool_project, "kill", "--db", db)


def test_readme_answers_where_the_worker_logs_are():
    readme = (ROOT / "README.md").read_text()
    assert "manage.sh logs worker 1 -f" in readme and "logs/worker_1.log" in readme


# --- item 8: small things a user hit --------------------------------------------------------------

def test_merge_ignores_an_untracked_file_it_would_not_touch(git_project):
    repo = git_project
    orch = ClaudeOrchestrator("t")
    job, _ = orch.submit_plan("untracked", [{"prompt": fake("write", "x.txt", content="x\n")}], isolation="worktree")
    repo.run_worker()
    (repo.root / "scratch.txt").write_text("mine\n")  # untracked, and the merge does not bring it
    (repo.root / "x.txt").write_text("in the way\n")  # untracked, and the merge brings a file of that name
    out = repo.cli("merge", job)
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "would overwrite untracked files" in out.stderr and "x.txt" in out.stderr
    assert "scratch.txt" not in out.stderr
    (repo.root / "x.txt").unlink()
    out = repo.cli("merge", job)
    assert out.returncode == 0, out.stderr
    assert (repo.root / "x.txt").read_text() == "x\n" and (repo.root / "scratch.txt").read_text() == "mine\n"


def test_more_workers_than_max_workers_needs_force(pool_project):
    # pool_project sets [workers] max_workers = 4.
    out = run(pool_project, "start", "100")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1 and "--force" in out.stderr
    assert "max_workers = 4" in out.stderr and not claude_queue.TaskQueue(
        cfg=config.load_config(cwd=pool_project, env={})).running_coordinator()
    assert run(pool_project, "start", "1").returncode == 0
    out = run(pool_project, "resize", "100")
    assert out.returncode == 2 and "--force" in out.stderr and len(out.stderr.splitlines()) == 1
    out = run(pool_project, "restart", "5")
    assert out.returncode == 2 and "--force" in out.stderr
    status = json.loads(run(pool_project, "status", "--json").stdout)
    assert status["running"] and len(status["workers"]) == 1, "refused before anything changed"
    out = run(pool_project, "resize", "5", "--force")
    assert out.returncode == 0, out.stderr
    assert run(pool_project, "restart").returncode == 0, "as many as before, even past max_workers"
    assert run(pool_project, "stop").returncode == 0


def test_every_commented_key_of_init_config_is_valid_once_uncommented(tmp_path):
    text = config.render_default_config()
    commented = [line for line in text.splitlines() if re.match(r"^# \w+ = ", line)]
    assert len(commented) == sum(spec[1] is None for keys in config.SCHEMA.values() for spec in keys.values())
    for line in commented:
        (tmp_path / ".klauss.toml").write_text(text.replace(line, line[2:]))
        key = line[2:].split(" = ")[0]
        cfg = config.load_config(cwd=tmp_path, env={})  # raises on invalid TOML or a wrong type
        section = next(s for s, keys in config.SCHEMA.items() if key in keys)
        assert cfg[section][key] is not None, line


def test_the_checked_in_skill_reads_correctly_and_installs_with_the_right_paths(tmp_path):
    checked_in = (ROOT / ".claude" / "skills" / "klauss" / "SKILL.md").read_text()
    assert "{KLAUSS}" not in checked_in
    for command in re.findall(r"python3 (\S+\.py)|`(\./\S+\.sh)", checked_in):
        path = next(p for p in command if p)
        assert (ROOT / path).is_file(), path
    installed = orchestrator.skill_for(checked_in, "klauss")
    assert "python3 klauss/orchestrator.py run plan.json --yes" in installed
    assert "`klauss/manage.sh status`" in installed and "`klauss/ORCHESTRATOR_GUIDE.md`" in installed
    assert "./" not in installed.replace("../", "")


def test_run_and_submit_file_point_to_each_other(tmp_path, capsys, monkeypatch):
    (tmp_path / "tasks.json").write_text(json.dumps([{"prompt": "a"}, {"prompt": "b"}]))
    (tmp_path / "plan.json").write_text(json.dumps({"description": "d", "tasks": [{"prompt": "a"}]}))
    out = run(tmp_path, "run", "tasks.json", "--yes")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1
    assert "manage.sh submit-file tasks.json" in out.stderr
    out = run(tmp_path, "submit-file", "plan.json")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1
    assert "manage.sh run plan.json" in out.stderr
    assert json.loads(run(tmp_path, "list", "--json").stdout) == [], "nothing was queued"
