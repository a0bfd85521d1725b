"""A run whose tool calls were denied does not look clean: with no expected outputs to miss it still
completes, but it is marked everywhere it is listed ("completed, 1 denied"), counted in its job's
line, makes `run` exit 1, and the advice names only settings that would allow the tool under the
current permission mode. The denials come from the REAL CLI (tests/real_cli.py against the scripted
Messages API of tests/messages_server.py); the `run` exit code is checked with the fake."""

import json
import subprocess
import sys
from pathlib import Path

import claude_cli
import claude_queue
import config
import klauss_mcp
import messages_server as ms
import real_cli
from conftest import fake

ROOT = Path(__file__).resolve().parent.parent


def run_real(real_claude, tmp_path, script, permission_mode):
    """One job of one task (no expected outputs), run by one worker with the real CLI."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / ".klauss.toml").write_text(f"[claude]\ncommand = {json.dumps(str(real_claude))}\n"
                                       f"permission_mode = {json.dumps(permission_mode)}\n"
                                       "[queue]\nretry_backoff_seconds = 0\n")
    queue = claude_queue.TaskQueue(cfg=config.load_config(cwd=root, env={}))
    job, [tid] = queue.submit_job("denied job", [{"prompt": "Do the thing."}])
    script = [s(root) if callable(s) else s for s in script]
    with ms.MessagesServer(script=script) as server:
        env = real_cli.real_claude_env(server.url, tmp_path / "home")
        out = subprocess.run([sys.executable, str(ROOT / "claude_worker.py"), "w1", "--exit-when-idle"], cwd=root,
                             env=env, capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stdout + out.stderr
    return root, queue, job, queue.get_task(tid), env


def cli(root, env, script, *args):
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=root, env={**env, "COLUMNS": "200"},
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def test_a_write_the_real_cli_denied_is_marked_everywhere(real_claude, tmp_path):
    write = lambda root: ms.tool_use("Write", {"file_path": str(root / "out.txt"), "content": "hi\n"})  # noqa: E731
    root, queue, job, task, env = run_real(real_claude, tmp_path, [write, ms.text("Done.")], "dontAsk")
    assert not (root / "out.txt").exists()
    assert task.status == "completed" and task.denied == 1, task.error
    assert [d["tool_name"] for d in task.outcome["permission_denials"]] == ["Write"]
    [warning] = task.outcome["warnings"]
    assert 'allowed_tools = ["Write"]' in warning and 'permission_mode = "acceptEdits"' in warning

    listed = cli(root, env, "submit_task.py", "list").stdout
    assert f"#{task.id}  completed, 1 denied" in listed
    shown = cli(root, env, "submit_task.py", "show", str(task.id)).stdout
    assert shown.startswith(f"Task #{task.id}: completed, 1 denied")
    jobs = cli(root, env, "submit_task.py", "jobs").stdout
    assert "1/1, 1 with denials" in jobs
    stats = json.loads(cli(root, env, "submit_task.py", "stats", "--job", job, "--json").stdout)
    assert stats["denied"] == 1 and stats["completed"] == 1
    board = cli(root, env, "claude_dashboard.py", "--once").stdout
    assert "completed, 1 denied" in board and "1 with denials" in board
    collected = json.loads(cli(root, env, "orchestrator.py", "collect", job, "--json").stdout)
    assert collected[str(task.id)]["denied"] == ["Write"]
    synthesis = cli(root, env, "orchestrator.py", "collect", job).stdout
    assert "completed, 1 denied" in synthesis and "Needs attention" in synthesis
    tools = klauss_mcp.KlaussTools(db_path=str(queue.db_path))
    assert f"#{task.id} completed, 1 denied" in tools.tool_job_status({"job_id": job}, klauss_mcp.CallContext())
    assert "1/1 done, 1 with denials" in tools.tool_list_jobs({}, klauss_mcp.CallContext())


def test_a_denied_bash_call_under_accept_edits_is_not_told_to_set_accept_edits(real_claude, tmp_path):
    # Not a plain file command (acceptEdits lets touch, mkdir and the like run in the working dir).
    bash = ms.tool_use("Bash", {"command": "python3 -c \"open('made-by-bash.txt', 'w')\"",
                                "description": "make a file"})
    root, queue, job, task, env = run_real(real_claude, tmp_path, [bash, ms.text("Done.")], "acceptEdits")
    assert not (root / "made-by-bash.txt").exists()
    assert task.status == "completed" and task.denied == 1
    [warning] = task.outcome["warnings"]
    assert 'allowed_tools = ["Bash"]' in warning
    assert "acceptEdits" not in warning, "acceptEdits is already set and does not allow Bash"


def test_the_advice_fits_the_mode():
    def fix(tools, mode, disallowed=()):
        return claude_cli.denial_summary([{"tool_name": t} for t in tools], mode, disallowed)[1]
    assert "acceptEdits" in fix(["Write"], "dontAsk") and "acceptEdits" in fix(["Edit"], "manual")
    assert 'permission_mode = "acceptEdits"' not in fix(["Bash"], "dontAsk"), "acceptEdits never allows Bash"
    assert 'permission_mode = "acceptEdits"' not in fix(["Write", "Bash"], "dontAsk")
    assert "outside" in fix(["Write"], "acceptEdits")
    assert "remove Bash from [claude] disallowed_tools" in fix(["Bash"], "acceptEdits", ["Bash"])
    assert "allowed_tools = " not in fix(["Bash"], "acceptEdits", ["Bash"]), "a disallowed tool wins over any allow"
    assert "allowed_tools = " in fix(["Bash"], "acceptEdits", ["Bash(rm:*)"])
    assert '"plan"' in fix(["Write"], "plan")


def test_run_exits_1_when_a_completed_task_had_tools_denied(pool_project):
    plan = pool_project / "plan.json"
    plan.write_text(json.dumps({"description": "denied", "tasks": [
        {"id": "greet", "prompt": "\n".join([fake("deny", "Write", path="x.txt", content="x"), fake("text", "ok")])},
    ]}))
    out = subprocess.run([sys.executable, str(ROOT / "orchestrator.py"), "run", str(plan), "--yes"], cwd=pool_project,
                         capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "1 completed (1 with denied tool calls)" in out.stdout and "Needs attention" in out.stdout
