"""pool.py as the one channel to the pool: the orchestrator and the MCP server call its API (no
`claude_coordinator.py` subprocess, no flags or signals of their own), MCP `wait_job` is one wait
that stops when asked, and what the pool publishes is read with the pool's own settings."""

import signal

import pytest

import claude_dashboard
import claude_queue
import config
import flags
import orchestrator
import pool
import processes


@pytest.fixture
def cfg(tmp_path):
    (tmp_path / ".klauss.toml").write_text("[workers]\nmax_workers = 4\nlease_seconds = 30\nauto_start = false\n")
    return config.load_config(cwd=tmp_path, env={})


@pytest.fixture
def orch(cfg, monkeypatch):
    monkeypatch.chdir(cfg.root)
    o = orchestrator.ClaudeOrchestrator("t")
    yield o
    o.queue.close()


def test_the_orchestrator_starts_resizes_and_stops_through_the_pool_api(orch, monkeypatch):
    calls = []
    monkeypatch.setattr(pool, "start", lambda cfg, n, **kw: calls.append(("start", n)) or {"pid": 1})
    monkeypatch.setattr(pool, "resize", lambda cfg, n, **kw: calls.append(("resize", n)))
    monkeypatch.setattr(pool, "stop", lambda cfg, **kw: calls.append(("stop", kw.get("timeout"))) or True)
    assert orch.start_workers(9, confirm=True) and calls == [("start", 4)], "capped at max_workers"
    monkeypatch.setattr(pool, "running", lambda queue: {"pid": 1, "workers": 1})
    assert orch.start_workers(2, confirm=True) and calls[-1] == ("resize", 2)
    assert orch.stop_workers(timeout=5) and calls[-1] == ("stop", 5)


def test_a_pool_error_reaches_the_orchestrator_as_its_message(orch, monkeypatch):
    def refuse(cfg, n, **kw):
        raise pool.PoolError("error: the pool did not start: claude not found")

    monkeypatch.setattr(pool, "start", refuse)
    with pytest.raises(orchestrator.OrchestratorError, match="^could not start workers: the pool did not start: "
                                                             "claude not found$"):
        orch.start_workers(1, confirm=True)

    def still_running(cfg, **kw):
        raise pool.PoolError("error: still running", pool.EXIT_FAIL)

    monkeypatch.setattr(pool, "stop", still_running)
    assert orch.stop_workers(timeout=1) is False


def test_borrowing_a_slot_sets_its_flag_and_nudges_the_coordinator_once(orch, monkeypatch):
    nudged = []
    monkeypatch.setattr(pool, "running", lambda queue: {"pid": 4242})
    monkeypatch.setattr(pool, "signal_pid", lambda pid, sig: nudged.append((pid, sig)))
    pool.borrow(orch.queue, 17)
    pool.borrow(orch.queue, 17)  # re-asserting the borrow is not news to the coordinator
    assert list(orch.queue.list_flags(flags.BORROW_PREFIX)) == ["borrow:17"]
    assert nudged == [(4242, signal.SIGUSR1)]
    pool.give_back(orch.queue, 17)
    assert orch.queue.list_flags(flags.BORROW_PREFIX) == {} and len(nudged) == 2


def test_wait_and_collect_stops_when_asked(orch, monkeypatch):
    job = orch.create_job("waits")
    orch.add_subtask(job, "never runs: no pool")
    monkeypatch.setattr(orch, "_ensure_pool_for_wait", lambda job_id: None)
    asked = []

    def stop():
        asked.append(True)
        return len(asked) >= 2

    results = orch.wait_and_collect(job, timeout=3600, poll_interval=0.01, show_progress=False, should_stop=stop)
    assert results.timed_out and len(asked) == 2


def test_mcp_wait_job_is_one_wait_that_ends_on_cancellation(orch, monkeypatch):
    import klauss_mcp
    job = orch.create_job("waits")
    orch.add_subtask(job, "never runs")
    calls = []
    real = orch.wait_and_collect

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(orch, "wait_and_collect", counting)
    monkeypatch.setattr(orch, "_ensure_pool_for_wait", lambda job_id: None)
    server = klauss_mcp.KlaussTools(db_path=str(orch.cfg.db_path))
    server._orch = orch
    monkeypatch.setattr(klauss_mcp, "WAIT_POLL_SECONDS", 0.01)

    class Ctx:
        polls = 0

        def cancelled(self):
            self.polls += 1
            return self.polls > 5

        def progress(self, done, total, line):
            pass

    text = server.tool_wait_job({"job_id": job, "timeout_seconds": 600}, Ctx())
    assert len(calls) == 1 and calls[0]["should_stop"] is not None
    assert "still running" in text


def test_process_identity_lives_in_processes(monkeypatch):
    assert claude_queue.running_coordinator is processes.running_coordinator
    assert processes.is_our_process(1 << 22, processes.COORDINATOR_SCRIPT) is False

    class Queue:
        db_path = "/nowhere.db"
        cfg = type("Cfg", (), {"host": "h"})

        def get_flag(self, key):
            assert key == flags.coordinator("h")  # this host's coordinator, not another host's
            return {"value": {"pid": processes.os.getpid()}}

    assert processes.running_coordinator(Queue()) == {"pid": processes.os.getpid()}


def test_the_dashboard_judges_heartbeats_with_the_pools_lease(cfg):
    published = {"value": {"pid": 1, "lease_seconds": 600}}
    assert claude_dashboard.pool_lease(published, cfg) == 600
    assert claude_dashboard.pool_lease(None, cfg) == 30
    assert claude_dashboard.pool_lease({"value": {"pid": 1}}, cfg) == 30


def test_start_refuses_no_workers_and_check_size_names_the_cap(cfg):
    with pytest.raises(pool.PoolError) as err:
        pool.start(cfg, 0)
    assert err.value.code == pool.EXIT_USAGE and "at least 1" in err.value.message
    with pytest.raises(pool.PoolError, match="max_workers = 4") as err:
        pool.check_size(cfg, 5)
    assert err.value.code == pool.EXIT_USAGE
    pool.check_size(cfg, 5, force=True)
    assert not cfg.db_path.exists(), "refusing creates nothing"


def test_stop_with_no_pool_says_so_and_creates_nothing(cfg):
    said = []
    assert pool.stop(cfg, say=said.append) is False
    assert said == ["no pool running"] and not cfg.db_path.exists()


@pytest.mark.parametrize("argv", [["stop", "--wait"], ["run", "1", "--worker-cmd", "[]"]])
def test_the_dead_options_are_gone(argv, capsys):
    import claude_coordinator
    assert claude_coordinator.main(argv) == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_a_pool_error_is_one_line_and_its_exit_code(cfg, monkeypatch, capsys):
    import claude_coordinator
    monkeypatch.chdir(cfg.root)
    assert claude_coordinator.main(["resize", "0"]) == 2
    assert capsys.readouterr().err == "error: resize needs the number of workers, at least 1\n"
    assert claude_coordinator.main(["resize", "2"]) == 1
    assert capsys.readouterr().err.startswith("error: no pool running; start one with ")
