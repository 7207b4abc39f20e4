"""bench/pipeline.py's memory figure: the sampler sees the memory of a command's descendants (not
only the command), and PSS shares the pages a forked child has not touched since the fork, where
summed RSS counts them twice. The full benchmark takes ~10 minutes and rewrites results/: it is
run by hand, and its output is results/bench/pipeline.txt."""

import importlib.util
import sys

import pytest

psutil = pytest.importorskip("psutil")


@pytest.fixture(scope="module")
def bench(root):
    spec = importlib.util.spec_from_file_location("bench_pipeline", root / "bench" / "pipeline.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(root / "bench"))
    spec.loader.exec_module(module)
    return module


# A parent fills 300 MB, forks a child that holds them untouched, and both wait; the grandchild is
# two levels below the measured command (bash).
HOLD = """
import os, time
block = bytearray(300 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
if os.fork() == 0:
    time.sleep(2.5); os._exit(0)
time.sleep(2.5); os.wait()
"""


def test_peak_counts_descendants_and_shares_forked_pages(bench, tmp_path):
    script = tmp_path / "hold.py"
    script.write_text(HOLD)
    run = bench.run_measured(["bash", "-c", f"{sys.executable} {script}"], tmp_path / "log")
    mb = 2**20
    assert run["code"] == 0
    assert run["rss"] >= 2 * 300 * mb        # both processes' RSS hold the block
    assert 300 * mb <= run["pss"] < 450 * mb  # PSS counts it once
    assert run["top"] and all(pss <= rss for pss, rss, _ in run["top"])


def test_the_report_names_processes_without_this_machines_paths(bench):
    shown = bench._command([str(bench.BIN / "python"), str(bench.BIN / "dvc"), "repro", str(bench.ROOT / "notebooks" / "x.ipynb")])
    assert shown == "python dvc repro notebooks/x.ipynb"
