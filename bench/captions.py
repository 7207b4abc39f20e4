"""Captioning throughput: one image at a time against batched generation, measured in one run.

    python bench/captions.py [--images 64] [--batch 16] [--max-new-tokens 24] [--model DIR]

Builds the tiny local SmolVLM (``kit_tools.tiny_models``: SmolVLM's Idefics3 architecture,
processor and chat template with random weights; a real SmolVLM folder can be given with
``--model``), captions the same Fashion-MNIST images (or generated ones when Debian's copy is
missing) once one image per ``generate`` call and once in batches with left padding, greedy in
both, checks that both give the same captions, and prints images per second for each. The last
line is ``caption_batching ratio: <batched / one at a time>`` (target: at least 4). The output is
also written to results/bench/captions.txt.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write  # noqa: E402


def images(n: int) -> list[Image.Image]:
    try:
        from siglip_adapter.config import load_config
        from siglip_adapter.sources import build_source

        source = build_source(load_config("fashion_mnist", root=ROOT))
        return source.load(source.ids[:n])
    except Exception as e:  # no local Fashion-MNIST: generated images of the same size
        print(f"(Fashion-MNIST unavailable: {e}; generated images)")
        rng = np.random.default_rng(0)
        return [Image.fromarray(rng.integers(0, 255, (28, 28, 3), dtype=np.uint8)) for _ in range(n)]


def timed(captioner, ims: list[Image.Image], batch: int) -> tuple[float, list[str]]:
    captioner.describe(ims[:batch])  # warm-up: first-call allocations stay out of the timing
    start = time.perf_counter()
    out = []
    for i in range(0, len(ims), batch):
        out += captioner.describe(ims[i : i + batch])
    return len(ims) / (time.perf_counter() - start), out


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=24)
    ap.add_argument("--model", type=Path, default=None, help="a SmolVLM folder (default: the tiny one, built here)")
    args = ap.parse_args(argv)

    from siglip_adapter.captions.captioners import VLMCaptioner
    from kit_tools.tiny_models import build_smolvlm

    lines = machine()
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_smolvlm(Path(tmp) / "smolvlm")
        cap = VLMCaptioner.from_pretrained(str(model), "Describe this image in one sentence.", max_new_tokens=args.max_new_tokens,
                                           device="cpu", precision="fp32")
        ims = images(args.images)
        one_rate, one = timed(cap, ims, 1)
        batch_rate, batched = timed(cap, ims, args.batch)
    ratio = batch_rate / one_rate
    lines += [f"model: {'tiny SmolVLM (random weights, Idefics3 architecture)' if args.model is None else args.model}; "
              f"{len(ims)} images, greedy, max_new_tokens {args.max_new_tokens}",
              f"one image per generate: {one_rate:.1f} images/s",
              f"batches of {args.batch} (left padding): {batch_rate:.1f} images/s",
              f"same captions both ways: {one == batched}",
              f"caption_batching ratio: {ratio:.2f}"]
    print("\n".join(lines))
    write("captions", lines)
    return ratio


if __name__ == "__main__":
    main(sys.argv[1:])
