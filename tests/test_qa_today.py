"""QA of the day's merged work (the house, the merge queue, several hosts, PostgreSQL), as a user
drives it from a project root: each test is a defect found that way."""

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import install_fake_claude

ROOT = Path(__file__).resolve().parent.parent


def _coordinator(cwd, env, *args):
    return subprocess.run([sys.executable, str(ROOT / "claude_coordinator.py"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_a_database_urls_password_stays_out_of_status_logs_and_the_pool_flag(postgres_url, tmp_path):
    # The server trusts local connections, so the password is never checked: only where it shows.
    url = postgres_url.replace("klauss@", "klauss:s3cretpw@", 1)
    root = tmp_path / "proj"
    root.mkdir()
    install_fake_claude(tmp_path / "bin")
    env = {**os.environ, "KLAUSS_DB": url, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    started = _coordinator(root, env, "start", "1")
    try:
        assert started.returncode == 0, started.stderr
        text = _coordinator(root, env, "status")
        as_json = _coordinator(root, env, "status", "--json")
        assert text.returncode == 0 and as_json.returncode == 0, text.stderr + as_json.stderr
        assert json.loads(as_json.stdout)["db"].startswith("postgresql://klauss:***@")
        said = text.stdout + text.stderr + as_json.stdout + as_json.stderr
        logs = "".join(p.read_text() for p in (root / ".klauss" / "logs").glob("*.log"))
        assert "s3cretpw" not in said and "s3cretpw" not in logs
        import psycopg

        with psycopg.connect(postgres_url) as conn:
            flags = conn.execute("SELECT * FROM pool_flags").fetchall()
        assert flags and not any("s3cretpw" in str(value) for value in flags)
    finally:
        _coordinator(root, env, "kill")


def test_a_missing_postgres_driver_is_bad_configuration_exit_2_in_every_front_end(tmp_path):
    # A sitecustomize that hides psycopg, as on a machine without requirements-postgres.txt.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['psycopg'] = None\n")
    env = {**os.environ, "PYTHONPATH": str(site), "KLAUSS_DB": "postgresql://klauss@127.0.0.1:1/qa"}
    for script, args in [("claude_coordinator.py", ["status"]), ("claude_coordinator.py", ["stop"]),
                         ("orchestrator.py", ["wait", "1"]), ("submit_task.py", ["list"])]:
        done = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (script, args, done.returncode, done.stderr)
        assert "psycopg" in done.stderr and "requirements-postgres.txt" in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1


def test_a_verify_runs_mark_names_its_host_and_not_the_databases_password():
    # Two hosts' pools on one machine integrate the same job: each kills leftover verify runs by
    # this mark before its own, and with one mark for both, host a SIGKILLed host b's verify
    # (exit status -9, a fix-up queued for a task that broke nothing).
    from types import SimpleNamespace

    import config
    import integration

    def mark(host):
        it = integration.Integrator.__new__(integration.Integrator)
        it.queue = SimpleNamespace(db_path=config.DatabaseUrl("postgresql://klauss:s3cretpw@db.example/q", "/tmp"))
        it.cfg, it.job_id = SimpleNamespace(host=host), "job-1"
        return it._mark()

    assert mark("a") != mark("b")
    assert "s3cretpw" not in mark("a") and "job-1" in mark("a")
