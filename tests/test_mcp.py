"""klauss_mcp.py: the MCP protocol and every tool, driven over stdio by a small test client; and
end-to-end runs of the REAL Claude Code CLI whose scripted model calls mcp__klauss__submit_job."""

import io
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import claude_queue
import config
import klauss_mcp
import mcp_server
import orchestrator
from conftest import fake
from conftest import wait_for as wait_until

ROOT = Path(__file__).resolve().parent.parent
FAKE = ROOT / "tests" / "fake_claude.py"
SERVER = ROOT / "klauss_mcp.py"
ORCH = ROOT / "orchestrator.py"
JOB_RE = re.compile(r"job-\d{8}-[0-9a-f]{6}")
TOOL_NAMES = {"submit_job", "job_status", "wait_job", "list_jobs", "show_task", "cancel_job", "retry_failed",
              "start_workers", "stop_workers", "worker_status"}


def ago(text):
    """`text` without its relative times, which change from one call to the next."""
    return re.sub(r"\d[\d.smhd ]* ago", "… ago", text)


@pytest.fixture
def project(pool_project):
    return pool_project


def open_queue(root):
    return claude_queue.TaskQueue(cfg=config.load_config(cwd=root, env={}))


class McpClient:
    """Runs `python klauss_mcp.py` and talks to it over pipes: one JSON message per line."""

    def __init__(self, cwd, args=(), env=None, argv=None):
        argv = argv or [sys.executable, str(SERVER), *args]
        self.proc = subprocess.Popen(argv, cwd=str(cwd), env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        self.lines = queue.Queue()
        self.stderr = []
        self.notifications = []
        self.raw_out = []
        self._pending = {}
        self._next = 0
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()

    @staticmethod
    def _pump(stream, sink):
        for line in iter(stream.readline, b""):
            sink.put(line)
        sink.put(None)

    def _drain_stderr(self):
        for line in iter(self.proc.stderr.readline, b""):
            self.stderr.append(line.decode("utf-8", "replace"))

    def send(self, message):
        data = message if isinstance(message, bytes) else json.dumps(message).encode() + b"\n"
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def recv(self, timeout=30):
        """The next message the server wrote; every line it writes must be one JSON value."""
        line = self.lines.get(timeout=timeout)
        assert line is not None, "the server closed stdout; stderr:\n" + "".join(self.stderr)
        self.raw_out.append(line)
        assert line.endswith(b"\n") and b"\n" not in line[:-1]
        return json.loads(line)

    def response(self, msg_id, timeout=30):
        """The response with this id (notifications and other responses that arrive first are kept)."""
        deadline = time.monotonic() + timeout
        while msg_id not in self._pending:
            message = self.recv(timeout=max(0.01, deadline - time.monotonic()))
            if isinstance(message, dict) and "id" not in message:
                self.notifications.append(message)
            elif isinstance(message, dict):
                self._pending[message["id"]] = message
            else:
                raise AssertionError(f"unexpected batch answer {message!r}")
        return self._pending.pop(msg_id)

    def request(self, method, params=None, timeout=30):
        self._next += 1
        msg_id = self._next
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, **({"params": params} if params is not None else {})})
        return self.response(msg_id, timeout)

    def initialize(self, version="2025-06-18"):
        answer = self.request("initialize", {"protocolVersion": version, "capabilities": {},
                                             "clientInfo": {"name": "test", "version": "0"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    def call(self, name, arguments=None, timeout=60, meta=None):
        params = {"name": name, "arguments": arguments if arguments is not None else {}}
        if meta:
            params["_meta"] = meta
        answer = self.request("tools/call", params, timeout=timeout)
        assert "result" in answer, answer
        result = answer["result"]
        assert [c["type"] for c in result["content"]] == ["text"] and isinstance(result["isError"], bool)
        return result

    def text(self, name, arguments=None, timeout=60, error=False, **kw):
        result = self.call(name, arguments, timeout=timeout, **kw)
        assert result["isError"] is error, result
        return result["content"][0]["text"]

    def close(self, timeout=30):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
                raise AssertionError("the server did not exit at the end of its input") from None
        return self.proc.returncode

    def rest(self, timeout=30):
        """Every message written until the server closed stdout (after close())."""
        out = []
        while True:
            line = self.lines.get(timeout=timeout)
            if line is None:
                return out
            out.append(json.loads(line))


@pytest.fixture
def client(project):
    made = []

    def make(*args, cwd=None, **kw):
        c = McpClient(cwd or project, args, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


# --- the protocol --------------------------------------------------------------------------------

def test_handshake_as_claude_code_does_it(client, tmp_path):
    trace = tmp_path / "trace.jsonl"
    c = client("--trace", str(trace))
    probe = c.request("server/discover", {"_meta": {"io.modelcontextprotocol/protocolVersion": "2026-07-28"}})
    assert probe["error"]["code"] == -32601 and probe["id"] == 1
    init = c.initialize("2025-11-25")
    assert init["result"]["protocolVersion"] == "2025-11-25"
    assert init["result"]["capabilities"] == {"tools": {}}
    assert init["result"]["serverInfo"]["name"] == "klauss"
    assert "submit_job" in init["result"]["instructions"]
    # notifications/initialized got no answer: the next message is the ping's
    assert c.request("ping") == {"jsonrpc": "2.0", "id": 3, "result": {}}
    listed = c.request("tools/list")["result"]["tools"]
    assert {t["name"] for t in listed} == TOOL_NAMES
    for version, expected in (("2025-06-18", "2025-06-18"), ("2025-03-26", "2025-03-26"),
                              ("2024-11-05", "2024-11-05"), ("1999-01-01", "2025-11-25"), (None, "2025-11-25")):
        assert c.request("initialize", {"protocolVersion": version})["result"]["protocolVersion"] == expected
    assert c.close() == 0
    assert "initialize from test" in "".join(c.stderr), "logs go to stderr"
    traced = [json.loads(line) for line in trace.read_text().splitlines()]
    assert [(m["dir"], m["msg"].get("method") or m["msg"].get("id")) for m in traced[:6]] == [
        ("in", "server/discover"), ("out", 1), ("in", "initialize"), ("out", 2), ("in", "notifications/initialized"),
        ("in", "ping")]


@pytest.mark.parametrize("line, code, msg_id", [
    (b"not json\n", -32700, None),
    (b"\xff\xfe{}\n", -32700, None),
    (b'{"jsonrpc":"2.0","id":1,"method":"ping","params":NaN}\n', -32700, None),
    (b'{"jsonrpc":"2.0","id":1,"method":"ping"\n', -32700, None),
    (b"x" * 300000 + b"\n", -32700, None),
    (b"[]\n", -32600, None),
    (b"42\n", -32600, None),
    (b'"ping"\n', -32600, None),
    (b"null\n", -32600, None),
    (b'{"id":5,"method":"ping"}\n', -32600, 5),
    (b'{"jsonrpc":"1.0","id":5,"method":"ping"}\n', -32600, 5),
    (b'{"jsonrpc":"2.0","id":6,"method":7}\n', -32600, 6),
    (b'{"jsonrpc":"2.0","id":{"a":1},"method":"ping"}\n', -32600, None),
    (b'{"jsonrpc":"2.0","id":null,"method":"ping"}\n', -32600, None),
    (b'{"jsonrpc":"2.0","id":9}\n', -32600, 9),
    (b'{"jsonrpc":"2.0","id":7,"method":"ping","params":[1]}\n', -32602, 7),
    (b'{"jsonrpc":"2.0","id":8,"method":"resources/list"}\n', -32601, 8),
    (b'{"jsonrpc":"2.0","id":"s","method":"prompts/list"}\n', -32601, "s"),
    (b'{"jsonrpc":"2.0","id":10,"method":"tools/call","params":{"name":"nope"}}\n', -32602, 10),
    (b'{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{}}\n', -32602, 11),
    (b'{"jsonrpc":"2.0","id":12,"method":"tools/call","params":{"name":"list_jobs","arguments":[1]}}\n', -32602, 12),
], ids=lambda v: repr(v)[:40] if isinstance(v, bytes) else None)
def test_malformed_messages_get_json_rpc_errors_and_the_server_goes_on(client, line, code, msg_id):
    c = client()
    c.send(line)
    answer = c.recv()
    assert answer["jsonrpc"] == "2.0" and answer["id"] == msg_id and answer["error"]["code"] == code, answer
    assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]
    assert c.request("ping")["result"] == {}
    assert c.proc.poll() is None


def test_notifications_blank_lines_and_responses_get_no_answer(client):
    c = client()
    for line in (b"\n", b"   \r\n", b'{"jsonrpc":"2.0","method":"notifications/whatever","params":{"x":1}}\n',
                 b'{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":99}}\n',
                 b'{"jsonrpc":"2.0","method":"ping"}\n',  # a notification, even for a known method
                 b'{"jsonrpc":"2.0","method":"notifications/initialized","params":"odd"}\n',
                 b'{"jsonrpc":"2.0","id":77,"result":{}}\n'):
        c.send(line)
    assert c.request("ping") == {"jsonrpc": "2.0", "id": 1, "result": {}}


def test_batches_are_answered_in_order(client):
    c = client()
    c.send([{"jsonrpc": "2.0", "id": "a", "method": "ping"},
            {"jsonrpc": "2.0", "method": "notifications/initialized"},
            {"jsonrpc": "2.0", "id": "b", "method": "nope"},
            {"jsonrpc": "2.0", "id": "c", "method": "tools/call", "params": {"name": "list_jobs"}},
            7])
    answer = c.recv()
    assert [m.get("id") for m in answer] == ["a", "b", "c", None]
    assert answer[0]["result"] == {} and answer[1]["error"]["code"] == -32601
    assert answer[2]["result"]["content"][0]["text"].startswith("No jobs yet")
    assert answer[3]["error"]["code"] == -32600
    c.send([{"jsonrpc": "2.0", "method": "notifications/initialized"}])  # only notifications: no answer
    assert c.request("ping")["id"] == 1


def test_tools_list_has_a_schema_and_description_for_every_tool(client):
    tools = {t["name"]: t for t in client().request("tools/list", {})["result"]["tools"]}
    assert set(tools) == TOOL_NAMES
    for name, tool in tools.items():
        schema = tool["inputSchema"]
        assert schema["type"] == "object" and schema.get("additionalProperties") is False, name
        assert len(tool["description"]) > 30, name
        assert set(schema.get("required", [])) <= set(schema["properties"]), name
    submit = tools["submit_job"]["inputSchema"]
    assert submit["required"] == ["description", "tasks"]
    task = submit["properties"]["tasks"]["items"]
    assert task["required"] == ["prompt"]
    assert {"id", "prompt", "depends_on", "priority", "expected_outputs", "context_files", "working_dir", "timeout",
            "max_attempts", "metadata"} == set(task["properties"])
    assert set(task["properties"]) == orchestrator.PLAN_FIELDS
    assert tools["wait_job"]["inputSchema"]["properties"]["timeout_seconds"]["maximum"] == 600
    assert tools["job_status"]["annotations"]["readOnlyHint"] is True
    plan_fields = {"description", "context", "max_budget_usd", "metadata", "tasks"}
    if hasattr(orchestrator, "worktrees"):
        plan_fields |= {"isolation", "merge"}
        if hasattr(orchestrator, "integration"):
            plan_fields |= {"verify"}
        assert submit["properties"]["isolation"]["enum"] == list(orchestrator.worktrees.MODES)
    assert set(submit["properties"]) == plan_fields | {"start_workers", "workers"}


# --- the tools -----------------------------------------------------------------------------------

def test_submit_job_queues_the_plan_as_one_job(client, project):
    c = client()
    c.initialize()
    text = c.text("submit_job", {
        "description": "Add greetings",
        "context": "Python 3.9, standard library only.",
        "max_budget_usd": 2.5,
        "metadata": {"ticket": "T-1"},
        "tasks": [
            {"id": "greet", "prompt": "Create greet.py", "expected_outputs": ["greet.py"], "priority": 10},
            {"id": "bye", "prompt": "Create bye.py", "expected_outputs": ["bye.py"], "timeout": 120,
             "max_attempts": 2, "metadata": {"model": "haiku"}},
            {"id": "tests", "prompt": "Write tests/test_g.py\nusing pytest", "depends_on": ["greet", "bye"],
             "context_files": ["*.py"]},
        ],
        "start_workers": False})
    job_id = JOB_RE.search(text).group(0)
    assert f"Job `{job_id}` queued: 3 tasks" in text
    assert "none started (start_workers: false)" in text and f'wait_job with job_id "{job_id}"' in text
    q = open_queue(project)
    job = q.get_job(job_id)
    assert job["orchestrator_id"] == "mcp" and job["max_budget_usd"] == 2.5
    assert job["metadata"] == {"ticket": "T-1", "context": "Python 3.9, standard library only."}
    greet, bye, tests = q.list_tasks(job_id=job_id, order="asc")
    assert (greet.priority, greet.expected_outputs, greet.status) == (10, ["greet.py"], "pending")
    assert (bye.timeout, bye.max_attempts, bye.metadata) == (120, 2, {"model": "haiku"})
    assert tests.depends_on == [greet.id, bye.id] and tests.context_files == ["*.py"]
    assert f"`tests` → task #{tests.id} (after #{greet.id}, #{bye.id})" in text
    assert not q.get_flag(f"coordinator@{q.cfg.host}"), "start_workers: false starts nothing"
    assert "No pool running" in c.text("worker_status")


def test_local_ids_map_to_task_numbers_whatever_the_order(client, project):
    c = client()
    text = c.text("submit_job", {"description": "d", "start_workers": False, "tasks": [
        {"id": "last", "prompt": "uses both", "depends_on": ["first", 2]},
        {"id": "first", "prompt": "base"},
        {"id": 2, "prompt": "numbered id"}]})
    q = open_queue(project)
    by_prompt = {t.prompt: t for t in q.list_tasks(job_id=JOB_RE.search(text).group(0))}
    last, first, two = by_prompt["uses both"], by_prompt["base"], by_prompt["numbered id"]
    assert last.depends_on == sorted([first.id, two.id])
    assert f"`last` → task #{last.id} (after #{first.id}, #{two.id})" in text
    assert f"`first` → task #{first.id}: base" in text and f"`2` → task #{two.id}" in text


def test_db_and_project_options(client, project, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    c = client("--db", str(tmp_path / "own.db"), "--project", str(project), cwd=elsewhere)
    text = c.text("submit_job", {"description": "d", "tasks": [{"prompt": "x", "working_dir": "."}],
                                 "start_workers": False})
    job_id = JOB_RE.search(text).group(0)
    own = claude_queue.TaskQueue(str(tmp_path / "own.db"), cfg=config.load_config(db=str(tmp_path / "own.db"),
                                                                                  cwd=project, env={}))
    assert own.get_job(job_id) and own.list_tasks(job_id=job_id)[0].working_dir == str(project)
    assert open_queue(project).get_job(job_id) is None


def test_orchestrator_id_comes_from_the_environment(client, project):
    c = client(env=dict(os.environ, KLAUSS_ORCHESTRATOR_ID="lead-session"))
    text = c.text("submit_job", {"description": "d", "tasks": [{"prompt": "x"}], "start_workers": False})
    assert open_queue(project).get_job(JOB_RE.search(text).group(0))["orchestrator_id"] == "lead-session"


BAD_PLANS = [
    ({"tasks": [{"prompt": "x"}]}, "plan.description"),
    ({"description": " ", "tasks": [{"prompt": "x"}]}, "plan.description"),
    ({"description": "d", "tasks": []}, "plan.tasks"),
    ({"description": "d"}, "plan.tasks"),
    ({"description": "d", "tasks": [{"prompt": "x", "priorty": 1}]}, r"unknown field\(s\) priorty"),
    ({"description": "d", "tasks": [{"prompt": "x"}], "bogus": 1}, r"plan: unknown field\(s\) bogus"),
    ({"description": "d", "tasks": [{"prompt": ""}]}, "prompt"),
    ({"description": "d", "tasks": ["x"]}, r"plan.tasks\[0\]: expected an object"),
    ({"description": "d", "tasks": [{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]}, "used twice"),
    ({"description": "d", "tasks": [{"prompt": "x", "depends_on": ["nope"]}]}, "'nope' is not the id"),
    ({"description": "d", "tasks": [{"id": "a", "prompt": "x", "depends_on": ["b"]},
                                    {"id": "b", "prompt": "y", "depends_on": ["a"]}]}, "cycle"),
    ({"description": "d", "tasks": [{"prompt": "x", "working_dir": "/"}]}, "outside the project"),
    ({"description": "d", "tasks": [{"prompt": "x", "timeout": -5}]}, "timeout"),
    ({"description": "d", "tasks": [{"prompt": "x", "priority": "high"}]}, "priority"),
    ({"description": "d", "max_budget_usd": 0, "tasks": [{"prompt": "x"}]}, "max_budget_usd"),
]
if hasattr(orchestrator, "worktrees"):  # plans choose git-worktree isolation
    BAD_PLANS.append(({"description": "d", "isolation": "vm", "tasks": [{"prompt": "x"}]}, "plan.isolation"))
    BAD_PLANS.append(({"description": "d", "isolation": "worktree", "tasks": [{"prompt": "x"}]}, "needs a git repository"))


@pytest.mark.parametrize("plan, message", BAD_PLANS)
def test_a_bad_plan_is_a_tool_error_with_the_cli_message_and_queues_nothing(project, plan, message, capsys):
    """The tool and `run` in this process, through the calls the server and the program make (each
    case as programs would cost two process starts; the programs themselves: the next test)."""
    result = klauss_mcp.MCPServer(klauss_mcp.KlaussTools(), None, None).run_tool("submit_job", plan,
                                                                                mcp_server.CallContext())
    assert result["isError"] is True, result
    text = result["content"][0]["text"]
    assert re.search(message, text), text
    assert len(text.splitlines()) == 1
    (project / "plan.json").write_text(json.dumps(plan))
    capsys.readouterr()
    code = orchestrator.cli(["run", "plan.json", "--yes"])
    assert (code, capsys.readouterr().err.strip()) == (2, f"error: {text}"), "the same message as the CLI"
    q = open_queue(project)
    assert (q.list_jobs(), q.get_stats()["total"]) == ([], 0)
    assert not q.get_flag(f"coordinator@{q.cfg.host}")


def test_a_bad_plan_is_a_tool_error_of_the_server_with_the_message_of_the_program(client, project):
    plan, message = BAD_PLANS[0]
    c = client()
    text = c.text("submit_job", plan, error=True)
    assert re.search(message, text), text
    assert len(text.splitlines()) == 1
    (project / "plan.json").write_text(json.dumps(plan))
    cli = subprocess.run([sys.executable, str(ORCH), "run", "plan.json", "--yes"], cwd=project, capture_output=True,
                         text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert cli.returncode == 2 and cli.stderr.strip() == f"error: {text}", "the same message as the CLI"
    q = open_queue(project)
    assert (q.list_jobs(), q.get_stats()["total"]) == ([], 0)
    assert not q.get_flag(f"coordinator@{q.cfg.host}")


@pytest.mark.parametrize("arguments, message", [
    ({"start_workers": "yes"}, "start_workers: expected true or false"),
    ({"workers": 0}, "workers: expected an integer >= 1"),
    ({"workers": True}, "workers: expected an integer >= 1"),
])
def test_bad_submit_options_queue_nothing(client, project, arguments, message):
    text = client().text("submit_job", {"description": "d", "tasks": [{"prompt": "x"}], **arguments}, error=True)
    assert text.startswith(message), text
    assert open_queue(project).get_stats()["total"] == 0


def test_a_job_runs_end_to_end_through_the_tools(client, project):
    c = client()
    c.initialize()
    text = c.text("submit_job", {"description": "Docs", "context": "Markdown.", "tasks": [
        {"id": "intro", "prompt": fake("write", "docs/intro.md", content="# Intro\n"), "expected_outputs": ["docs/intro.md"]},
        {"id": "usage", "prompt": fake("write", "docs/usage.md", content="# Usage\n"), "expected_outputs": ["docs/usage.md"]},
        {"id": "index", "prompt": "Link the pages", "depends_on": ["intro", "usage"], "priority": 1}]})
    job_id = JOB_RE.search(text).group(0)
    assert "Workers: started a pool of 2" in text, text
    synthesis = c.text("wait_job", {"job_id": job_id, "timeout_seconds": 120}, timeout=180)
    assert synthesis.startswith(f"# Docs ({job_id})") and "3 completed" in synthesis, synthesis
    assert "`docs/intro.md`" in synthesis and "wall time" in synthesis
    assert (project / "docs" / "usage.md").read_text() == "# Usage\n"

    status = c.text("job_status", {"job_id": job_id})
    assert status.startswith(f"Job `{job_id}` — Docs") and "3/3 done" in status and "Finished" in status
    assert c.text("wait_job", {"job_id": job_id, "timeout_seconds": 0}) == synthesis, "the same synthesis again"
    listed = c.text("list_jobs")
    assert f"`{job_id}` — Docs — 3/3 done" in listed
    first = open_queue(project).list_tasks(job_id=job_id, order="asc")[0]
    shown = c.text("show_task", {"task_id": first.id})
    assert shown.startswith(f"Task #{first.id}: completed") and job_id in shown and "History:" in shown
    # The same task either way ("Created ... (0.7s ago)" moves on between the two calls).
    assert ago(c.text("show_task", {"task_id": f"#{first.id}"})) == ago(shown)
    workers = c.text("worker_status")
    assert workers.startswith("Pool running") and "3 completed" in workers
    assert c.text("start_workers", {"count": 3}).startswith("Pool running")
    wait_until(lambda: c.text("worker_status").count("\n- ") == 3, what="a pool of 3")
    assert "Pool stopped" in c.text("stop_workers", {"timeout_seconds": 60}, timeout=90)
    assert "No pool running" in c.text("worker_status")
    assert "No pool was running" in c.text("stop_workers")
    assert c.close() == 0
    for line in c.raw_out:
        json.loads(line)  # stdout carried the protocol only, although workers were started


def test_wait_job_returns_progress_on_timeout_and_cancels_nothing(client, project, tmp_path):
    c = client()
    go = tmp_path / "go"
    text = c.text("submit_job", {"description": "slow", "tasks": [
        {"id": "slow", "prompt": "\n".join(["slow", fake("wait_for_file", str(go), timeout=120)])},
        {"id": "quick", "prompt": "quick"}]})
    job_id = JOB_RE.search(text).group(0)
    progress = c.text("wait_job", {"job_id": job_id, "timeout_seconds": 1.5}, meta={"progressToken": "tok"})
    assert progress.startswith(f"Job `{job_id}` is still running after waiting")
    assert "still running; call wait_job again" in progress.lower() and "nothing was cancelled" in progress
    assert re.search(r"#\d+ (pending|running)", progress)
    notes = [n for n in c.notifications if n["method"] == "notifications/progress"]
    assert notes and all(n["params"]["progressToken"] == "tok" and n["params"]["total"] == 2 for n in notes)
    values = [n["params"]["progress"] for n in notes]
    assert values == sorted(set(values)), "progress only increases"
    slow = open_queue(project).list_tasks(job_id=job_id, order="asc")[0]
    assert slow.status in ("pending", "in_progress") and not slow.cancel_requested
    assert "still running" in c.text("wait_job", {"job_id": job_id, "timeout_seconds": 0})
    go.touch()
    synthesis = c.text("wait_job", {"job_id": job_id, "timeout_seconds": 600}, timeout=180)
    assert "2 completed" in synthesis


def test_requests_are_answered_while_wait_job_blocks_and_a_cancelled_wait_is_not_answered(client, project, tmp_path):
    c = client()
    go = tmp_path / "go"
    text = c.text("submit_job", {"description": "blocked", "tasks": [
        {"prompt": "\n".join(["blocked", fake("wait_for_file", str(go), timeout=300)])}]})
    job_id = JOB_RE.search(text).group(0)
    c.send({"jsonrpc": "2.0", "id": "w1", "method": "tools/call",
            "params": {"name": "wait_job", "arguments": {"job_id": job_id, "timeout_seconds": 300}}})
    assert c.request("ping")["result"] == {}, "answered while wait_job blocks"
    assert job_id in c.text("job_status", {"job_id": job_id})
    c.send({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": "w1", "reason": "user"}})
    wait_until(lambda: any("wait_job ->" in line for line in c.stderr), timeout=20, what="the wait to stop")
    # A second wait is still running when the input ends: the server stops it and exits promptly.
    c.send({"jsonrpc": "2.0", "id": "w2", "method": "tools/call",
            "params": {"name": "wait_job", "arguments": {"job_id": job_id, "timeout_seconds": 300}}})
    assert c.request("ping")["result"] == {}
    assert c.close(timeout=30) == 0, "the server stops the 300 s wait when its input ends"
    rest = c.rest()
    assert "w1" not in {m.get("id") for m in rest} | set(c._pending), "a cancelled request gets no response"
    [w2] = [m for m in rest if m.get("id") == "w2"]
    assert "still running" in w2["result"]["content"][0]["text"]
    assert open_queue(project).list_tasks(job_id=job_id)[0].status in ("pending", "in_progress")


def test_a_big_job_lists_what_needs_attention_and_counts_the_rest(client, project):
    c = client()
    text = c.text("submit_job", {"description": "wide", "tasks": [{"prompt": f"piece {i}"} for i in range(45)],
                                 "start_workers": False})
    assert text.count("\n- task #") == klauss_mcp.MAX_TASK_LINES and "\n- … and 5 more (job_status lists them)" in text
    job_id = JOB_RE.search(text).group(0)
    status = c.text("job_status", {"job_id": job_id})
    assert "0/45 done · 45 pending" in status
    assert status.count("\n- #") == klauss_mcp.MAX_TASK_LINES and "… and 5 more" in status


def test_cancel_job_and_retry_failed(client, project):
    c = client()
    text = c.text("submit_job", {"description": "j", "tasks": [
        {"id": "bad", "prompt": "bad"}, {"id": "after", "prompt": "after", "depends_on": ["bad"]}],
        "start_workers": False})
    job_id = JOB_RE.search(text).group(0)
    q = open_queue(project)
    bad, after = q.list_tasks(job_id=job_id, order="asc")
    assert q.claim_task("w-test").id == bad.id
    q.fail_task(bad.id, "w-test", "it broke", retryable=False)
    assert q.get_task(after.id).status == "skipped"
    status = c.text("job_status", {"job_id": job_id})
    assert f"#{bad.id} failed: bad — it broke" in status and f"#{after.id} skipped" in status

    retried = c.text("retry_failed", {"job_id": job_id, "start_workers": False})
    assert f"2 task(s) of job `{job_id}` back to pending: #{bad.id}, #{after.id}" in retried
    assert "none started" in retried
    assert [t.status for t in q.list_tasks(job_id=job_id, order="asc")] == ["pending", "pending"]

    cancelled = c.text("cancel_job", {"job_id": job_id})
    assert f"Cancelled 2 unfinished task(s) of job `{job_id}`" in cancelled and f"#{bad.id} cancelled" in cancelled
    assert q.get_task(bad.id).status == "cancelled" and q.get_task(after.id).status in ("cancelled", "skipped")
    assert "nothing to cancel" in c.text("cancel_job", {"job_id": job_id})
    assert f"#{bad.id}" in c.text("retry_failed", {"job_id": job_id, "start_workers": False})
    assert not q.get_flag(f"coordinator@{q.cfg.host}")


def test_unknown_ids_and_bad_arguments_are_tool_errors_with_the_cli_messages(client, project):
    c = client()
    cli = subprocess.run([sys.executable, str(ORCH), "status", "job-nope"], cwd=project, capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    cli_message = cli.stderr.strip().replace("error: ", "", 1).split(" (see")[0]
    assert cli_message == "job: unknown job 'job-nope'"
    for tool in ("job_status", "wait_job", "cancel_job", "retry_failed"):
        assert c.text(tool, {"job_id": "job-nope"}, error=True) == cli_message + " (see list_jobs)"
    show = subprocess.run([sys.executable, str(ROOT / "submit_task.py"), "show", "999"], cwd=project,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert c.text("show_task", {"task_id": 999}, error=True) == show.stderr.strip() == "task 999 not found"
    assert c.text("show_task", {"task_id": "abc"}, error=True).startswith("task_id: expected a task number")
    assert c.text("job_status", {}, error=True).startswith("job_id: required")
    assert c.text("job_status", {"job_id": "x", "extra": 1}, error=True).startswith("unknown argument(s) extra")
    assert c.text("wait_job", {"job_id": "job-nope", "timeout_seconds": -1}, error=True)
    assert c.text("list_jobs", {"limit": 0}, error=True).startswith("limit: expected an integer >= 1")
    assert c.text("stop_workers", {"timeout_seconds": 0}, error=True).startswith("timeout_seconds: expected a number > 0")
    assert c.text("list_jobs") == "No jobs yet. Submit one with submit_job."


def test_wait_job_without_workers_and_auto_start_off_says_what_to_do(client, project):
    (project / ".klauss.toml").write_text("[workers]\nauto_start = false\n")
    c = client()
    text = c.text("submit_job", {"description": "d", "tasks": [{"prompt": "x"}]})
    job_id = JOB_RE.search(text).group(0)
    assert "[workers] auto_start is off" in text and "call start_workers" in text
    # Allowed an hour, the wait answers within the request's own timeout: it failed at once.
    error = c.text("wait_job", {"job_id": job_id, "timeout_seconds": 3600}, error=True)
    assert "auto_start is off" in error and "start_workers tool" in error


def test_wait_job_reports_workers_stopped_by_a_login_problem(client, project):
    c = client()
    text = c.text("submit_job", {"description": "d", "tasks": [{"prompt": fake("error", "not_logged_in")}]})
    job_id = JOB_RE.search(text).group(0)
    # Allowed an hour, the wait answers within the request's own timeout: it stopped on the error.
    error = c.text("wait_job", {"job_id": job_id, "timeout_seconds": 3600}, timeout=120, error=True)
    assert error.startswith("workers stopped by a configuration error: ") and "/login" in error and "call start_workers" in error, error
    assert open_queue(project).list_tasks(job_id=job_id)[0].status == "pending", "the task is left for later"
    assert "Configuration error" in c.text("worker_status")


def test_a_configuration_error_is_a_tool_error_and_fixing_the_file_fixes_the_next_call(client, project):
    (project / ".klauss.toml").write_text('[workers]\ncount = "many"\n')
    c = client()
    assert c.initialize()["result"]["serverInfo"]["name"] == "klauss", "the server starts anyway"
    error = c.text("list_jobs", error=True)
    assert ".klauss.toml" in error and "count" in error and len(error.splitlines()) == 1
    (project / ".klauss.toml").write_text("[workers]\ncount = 2\n")
    assert c.text("list_jobs").startswith("No jobs yet")


def test_an_unexpected_exception_in_a_tool_is_a_one_line_tool_error(monkeypatch):
    class Broken(klauss_mcp.KlaussTools):
        def tool_list_jobs(self, args, ctx):
            return {}["missing"]

    out = io.BytesIO()
    lines = [{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "list_jobs"}},
             {"jsonrpc": "2.0", "id": 2, "method": "ping"}]
    server = klauss_mcp.MCPServer(Broken(), io.BytesIO(b"".join(json.dumps(m).encode() + b"\n" for m in lines)), out)
    server.serve()
    answers = {m["id"]: m for m in map(json.loads, out.getvalue().splitlines())}
    result = answers[1]["result"]
    assert result["isError"] is True
    text = result["content"][0]["text"]
    assert text.startswith("internal error: KeyError: 'missing' (at test_mcp.py:") and len(text.splitlines()) == 1
    assert answers[2]["result"] == {}


def test_the_real_stdout_and_stdin_are_kept_for_the_protocol():
    """Anything else that writes to fd 1 (a print, a child process) lands on stderr instead, and
    nothing else can read the protocol's input from fd 0."""
    script = ("import os, subprocess, sys, mcp_server\n"
              "i, o = mcp_server.protocol_streams()\n"
              "os.write(1, b'stray write\\n'); print('stray print', flush=True)\n"
              "subprocess.run([sys.executable, '-c', 'import sys; print(\"child\"); print(repr(sys.stdin.read()))'])\n"
              "assert os.read(0, 100) == b''\n"
              "o.write(i.readline()); o.flush()\n")
    probe = subprocess.run([sys.executable, "-c", script], cwd=ROOT, input=b'{"secret": 1}\n', capture_output=True,
                           timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout == b'{"secret": 1}\n'
    for text in (b"stray write\n", b"stray print\n", b"child\n", b"''\n"):
        assert text in probe.stderr


# --- registering the server in .mcp.json ---------------------------------------------------------

def test_register_mcp_creates_merges_and_is_idempotent(tmp_path):
    proj = tmp_path / "proj"
    (proj / "klauss").mkdir(parents=True)
    path, what = orchestrator.register_mcp(proj, proj / "klauss")
    assert (path, what) == (proj / ".mcp.json", "created")
    expected = {"mcpServers": {"klauss": {"type": "stdio", "command": "python3", "args": ["klauss/klauss_mcp.py"]}}}
    assert json.loads(path.read_text()) == expected
    before = path.read_bytes()
    assert orchestrator.register_mcp(proj, proj / "klauss") == (path, "unchanged")
    assert path.read_bytes() == before

    path.write_text(json.dumps({"mcpServers": {"github": {"command": "gh-mcp"},
                                               "klauss": {"command": "python3", "args": ["old.py"], "env": {"A": "1"}}},
                                "otherKey": [1, 2]}))
    assert orchestrator.register_mcp(proj, proj / "klauss") == (path, "updated")
    data = json.loads(path.read_text())
    assert data["otherKey"] == [1, 2] and data["mcpServers"]["github"] == {"command": "gh-mcp"}
    assert data["mcpServers"]["klauss"] == {**expected["mcpServers"]["klauss"], "env": {"A": "1"}}
    assert orchestrator.register_mcp(proj, proj / "klauss")[1] == "unchanged"

    path.write_text(json.dumps({"keep": True}))
    assert orchestrator.register_mcp(proj, proj / "klauss")[1] == "updated"
    assert json.loads(path.read_text()) == {"keep": True, **expected}

    (tmp_path / "other").mkdir()
    outside, _ = orchestrator.register_mcp(tmp_path / "other", proj / "klauss")
    assert json.loads(outside.read_text())["mcpServers"]["klauss"]["args"] == [str(proj / "klauss" / "klauss_mcp.py")]
    orchestrator.register_mcp(proj, proj / "klauss", absolute=True)
    assert json.loads(path.read_text())["mcpServers"]["klauss"]["args"] == [str(proj / "klauss" / "klauss_mcp.py")]


@pytest.mark.parametrize("content, message", [
    ("{not json", "not valid JSON"),
    ('{"mcpServers": {"a": 1},}', "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"mcpServers": []}', '"mcpServers" must be an object'),
])
def test_register_mcp_refuses_a_file_it_cannot_merge_and_leaves_it_untouched(tmp_path, content, message):
    (tmp_path / ".mcp.json").write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        orchestrator.register_mcp(tmp_path, tmp_path / "klauss")
    assert str(tmp_path / ".mcp.json") in str(info.value) and "untouched" in str(info.value)
    assert (tmp_path / ".mcp.json").read_text() == content
    assert [p.name for p in tmp_path.iterdir()] == [".mcp.json"], "no temporary file left behind"


def test_register_command_and_the_registered_entry_runs(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    out = subprocess.run([sys.executable, str(SERVER), "register", "--project", str(proj)], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert out.returncode == 0 and out.stdout.strip() == f"created: {proj / '.mcp.json'}", out.stderr
    entry = json.loads((proj / ".mcp.json").read_text())["mcpServers"]["klauss"]
    if not shutil.which(entry["command"]):
        pytest.skip(f"{entry['command']} is not on PATH")
    c = McpClient(proj, argv=[entry["command"], *entry["args"]])
    try:
        assert c.initialize()["result"]["serverInfo"]["name"] == "klauss"
    finally:
        assert c.close() == 0
    (proj / ".mcp.json").write_text("{oops")
    bad = subprocess.run([sys.executable, str(SERVER), "register", "--project", str(proj)], capture_output=True,
                         text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "not valid JSON" in bad.stderr
    assert (proj / ".mcp.json").read_text() == "{oops"


# --- the real Claude Code CLI --------------------------------------------------------------------

PLAN = {"description": "Greetings via MCP", "context": "Python 3.9.", "start_workers": False, "tasks": [
    {"id": "greet", "prompt": "Create greet.py", "expected_outputs": ["greet.py"], "priority": 5},
    {"id": "tests", "prompt": "Write test_greet.py", "depends_on": ["greet"]}]}


def _run_real(real_claude, project, tmp_path, args):
    from tests import real_cli
    from tests.messages_server import MessagesServer, text, tool_use

    with MessagesServer(script=[tool_use("mcp__klauss__submit_job", PLAN, text="Delegating."),
                                text("Queued the job.")]) as srv:
        env = real_cli.real_claude_env(srv.url, tmp_path / "home")
        run = real_cli.run_real_claude(real_claude, "Split this job with Klauss.", project, env,
                                       args=[*args, "--allowedTools", "mcp__klauss__submit_job"], timeout=180)
        main = srv.main_requests
    return run, main


def _check_real_run(run, main, project):
    assert run.returncode == 0, run
    init = run.of_type("system", "init")[0]
    assert {"name": "klauss", "status": "connected"} in init["mcp_servers"], init["mcp_servers"]
    assert "mcp__klauss__submit_job" in init["tools"] and "mcp__klauss__wait_job" in init["tools"]
    results = [block for e in run.of_type("user") for block in e["message"]["content"]
               if isinstance(block, dict) and block.get("type") == "tool_result"]
    assert len(results) == 1 and not results[0].get("is_error"), results
    content = results[0]["content"]
    result_text = content if isinstance(content, str) else "".join(b.get("text", "") for b in content)
    job_id = JOB_RE.search(result_text).group(0)
    assert run.result["subtype"] == "success" and not run.result["is_error"] and run.result["result"] == "Queued the job."
    assert not run.result.get("permission_denials")
    assert job_id in json.dumps(main[1]["body"]["messages"][-1]), "the model got the job id back"
    assert "mcp__klauss__submit_job" in {t["name"] for t in main[0]["body"]["tools"]}

    q = open_queue(project)
    job = q.get_job(job_id)
    assert job["description"] == "Greetings via MCP" and job["orchestrator_id"] == "mcp"
    assert job["metadata"]["context"] == "Python 3.9."
    greet, tests = q.list_tasks(job_id=job_id, order="asc")
    assert (greet.prompt, greet.priority, greet.expected_outputs) == ("Create greet.py", 5, ["greet.py"])
    assert tests.depends_on == [greet.id] and {greet.status, tests.status} == {"pending"}
    assert not q.get_flag(f"coordinator@{q.cfg.host}"), "start_workers: false"
    return job_id


def test_real_claude_code_submits_a_job_through_mcp_config(real_claude, project, tmp_path):
    trace = tmp_path / "trace.jsonl"
    mcp = {"mcpServers": {"klauss": {"type": "stdio", "command": sys.executable,
                                     "args": [str(SERVER), "--trace", str(trace)]}}}
    run, main = _run_real(real_claude, project, tmp_path,
                          ["--mcp-config", json.dumps(mcp), "--strict-mcp-config"])
    job_id = _check_real_run(run, main, project)
    messages = [json.loads(line) for line in trace.read_text().splitlines()]
    incoming = [m["msg"].get("method") for m in messages if m["dir"] == "in"]
    # 2.1.329 first probes with server/discover (answered -32601); 2.1.197 does not.
    if incoming[0] == "server/discover":
        answer = next(m["msg"] for m in messages if m["dir"] == "out")
        assert answer["error"]["code"] == -32601
        incoming = incoming[1:]
    assert incoming[:3] == ["initialize", "notifications/initialized", "tools/list"], incoming
    assert [m for m in incoming[3:] if m != "ping"] == ["tools/call"], incoming
    call = [m["msg"] for m in messages if m["dir"] == "in" and m["msg"].get("method") == "tools/call"][0]
    assert call["params"]["name"] == "submit_job" and call["params"]["arguments"] == PLAN
    answers = [m["msg"] for m in messages if m["dir"] == "out"]
    assert job_id in answers[-1]["result"]["content"][0]["text"] and answers[-1]["result"]["isError"] is False
    init = next(m["msg"] for m in messages if m["dir"] == "in" and m["msg"].get("method") == "initialize")
    assert init["params"]["clientInfo"]["name"] == "claude-code"
    assert init["params"]["protocolVersion"] in mcp_server.PROTOCOL_VERSIONS


def test_real_claude_code_finds_the_server_registered_in_mcp_json(real_claude, project, tmp_path):
    """What `install-claude` writes: klauss/ inside the project, python3 klauss/klauss_mcp.py."""
    if not shutil.which("python3"):
        pytest.skip("python3 is not on PATH")
    klauss = project / "klauss"
    klauss.mkdir()
    for source in ROOT.glob("*.py"):
        shutil.copy(source, klauss / source.name)
    assert orchestrator.register_mcp(project, klauss)[1] == "created"
    run, main = _run_real(real_claude, project, tmp_path, [])
    _check_real_run(run, main, project)


def test_real_claude_code_delegates_and_waits_for_the_synthesis(real_claude, project, tmp_path):
    """The whole loop: the model submits (a fake-claude pool starts), then waits and gets the synthesis."""
    from tests import real_cli
    from tests.messages_server import MessagesServer, text, tool_use

    plan = {"description": "Notes", "tasks": [
        {"id": "a", "prompt": fake("write", "notes/a.md", content="A\n"), "expected_outputs": ["notes/a.md"]},
        {"id": "b", "prompt": fake("write", "notes/b.md", content="B\n"), "expected_outputs": ["notes/b.md"]}]}

    def wait_for_the_job(request):
        job_id = JOB_RE.search(json.dumps(request["body"]["messages"][-1])).group(0)
        return tool_use("mcp__klauss__wait_job", {"job_id": job_id, "timeout_seconds": 120})

    mcp = {"mcpServers": {"klauss": {"type": "stdio", "command": sys.executable, "args": [str(SERVER)]}}}
    with MessagesServer(script=[tool_use("mcp__klauss__submit_job", plan), wait_for_the_job,
                                text("Both notes written.")]) as srv:
        env = real_cli.real_claude_env(srv.url, tmp_path / "home")
        run = real_cli.run_real_claude(real_claude, "Write the notes in parallel.", project, env, timeout=240, args=[
            "--mcp-config", json.dumps(mcp), "--strict-mcp-config",
            "--allowedTools", "mcp__klauss__submit_job", "mcp__klauss__wait_job"])
    assert run.returncode == 0 and run.result["result"] == "Both notes written.", run
    results = [block for e in run.of_type("user") for block in e["message"]["content"]
               if isinstance(block, dict) and block.get("type") == "tool_result"]
    assert len(results) == 2 and not any(r.get("is_error") for r in results), results
    synthesis = results[1]["content"][0]["text"]
    job_id = JOB_RE.search(results[0]["content"][0]["text"]).group(0)
    assert synthesis.startswith(f"# Notes ({job_id})") and "2 completed" in synthesis, synthesis
    assert (project / "notes" / "a.md").read_text() == "A\n" and (project / "notes" / "b.md").read_text() == "B\n"
