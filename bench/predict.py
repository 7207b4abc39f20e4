"""Where `siglip-adapter predict`'s time goes: start-up against images, measured in one run.

    python bench/predict.py [--card results/digits/cards/<card>.json] [--rounds 3]

Three commands, each a fresh process as a user runs it, alternated over the rounds so a noisy
machine slows them alike (the median is reported):
- the floor: a process that imports what predict must (torch, transformers' model classes, the kit's
  card module) and exits;
- `siglip-adapter predict` on 5 images of the card's dataset;
- the same on 50 images.
The per-image cost is (50 - 5) / 45; the start-up is the 5-image time less 5 per-image costs. The
last line is ``predict ratio: <5-image predict / floor>``: how close a small predict is to the bare
imports it cannot avoid (1.0 is the floor itself).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Report  # noqa: E402

FLOOR = "import torch, transformers.modeling_utils, siglip_adapter.cards, siglip_adapter.encoders"


def _seconds(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> float:
    import json

    from siglip_adapter.config import load_config
    from siglip_adapter.sources import effective_dataset
    from siglip_adapter.sources.base import resolve_root

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--card", type=Path, default=None, help="default: the first card of results/digits/cards/")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    card = args.card or sorted((ROOT / "results" / "digits" / "cards").glob("*.json"))[0]
    dataset = json.loads(card.read_text())["dataset"]
    images = sorted(p for p in resolve_root(effective_dataset(load_config(dataset)["dataset"])).rglob("*")
                    if p.suffix.lower() in (".png", ".jpg", ".jpeg"))[::7][:50]  # spread over the classes
    if len(images) < 50:
        raise SystemExit(f"{card}: its dataset {dataset} needs a folder of at least 50 images (a folder source)")
    cli = Path(sys.executable).with_name("siglip-adapter")
    report = Report("predict")
    report.add(f"card: {card.relative_to(ROOT)} ({dataset}); {args.rounds} rounds, medians")
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for n in (5, 50):
            folder = folders[n] = Path(tmp) / f"images{n}"
            folder.mkdir()
            for i, image in enumerate(images[:n]):
                shutil.copy(image, folder / f"{i:03d}{image.suffix}")
        times: dict[str, list[float]] = {"floor": [], "5": [], "50": []}
        for _ in range(args.rounds):
            times["floor"].append(_seconds([sys.executable, "-c", FLOOR]))
            for n in (5, 50):
                times[str(n)].append(_seconds([str(cli), "predict", "--card", str(card), str(folders[n]), "--out", str(Path(tmp) / "p.csv")]))
    floor, five, fifty = (statistics.median(times[k]) for k in ("floor", "5", "50"))
    per_image = (fifty - five) / 45
    report.add(f"floor (imports only): {floor:.2f} s")
    report.add(f"predict, 5 images: {five:.2f} s; 50 images: {fifty:.2f} s")
    report.add(f"per image: {per_image * 1000:.0f} ms; start-up (5 images less theirs): {five - 5 * per_image:.2f} s, "
               f"of which imports {floor:.2f} s")
    report.finish(five / floor)
    return five / floor


if __name__ == "__main__":
    main()
