"""Job metadata that several hosts read, merge and write back (the merge queue's integration state)
is written by compare-and-swap: a host that saves between another's read and write loses nothing."""

from test_queue_contract import backend, open_backend, queue  # noqa: F401 - fixtures (both backends)

import integration


def test_update_job_metadata_with_expect_writes_only_over_what_was_read(queue):  # noqa: F811
    job = queue.create_job("cas")
    assert queue.update_job_metadata(job, {"state": {"a": 1}}, expect={"state": None})["state"] == {"a": 1}
    # A second writer that read before the first wrote is refused, and changes nothing.
    assert queue.update_job_metadata(job, {"state": {"b": 2}, "other": 1}, expect={"state": None}) is None
    meta = queue.get_job(job)["metadata"]
    assert meta["state"] == {"a": 1} and "other" not in meta
    # Read again, it goes through.
    assert queue.update_job_metadata(job, {"state": {"a": 1, "b": 2}}, expect={"state": {"a": 1}}) is not None
    assert queue.get_job(job)["metadata"]["state"] == {"a": 1, "b": 2}


class _Host(integration.Integrator):
    """An Integrator's state-saving part alone, on a remote (no git, no job branch)."""

    def __init__(self, store, job_id, **tasks):
        self.queue, self.job_id, self.remote, self.repo = store, job_id, True, None
        self._load()
        for tid, entry in tasks.items():
            self._set(tid, **entry)


def test_two_hosts_saving_at_once_keep_both_hosts_entries(queue):  # noqa: F811
    job = queue.create_job("two hosts")
    alpha, beta = _Host(queue, job, t1={"state": "merged"}), _Host(queue, job, t2={"state": "conflict"})
    real_get_job, interleaved = queue.get_job, []

    def get_job_then_beta_saves(job_id):
        # Beta saves after alpha has read the stored state and before alpha writes its own.
        read = real_get_job(job_id)
        if not interleaved:
            interleaved.append(True)
            queue.get_job = real_get_job
            beta._save()
        return read

    queue.get_job = get_job_then_beta_saves
    try:
        alpha._save()
    finally:
        queue.get_job = real_get_job
    assert interleaved
    tasks = queue.get_job(job)["metadata"]["integration"]["tasks"]
    assert tasks == {"t1": {"state": "merged"}, "t2": {"state": "conflict"}}, tasks
