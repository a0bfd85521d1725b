"""Whole-codebase checks: lint, Python 3.9 compatibility, and the rules Klauss never breaks."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PY_FILES = sorted(p for p in ROOT.rglob("*.py") if not {".git", "node_modules", ".venv"} & set(p.parts))


def test_ruff_is_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_code_runs_on_python_3_9():
    out = subprocess.run([sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())", "-t=3.9-", "--no-tips", "--violations",
                          "--eval-annotations", *map(str, PY_FILES)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("pattern, why", [
    (r"shell\s*=\s*True", "prompts and paths must never pass through a shell"),
    # Spelled in pieces so this file does not match its own rule.
    (r"\b(" + "p" + "kill|kill" + "all)\b", "signal only pids our own coordinator recorded"),
])
def test_forbidden_patterns(pattern, why):
    offenders = []
    for path in [*PY_FILES, *ROOT.glob("*.sh")]:
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(pattern, line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert not offenders, f"{why}: {offenders}"


def test_runtime_modules_import_only_the_standard_library():
    allowed_local = {p.stem for p in ROOT.glob("*.py")}
    stdlib = getattr(sys, "stdlib_module_names", None)
    if stdlib is None:
        pytest.skip("needs Python 3.10+ to list the standard library")
    for path in ROOT.glob("*.py"):
        for match in re.finditer(r"^\s*(?:import|from)\s+([A-Za-z_][\w]*)", path.read_text(), re.M):
            name = match.group(1)
            # psycopg: the optional PostgreSQL driver (requirements-postgres.txt), imported lazily.
            optional = name == "psycopg" and path.name == "queue_postgres.py"
            assert name in stdlib or name in allowed_local or name == "tomli" or optional, f"{path.name} imports {name}"


def test_imports_flow_one_way():
    """Programs depend on the shared modules, never on each other (the MCP server's use of the
    orchestrator API is the one exception: it is a front end to exactly that API)."""
    shared = {"claude_queue", "config", "claude_cli", "worktrees", "task_report", "processes", "hints", "exits",
              "flags", "supervisor", "pool", "admin", "submission", "mcp_server", "cli_args", "queues",
              "states", "validation", "hosts", "queue_postgres", "integration", "gitroot", "outcome"}
    programs = {"claude_worker", "claude_coordinator", "claude_dashboard", "submit_task", "orchestrator", "klauss_mcp"}
    allowed_extra = {"klauss_mcp": {"orchestrator"}}
    for name in shared | programs:
        text = (ROOT / f"{name}.py").read_text()
        imported = set(re.findall(r"^import (\w+)", text, re.M)) & (shared | programs)
        if name in shared:
            assert imported <= shared, f"shared module {name} imports a program: {imported - shared}"
        else:
            assert imported <= shared | allowed_extra.get(name, set()), f"{name} imports {imported - shared}"


def test_shared_modules_import_no_cycle():
    """A cycle among the shared modules would hide which one owns what (and breaks partial imports)."""
    shared = {"claude_queue", "config", "claude_cli", "worktrees", "task_report", "processes", "hints", "exits",
              "flags", "supervisor", "pool", "admin", "submission", "mcp_server", "cli_args", "queues",
              "states", "validation", "hosts", "queue_postgres", "integration", "gitroot", "outcome"}
    # Imports inside functions count too: a lazy import only hides a cycle until it runs.
    graph = {name: set(re.findall(r"^\s*(?:import|from) (\w+)", (ROOT / f"{name}.py").read_text(), re.M)) & shared
             for name in shared}
    # The one sanctioned exception: TaskQueue(url) constructs the PostgreSQL backend, a subclass of
    # TaskQueue that lives in queue_postgres; claude_queue names it only inside TaskQueue.__new__.
    graph["claude_queue"].discard("queue_postgres")
    assert "import queue_postgres" in (ROOT / "claude_queue.py").read_text()
    done, path = set(), []

    def visit(name):  # depth is bounded by the handful of shared modules
        assert name not in path, f"import cycle: {' -> '.join(path + [name])}"
        if name in done:
            return
        path.append(name)
        for dep in sorted(graph[name]):
            visit(dep)
        path.pop()
        done.add(name)

    for name in sorted(shared):
        visit(name)
