"""The worker with the REAL Claude Code CLI (npm `@anthropic-ai/claude-code`), pointed by
ANTHROPIC_BASE_URL at our scripted Messages-API server on 127.0.0.1. Skipped, saying why, only
where npm is missing or the install fails."""

import json
import subprocess
import sys
from pathlib import Path

import claude_queue
import config
import messages_server as ms
import real_cli

ROOT = Path(__file__).resolve().parent.parent
WORKER = ROOT / "claude_worker.py"


def run_worker_against(real_claude, tmp_path, script, **task):
    """Queue one task, run one worker until idle with the real CLI, return (task, worker, server)."""
    root = tmp_path / "proj"
    root.mkdir()
    (root / ".klauss.toml").write_text(f"[claude]\ncommand = {json.dumps(str(real_claude))}\n"
                                       "[queue]\nretry_backoff_seconds = 0\n")
    cfg = config.load_config(cwd=root, env={})
    queue = claude_queue.TaskQueue(cfg=cfg)
    tid = queue.add_task(task.pop("prompt", "Write out.txt saying hello."), **task)
    script = [s(root) if callable(s) else s for s in script]
    with ms.MessagesServer(script=script) as server:
        env = real_cli.real_claude_env(server.url, tmp_path / "home")
        out = subprocess.run([sys.executable, str(WORKER), "w1", "--exit-when-idle"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=180, stdin=subprocess.DEVNULL)
    return root, queue, queue.get_task(tid), out, server


def test_real_cli_writes_the_file_and_the_worker_records_the_session(real_claude, tmp_path):
    write = lambda root: ms.tool_use("Write", {"file_path": str(root / "out.txt"), "content": "hello\n"})  # noqa: E731
    root, queue, task, out, server = run_worker_against(
        real_claude, tmp_path, [write, ms.text("Wrote out.txt.")], expected_outputs=["out.txt"])
    assert out.returncode == 0, out.stdout + out.stderr
    assert task.status == "completed", task.error
    assert (root / "out.txt").read_text() == "hello\n"
    o = task.outcome
    assert len(o["session_id"]) == 36 and o["total_cost_usd"] > 0 and task.cost_usd == o["total_cost_usd"]
    assert o["outputs_verified"] == ["out.txt"] and o["num_turns"] == 2
    assert task.result == "Wrote out.txt."
    # The prompt reached the model through stdin, with the worker's framing around it.
    first = server.main_requests[0]["body"]["messages"][0]
    text = first["content"] if isinstance(first["content"], str) else " ".join(
        b.get("text", "") for b in first["content"] if isinstance(b, dict))
    assert f"task #{task.id}" in text and "Write out.txt saying hello." in text


def test_real_cli_401_is_a_configuration_error_and_the_task_is_untouched(real_claude, tmp_path):
    root, queue, task, out, _ = run_worker_against(real_claude, tmp_path, [ms.error(401)])
    assert out.returncode == 3
    assert "Invalid API key" in out.stderr and "/login" in out.stderr
    assert task.status == "pending" and task.attempts_used == 0
    assert queue.get_flag(f"config_error@{queue.cfg.host}") is not None  # this host's


def test_real_cli_429_is_retried_later(real_claude, tmp_path):
    root, queue, task, out, _ = run_worker_against(real_claude, tmp_path, [ms.error(429), ms.error(429)],
                                                   max_attempts=2)
    assert out.returncode == 0, out.stderr
    assert task.status == "failed" and task.attempts_used == 2
    assert "rate limited" in task.error and "429" in task.error
    assert not queue.list_flags("paused"), "a plain 429 is not a usage limit"
