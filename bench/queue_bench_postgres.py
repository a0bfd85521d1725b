#!/usr/bin/env python3
"""The queue on PostgreSQL against a bare SKIP LOCKED loop on the same server, in the same run.

    python bench/queue_bench.py --db postgresql://user@host/db [--tasks 5000] [--workers 1,4]
    python bench/queue_bench.py --db temp     # a throwaway server (tests/pg_server.py)

For each W, W processes drain N tasks the way a worker does (finish_and_claim: a completion that
claims the next task in the same transaction), then W processes drain N rows of a bare table with
two autocommit statements per task: UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)
RETURNING id, then UPDATE ... status = done. Prints tasks/s for both, our ratio, claim latency,
duplicates and losses. Each W is measured --repeat times (3), ours then bare each time, and the
median ratio is the figure: on a shared machine the load comes and goes. Each run uses a schema of
its own in the given database, dropped at the end.
"""

import multiprocessing as mp
import os
import sys
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import queue_bench  # noqa: E402

import claude_queue  # noqa: E402
import config  # noqa: E402


def in_schema(url, schema):
    """The URL with `schema` first on its search_path, so the queue's tables go there."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query)
    query.append(("options", f"-csearch_path={schema}"))
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def admin(url, *statements):
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def open_queue(url):
    return claude_queue.TaskQueue(url, cfg=config.load_config(db=url, env={}))


def klauss_worker(url, name, start, stop_after, out):
    q = open_queue(url)
    latencies = []
    start.wait()
    claimed = queue_bench.drain(q, name, stop_after, latencies)
    out.put((claimed, latencies))


def bare_worker(url, name, start, stop_after, out):
    import psycopg

    conn = psycopg.connect(url, autocommit=True)
    claimed, latencies = [], []
    start.wait()
    while True:
        t0 = time.perf_counter()
        row = conn.execute("UPDATE t SET status = 1, worker = %s WHERE id = (SELECT id FROM t WHERE status = 0 "
                           "ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING id", (name,)).fetchone()
        latencies.append(time.perf_counter() - t0)
        if row is None:
            break
        claimed.append(row[0])
        conn.execute("UPDATE t SET status = 2 WHERE id = %s", (row[0],))
    conn.close()
    out.put((claimed, latencies))


def run(target, url, workers):
    start, out = mp.Event(), mp.Queue()
    procs = [mp.Process(target=target, args=(url, f"w{i}", start, None, out)) for i in range(workers)]
    for p in procs:
        p.start()
    time.sleep(0.5)  # every process connects before the clock starts
    t0 = time.perf_counter()
    start.set()
    results = [out.get() for _ in procs]
    elapsed = time.perf_counter() - t0
    for p in procs:
        p.join()
    claimed = [i for ids, _ in results for i in ids]
    return elapsed, claimed, sorted(x for _, lat in results for x in lat)


def main(url, n=5000, workers=(1, 4), repeat=3):
    server = None
    if url == "temp":
        sys.path.insert(0, str(HERE.parent / "tests"))
        import pg_server

        server = pg_server.PgServer.start()
        url = server.new_database()
    try:
        import psycopg

        with psycopg.connect(url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
        load = " ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"PostgreSQL {version}, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, {n} tasks, "
              f"load average {load}")
        print(f"{'W':>2} {'ours t/s':>9} {'bare t/s':>9} {'ratio':>6} {'p50 ms':>7} {'p99 ms':>7} {'bare p99':>8} "
              f"{'dup':>4} {'lost':>5}")
        ratios = {}
        # Each W is measured `repeat` times, ours then bare each time, so both see the same load
        # (a shared machine's load comes and goes); the median ratio is the figure.
        for w in workers:
            for rep in range(repeat):
                ratios.setdefault(w, []).append(measure(url, n, w, rep))
        return queue_bench.print_medians(ratios)
    finally:
        if server is not None:
            server.stop()


def measure(url, n, w, rep):
    """One run of ours and one of the bare loop with W processes; prints its row, returns the ratio."""
    ours_schema, bare_schema = f"klauss_bench_{os.getpid()}_{w}_{rep}", f"klauss_bare_{os.getpid()}_{w}_{rep}"
    admin(url, f"CREATE SCHEMA {ours_schema}", f"CREATE SCHEMA {bare_schema}")
    try:
        ours_url, bare_url = in_schema(url, ours_schema), in_schema(url, bare_schema)
        q = open_queue(ours_url)
        q.add_tasks([{"prompt": f"task {i}"} for i in range(n)])
        elapsed, claimed, lat = run(klauss_worker, ours_url, w)
        stats = q.get_stats()
        q.close()
        admin(bare_url, "CREATE TABLE t (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
              "status INT NOT NULL DEFAULT 0, worker TEXT)",
              "CREATE INDEX t_pending ON t (id) WHERE status = 0",
              f"INSERT INTO t (status) SELECT 0 FROM generate_series(1, {n})")
        b_elapsed, b_claimed, b_lat = run(bare_worker, bare_url, w)
    finally:
        admin(url, f"DROP SCHEMA {ours_schema} CASCADE", f"DROP SCHEMA {bare_schema} CASCADE")
    dup = len(claimed) - len(set(claimed))
    lost = n - stats["completed"] + (n - len(set(claimed)))
    ours, bare = n / elapsed, n / b_elapsed
    print(f"{w:>2} {ours:>9.0f} {bare:>9.0f} {ours / bare:>6.2f} {queue_bench.pct(lat, .5):>7.2f} "
          f"{queue_bench.pct(lat, .99):>7.2f} {queue_bench.pct(b_lat, .99):>8.2f} {dup:>4} {lost:>5}", flush=True)
    return ours / bare


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", required=True, help="a postgresql:// URL, or `temp` for a throwaway server")
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--workers", default="1,4")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    main(args.db, args.tasks, [int(x) for x in args.workers.split(",")], args.repeat)
