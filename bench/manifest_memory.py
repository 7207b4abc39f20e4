"""Peak memory and time of listing, splitting and embedding a large image folder.

    python bench/manifest_memory.py [--sizes 2000 20000] [--embed 256]

For each size, a fresh process lists a generated class-folder tree of small PNGs (nothing
decoded), builds the stratified split, checks every image a stage would read (full decode in
DataLoader workers), and embeds a fixed subset with the offline ConSE encoder, printing the time
of each step and the process's peak RSS (main process and workers). Memory must not grow with
the folder: the last line is ``manifest_memory ratio: <peak RSS at the largest size / at the
smallest>``. The output is also written to results/bench/manifest_memory.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, write  # noqa: E402


def make_tree(root: Path, n: int, classes: int = 100) -> None:
    rng = np.random.default_rng(0)
    for i in range(n):
        c = root / f"class_{i % classes:03d}"
        c.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(c / f"{i:06d}.png")


def peak_rss_mb() -> dict:
    me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"main_mb": round(me, 1), "largest_worker_mb": round(kids, 1)}


def one_size(n: int, embed: int) -> dict:
    """Runs in its own process, so ru_maxrss is this size's peak alone."""
    from siglip_adapter import stages
    from siglip_adapter.config import load_config
    from siglip_adapter.data import make_manifest
    from siglip_adapter.encoders import build_encoder
    from siglip_adapter.encoders.base import encode_image_ids
    from siglip_adapter.sources import build_source

    out = {"images": n}
    with tempfile.TemporaryDirectory() as tmp:
        make_tree(Path(tmp), n)
        cfg = load_config("digits", root=ROOT)
        cfg["dataset"] = {"name": "bench", "source": "folder", "root": tmp, "template": "a photo of a {}."}
        cfg["shots"], cfg["n_seeds"] = [1, 2, 4], 3
        cfg["split"]["fractions"] = {"train": 0.96, "val": 0.02, "test": 0.02}  # val/test a fixed share: the read set grows with n
        t = time.perf_counter()
        source = build_source(cfg)
        out["list_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        make_manifest(source, None, cfg["split"]["fractions"], 0)
        out["split_s"] = round(time.perf_counter() - t, 2)
        out["after_listing"] = peak_rss_mb()
        t = time.perf_counter()
        manifest, skipped = stages.split.checked_manifest(cfg, source)
        read = stages.split.ids_to_read(manifest, cfg)
        out["checked_images"], out["check_s"] = len(read), round(time.perf_counter() - t, 2)
        encoder = build_encoder(cfg)
        t = time.perf_counter()
        feats = encode_image_ids(encoder, source, read[:embed], cfg["encoder"]["batch_size"], cfg["data"]["num_workers"])
        out["embedded"], out["embed_s"] = int(feats.shape[0]), round(time.perf_counter() - t, 2)
        out["peak"] = peak_rss_mb()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 20000])
    ap.add_argument("--embed", type=int, default=256)
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_size(args.one, args.embed)))
        return
    env = {**os.environ, "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1"}
    lines = machine()
    results = []
    for n in args.sizes:
        res = subprocess.run([sys.executable, __file__, "--one", str(n), "--embed", str(args.embed)], capture_output=True, text=True,
                             env=env, check=True)
        r = json.loads(res.stdout.strip().splitlines()[-1])
        results.append(r)
        lines.append(f"{n:>7} images: list {r['list_s']} s, split {r['split_s']} s, check {r['checked_images']} read images "
                     f"{r['check_s']} s, embed {r['embedded']} {r['embed_s']} s; peak RSS main {r['peak']['main_mb']} MB "
                     f"(after listing {r['after_listing']['main_mb']} MB), largest worker {r['peak']['largest_worker_mb']} MB")
    ratio = results[-1]["peak"]["main_mb"] / results[0]["peak"]["main_mb"]
    lines.append(f"manifest_memory ratio: {ratio:.3f}")
    print("\n".join(lines))
    write("manifest_memory", lines)


if __name__ == "__main__":
    main()
