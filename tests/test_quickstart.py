"""The README's quick start works as written on a machine whose own Python is externally managed
(PEP 668: Debian's and Ubuntu's), where `python3 -m pip install` outside a virtual environment is
refused. Here a `python3` stand-in first on PATH refuses pip the way such a Python does."""

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, copy_klauss, install_writer_claude

README = (ROOT / "README.md").read_text()

EXTERNALLY_MANAGED = f"""#!/bin/sh
# A system Python under PEP 668: pip may not install into it; everything else runs.
if [ "$1" = "-m" ] && [ "$2" = "pip" ] && [ "$3" = "install" ]; then
    echo "error: externally-managed-environment" >&2
    exit 1
fi
exec "{sys.executable}" "$@"
"""


def quick_start():
    return [block.strip() for block in re.findall(r"^```bash\n(.*?)^```", README, re.S | re.M)[:2]]


@pytest.fixture
def managed_env(tmp_path):
    bindir = tmp_path / "bin"
    install_writer_claude(bindir)
    python3 = bindir / "python3"
    python3.write_text(EXTERNALLY_MANAGED)
    python3.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLAUSS_", "VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{bindir}:{env['PATH']}"
    return env


def run(script, cwd, env, timeout=600):
    return subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def test_the_stand_in_refuses_pip_as_an_externally_managed_python_does(tmp_path, managed_env):
    out = run("python3 -m pip install -r requirements.txt", ROOT, managed_env)
    assert out.returncode == 1 and "externally-managed-environment" in out.stderr


def test_the_main_job_runs_on_an_externally_managed_python(tmp_path, managed_env):
    klauss = copy_klauss(tmp_path / "klauss")
    main_job = quick_start()[0]
    try:
        out = run(main_job, klauss, managed_env)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "4 completed" in out.stdout
    finally:
        subprocess.run([sys.executable, str(ROOT / "claude_coordinator.py"), "kill"], cwd=str(klauss),
                       env=managed_env, capture_output=True, timeout=60)


def test_the_test_command_installs_its_tools_into_a_venv(tmp_path, managed_env):
    """The README's test command, up to running pytest (running the whole suite inside the suite
    would be circular; .ci/run runs the command itself)."""
    klauss = copy_klauss(tmp_path / "klauss")
    command = quick_start()[1]
    assert command.endswith(".venv/bin/python -m pytest")
    # pip's byte-compiling of what it installs (pip's own copy in the venv too) is a third of this
    # test's CPU, and nothing the command promises: the tools run the same without it.
    managed_env = {**managed_env, "PIP_NO_COMPILE": "1"}
    out = run(command + " --version && .venv/bin/python -m ruff --version && .venv/bin/python -c \"import vermin\"",
              klauss, managed_env)
    if out.returncode != 0 and re.search(r"No matching distribution|Could not find a version|connection",
                                         out.stdout + out.stderr, re.I):
        pytest.skip("the package index is unreachable from here: " + (out.stdout + out.stderr).strip()[-300:])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "pytest" in out.stdout + out.stderr
    assert (klauss / ".venv" / "bin" / "python").exists()
    # Running it again (as the README says to re-run the tests) reuses the environment.
    out = run(command + " --version", klauss, managed_env)
    assert out.returncode == 0, out.stdout + out.stderr


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert quick_start()[1] in ci
    assert not any(line.startswith("python3 -m pip install") for line in ci)
