"""The embed stage's image throughput against the bare encoder forward, measured in one run.

    python bench/embed.py [--dataset fashion_mnist] [--images 768] [--rounds 3]

Bare: the images decoded and preprocessed beforehand (not timed), then only the encoder's image
tower (``tower_pixels``) over them in the configured batches, channels_last as the encoder runs it.
Stage: what the embed stage runs for images it has not seen, ``stages.pools.tower_rows`` into an empty
temporary store: images decoded and preprocessed as ``data.num_workers`` says (``auto`` on 2 CPU
cores with 2 torch threads: in the main process, between batches), the tower runs, and every chunk is
written atomically (fsync) with its SHA-256. The rounds alternate bare and stage so a noisy
machine slows both alike. The last line is ``embed ratio: <stage images/s / bare images/s>``
(target: at least 0.9).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report  # noqa: E402


def main(argv: list[str] | None = None) -> float:
    import torch

    from siglip_adapter import data, stages
    from siglip_adapter.sources import build_source
    from siglip_adapter.config import load_config
    from siglip_adapter.encoders import build_encoder
    from siglip_adapter.store import FeatureStore

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--images", type=int, default=768)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)

    report = Report("embed")
    cfg = load_config(args.dataset)
    encoder = build_encoder(cfg)
    source = build_source(cfg)
    manifest = data.make_manifest(source, cfg["dataset"].get("per_class"), cfg["split"]["fractions"], cfg["split"]["seed"])
    ids = sorted(manifest["image_id"])[: args.images]
    bs, workers = cfg["encoder"]["batch_size"], cfg["data"]["num_workers"]
    report.add(f"{cfg['encoder']['model_id']} ({cfg['encoder']['name']}), {len(ids)} {args.dataset} images, batch {bs}, "
               f"{data.resolve_workers(workers)} decoding worker(s), device {encoder.device}, precision {encoder.precision}")

    pixels = torch.cat([x if isinstance(x, torch.Tensor) else torch.stack(x)
                        for _, x in data.load_images(source, ids, bs, workers, encoder.preprocess, "decode")])
    encoder.tower_pixels(pixels[:bs])  # warm-up: weights loaded, kernels chosen

    def bare() -> float:
        t = time.perf_counter()
        for i in range(0, len(pixels), bs):
            encoder.tower_pixels(pixels[i : i + bs])
        return len(pixels) / (time.perf_counter() - t)

    def stage() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            rows = stages.pools.tower_rows(cfg, FeatureStore(Path(tmp)), source, encoder)
            t = time.perf_counter()
            out = rows(ids)
            speed = len(ids) / (time.perf_counter() - t)
        assert out.shape[0] == len(ids)
        return speed

    speeds = {"bare": [], "stage": []}
    for r in range(args.rounds):
        speeds["bare"].append(bare())
        speeds["stage"].append(stage())
        report.add(f"round {r + 1}: bare forward {speeds['bare'][-1]:.1f} images/s, embed stage {speeds['stage'][-1]:.1f} images/s")
    b, s = sum(speeds["bare"]) / args.rounds, sum(speeds["stage"]) / args.rounds
    report.add(f"mean: bare forward {b:.1f} images/s, embed stage {s:.1f} images/s")
    report.finish(s / b)
    return s / b


if __name__ == "__main__":
    main()
