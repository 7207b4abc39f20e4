"""The loops the notebooks report: zero-shot, and seeds x shots for the adapters.

Every function returns one row per (method, shots, seed) with the accuracy on test, the
validation accuracy that chose the hyper-parameters, and the chosen values, so each number in
Table I traces back to a CSV row.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import adapters
from .config import seeds as seed_list
from .data import read_manifest, sample_shots
from .paths import RunPaths
from .store import Features, FeatureStore
from .trainable import fit_trainable


@dataclass
class Inputs:
    """Features of one run, read from the cache that 02_embed wrote."""

    manifest: pd.DataFrame
    image: Features  # over every manifest image
    caption: Features  # over every captioned image
    class_text: torch.Tensor  # (N, D)
    scale: float
    bias: float

    def _take(self, rows: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = rows["image_id"].tolist()
        return self.image.take(ids), self.caption.take(ids), torch.tensor(rows["label"].to_numpy(), dtype=torch.long)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(images (M, D), captions (M, D), labels (M,)) of a split."""
        return self._take(self.manifest[self.manifest["split"] == name])

    def shots(self, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(I_train (N*K, D), T_train (N*K, D), labels (N*K,)) of one K-shot sample."""
        return self._take(sample_shots(self.manifest, k, seed))


def load_inputs(paths: RunPaths, cfg: dict) -> Inputs:
    feats = FeatureStore(paths.features).load_index()
    for kind in ("image", "caption", "class_prompt"):
        if kind not in feats:
            raise KeyError(f"{paths.features / 'index.json'} has no '{kind}' features; rerun 02_embed")
    prompts = feats["class_prompt"]
    if cfg["zero_shot"]["logit_form"] == "siglip":
        scale, bias = prompts.meta["logit_scale"], prompts.meta["logit_bias"]
    else:
        scale, bias = 1.0, 0.0
    return Inputs(read_manifest(paths.manifest), feats["image"], feats["caption"], prompts.values, scale, bias)


def _row(cfg, method, shots, seed, test_acc, val_acc, **chosen) -> dict:
    return {"dataset": cfg["run"]["dataset"], "protocol": cfg["protocol"], "method": method, "shots": shots, "seed": seed,
            "accuracy": test_acc, "val_accuracy": val_acc, "logit_form": cfg["zero_shot"]["logit_form"], **chosen}


def zero_shot_rows(inp: Inputs, cfg: dict) -> pd.DataFrame:
    """Class-prompt zero-shot, and zero-shot with captions (caption weight chosen on val)."""
    vi, vc, vl = inp.split("val")
    ti, tc, tl = inp.split("test")
    zs = lambda x: adapters.zero_shot_logits(x, inp.class_text, inp.scale, inp.bias)  # noqa: E731
    rows = [_row(cfg, "zero_shot", 0, None, adapters.accuracy(zs(ti), tl), adapters.accuracy(zs(vi), vl))]
    alpha, val_acc = adapters.search_caption_alpha(vi, vc, vl, inp.class_text, cfg["zero_shot_captions"]["alpha"], inp.scale, inp.bias)
    test = adapters.accuracy(adapters.caption_zero_shot_logits(ti, tc, inp.class_text, alpha, inp.scale, inp.bias), tl)
    rows.append(_row(cfg, "zero_shot_captions", 0, None, test, val_acc, alpha=alpha))
    return pd.DataFrame(rows)


def adapter_rows(inp: Inputs, cfg: dict) -> pd.DataFrame:
    """Training-free adapter for every K and seed: (alpha, theta, beta) searched on val."""
    vi, _, vl = inp.split("val")
    ti, _, tl = inp.split("test")
    g = cfg["adapter"]
    rows = []
    for k in tqdm(cfg["shots"], desc="adapter shots"):
        for seed in seed_list(cfg):
            keys, caption_keys, labels = inp.shots(k, seed)
            c = adapters.search_adapter(vi, vl, keys, caption_keys, labels, inp.class_text, g["alpha"], g["theta"], g["beta"], inp.scale, inp.bias)
            logits = adapters.adapter_logits(ti, keys, caption_keys, labels, inp.class_text, c.alpha, c.theta, c.beta, inp.scale, inp.bias)
            rows.append(_row(cfg, "adapter", k, seed, adapters.accuracy(logits, tl), c.val_accuracy, alpha=c.alpha, theta=c.theta, beta=c.beta))
    return pd.DataFrame(rows)


def trainable_rows(inp: Inputs, cfg: dict, adapter_choices: pd.DataFrame) -> pd.DataFrame:
    """Trainable adapter for every K and seed, started from that K and seed's training-free
    choice of (alpha, theta, beta) (the rows of 04_adapter)."""
    vi, _, vl = inp.split("val")
    ti, _, tl = inp.split("test")
    t = cfg["trainable"]
    start = adapter_choices.set_index(["shots", "seed"])
    rows = []
    for k in tqdm(cfg["shots"], desc="trainable shots"):
        for seed in seed_list(cfg):
            if (k, seed) not in start.index:
                raise KeyError(f"no training-free choice for shots={k}, seed={seed}; rerun 04_adapter with the same shots and seeds")
            c = start.loc[(k, seed)]
            keys, caption_keys, labels = inp.shots(k, seed)
            fit = fit_trainable(keys, labels, caption_keys, inp.class_text, vi, vl, float(c["alpha"]), float(c["theta"]), float(c["beta"]),
                                t["lr"], t["epochs"], t["weight_decay"], t["eval_every"], inp.scale, inp.bias, seed=seed)
            with torch.no_grad():
                acc = adapters.accuracy(fit.model.eval()(ti), tl)
            rows.append(_row(cfg, "trainable", k, seed, acc, fit.val_accuracy, alpha=float(c["alpha"]), theta=float(c["theta"]),
                             beta=float(c["beta"]), lr=fit.lr, epoch=fit.epoch))
    return pd.DataFrame(rows)
