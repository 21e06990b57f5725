"""benches/gpu.py runs on the CPU (``--device cpu``) at tiny sizes: both sides train and report images per second.
No timing is asserted: this checks the script a GPU machine would run, not the machine."""

from __future__ import annotations

import re
import sys

from testroot import CHECKOUT

sys.path.insert(0, str(CHECKOUT / "benches"))


def test_the_gpu_bench_runs_on_the_cpu_and_reports_both_throughputs() -> None:
    from gpu import main

    (row,) = main(["--device", "cpu", "--tiny", "--per-class", "10", "--batch-size", "16", "--epochs", "2",
                   "--threads", "1"])
    found = re.search(r"raw (\d+) img/s, labline (\d+) img/s: ([\d.]+)x", row)
    assert found and "throughput, 1 device" in row, row
    assert int(found[1]) > 0 and int(found[2]) > 0 and float(found[3]) > 0
