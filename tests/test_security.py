"""Hostile task input (issue 13, security): flag injection into claude's argv, context globs that
follow symlinks out of the project, tasks aimed at another git repository, terminal escapes in
`list`/`show`, and task data that must fail its task, never the pool."""

import json
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import claude_cli
import claude_queue
import config
import validation
from conftest import FAKE_CLAUDE, fake

ROOT = Path(__file__).resolve().parent.parent
SUBMIT = ROOT / "submit_task.py"
WORKER = ROOT / "claude_worker.py"
ORCH = ROOT / "orchestrator.py"
MCP = ROOT / "klauss_mcp.py"
INJECTED = "--dangerously-skip-permissions"

# A `claude` that records every argv it gets (one JSON list a line), then behaves as the fake.
RECORDER = """#!{python}
import json, os, sys
with open({log!r}, "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
os.execv({python!r}, [{python!r}, {fake!r}, *sys.argv[1:]])
"""


class Project:
    def __init__(self, root, bindir):
        self.root, self.bindir = root, bindir
        self.argv_log = root.parent / "argv.jsonl"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
        self.env["PATH"] = f"{bindir}:{os.environ['PATH']}"
        self.fakelog = root.parent / "fakelog"
        self.fakelog.mkdir()
        self.env["FAKE_CLAUDE_LOG"] = str(self.fakelog)
        self.install(RECORDER.format(python=sys.executable, log=str(self.argv_log), fake=str(FAKE_CLAUDE)))

    def install(self, script):
        claude = self.bindir / "claude"
        claude.write_text(script)
        claude.chmod(0o755)

    @property
    def queue(self):
        return claude_queue.TaskQueue(cfg=config.load_config(cwd=self.root, env={}))

    def run(self, script, *args, stdin=None):
        out = subprocess.run([sys.executable, str(script), *args], cwd=self.root, env=self.env, input=stdin,
                             capture_output=True, text=True, timeout=120,
                             stdin=None if stdin is not None else subprocess.DEVNULL)
        assert "Traceback" not in out.stderr, out.stderr
        return out

    def worker(self):
        return self.run(WORKER, "w1", "--exit-when-idle")

    def kill_pool(self):
        """Stop whatever pool a test started here, by the pids its coordinator recorded."""
        if self.queue.get_flag(f"coordinator@{self.queue.cfg.host}"):
            subprocess.run([sys.executable, str(ROOT / "claude_coordinator.py"), "kill"], cwd=self.root,
                           env=self.env, capture_output=True, timeout=60)

    def argvs(self):
        lines = self.argv_log.read_text().splitlines() if self.argv_log.exists() else []
        return [a for a in map(json.loads, lines) if "-p" in a]

    def prompts(self):
        """What each task run of the fake read on stdin."""
        path = self.fakelog / "invocations.jsonl"
        runs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        return [r["stdin"] for r in runs if "-p" in r["argv"]]

    def set_metadata(self, task_id, metadata):
        """Store metadata as a foreign writer could, past every submit check."""
        with sqlite3.connect(str(config.load_config(cwd=self.root, env={}).db_path)) as conn:
            conn.execute("UPDATE tasks SET metadata = ? WHERE id = ?", (json.dumps(metadata), task_id))

    def mcp(self, tool, arguments):
        """One tools/call to the MCP server over stdio; returns its result."""
        messages = [{"jsonrpc": "2.0", "id": 1, "method": "initialize",
                     "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                "clientInfo": {"name": "t", "version": "0"}}},
                    {"jsonrpc": "2.0", "method": "notifications/initialized"},
                    {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}]
        # stdin stays open until the call is answered, as a client's does: a server whose input
        # ends gives running calls only a few seconds to finish.
        proc = subprocess.Popen([sys.executable, str(MCP)], cwd=self.root, env=self.env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watchdog = threading.Timer(120, proc.kill)  # a server that never answers fails the test, not hangs it
        watchdog.start()
        try:
            proc.stdin.write("".join(json.dumps(m) + "\n" for m in messages))
            proc.stdin.flush()
            answers = {}
            for line in proc.stdout:
                message = json.loads(line)
                answers[message.get("id")] = message
                if 2 in answers:
                    break
            proc.stdin.close()
            stderr = proc.stderr.read()
            assert proc.wait(timeout=120) == 0 and "Traceback" not in stderr, stderr
        finally:
            watchdog.cancel()
            proc.kill()
            proc.wait()
        return answers[2]["result"]


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (root / ".klauss.toml").write_text(
        "[workers]\nlease_seconds = 5\nheartbeat_seconds = 0.2\nshutdown_grace_seconds = 0.5\nauto_start = false\n"
        "[queue]\nretry_backoff_seconds = 0\n")
    project = Project(root, bindir)
    yield project
    project.kill_pool()


def task_count(project):
    return project.queue.get_stats()["total"]


# --- 1. flag injection ------------------------------------------------------------------------------

BAD_METADATA = [
    ({"allowed_tools": ["Edit", INJECTED]}, "metadata.allowed_tools"),
    ({"allowed_tools": [" -x"]}, "metadata.allowed_tools"),
    ({"allowed_tools": ["Edit\nBash"]}, "metadata.allowed_tools"),
    ({"allowed_tools": ["Edit\x00"]}, "metadata.allowed_tools"),
    ({"model": INJECTED}, "metadata.model"),
    ({"model": "haiku\n--verbose"}, "metadata.model"),
    ({INJECTED: True}, INJECTED),
    ({"permission_mode": "bypassPermissions"}, "metadata.permission_mode"),
    ({"extra_args": [INJECTED]}, "metadata.extra_args"),
    ({"allowedTools": ["Edit"]}, "did you mean 'allowed_tools'"),
    # 5. wrong types and ranges, named at submit rather than crashing workers or stopping the pool
    ({"max_budget_usd": 0}, "metadata.max_budget_usd"),
    ({"max_budget_usd": "1"}, "metadata.max_budget_usd"),
    ({"max_turns": "ten"}, "metadata.max_turns"),
    ({"max_turns": True}, "metadata.max_turns"),
    ({"max_turns": 0}, "metadata.max_turns"),
    ({"allowed_tools": "Bash(git *)"}, "metadata.allowed_tools"),
    ({"allowed_tools": [3]}, "metadata.allowed_tools"),
    ({"model": 5}, "metadata.model"),
    ({"model": ""}, "metadata.model"),
]


@pytest.mark.parametrize("metadata, field", BAD_METADATA)
def test_every_front_end_refuses_metadata_that_would_reach_argv_as_a_flag(project, metadata, field, monkeypatch,
                                                                           capsys):
    """Each front end's own entry point, run in this process (each case as a program would cost four
    process starts; the programs themselves: the next test)."""
    import klauss_mcp
    import mcp_server
    import orchestrator
    import submit_task

    for var, value in project.env.items():
        monkeypatch.setenv(var, value)
    for var in set(os.environ) - set(project.env):
        monkeypatch.delenv(var)
    monkeypatch.chdir(project.root)

    def stderr_of(code, expected=2):
        err = capsys.readouterr().err
        assert code == expected and "Traceback" not in err, (code, err)
        return err

    err = stderr_of(submit_task.main(["submit", "x", "--metadata", json.dumps(metadata)]))
    assert field in err and len(err.strip().splitlines()) == 1, err
    (project.root / "tasks.json").write_text(json.dumps([{"prompt": "ok"}, {"prompt": "x", "metadata": metadata}]))
    err = stderr_of(submit_task.main(["submit-file", "tasks.json"]))
    assert field in err and "task 1" in err, err
    plan = {"description": "d", "tasks": [{"id": "a", "prompt": "x", "metadata": metadata}]}
    (project.root / "plan.json").write_text(json.dumps(plan))
    err = stderr_of(orchestrator.cli(["run", "plan.json", "--yes"]))
    assert field in err, err
    server = klauss_mcp.MCPServer(klauss_mcp.KlaussTools(), None, None)
    result = server.run_tool("submit_job", {**plan, "start_workers": False}, mcp_server.CallContext())
    assert result["isError"] and field in result["content"][0]["text"], result
    with pytest.raises(ValueError, match=field):
        project.queue.add_task("x", metadata=metadata)
    assert task_count(project) == 0 and project.queue.list_jobs() == []


def test_every_front_end_program_refuses_metadata_that_would_reach_argv_as_a_flag(project):
    metadata, field = BAD_METADATA[0]
    out = project.run(SUBMIT, "submit", "x", "--metadata", json.dumps(metadata))
    assert out.returncode == 2 and field in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    (project.root / "tasks.json").write_text(json.dumps([{"prompt": "ok"}, {"prompt": "x", "metadata": metadata}]))
    out = project.run(SUBMIT, "submit-file", "tasks.json")
    assert out.returncode == 2 and field in out.stderr and "task 1" in out.stderr, out.stderr
    plan = {"description": "d", "tasks": [{"id": "a", "prompt": "x", "metadata": metadata}]}
    (project.root / "plan.json").write_text(json.dumps(plan))
    out = project.run(ORCH, "run", "plan.json", "--yes")
    assert out.returncode == 2 and field in out.stderr, out.stderr
    result = project.mcp("submit_job", {**plan, "start_workers": False})
    assert result["isError"] and field in result["content"][0]["text"], result
    assert task_count(project) == 0 and project.queue.list_jobs() == []


def test_build_argv_refuses_a_bad_value_and_never_emits_one_as_a_flag(monkeypatch):
    cfg = dict(config.load_config(env={})["claude"])
    with pytest.raises(claude_cli.BadTaskArgument, match="metadata.allowed_tools"):
        claude_cli.build_argv(cfg, {"allowed_tools": ["Edit", INJECTED]})
    with pytest.raises(claude_cli.BadTaskArgument, match="metadata.model"):
        claude_cli.build_argv(cfg, {"model": INJECTED})
    # Even with the check gone, every value travels inside its option's own word.
    monkeypatch.setattr(claude_cli, "check_task_metadata", lambda metadata: metadata)
    argv = claude_cli.build_argv({**cfg, "allowed_tools": ["-c"]}, {"allowed_tools": [INJECTED], "model": INJECTED})
    assert INJECTED not in argv and "-c" not in argv
    assert f"--allowedTools={INJECTED}" in argv and f"--model={INJECTED}" in argv and "--allowedTools=-c" in argv


def test_metadata_queued_past_the_checks_fails_that_task_only(project):
    q = project.queue
    bad = q.add_task("bad", metadata={"allowed_tools": ["Edit"]})
    good = q.add_task("good", metadata={"allowed_tools": ["Edit"]})
    project.set_metadata(bad, {"allowed_tools": ["Edit", INJECTED]})
    out = project.worker()
    assert out.returncode == 0, out.stderr
    t = q.get_task(bad)
    assert t.status == "failed" and "metadata.allowed_tools" in t.error and t.attempts_used == 1
    assert q.get_task(good).status == "completed"
    assert not q.list_flags("config_error")  # for no host
    argvs = project.argvs()
    assert len(argvs) == 1 and "--allowedTools=Edit" in argvs[0]
    assert not any(word.startswith("--dangerously") for argv in argvs for word in argv)


# --- 2. context globs and symlinks ------------------------------------------------------------------

def test_context_globs_never_inline_a_file_that_links_outside_the_project(project, tmp_path):
    outside = tmp_path / "outside"
    (outside / "secretdir").mkdir(parents=True)
    (outside / "secret.txt").write_text("TOPSECRET-PASSWORD-123\n")
    (outside / "secretdir" / "notes.md").write_text("SECRET-IN-DIR-456\n")
    docs = project.root / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("doc a\n")
    (docs / "b.md").symlink_to(outside / "secret.txt")
    (docs / "c.md").symlink_to(docs / "a.md")  # a link that stays inside is fine
    (project.root / "linkdir").symlink_to(outside)
    q = project.queue
    q.add_task("t1", context_files=["docs/*.md"])
    q.add_task("t2", context_files=["**/*.md"])
    assert project.worker().returncode == 0
    prompts = project.prompts()
    assert len(prompts) == 2
    for prompt in prompts:
        assert "SECRET" not in prompt
        assert "### docs/a.md\n```\ndoc a" in prompt and "### docs/c.md" in prompt
        assert "- docs/b.md (left out: it links outside the project)" in prompt
    assert "- linkdir/secretdir/notes.md (left out: it links outside the project)" in prompts[1]
    assert all(t.status == "completed" for t in q.list_tasks())


# --- 3. a task's repository is its project's own -----------------------------------------------------

def git(cwd, *args):
    out = subprocess.run(["git", "-c", "user.name=T", "-c", "user.email=t@t", *args], cwd=str(cwd),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def make_repo(path):
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("hi\n")
    (path / ".gitignore").write_text(".klauss/\n")
    git(path, "add", "-A")
    git(path, "commit", "-qm", "init")
    return git(path, "rev-parse", "HEAD")


@pytest.fixture
def nested(tmp_path):
    """The project is outer/proj, a git repository of its own inside another one."""
    outer = tmp_path / "outer"
    outer_head = make_repo(outer)
    root = outer / "proj"
    root.mkdir()
    (root / ".klauss.toml").write_text("[workers]\nlease_seconds = 5\nheartbeat_seconds = 0.2\n"
                                       "[queue]\nretry_backoff_seconds = 0\n")
    make_repo(root)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    project = Project(root, bindir)
    project.outer, project.outer_head = outer, outer_head
    project.outer_state = (git(outer, "branch", "-a"), git(outer, "worktree", "list"), git(outer, "log", "--all", "--oneline"))
    yield project
    project.kill_pool()


def test_a_task_cannot_point_klauss_at_another_repository(nested):
    p = nested
    metadata = {"isolation": "worktree", "repo": str(p.outer), "base_commit": p.outer_head}
    out = p.run(SUBMIT, "submit", fake("write", "evil.txt", content="x"), "--metadata", json.dumps(metadata))
    assert out.returncode == 2 and "metadata.repo" in out.stderr and "not this project's git repository" in out.stderr
    (p.root / "tasks.json").write_text(json.dumps([{"prompt": "a"}, {"prompt": "b", "metadata": metadata}]))
    out = p.run(SUBMIT, "submit-file", "tasks.json")
    assert out.returncode == 2 and "task 1: metadata.repo" in out.stderr, out.stderr
    plan = {"description": "d", "tasks": [{"id": "a", "prompt": "x", "metadata": metadata}]}
    result = p.mcp("submit_job", {**plan, "start_workers": False})
    assert result["isError"] and "metadata.repo" in result["content"][0]["text"], result
    out = p.run(SUBMIT, "submit", "x", "--metadata", json.dumps({**metadata, "repo": str(p.root),
                                                                 "base_commit": "--upload-pack=x"}))
    assert out.returncode == 2 and "metadata.base_commit" in out.stderr
    assert task_count(p) == 0

    # The TaskQueue API goes through the same submission checks (validation.py).
    q = p.queue
    with pytest.raises(ValueError, match="metadata.repo"):
        q.add_task(fake("write", "evil.txt", content="x"), metadata=metadata)
    # Written straight into storage, past those checks: the worker refuses it, and only it.
    task = validation.validate_task({"prompt": fake("write", "evil.txt", content="x"), "metadata": metadata}, 3)
    [bad] = q.insert_prepared(([validation.check_task_paths(task, q.cfg)], [0]))
    good = q.add_task("fine")
    assert p.worker().returncode == 0
    t = q.get_task(bad)
    assert t.status == "failed" and "metadata.repo" in t.error, t.error
    assert q.get_task(good).status == "completed"
    assert (git(p.outer, "branch", "-a"), git(p.outer, "worktree", "list"),
            git(p.outer, "log", "--all", "--oneline")) == p.outer_state
    assert not (p.outer / "evil.txt").exists()


def test_the_projects_own_repository_is_accepted(nested):
    p = nested
    head = git(p.root, "rev-parse", "HEAD")
    metadata = {"isolation": "worktree", "repo": str(p.root), "base_commit": head}
    out = p.run(SUBMIT, "submit", fake("write", "ok.txt", content="x"), "--metadata", json.dumps(metadata))
    assert out.returncode == 0, out.stderr
    assert p.worker().returncode == 0
    [t] = p.queue.list_tasks()
    assert t.status == "completed", t.error
    assert "klauss/task-" in git(p.root, "branch", "-a")


# --- 4. terminal escapes in list and show ------------------------------------------------------------

def test_list_and_show_never_print_terminal_escapes_but_json_stays_exact(project, monkeypatch, capsys):
    """submit, list and show as programs; show's and list's other forms through submit_task's entry
    point in this process (a start costs ~0.1 s of CPU here)."""
    import submit_task

    prompt = "x\x1b]0;TITLE\x07\x1b[2J\x9b31m line\nsecond\x1b[31m line"
    out = project.run(SUBMIT, "submit", prompt, "--metadata", json.dumps({"note": "\x1b[5mblink"}))
    assert out.returncode == 0, out.stderr
    job = project.queue.create_job("job \x1b[2J desc")
    project.queue.add_task("in a job \x1b]0;T\x07", job_id=job)
    for var, value in project.env.items():
        monkeypatch.setenv(var, value)
    for var in set(os.environ) - set(project.env):
        monkeypatch.delenv(var)
    monkeypatch.chdir(project.root)

    def in_process(*args):
        capsys.readouterr()
        code = submit_task.main(list(args))
        return subprocess.CompletedProcess(args, code, *capsys.readouterr())

    shown = {}
    for args in (["list"], ["show", "1"], ["show", "2"], ["jobs"]):
        out = project.run(SUBMIT, *args) if args in (["list"], ["show", "1"]) else in_process(*args)
        assert out.returncode == 0, out.stderr
        assert "\x1b" not in out.stdout and "\x07" not in out.stdout and "\x9b" not in out.stdout, (args, out.stdout)
        shown[tuple(args)] = out.stdout
    assert "  second line" in shown["show", "1"].splitlines(), "line structure of the prompt is kept"
    assert "x line" in shown["list",]
    assert json.loads(in_process("show", "1", "--json").stdout)["prompt"] == prompt
    assert [t["prompt"] for t in json.loads(in_process("list", "--json").stdout)][-1] == prompt



# --- 5. bad task data fails the task, never the pool --------------------------------------------------

# A `claude` that refuses a budget the way the real 2.1.329 refuses 0 (one Klauss lets through, as
# a newer CLI might refuse what Klauss accepts), else behaves as the fake.
REFUSER = """#!{python}
import os, sys
if "--max-budget-usd=0.001" in sys.argv:
    sys.stderr.write("error: option '--max-budget-usd <amount>' argument '0.001' is invalid\\n")
    sys.exit(1)
os.execv({python!r}, [{python!r}, {fake!r}, *sys.argv[1:]])
"""


def test_a_cli_refusal_of_one_tasks_own_option_fails_that_task_not_the_pool(project):
    project.install(REFUSER.format(python=sys.executable, fake=str(FAKE_CLAUDE)))
    q = project.queue
    bad = q.add_task("bad", metadata={"max_budget_usd": 0.001})
    good = q.add_task("good")
    out = project.worker()
    assert out.returncode == 0, out.stdout + out.stderr
    t = q.get_task(bad)
    assert t.status == "failed" and t.attempts_used == 1, (t.status, t.attempts_used, t.error)
    assert "metadata.max_budget_usd" in t.error and ".klauss.toml" not in t.error
    assert t.outcome["error_class"] == claude_cli.FATAL
    assert not q.list_flags("config_error")  # for no host
    assert q.get_task(good).status == "completed"


def test_the_same_refusal_of_a_configured_option_is_still_a_configuration_error():
    line = "error: option '--max-budget-usd <amount>' argument '0' is invalid"
    assert claude_cli.classify(None, 1, stderr_tail=line).kind == claude_cli.CONFIG_ERROR
    verdict = claude_cli.classify(None, 1, stderr_tail=line, task_fields=["model", "max_budget_usd"])
    assert verdict.kind == claude_cli.FATAL and "metadata.max_budget_usd" in verdict.message
    # The fake's (2.1.197) wording of the same refusal
    verdict = claude_cli.classify(None, 1, stderr_tail="error: --max-budget-usd must be a positive number greater "
                                  "than 0", task_fields=["max_budget_usd"])
    assert verdict.kind == claude_cli.FATAL


@pytest.mark.parametrize("metadata, field", [({"max_turns": "ten"}, "metadata.max_turns"),
                                             ({"allowed_tools": "Bash(git *)"}, "metadata.allowed_tools"),
                                             ({"max_budget_usd": 0}, "metadata.max_budget_usd")])
def test_metadata_of_the_wrong_type_fails_its_task_and_the_worker_goes_on(project, metadata, field):
    q = project.queue
    bad = q.add_task("bad", max_attempts=50)
    project.set_metadata(bad, metadata)
    good = [q.add_task(f"good {i}") for i in range(2)]
    out = project.worker()
    assert out.returncode == 0 and "Traceback" not in out.stdout, out.stdout
    t = q.get_task(bad)
    assert t.status == "failed" and t.attempts_used == 1 and field in t.error, (t.status, t.error)
    assert all(q.get_task(g).status == "completed" for g in good)
    assert len(project.argvs()) == 2, "the bad task never started claude (nor split a string into letters)"


# --- 7. deep dependency chains --------------------------------------------------------------------------

CHAIN = 5000


def test_a_reverse_ordered_chain_of_5000_is_accepted_and_a_long_cycle_is_one_line(project):
    entries = [{"prompt": f"t{i}", "ref": f"r{i}", "depends_on": [f"r{i + 1}"] if i + 1 < CHAIN else []}
               for i in range(CHAIN)]
    (project.root / "chain.json").write_text(json.dumps(entries))
    out = project.run(SUBMIT, "submit-file", "chain.json", "--json")
    assert out.returncode == 0, out.stderr
    ids = json.loads(out.stdout)
    ids = ids["ids"] if isinstance(ids, dict) else ids
    assert len(ids) == CHAIN and task_count(project) == CHAIN
    q = project.queue
    last, first = q.get_task(ids[-1]), q.get_task(ids[0])
    assert last.depends_on == [] and first.depends_on == [ids[1]] and last.id < first.id
    entries[-1]["depends_on"] = ["r0"]
    (project.root / "cycle.json").write_text(json.dumps(entries))
    out = project.run(SUBMIT, "submit-file", "cycle.json")
    assert out.returncode == 2 and "dependency cycle r0 -> r1" in out.stderr and "more" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and len(out.stderr) < 400
    assert task_count(project) == CHAIN


def chain_plan(n):
    return {"description": "deep", "tasks": [{"id": f"t{i}", "prompt": f"step {i}",
                                              "depends_on": [f"t{i - 1}"] if i else []} for i in range(n)]}


def test_mcp_submit_job_of_a_chain_of_5000_reports_the_queued_job(project):
    result = project.mcp("submit_job", {**chain_plan(CHAIN), "start_workers": True})
    text = result["content"][0]["text"]
    assert not result["isError"], text
    assert f"queued: {CHAIN} tasks" in text
    assert len(project.queue.list_jobs()) == 1 and task_count(project) == CHAIN
    assert "Workers: started a pool of 1" in text, "suggest_workers walked the whole chain"


def test_suggest_workers_and_run_walk_a_chain_of_5000(project, monkeypatch):
    import orchestrator
    monkeypatch.chdir(project.root)
    orch = orchestrator.ClaudeOrchestrator("test")
    job, ids = orch.submit_plan("deep", [{"ref": t["id"], "prompt": t["prompt"], "depends_on": t["depends_on"]}
                                         for t in chain_plan(CHAIN)["tasks"]])
    assert orch.suggest_workers(job) == 1
    wide = orch.submit_plan("wide", [{"prompt": "a"}, {"prompt": "b"}, {"prompt": "c", "ref": "c"},
                                     {"prompt": "d", "depends_on": ["c"]}])[0]
    assert orch.suggest_workers(wide) == 3
    (project.root / "plan.json").write_text(json.dumps(chain_plan(CHAIN)))
    out = project.run(ORCH, "run", "plan.json", "--timeout", "0")
    assert "RecursionError" not in out.stderr and "internal error" not in out.stderr, out.stderr
    assert f"{CHAIN} tasks queued" in out.stderr


# --- 8. lone surrogates -----------------------------------------------------------------------------------

@pytest.mark.parametrize("entry, named", [
    ({"prompt": "x\ud800y"}, "task 1: prompt: character 2 is '\\ud800'"),
    ({"prompt": "x", "metadata": {"note": ["ok", "\udfff"]}}, "task 1: metadata.note[1]: "),
    ({"prompt": "x", "context_files": ["a\udc80.md"]}, "task 1: context_files[0]: "),
    ({"prompt": "x", "metadata": {"k\udc00": 1}}, "task 1: metadata (a key): "),
])
def test_a_lone_surrogate_is_named_by_task_and_field(project, entry, named):
    text = json.dumps([{"prompt": "fine"}, entry])  # a lone surrogate becomes a \uXXXX escape in the file
    assert "\\ud" in text
    (project.root / "tasks.json").write_text(text)
    out = project.run(SUBMIT, "submit-file", "tasks.json")
    assert out.returncode == 2 and named in out.stderr and "surrogate" in out.stderr, out.stderr
    assert "codec" not in out.stderr and task_count(project) == 0


def test_surrogates_from_argv_mcp_and_plans_are_named_too(project):
    out = subprocess.run([sys.executable, str(SUBMIT), "submit", b"bad \xed\xa0\x80 bytes"], cwd=project.root,
                         env=project.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "prompt: character 5" in out.stderr, out.stderr
    result = project.mcp("submit_job", {"description": "d\ud800", "tasks": [{"id": "a", "prompt": "x"}],
                                        "start_workers": False})
    assert result["isError"] and "description: character 2" in result["content"][0]["text"], result
    result = project.mcp("submit_job", {"description": "d", "tasks": [{"id": "a", "prompt": "x\udcff"}],
                                        "start_workers": False})
    assert result["isError"] and "prompt: character 2" in result["content"][0]["text"], result
    (project.root / "plan.json").write_text('{"description": "d", "tasks": [{"id": "a", "prompt": "ok"}, '
                                            '{"id": "b", "prompt": "x\\ud800"}]}')
    out = project.run(ORCH, "run", "plan.json", "--yes")
    assert out.returncode == 2 and "task 1: prompt: character 2" in out.stderr, out.stderr
    assert task_count(project) == 0 and project.queue.list_jobs() == []
