"""Several hosts on a PostgreSQL queue (issue 16): what the multi-host behaviour asks of the queue,
checked on both backends, and hosts on this machine reaching the server over a network link that
is cut mid-task (in network namespaces, where root and `ip netns` are available).

The pools of several hosts on one database are tested in test_hosts.py, on both backends too."""

import pytest

import claude_queue
import config
import flags


@pytest.fixture(params=["sqlite", "postgres"])
def queue(request, tmp_path):
    if request.param == "postgres":
        location, cwd = request.getfixturevalue("postgres_url"), tmp_path
    else:
        location, cwd = str(tmp_path / "q.db"), tmp_path
    q = claude_queue.TaskQueue(location, cfg=config.load_config(db=location, cwd=cwd, env={}))
    yield q
    q.close()


@pytest.mark.parametrize("flag", [flags.config_error("beta"), flags.paused_login("acct-b"), flags.paused_host("beta")])
def test_a_workers_next_claim_honours_its_hosts_and_logins_flags(queue, flag):
    # A worker of beta on login acct-b finishing a task claims no next one while a flag that holds
    # beta or acct-b is set; a worker of alpha on another login goes on claiming.
    first, second = queue.add_task("first"), queue.add_task("second")
    queue.register_worker("worker_1@beta", pid=1)
    assert queue.claim_task("worker_1@beta", lease_seconds=60).id == first
    queue.set_flag(flag, {"host": "beta"})
    done, nxt = queue.finish_and_claim("release", first, "worker_1@beta", attempt=1, claim_next=True,
                                       lease_seconds=60, worker_info={}, holds=flags.holds("beta", "acct-b"),
                                       reason="configuration error")
    assert done and nxt is None, "held by its own host's or login's flag"
    queue.register_worker("worker_1@alpha", pid=2)
    task = queue.claim_task("worker_1@alpha", lease_seconds=60)
    done, nxt = queue.finish_and_claim("complete", task.id, "worker_1@alpha", attempt=task.attempt,
                                       claim_next=True, lease_seconds=60, worker_info={},
                                       holds=flags.holds("alpha", "acct-a"), result={"result": "ok"})
    assert done and nxt is not None and {task.id, nxt.id} == {first, second}, "another host goes on"


def test_list_jobs_takes_a_limit(queue):
    older, _ = queue.submit_job("older", [{"prompt": "a"}])
    newer, _ = queue.submit_job("newer", [{"prompt": "b"}])
    assert [j["id"] for j in queue.list_jobs(limit=1)] == [newer]
    assert [j["id"] for j in queue.list_jobs()] == [newer, older]

