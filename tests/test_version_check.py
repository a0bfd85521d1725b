"""A worker checks `claude --version` once per executable, not at every start (issue 14): the
real CLI's check costs half a second of node startup, and a pool starts its workers often. A
success is remembered for that very file; a replaced one is checked again; a failure stops the
pool as it always did, and is never remembered."""

import json
import os

import claude_cli
from conftest import fake, install_fake_claude


def versions(log):
    """How many times the fake CLI was asked `--version`."""
    path = log / "invocations.jsonl"
    if not path.exists():
        return 0
    return sum(json.loads(line)["argv"] == ["--version"] for line in path.read_text().splitlines())


def logged(project, tmp_path):
    log = tmp_path / "fakelog"
    project.env["FAKE_CLAUDE_LOG"] = str(log)
    return log


def test_a_pool_of_three_checks_the_cli_once_and_its_next_start_not_at_all(make_project, tmp_path):
    project = make_project()
    log = logged(project, tmp_path)
    assert project.manage("start", "3").returncode == 0
    project.wait_pool_up(3)
    tid = project.queue().add_task(fake("text", "done"))
    project.wait_status(tid, "completed")
    assert versions(log) == 1
    assert project.manage("stop").returncode == 0
    project.wait_no_processes()
    assert project.manage("start", "2").returncode == 0
    project.wait_pool_up(2)
    assert versions(log) == 1, "the same executable is not checked again"
    assert "2.1.197 (Claude Code)" in (project.logs / "worker_2.log").read_text(), "the version is still logged"


def test_a_replaced_or_rewritten_executable_is_checked_again(make_project, tmp_path):
    project = make_project()
    log = logged(project, tmp_path)
    claude = project.bin / "claude"
    assert project.manage("start", "1").returncode == 0
    project.wait_pool_up(1)
    assert versions(log) == 1
    project.manage("stop")
    project.wait_no_processes()

    # A new file in its place (a new inode), as an upgrade installs it.
    fresh = tmp_path / "fresh"
    install_fake_claude(fresh)
    os.replace(fresh / "claude", claude)
    assert project.manage("start", "1").returncode == 0
    project.wait_pool_up(1)
    assert versions(log) == 2
    project.manage("stop")
    project.wait_no_processes()

    # The same file rewritten in place.
    claude.write_text(claude.read_text() + "# edited\n")
    assert project.manage("start", "1").returncode == 0
    project.wait_pool_up(1)
    assert versions(log) == 3
    project.manage("stop")
    project.wait_no_processes()


def test_a_broken_cli_still_stops_the_pool_with_its_message_and_is_never_remembered(make_project, tmp_path):
    project = make_project()
    log = logged(project, tmp_path)
    claude = project.bin / "claude"
    good = claude.read_text()
    assert project.manage("start", "1").returncode == 0
    project.wait_pool_up(1)
    project.manage("stop")
    project.wait_no_processes()

    tries = tmp_path / "tries"
    claude.write_text(f"#!/bin/sh\necho x >> '{tries}'\necho 'node: bad installation' >&2\nexit 1\n")
    for _ in range(2):
        out = project.manage("start", "2")
        assert out.returncode == 2, out.stdout + out.stderr
        assert f"configuration error: '{claude} --version' failed with exit code 1: node: bad installation" \
            in out.stderr, out.stderr
        project.wait_no_processes()
        assert project.flag() is None
    assert len(tries.read_text().splitlines()) >= 2, "each start checked the broken CLI again"

    claude.write_text(good)
    assert project.manage("start", "1").returncode == 0
    project.wait_pool_up(1)
    assert versions(log) == 2


def test_a_forgotten_or_damaged_record_is_checked_again(tmp_path, monkeypatch):
    state = tmp_path / "state"
    state.mkdir()
    install_fake_claude(tmp_path / "bin")
    exe = str(tmp_path / "bin" / "claude")
    log = tmp_path / "fakelog"
    monkeypatch.setenv("FAKE_CLAUDE_LOG", str(log))
    assert claude_cli.check_runnable_once(exe, state) == "2.1.197 (Claude Code)"
    assert claude_cli.check_runnable_once(exe, state) == "2.1.197 (Claude Code)"
    assert versions(log) == 1
    claude_cli.forget_checked(state)  # as a worker does after a claude that died without a result
    claude_cli.check_runnable_once(exe, state)
    assert versions(log) == 2
    (state / claude_cli.CHECKED_NAME).write_text('{"identity": [')  # cut short by a crash
    claude_cli.check_runnable_once(exe, state)
    assert versions(log) == 3


def test_a_read_only_state_dir_checks_every_time(tmp_path):
    install_fake_claude(tmp_path / "bin")
    exe = str(tmp_path / "bin" / "claude")
    missing = tmp_path / "no-such-dir"
    assert claude_cli.check_runnable_once(exe, missing) == "2.1.197 (Claude Code)"
    assert not missing.exists()
