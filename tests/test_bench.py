"""bench/queue_bench.py as a user runs it: its rounds, the median it reports, nothing duplicated or
lost, and one-line usage errors. Its figures are not asserted (tests assert behaviour only)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "queue_bench.py"


def bench(*args):
    return subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=300)


def test_each_w_is_measured_repeat_times_and_the_median_ratio_is_reported():
    cp = bench("--tasks", "300", "--workers", "1,2", "--repeat", "3", "--sizes", "")
    assert cp.returncode == 0, cp.stderr
    rows = [line.split() for line in cp.stdout.splitlines() if re.match(r"\s*\d+\s+\d+\s+\d+\s+[\d.]+\s", line)]
    assert [row[0] for row in rows] == ["1", "1", "1", "2", "2", "2"]
    assert all(row[-2:] == ["0", "0"] for row in rows), cp.stdout  # no duplicate, nothing lost
    median = re.search(r"^median ratio: W=1 ([\d.]+), W=2 ([\d.]+)$", cp.stdout, re.M)
    assert median, cp.stdout
    for w, figure in (("1", median[1]), ("2", median[2])):
        ratios = sorted(float(row[3]) for row in rows if row[0] == w)
        assert float(figure) == ratios[1]
    assert "queue size" not in cp.stdout  # --sizes "" skips that part


def test_bad_numbers_are_a_one_line_usage_error():
    for args, message in ((("--sizes", "0"), "--sizes: expected whole numbers of at least 2000"),
                          (("--workers", "1,x"), "--workers: expected whole numbers of at least 1"),
                          (("--tasks", "3,4"), "--tasks: expected one whole number"),
                          (("--repeat", "0"), "--repeat: expected whole numbers of at least 1")):
        cp = bench(*args)
        assert cp.returncode == 2, (args, cp.stderr)
        assert message in cp.stderr.splitlines()[-1]
        assert cp.stdout == ""
