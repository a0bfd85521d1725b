"""The worker's outcome recording, in-process: Worker.record() turns a finished run into complete,
fail (retryable or not), release or cancel on a real queue, with the run itself a stub (no claude,
no subprocess, no wait). What a real run through the worker process does is in test_worker.py."""

from types import SimpleNamespace

import pytest

import claude_cli
import claude_worker
import hosts


def result(**fields):
    """A `result` event as the CLI ends a successful run, with `fields` changed."""
    return {"type": "result", "subtype": "success", "is_error": False, "result": "done", "session_id": "s-1",
            "total_cost_usd": 0.25, "num_turns": 2, "duration_ms": 1500, "usage": {"output_tokens": 7},
            "permission_denials": [], **fields}


def stub_run(task, *events, stop_reason=None, stderr="", lingered=False, problems=None, timeout=60):
    state = claude_cli.StreamState()
    state.feed({"type": "system", "subtype": "init", "session_id": "s-1", "model": "claude-test"})
    for event in events:
        state.feed(event)
    return SimpleNamespace(task=task, state=state, stderr_tail=[stderr], problems=problems or {}, lingered=lingered,
                           left_behind=[], stop_reason=stop_reason, transcript_path="t.jsonl", timeout=timeout)


@pytest.fixture
def worker(make_queue, clock, tmp_path, monkeypatch):
    """record(*events, exit_code=0, **run) -> (verdict, task row after): the task claimed by w1
    runs to the stub run's end and the worker records it. With claim_next=[] a next task is queued
    (its id appended) and the worker goes on."""
    monkeypatch.setattr(claude_worker, "log", lambda message: None)
    q = make_queue(clock=clock, **{"queue.retry_backoff_seconds": 0})
    w = claude_worker.Worker("w1", q, q.cfg)
    w.parent_gone = lambda: False
    q.register_worker("w1", state="idle")

    def record(*events, exit_code=0, task_fields=None, claim_next=None, write=None, **run):
        tid = q.add_task("work", working_dir=str(tmp_path), max_attempts=2, **(task_fields or {}))
        task = q.claim_task("w1", lease_seconds=30)
        assert task.id == tid
        w.stopping = claim_next is None  # a stopping worker claims nothing more
        if claim_next is not None:
            claim_next.append(q.add_task("next"))
        before = claude_worker.snapshot_outputs(task.expected_outputs, str(tmp_path))
        if write:
            (tmp_path / write).write_text("new\n")  # what claude wrote while it ran
        verdict = w.record(task, stub_run(task, *events, **run), exit_code, 2.5, str(tmp_path), before)
        return verdict, q.get_task(tid)

    record.queue, record.worker, record.dir = q, w, tmp_path
    return record


def test_a_success_completes_with_the_whole_outcome(worker):
    verdict, task = worker(result())
    assert verdict.kind == claude_cli.SUCCESS
    assert task.status == "completed" and task.result == "done" and task.attempts_used == 1
    o = task.outcome
    assert (o["session_id"], o["total_cost_usd"], o["num_turns"], o["duration_ms"], o["wall_seconds"]) == (
        "s-1", 0.25, 2, 1500, 2.5)
    assert o["exit_code"] == 0 and o["model"] == "claude-test" and o["error_class"] == claude_cli.SUCCESS


def test_a_written_expected_output_is_verified(worker):
    verdict, task = worker(result(), task_fields={"expected_outputs": ["out.txt"]}, write="out.txt")
    assert task.status == "completed"
    assert task.outcome["outputs_verified"] == ["out.txt"] and task.outcome["outputs_missing"] == []


def test_a_missing_expected_output_is_a_retryable_failure(worker):
    verdict, task = worker(result(), task_fields={"expected_outputs": ["out.txt"]})
    assert verdict.kind == claude_cli.RETRYABLE and "expected outputs missing" in verdict.message
    assert task.status == "pending" and task.attempts_used == 1, "retried: one attempt is left"
    assert task.outcome["outputs_missing"] == ["out.txt"]


def test_denials_with_a_missing_output_fail_for_good_and_say_how_to_allow_them(worker):
    denied = [{"tool_name": "Write", "tool_input": {"file_path": "out.txt"}}]
    verdict, task = worker(result(permission_denials=denied), task_fields={"expected_outputs": ["out.txt"]})
    assert verdict.kind == claude_cli.FATAL and "denied (Write)" in verdict.message
    assert task.status == "failed" and verdict.fix in task.error


def test_denials_without_a_missing_output_complete_with_a_warning(worker):
    denied = [{"tool_name": "Bash", "tool_input": {"command": "ls"}}]
    verdict, task = worker(result(permission_denials=denied))
    assert task.status == "completed" and task.outcome["warnings"][0].startswith("tool calls were denied: Bash")


def test_a_limit_fails_without_retry(worker):
    verdict, task = worker(result(subtype="error_max_turns", is_error=True, errors=["max turns"]), exit_code=1)
    assert verdict.kind == claude_cli.FATAL
    assert task.status == "failed" and task.attempts_used == 1 and "max turns reached" in task.error
    assert task.outcome["error_class"] == claude_cli.FATAL


def test_an_api_error_is_retried(worker):
    verdict, task = worker(result(is_error=True, api_error_status=529, result="Overloaded"), exit_code=1)
    assert verdict.kind == claude_cli.RETRYABLE and task.status == "pending" and "overloaded" in task.error.lower()


def test_a_crash_without_result_keeps_stderr(worker):
    verdict, task = worker(exit_code=1, stderr="Segmentation fault\n")
    assert verdict.kind == claude_cli.RETRYABLE and task.status == "pending"
    assert "without a result: Segmentation fault" in task.error
    assert task.outcome["stderr_tail"] == "Segmentation fault\n" and task.outcome["exit_code"] == 1


def test_a_claude_stopped_after_its_result_is_judged_by_its_answer(worker):
    verdict, task = worker(result(), exit_code=-9, lingered=True)
    assert task.status == "completed"
    assert any("did not exit" in w for w in task.outcome["warnings"])


def test_a_timeout_fails_retryably(worker):
    verdict, task = worker(exit_code=-9, stop_reason="timeout", timeout=7)
    assert verdict == claude_cli.Verdict(claude_cli.RETRYABLE, "timeout")
    assert task.status == "pending" and task.error == "timed out after 7s"
    assert task.outcome["error_class"] == "timeout"


def test_a_cancel_ends_cancelled(worker):
    verdict, task = worker(exit_code=-15, stop_reason="cancel")
    assert verdict is None and task.status == "cancelled" and task.outcome["error_class"] == "cancelled"


def test_a_shutdown_releases_without_spending_the_attempt(worker):
    verdict, task = worker(result(), exit_code=-15, stop_reason="shutdown")
    assert verdict is None and task.status == "pending" and task.attempts_used == 0
    assert task.cost_usd == 0.25, "what the attempt cost is still counted"


def test_a_lost_lease_records_nothing(worker):
    verdict, task = worker(result(), stop_reason="lease_lost")
    assert verdict is None and task.status == "in_progress" and task.outcome in (None, {})


def test_a_usage_limit_pauses_every_worker_and_releases(worker, clock):
    resets = clock() + 3600
    verdict, task = worker(result(), {"type": "rate_limit_event",
                                      "rate_limit_info": {"status": "rejected", "resetsAt": resets}})
    assert verdict.kind == claude_cli.USAGE_LIMIT
    assert task.status == "pending" and task.attempts_used == 0
    q = worker.queue
    paused = hosts.pause_flag(q, q.cfg.host, hosts.login_key(q.cfg))  # the pause of the workers on this login
    assert paused["value"]["reason"] == "usage_limit"


def test_a_configuration_error_releases_untouched_and_raises_the_flag(worker):
    verdict, task = worker(result(is_error=True, api_error_status=401, result="Invalid API key"), exit_code=1)
    assert verdict.kind == claude_cli.CONFIG_ERROR
    assert task.status == "pending" and task.attempts_used == 0
    q = worker.queue
    assert "not authenticated" in hosts.config_error_flag(q, q.cfg.host)["value"]["message"]  # this host's


def test_recording_claims_the_next_task_in_the_same_commit(worker):
    added = []
    verdict, task = worker(result(), claim_next=added)
    [nxt] = added
    assert task.status == "completed"
    assert worker.worker._next is not None and worker.worker._next.id == nxt
    assert worker.queue.get_task(nxt).status == "in_progress"


def test_the_loop_waits_out_a_full_disk_and_a_database_outage_saying_each_once(make_queue, clock, monkeypatch):
    """Worker.loop: DiskFull and DatabaseUnavailable from the claim loop are waited out (a tick's
    wait each time), each said once however often it repeats, never a crash."""
    import claude_queue

    said = []
    monkeypatch.setattr(claude_worker, "log", said.append)
    q = make_queue(clock=clock)
    w = claude_worker.Worker("w1", q, q.cfg)
    w.parent_gone = lambda: False
    waits = []
    w.waker = SimpleNamespace(wait=waits.append)
    raised = [claude_queue.DiskFull("disk full: x"), claude_queue.DiskFull("disk full: x"),
              claude_queue.DatabaseUnavailable("server gone", "start it"), claude_queue.DatabaseUnavailable("server gone", "start it")]

    def step():
        if raised:
            raise raised.pop(0)
        return claude_worker.EXIT_OK

    w._loop = step
    assert w.loop() == claude_worker.EXIT_OK
    assert said == ["error: disk full: x; claiming paused until writes work again",
                    "error: server gone; start it; claiming nothing until the database is back"]
    assert len(waits) == 4 and w._disk_full and w._db_down


def test_a_claim_whose_answer_an_outage_lost_is_returned_at_once(make_queue, clock, monkeypatch):
    """finish_and_claim commits (task A completed, task X claimed) but its answer is lost (the
    server went down): the worker tries again once the database is back, finds A recorded, and
    gives X back to the queue at once instead of holding it, unrun, until its lease expires."""
    import claude_queue

    said = []
    monkeypatch.setattr(claude_worker, "log", said.append)
    q = make_queue(clock=clock)
    a, x = q.add_task("a"), q.add_task("x")
    w = claude_worker.Worker("w1", q, q.cfg)
    w.parent_gone = lambda: False
    w.waker = SimpleNamespace(wait=lambda timeout: None)
    q.register_worker("w1", state="idle")
    task = q.claim_task("w1", lease_seconds=30)
    real = q.finish_and_claim
    calls = []

    def answer_lost_once(*args, **kwargs):
        calls.append(args)
        got = real(*args, **kwargs)
        if len(calls) == 1:
            assert got[1] is not None and got[1].id == x  # the commit claimed X
            raise claude_queue.DatabaseUnavailable("server closed the connection unexpectedly", "check the server")
        return got

    q.finish_and_claim = answer_lost_once
    w.finish("complete", task, result={"result": "done"})
    assert len(calls) == 2 and w._next is None
    assert q.get_task(a).status == "completed"
    xt = q.get_task(x)
    assert xt.status == "pending" and xt.worker_id is None and xt.attempts_used == 0, vars(xt)
    assert f"task {x}: claimed by a commit whose answer the outage lost; returned to the queue" in said
    assert q.claim_task("w2", lease_seconds=30).id == x, "claimable again at once"
