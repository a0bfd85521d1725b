"""Every command survives its output being closed (`manage.sh status | head -1`) and exits
quietly: no traceback, no "Exception ignored", the exit code of a command that did its work.

The reader is gone before the command starts (the read end of its pipe is closed first), so
each write fails, every time: what `head` does at a random moment, made certain."""

import json
import os
import subprocess
import sys

import pytest

import orchestrator
from conftest import ROOT, install_fake_claude

MANAGE = str(ROOT / "manage.sh")


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "proj"
    root.mkdir()
    install_fake_claude(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    env.update(PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", KLAUSS_PYTHON=sys.executable, KLAUSS_AUTO_START="0")
    monkeypatch.chdir(root)
    orch = orchestrator.ClaudeOrchestrator("t")
    job, ids = orch.submit_plan("a job", [{"prompt": f"task {i}"} for i in range(30)])
    orch.cancel_job(job)  # finished: `wait` and `collect` print its synthesis at once
    orch.queue.add_task("one more")
    return root, env, job


def closed_output(root, env, argv, stdin=None, both=False):
    """Run argv with its stdout (and with `both`, its stderr) a pipe nobody reads."""
    read, write = os.pipe()
    os.close(read)
    try:
        out = subprocess.run(argv, cwd=str(root), env=env, stdout=write, stderr=write if both else subprocess.PIPE,
                             input=stdin, timeout=120)
    finally:
        os.close(write)
    return out.returncode, (out.stderr or b"").decode()


def commands(job):
    return [
        ["help"], ["status"], ["status", "--json"], ["workers"], ["ps"], ["doctor"], ["list"], ["list", "--json"],
        ["jobs"], ["jobs", "--json"], ["stats"], ["show", "1"], ["show", "1", "--json"],
        ["dashboard", "--once"], ["wait", job], ["submit", "queued while nobody reads"], ["logs", "task", "1"],
    ]


def test_every_command_exits_quietly_when_its_reader_is_gone(project):
    root, env, job = project
    for args in commands(job):
        code, err = closed_output(root, env, [MANAGE, *args])
        assert "Traceback" not in err and "Exception ignored" not in err and "Error" not in err, (args, err)
        assert code == 0 or (args[0] == "doctor" and code == 1), (args, code, err)
    code, err = closed_output(root, env, [sys.executable, str(ROOT / "orchestrator.py"), "collect", job])
    assert code == 0 and err == "", err
    assert json.loads(subprocess.run([MANAGE, "jobs", "--json"], cwd=str(root), env=env, capture_output=True,
                                     text=True).stdout)[0]["id"] == job


def test_errors_into_a_closed_pipe_end_quietly_too(project):
    """`2>&1 | head`: the error message itself has nowhere to go; still no crash (exit code 1 or 2 as
    documented, never Python's 120 for a failed final flush)."""
    root, env, job = project
    for args, expected in ((["show", "999"], 1), (["list", "--status", "bogus"], 2), (["wait", "job-nope"], 1),
                           (["status"], 0), (["jobs"], 0)):
        code, _ = closed_output(root, env, [MANAGE, *args], both=True)
        assert code == expected, (args, code)


def test_the_mcp_server_exits_quietly_when_its_client_stops_reading(project):
    root, env, _ = project
    request = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                          "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                                     "clientInfo": {"name": "t", "version": "1"}}}) + "\n"
    code, err = closed_output(root, env, [MANAGE, "mcp"], stdin=request.encode())
    assert code == 0 and "Traceback" not in err and "Exception ignored" not in err, err
