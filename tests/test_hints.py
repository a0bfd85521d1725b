"""Printed commands are built from where Klauss lies relative to the reader's directory."""

import os
import subprocess

import hints
from conftest import copy_klauss


def test_manage_path_from_project_root_inside_klauss_and_elsewhere(tmp_path):
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    klauss = os.path.dirname(hints.__file__)
    assert hints.manage_path(cwd=klauss) == "./manage.sh"
    assert hints.manage_path(cwd=os.path.dirname(klauss)) == os.path.join(os.path.basename(klauss), "manage.sh")
    assert hints.manage_path(cwd=str(project / "src")) == os.path.join(klauss, "manage.sh")


def test_printed_command_runs_from_a_project_root(tmp_path):
    project = tmp_path / "my project"
    project.mkdir()
    copy_klauss(project / "klauss")
    out = subprocess.run(
        ["python3", "-c", "import sys; sys.path.insert(0, 'klauss'); import hints; print(hints.command('help'))"],
        cwd=str(project), capture_output=True, text=True, check=True).stdout.strip()
    assert out == "klauss/manage.sh help"
    ran = subprocess.run(["bash", "-c", out], cwd=str(project), capture_output=True, text=True)
    assert ran.returncode == 0 and "usage: manage.sh" in ran.stdout


def test_arguments_are_quoted_for_the_shell(tmp_path):
    assert hints.command("submit", "two words", cwd=os.path.dirname(hints.__file__)) == "./manage.sh submit 'two words'"
