"""The adapter's hyper-parameter search: the batched grid against one combination at a time.

    python bench/hp_search.py [--dataset fashion_mnist] [--protocol corrected] [--shots 16]

On the offline run's real features (``make repro`` first: they are read from its feature store),
for each of the run's seeds, the (alpha, theta, beta) grid below (11 x 10 x 10 = 1,100
combinations) is searched on the validation split twice: by ``methods.cache.search_adapter`` (the
affinities once, one matrix product per (alpha, theta), every beta at once, as the kit runs it)
and by a plain loop that scores each combination with ``methods.cache.adapter_logits`` and
``methods.loop.accuracy`` and keeps the first best. Both must choose the same values for every seed;
the last line is ``hp_search ratio: <loop seconds / batched seconds>`` (target: at least 20).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Report  # noqa: E402

ALPHAS = [round(a, 1) for a in np.linspace(0.0, 1.0, 11)]
THETAS = [0.5, 1.0, 2.0, 3.5, 5.0, 7.5, 10.0, 12.5, 15.0, 20.0]
BETAS = [0.0, 0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 4.0, 6.0, 8.0]


def loop_search(task, alphas, thetas, betas):
    """Every combination scored on its own, the first best kept (the grid order's tie rule)."""
    from siglip_adapter.methods.loop import accuracy
    from siglip_adapter.methods.cache import adapter_logits

    best, best_acc = None, -1.0
    s, v = task.shots, task.val
    for alpha in alphas:
        for theta in thetas:
            for beta in betas:
                logits = adapter_logits(v.images, s.images, s.captions, s.labels, task.class_text, alpha, theta, beta,
                                        task.scale, task.bias)
                acc = accuracy(logits, v.labels)
                if acc > best_acc:
                    best, best_acc = (alpha, theta, beta), acc
    return best, best_acc


def main(argv: list[str] | None = None) -> float:
    from siglip_adapter.inputs import load_inputs
    from siglip_adapter.methods import loop
    from siglip_adapter.methods.cache import search_adapter
    from siglip_adapter.config import load_config
    from siglip_adapter.paths import run_paths

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--protocol", default="corrected")
    ap.add_argument("--shots", type=int, default=16)
    args = ap.parse_args(argv)

    report = Report("hp_search")
    cfg = load_config(args.dataset, "", protocol=args.protocol)
    inp = load_inputs(run_paths(args.dataset, "", args.protocol), cfg)
    seeds = [cfg["seed_base"] + i for i in range(cfg["n_seeds"])]
    tasks = [loop.task_for(inp, cfg, args.shots, seed, None) for seed in seeds]
    n = len(ALPHAS) * len(THETAS) * len(BETAS)
    report.add(f"{args.dataset}/{args.protocol}, {args.shots} shots x {len(tasks[0].class_text)} classes, "
               f"{len(tasks[0].val.labels)} validation images; grid {len(ALPHAS)} x {len(THETAS)} x {len(BETAS)} = {n} "
               f"combinations; {len(seeds)} seeds")

    t = time.perf_counter()
    batched = [search_adapter(task.val.images, task.val.labels, task.shots.images, task.shots.captions, task.shots.labels,
                              task.class_text, ALPHAS, THETAS, BETAS, task.scale, task.bias) for task in tasks]
    t_batched = time.perf_counter() - t
    t = time.perf_counter()
    looped = [loop_search(task, ALPHAS, THETAS, BETAS) for task in tasks]
    t_loop = time.perf_counter() - t

    same = all((c.alpha, c.theta, c.beta) == best and abs(c.val_accuracy - acc) < 1e-6 for c, (best, acc) in zip(batched, looped))
    for seed, c in zip(seeds, batched):
        report.add(f"seed {seed}: alpha {c.alpha}, theta {c.theta}, beta {c.beta}, validation accuracy {c.val_accuracy:.4f}")
    report.add(f"batched grid (methods.cache.search_adapter): {t_batched:.2f} s ({len(seeds) * n / t_batched:,.0f} combinations/s)")
    report.add(f"one combination at a time: {t_loop:.2f} s ({len(seeds) * n / t_loop:,.0f} combinations/s)")
    report.add(f"same choice for every seed: {same}")
    if not same:
        raise SystemExit("the batched search and the loop disagree")
    report.finish(t_loop / t_batched)
    return t_loop / t_batched


if __name__ == "__main__":
    main()
