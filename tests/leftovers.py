"""A pytest plugin (conftest.py loads it): what the tests started and left running is ended with
the run. A test that fails midway may leave its pool, a waiter or a claude behind when its teardown
cannot stop them (one whose database server was halted; a waiter that starts the pool again after
the teardown's kill), and such a leftover outlives the run by hours: a coordinator whose project
pytest then deleted once spun a core that way. Found by this run's temporary directory in their
command line or environment (every project, database and fake claude of a test lives there), so
nothing the run did not start is touched."""

import os
import signal
import sys


def _mentions(pid, needle):
    for part in ("cmdline", "environ"):
        try:
            with open(f"/proc/{pid}/{part}", "rb") as fh:
                if needle in fh.read():
                    return True
        except OSError:
            pass
    return False


def _ours():
    """This process and its ancestors: a --basetemp on our own command line names the directory too."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                pid = int(fh.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def leftovers(directory):
    """The pids of running processes that name `directory` (Linux /proc; elsewhere none)."""
    if not os.path.isdir("/proc"):
        return []
    # With the separator: pytest-12 is the start of pytest-123, another run's directory.
    needle, ours = os.fsencode(os.path.join(str(directory), "")), _ours()
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in ours and _mentions(int(p), needle)]


def _args(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()[:200]
    except OSError:
        return "?"


def end(pids):
    """SIGKILL each pid, and the group it leads (a pool's worker leads its claude's)."""
    for pid in pids:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, signal.SIGKILL)
            else:
                os.kill(pid, signal.SIGKILL)
        except OSError:
            pass  # gone meanwhile


def pytest_sessionfinish(session):
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller sweeps once, after every worker has finished
    factory = getattr(session.config, "_tmp_path_factory", None)
    if factory is None:
        return
    try:
        base = factory.getbasetemp()
    except OSError:
        return
    left = leftovers(base)
    if left:
        # Said, as a test that leaves something running is a test to mend.
        print(f"\nleftovers: ending {len(left)} process(es) the tests left running:", file=sys.stderr)
        for pid in left:
            print(f"  pid {pid}: {_args(pid)}", file=sys.stderr)
        sys.stderr.flush()
    end(left)
