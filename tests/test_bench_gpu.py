"""bench/gpu.py: where there is no GPU (here, CI) it skips with a message and writes nothing; its
code paths (matmul rate, FLOPs counted on the kit's encoder, the kit's captioner at a fixed caption
length) run end to end on tiny models with ``--smoke``. Its figures need a GPU."""

import subprocess
import sys

import pytest
import torch


def _run(root, *args):
    return subprocess.run([sys.executable, str(root / "bench" / "gpu.py"), *args], capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "TQDM_DISABLE": "1"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present: the benchmark measures instead of skipping")
def test_without_cuda_it_skips_with_a_message(root):
    before = (root / "results" / "bench" / "gpu.txt").exists()
    done = _run(root)
    assert done.returncode == 0 and "skipped: no CUDA device" in done.stdout
    assert (root / "results" / "bench" / "gpu.txt").exists() == before


def test_smoke_runs_every_measurement_on_tiny_models(root, tmp_path):
    out = tmp_path / "gpu.txt"
    done = _run(root, "--smoke", "--out", str(out))
    assert done.returncode == 0, done.stderr[-2000:]
    text = out.read_text()
    assert "SMOKE RUN" in text and "TFLOP/s (measured)" in text and "GFLOP per image (counted)" in text
    assert "captions/s" in text and "4 new tokens each" in text
    assert text.strip().splitlines()[-1].startswith("gpu ratio: ")
