"""The reproductions of ../shared/reports/faults-2026-12.md, re-run as a user would on the merged
code: only those that still reproduced (or regressed in the merge) have a test here; the rest are
covered by test_faults.py, test_security.py and the other issue-13 tests."""

import os

import pytest
from test_faults import fill, tiny_disk  # noqa: F401 (tiny_disk is a fixture)

import claude_queue
import config
from conftest import Project

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="the tests read /proc (Linux)")


# --- report #9: `manage.sh start` on a full disk printed a ~30-line traceback -----------------------

def test_coordinator_commands_on_a_full_disk_say_disk_full_in_one_line(tmp_path, tiny_disk):  # noqa: F811
    # A database that no process holds open has no -shm file; on a full disk SQLite cannot size a
    # new one and says only "disk I/O error" (SQLITE_IOERR_SHMSIZE), which is not ENOSPC.
    project = Project(tmp_path)
    with open(project.root / ".klauss.toml", "a") as fh:
        fh.write(f"[paths]\nstate_dir = \"{tiny_disk / 'state'}\"\n")
    assert project.manage("submit", "queued before the disk filled").returncode == 0
    assert not list((tiny_disk / "state").glob("*-shm"))
    filler = fill(tiny_disk)
    try:
        for command in ("start", "status", "stop", "kill"):
            out = project.manage(command)  # asserts there is no traceback
            lines = out.stderr.strip().splitlines()
            assert out.returncode == 1 and len(lines) == 1 and "disk full" in lines[0], (command, out.stderr)
            assert "free some space" in lines[0], lines
        submit = project.manage("submit", "x")
        assert submit.returncode != 0 and "disk full" in submit.stderr, submit.stderr
    finally:
        filler.unlink()
    assert project.manage("status").returncode == 0
    q = claude_queue.TaskQueue(cfg=config.load_config(cwd=project.root, env={}))
    assert [t.prompt for t in q.list_tasks()] == ["queued before the disk filled"]
    q.close()


def test_an_io_error_on_a_full_disk_is_disk_full(tmp_path, monkeypatch):
    """The same rule without root: an I/O error while the database's disk is full reads as DiskFull,
    and one on a disk with room stays what it was."""
    db = tmp_path / "q.db"
    q = claude_queue.TaskQueue(str(db), cfg=config.load_config(db=str(db), cwd=tmp_path, env={}))

    def io_error():
        raise claude_queue.sqlite3.OperationalError("disk I/O error")

    with pytest.raises(claude_queue.sqlite3.OperationalError, match="disk I/O error"):
        q._retry(io_error)
    monkeypatch.setattr(claude_queue, "disk_full_note", lambda *folders: f"disk full: 0 bytes free on {folders[0]}")
    with pytest.raises(claude_queue.DiskFull, match=r"^disk full: cannot write the database .*q\.db"):
        q._retry(io_error)
    q.close()


# --- report #16 / issue 13 #4: escapes from task text reached the terminal through the synthesis ----

def test_the_synthesis_prints_no_terminal_escapes(tmp_path, monkeypatch):
    """`list` and `show` strip them; `run`, `wait` and `collect` print the synthesis, which quotes the
    job description, the plan's task ids, the prompts and claude's result."""
    from test_synthesis import plain_project, worker

    from conftest import fake
    from orchestrator import ClaudeOrchestrator

    root, env = plain_project(tmp_path)
    q = claude_queue.TaskQueue(cfg=config.load_config(cwd=root, env={}))
    job, [tid] = q.submit_job("desc\x1b]0;TITLE\x07\x1b[2J", [{
        "ref": "a\x1b[31m", "prompt": "p\x1b[2J\n" + fake("text", "done \x1b[31mred\x1b[0m\x9b2J\tand\x07 more\nline 2")}])
    worker(root, env)
    monkeypatch.chdir(root)
    orch = ClaudeOrchestrator("t")
    synthesis = orch.synthesize_results(orch.wait_and_collect(job, timeout=5))
    assert not [ch for ch in synthesis if not ch.isprintable() and ch not in "\n\t"], repr(synthesis)
    assert "# desc (" in synthesis and "## a: p" in synthesis, synthesis
    assert "done red\tand  more\nline 2" in synthesis, synthesis
    q.close()


# --- the hint `manage.sh cancel --job JOB` (printed when a wait is interrupted) on a chain ---------

def test_cancel_job_with_dependencies_cancels_every_task_and_succeeds(tmp_path):
    """Cancelling the first task used to skip the job's later tasks on the spot, which the same
    command then reported one by one as "already skipped; nothing to cancel", exiting 1: for the
    3,000-task chain of report #11, 2,999 error lines."""
    import subprocess
    import sys

    from test_synthesis import ROOT, plain_project

    root, env = plain_project(tmp_path)
    q = claude_queue.TaskQueue(cfg=config.load_config(cwd=root, env={}))
    job, ids = q.submit_job("chain", [{"ref": f"t{i}", "prompt": f"step {i}", "depends_on": [f"t{i - 1}"] if i else []}
                                      for i in range(5)])
    other, [outside] = q.submit_job("another job", [{"prompt": "after the chain", "depends_on": [ids[-1]]}])
    out = subprocess.run([sys.executable, str(ROOT / "submit_task.py"), "cancel", "--job", job], cwd=root, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr
    assert out.stdout.split() == [w for t in ids for w in (f"#{t}", "cancelled")], out.stdout
    assert [q.get_task(t).status for t in ids] == ["cancelled"] * 5
    assert q.get_task(outside).status == "skipped", "a task of another job that needs the chain cannot run"
    q.close()
