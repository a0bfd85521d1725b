#!/usr/bin/env python3
"""Queue throughput and claim latency against a bare SQLite loop (claim, then complete: two commits per task).

    python bench/queue_bench.py [--tasks 20000] [--workers 1,2,4,8] [--repeat 3] [--sizes 2000,20000,100000]

For each W it drains the queue with W processes, the way a worker does (a completion that claims
the next task in the same transaction, when the queue offers it) and prints tasks/s, claim latency
p50/p99/max, duplicates and losses, and our throughput as a ratio of the bare loop measured in the
same round. Each W is measured --repeat times; the median ratio is the figure. Then it counts
commits and WAL pages per task, single process with checkpoints off, for the queue alone and for
the worker path (the worker row's bookkeeping included: busy, claude's pid, idle). Then it checks that throughput stays flat as the queue grows, and times add_tasks.
A background process checkpoints each database every 0.5 s, as a running coordinator does.
"""

import argparse
import multiprocessing as mp
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import claude_queue  # noqa: E402
import config  # noqa: E402


def open_queue(db):
    return claude_queue.TaskQueue(db, cfg=config.load_config(db=db, env={}))


LEAN = hasattr(claude_queue.TaskQueue, "finish_and_claim")


def drain(q, name, stop_after=None, latencies=None, worker_path=False):
    """Claim and complete until the queue is empty (or `stop_after` tasks); the task ids claimed.
    With `worker_path`, also the worker's own bookkeeping, as claude_worker does it."""
    claimed = []
    info = {"claude_pid": None}
    if worker_path:
        q.register_worker(name, state="idle", info=info)
    t0 = time.perf_counter()
    if LEAN:
        task = q.claim_task(name, worker_info=info if worker_path else None)
    else:
        task = q.claim_task(name)
        if worker_path and task is not None:
            q.worker_heartbeat(name, state="busy", current_task=task.id, info=info)
    while task is not None:
        if latencies is not None:
            latencies.append(time.perf_counter() - t0)
        claimed.append(task.id)
        more = stop_after is None or len(claimed) < stop_after
        if worker_path:  # claude started: its pid is recorded
            q.worker_heartbeat(name, state="busy", current_task=task.id, info={"claude_pid": 1})
        t0 = time.perf_counter()
        if LEAN:
            _, task = q.finish_and_claim("complete", task.id, name, attempt=task.attempt, result="ok",
                                         claim_next=more, worker_info=info if worker_path else None)
        else:
            q.complete_task(task.id, name, "ok", attempt=task.attempt)
            if worker_path:
                q.worker_heartbeat(name, state="busy", current_task=task.id, info=info)  # claude's pid cleared
                q.worker_heartbeat(name, state="idle", current_task=None, info=info)
            task = q.claim_task(name) if more else None
            if worker_path and task is not None:
                q.worker_heartbeat(name, state="busy", current_task=task.id, info=info)
    return claimed


def klauss_worker(db, name, start, stop_after, out):
    q = open_queue(db)
    latencies = []
    start.wait()
    claimed = drain(q, name, stop_after, latencies)
    out.put((claimed, latencies))


def write_cost(tmp, label, n=1000, worker_path=False):
    """(commits, WAL pages) per task draining n tasks in one process, WAL checkpoints off."""
    db = os.path.join(tmp, f"pages-{label}.db")
    fill(db, n)
    q = open_queue(db)
    conn = q._connect()
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    commits = [0]
    conn.set_trace_callback(lambda sql: commits.__setitem__(0, commits[0] + sql.lstrip().upper().startswith("COMMIT")))
    before = os.path.getsize(db + "-wal")
    drain(q, "w", worker_path=worker_path)
    frames = (os.path.getsize(db + "-wal") - max(before, 32)) / (page + 24)
    conn.set_trace_callback(None)
    return commits[0] / n, frames / n


def bare_setup(db, n):
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, status INTEGER NOT NULL, worker TEXT)")
    conn.execute("CREATE INDEX t_pending ON t(id) WHERE status = 0")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO t (status) VALUES (0)", [()] * n)
    conn.execute("COMMIT")
    conn.close()


def bare_worker(db, name, start, stop_after, out):
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    conn.execute("PRAGMA synchronous=NORMAL")
    claimed, latencies = [], []
    start.wait()
    while True:
        t0 = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT id FROM t WHERE status = 0 ORDER BY id LIMIT 1").fetchone()
        if row is not None:
            conn.execute("UPDATE t SET status = 1, worker = ? WHERE id = ?", (name, row[0]))
        conn.execute("COMMIT")
        latencies.append(time.perf_counter() - t0)
        if row is None:
            break
        claimed.append(row[0])
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE t SET status = 2 WHERE id = ?", (row[0],))
        conn.execute("COMMIT")
    out.put((claimed, latencies))


def bare_pages(db, n):
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    before = os.path.getsize(db + "-wal")
    for _ in range(n):
        conn.execute("BEGIN IMMEDIATE")
        row = conn.execute("SELECT id FROM t WHERE status = 0 ORDER BY id LIMIT 1").fetchone()
        conn.execute("UPDATE t SET status = 1, worker = ? WHERE id = ?", ("w", row[0]))
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE t SET status = 2 WHERE id = ?", (row[0],))
        conn.execute("COMMIT")
    frames = (os.path.getsize(db + "-wal") - max(before, 32)) / (page + 24)
    conn.close()
    return frames / n


def checkpointer(db, stop):
    """What a running coordinator does every few seconds: PASSIVE checkpoints off the claim path.
    Both loops get the same treatment."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=30)
    while not stop.wait(0.5):
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)")


def run(target, db, workers, stop_after=None):
    # The clock starts once every process has opened its connection and waits at the barrier.
    start, out, stop = mp.Barrier(workers + 1), mp.Queue(), mp.Event()
    procs = [mp.Process(target=target, args=(db, f"w{i}", start, stop_after, out)) for i in range(workers)]
    background = mp.Process(target=checkpointer, args=(db, stop))
    background.start()
    for p in procs:
        p.start()
    start.wait()
    t0 = time.perf_counter()
    results = [out.get() for _ in procs]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    stop.set()
    background.join()
    claimed = [i for ids, _ in results for i in ids]
    latencies = sorted(x for _, lat in results for x in lat)
    return elapsed, claimed, latencies


def pct(values, p):
    return values[min(len(values) - 1, int(len(values) * p))] * 1000


def fill(db, n):
    q = open_queue(db)
    t0 = time.perf_counter()
    for start in range(0, n, 10_000):
        q.add_tasks([{"prompt": f"task {i}"} for i in range(start, min(n, start + 10_000))])
    return time.perf_counter() - t0


def counts(ap, text, name, minimum=1):
    """A comma-separated list of whole numbers of at least `minimum`, for option --`name`; a
    usage error (exit 2) otherwise."""
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = None
    if values is None or any(v < minimum for v in values):
        ap.error(f"--{name}: expected whole numbers of at least {minimum}, separated by commas, got {text!r}")
    return values


def print_medians(ratios):
    """The figure of a run: the median of each W's ratios ({W: [ratio, ...]}), printed and returned."""
    medians = {w: statistics.median(r) for w, r in ratios.items()}
    print("median ratio: " + ", ".join(f"W={w} {m:.2f}" for w, m in medians.items()))
    return medians


def one(ap, text, name):
    values = counts(ap, text, name)
    if len(values) != 1:
        ap.error(f"--{name}: expected one whole number, got {text!r}")
    return values[0]


def measure(tmp, n, w, rep):
    """One round with W processes: ours, then the bare loop, each on a fresh database. Prints
    its row and returns our ratio."""
    db = os.path.join(tmp, f"ours-{w}-{rep}.db")
    fill(db, n)
    elapsed, claimed, lat = run(klauss_worker, db, w)
    bdb = os.path.join(tmp, f"bare-{w}-{rep}.db")
    bare_setup(bdb, n)
    b_elapsed, b_claimed, b_lat = run(bare_worker, bdb, w)
    dup = len(claimed) - len(set(claimed))
    stats = open_queue(db).get_stats()
    lost = n - stats["completed"] + (n - len(set(claimed)))
    ours, bare = n / elapsed, n / b_elapsed
    print(f"{w:>2} {ours:>9.0f} {bare:>9.0f} {ours / bare:>6.2f} {pct(lat, .5):>7.2f} {pct(lat, .99):>7.2f} "
          f"{lat[-1] * 1000:>7.1f} {pct(b_lat, .99):>8.2f} {b_lat[-1] * 1000:>8.1f} {dup:>4} {lost:>5}", flush=True)
    return ours / bare


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="20000")
    ap.add_argument("--workers", default="1,2,4,8")
    ap.add_argument("--repeat", default="3",
                    help="rounds per W, ours then bare each time; the median ratio is the figure (default 3)")
    ap.add_argument("--sizes", default="2000,20000,100000", help='queue sizes to check; "" skips that part')
    ap.add_argument("--db", help="a postgresql:// URL, or `temp` for a throwaway server: bench the queue on "
                                 "PostgreSQL beside a bare SKIP LOCKED loop instead (queue_bench_postgres.py)")
    args = ap.parse_args()
    n, repeat = (one(ap, text, name) for text, name in ((args.tasks, "tasks"), (args.repeat, "repeat")))
    workers = counts(ap, args.workers, "workers")
    sizes = counts(ap, args.sizes, "sizes", minimum=2000)
    if args.db:
        import queue_bench_postgres
        queue_bench_postgres.main(args.db, n, workers, repeat)
        return
    tmp = tempfile.mkdtemp(prefix="klauss-bench-")
    try:
        report(tmp, n, workers, repeat, sizes)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def report(tmp, n, workers, repeat, sizes):
    print(f"SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {n} tasks, "
          f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"{'W':>2} {'ours t/s':>9} {'bare t/s':>9} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
          f"{'bare p99':>8} {'bare max':>8} {'dup':>4} {'lost':>5}")
    # Each W is measured `repeat` times, ours then bare each time, so both see the same load (a
    # shared machine's load comes and goes, and one round of four processes on two cores swings
    # by a tenth either way); the median ratio is the figure.
    print_medians({w: [measure(tmp, n, w, rep) for rep in range(repeat)] for w in workers})

    print("\nwrites per task (one process, checkpoints off):")
    for label, worker_path in (("queue", False), ("worker path", True)):
        commits, pages = write_cost(tmp, label.replace(" ", "-"), worker_path=worker_path)
        print(f"  {label:<12} {commits:5.2f} commits, {pages:5.2f} WAL pages")
    bdb = os.path.join(tmp, "bare-pages.db")
    bare_setup(bdb, 1000)
    print(f"  {'bare loop':<12} {2:5.2f} commits, {bare_pages(bdb, 1000):5.2f} WAL pages")

    if sizes:
        print("\nqueue size (4 workers drain the first 2000 tasks):")
    for size in sizes:
        db = os.path.join(tmp, f"size-{size}.db")
        fill(db, size)
        elapsed, claimed, lat = run(klauss_worker, db, 4, stop_after=500)
        print(f"  {size:>7} queued: {len(claimed) / elapsed:>7.0f} tasks/s, claim p99 {pct(lat, .99):.2f} ms")

    db = os.path.join(tmp, "enqueue.db")
    open_queue(db)
    q = open_queue(db)
    t0 = time.perf_counter()
    q.add_tasks([{"prompt": f"task {i}", "priority": i % 5} for i in range(10_000)])
    print(f"\nadd_tasks(10,000): {time.perf_counter() - t0:.3f} s")


if __name__ == "__main__":
    main()
