"""ORCHESTRATOR_GUIDE.md and the Claude Code integration: every command and snippet in the guide
runs, in a fresh project with Klauss as `klauss/`, against a fake `claude` that writes whatever a
task's expected outputs ask for; `install-claude` installs idempotently without clobbering."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import orchestrator
from conftest import copy_klauss, install_writer_claude

ROOT = Path(__file__).resolve().parent.parent
GUIDE = ROOT / "ORCHESTRATOR_GUIDE.md"

def blocks(text, lang):
    return re.findall(rf"^```{lang}\n(.*?)^```", text, re.S | re.M)


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    copy_klauss(root / "klauss")
    (root / ".klauss.toml").write_text("[workers]\nheartbeat_seconds = 0.5\nshutdown_grace_seconds = 1\n"
                                       "[queue]\nretry_backoff_seconds = 0\n")
    bindir = tmp_path / "bin"
    install_writer_claude(bindir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KLAUSS_")}
    env["PATH"] = f"{bindir}:{env['PATH']}"
    yield root, env
    subprocess.run([str(root / "klauss" / "manage.sh"), "kill"], cwd=root, env=env, capture_output=True, timeout=60)


def bash(root, env, script, timeout=300):
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=root, env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_every_command_and_snippet_in_the_guide_runs(project):
    root, env = project
    text = GUIDE.read_text()
    shell, python = blocks(text, "bash"), blocks(text, "python")
    assert len(shell) == 3 and len(python) == 1, "the test below walks the guide's blocks in order"

    plan_block, follow_block, workers_block = shell
    out = bash(root, env, plan_block)
    assert out.returncode == 0, out.stderr
    synthesis = (root / "synthesis.md").read_text()
    assert "3 completed" in synthesis
    for f in ("greet.py", "farewell.py", "tests/test_greetings.py"):
        assert (root / f).exists() and f in synthesis

    out = bash(root, env, follow_block)
    assert out.returncode == 0, out.stderr
    assert "3/3 done" in out.stdout

    snippet = root / "snippet.py"
    snippet.write_text(python[0])
    out = subprocess.run([sys.executable, str(snippet)], cwd=root, env=dict(env, PYTHONPATH="klauss"),
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    assert "3 completed" in out.stdout and (root / "docs" / "index.md").exists()

    subprocess.run([str(root / "klauss" / "manage.sh"), "stop"], cwd=root, env=env, capture_output=True, timeout=120)
    out = bash(root, env, workers_block)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "worker" in out.stdout.lower()


def test_plan_examples_in_the_guide_and_skill_are_valid(tmp_path):
    skill = (ROOT / ".claude" / "skills" / "klauss" / "SKILL.md").read_text()
    for block in blocks(skill, "json"):
        path = tmp_path / "plan.json"
        path.write_text(block)
        plan, entries = orchestrator.load_plan(str(path))
        assert plan["description"] and entries
    assert skill.startswith("---\nname: klauss\ndescription: ")


def test_install_claude_on_a_fresh_project_and_twice(project):
    root, env = project
    manage = root / "klauss" / "manage.sh"
    (root / "src").mkdir()
    out = subprocess.run([str(manage), "install-claude"], cwd=root / "src", env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    skill = root / ".claude" / "skills" / "klauss" / "SKILL.md"
    text = skill.read_text()
    assert "python3 klauss/orchestrator.py run plan.json --yes" in text and "{KLAUSS}" not in text
    claude_md = (root / "CLAUDE.md").read_text()
    assert claude_md.count(orchestrator.CLAUDE_MD_BEGIN) == 1 and "klauss/ORCHESTRATOR_GUIDE.md" in claude_md
    assert "mcp__klauss__submit_job" in claude_md
    mcp = json.loads((root / ".mcp.json").read_text())
    assert mcp["mcpServers"]["klauss"]["args"] == ["klauss/klauss_mcp.py"]

    again = subprocess.run([str(manage), "install-claude"], cwd=root, env=env, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and "unchanged" in again.stdout and "created" not in again.stdout
    assert skill.read_text() == text and (root / "CLAUDE.md").read_text() == claude_md
    assert json.loads((root / ".mcp.json").read_text()) == mcp


def test_install_claude_keeps_what_the_user_wrote(tmp_path):
    root = tmp_path / "proj"
    (root / ".claude" / "skills" / "klauss").mkdir(parents=True)
    (root / "CLAUDE.md").write_text("# My project\nUse tabs.\n")
    (root / ".mcp.json").write_text('{"mcpServers": {"other": {"command": "x"}}, "mine": 1}')
    mine = root / ".claude" / "skills" / "klauss" / "SKILL.md"
    mine.write_text("my own skill\n")
    done = dict((str(p.relative_to(root)), w) for p, w in orchestrator.install_claude(root, orchestrator.HERE))
    assert done[".claude/skills/klauss/SKILL.md"].startswith("kept")
    assert mine.read_text() == "my own skill\n"
    text = (root / "CLAUDE.md").read_text()
    assert text.startswith("# My project\nUse tabs.\n") and orchestrator.CLAUDE_MD_BEGIN in text
    mcp = json.loads((root / ".mcp.json").read_text())
    assert mcp["mine"] == 1 and set(mcp["mcpServers"]) == {"other", "klauss"}
    # An older Klauss section is replaced in place, not duplicated.
    (root / "CLAUDE.md").write_text(text.replace("Parallel work", "Old heading") + "More of mine.\n")
    orchestrator.install_claude(root, orchestrator.HERE)
    text = (root / "CLAUDE.md").read_text()
    assert text.count(orchestrator.CLAUDE_MD_BEGIN) == 1 and "Old heading" not in text
    assert text.endswith("More of mine.\n")


def test_install_claude_writes_nothing_when_mcp_json_is_broken(tmp_path):
    root = tmp_path / "proj"
    root.mkdir()
    (root / ".mcp.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        orchestrator.install_claude(root, orchestrator.HERE)
    assert sorted(p.name for p in root.iterdir()) == [".mcp.json"]


def test_install_claude_refuses_klauss_own_checkout():
    with pytest.raises(ValueError, match="Klauss's own checkout"):
        orchestrator.install_claude(orchestrator.HERE, orchestrator.HERE)


def test_synthesis_json_shapes_are_serialisable(project):
    # collect --json output is what the guide tells Claude to read.
    root, env = project
    (root / "p.json").write_text(json.dumps({"description": "d", "tasks": [{"prompt": "hi"}]}))
    out = subprocess.run([sys.executable, "klauss/orchestrator.py", "run", "p.json", "--yes", "--json"], cwd=root,
                         env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    data = json.loads(out.stdout)
    [task] = data["tasks"].values()
    assert {"status", "result", "error", "cost_usd", "outputs", "session_id", "attempts"} <= set(task)
