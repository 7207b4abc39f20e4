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
from .trainable import fit_authors, fit_trainable


@dataclass
class Inputs:
    """Features of one run, read through the run's index of the feature store (02_embed)."""

    manifest: pd.DataFrame
    image: Features  # over every image read
    caption: Features  # over every captioned image (only the shots under ``captions.only_shots``)
    class_text: torch.Tensor  # (N, D)
    scale: float
    bias: float

    def _take(self, rows: pd.DataFrame) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        ids = rows["image_id"].tolist()
        have = set(self.caption.ids)
        captions = self.caption.take(ids) if all(i in have for i in ids) else None
        return self.image.take(ids), captions, torch.tensor(rows["label"].to_numpy(), dtype=torch.long)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(images (M, D), captions (M, D) or None when they were not captioned, labels (M,))."""
        return self._take(self.manifest[self.manifest["split"] == name])

    def shots(self, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(I_train (N*K, D), T_train (N*K, D), labels (N*K,)) of one K-shot sample."""
        return self._take(sample_shots(self.manifest, k, seed))

    def validation(self, cfg: dict, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The images that choose hyper-parameters for K shots and one seed: the whole validation
        split, or (``validation.per_class`` n > 0) min(K, n) per class drawn from it for that seed."""
        n = int(cfg["validation"]["per_class"])
        if n == 0:
            return self.split("val")
        return self._take(sample_shots(self.manifest, min(k, n), seed, split="val", strict=False))


LOGIT_SCALES = {"cosine": 1.0, "cosine100": 100.0}


def load_inputs(paths: RunPaths, cfg: dict) -> Inputs:
    """The run's inputs through its index (``features.json``) and manifest."""
    feats = FeatureStore(paths.features).load_index(paths.features_index)
    for kind in ("image", "caption", "class_prompt"):
        if kind not in feats:
            raise KeyError(f"{paths.features_index} has no '{kind}' features; rerun 02_embed")
    return inputs_from(read_manifest(paths.manifest), feats, cfg)


def inputs_from(manifest: pd.DataFrame, feats: dict[str, Features], cfg: dict) -> Inputs:
    """Inputs from a manifest and features in memory ({image, caption, class_prompt})."""
    prompts = feats["class_prompt"]
    form = cfg["zero_shot"]["logit_form"]
    if form == "siglip":
        scale, bias = prompts.meta["logit_scale"], prompts.meta["logit_bias"]
    else:
        scale, bias = LOGIT_SCALES[form], 0.0
    return Inputs(manifest, feats["image"], feats["caption"], prompts.values, scale, bias)


def _row(cfg, method, shots, seed, test_acc, val_acc, selected_on, **chosen) -> dict:
    return {"dataset": cfg["run"]["dataset"], "protocol": cfg["protocol"], "method": method, "shots": shots, "seed": seed,
            "accuracy": test_acc, "val_accuracy": val_acc, "selected_on": selected_on, "logit_form": cfg["zero_shot"]["logit_form"],
            **chosen}


def _selected_on(cfg: dict) -> str:
    return "val" if int(cfg["validation"]["per_class"]) == 0 else f"val_min_k_{cfg['validation']['per_class']}"


def zero_shot_rows(inp: Inputs, cfg: dict) -> pd.DataFrame:
    """Table I's first two columns: class-prompt zero-shot, and the second column as the
    protocol defines it (``zero_shot_captions.method``): zero-shot on the image and its own
    caption with the caption weight chosen on validation, or the authors' fixed training-free
    cache on the smallest K's shots (no selection at all)."""
    ti, tc, tl = inp.split("test")
    vi, _, vl = inp.split("val")
    zs = lambda x: adapters.zero_shot_logits(x, inp.class_text, inp.scale, inp.bias)  # noqa: E731
    rows = [_row(cfg, "zero_shot", 0, None, adapters.accuracy(zs(ti), tl), adapters.accuracy(zs(vi), vl), "none")]
    z = cfg["zero_shot_captions"]
    if z["method"] == "fixed_cache":
        k, f = min(cfg["shots"]), z["fixed"]
        for seed in seed_list(cfg):
            keys, caption_keys, labels = inp.shots(k, seed)
            logits = adapters.adapter_logits(ti, keys, caption_keys, labels, inp.class_text, f["alpha"], f["theta"], f["beta"], inp.scale, inp.bias)
            rows.append(_row(cfg, "zero_shot_captions", k, seed, adapters.accuracy(logits, tl), float("nan"), "fixed",
                             alpha=f["alpha"], theta=f["theta"], beta=f["beta"]))
        return pd.DataFrame(rows)
    if tc is None:  # captions.only_shots: test images have no captions to mix in
        return pd.DataFrame(rows)
    budget = int(cfg["validation"]["per_class"])
    for seed in (seed_list(cfg) if budget else [None]):
        vi, vc, vl = inp.validation(cfg, budget, seed) if budget else inp.split("val")
        alpha, val_acc = adapters.search_caption_alpha(vi, vc, vl, inp.class_text, z["alpha"], inp.scale, inp.bias)
        test = adapters.accuracy(adapters.caption_zero_shot_logits(ti, tc, inp.class_text, alpha, inp.scale, inp.bias), tl)
        rows.append(_row(cfg, "zero_shot_captions", 0, seed, test, val_acc, _selected_on(cfg), alpha=alpha))
    return pd.DataFrame(rows)


# What the adapter's text keys T_train are (the caption ablation of 04_adapter): the shots' own
# captions (the paper's), each shot's class prompt, or none (alpha fixed at 0: Tip-Adapter's cache).
TEXT_KEYS = {"caption": "caption keys", "classname": "class-name keys", "none": "no text keys (alpha = 0)"}


def adapter_rows(inp: Inputs, cfg: dict, keys: str = "caption") -> pd.DataFrame:
    """Training-free adapter for every K and seed: (alpha, theta, beta) searched on validation.
    ``keys`` (``TEXT_KEYS``): the text keys of the cache; ``none`` searches alpha = 0 only."""
    if keys not in TEXT_KEYS:
        raise ValueError(f"keys '{keys}' is not one of {list(TEXT_KEYS)}")
    ti, _, tl = inp.split("test")
    g = cfg["adapter"]
    alphas = [0.0] if keys == "none" else g["alpha"]
    rows = []
    for k in tqdm(cfg["shots"], desc=f"adapter shots ({TEXT_KEYS[keys]})"):
        for seed in seed_list(cfg):
            vi, _, vl = inp.validation(cfg, k, seed)
            image_keys, caption_keys, labels = inp.shots(k, seed)
            text_keys = inp.class_text[labels] if keys == "classname" else caption_keys
            c = adapters.search_adapter(vi, vl, image_keys, text_keys, labels, inp.class_text, alphas, g["theta"], g["beta"], inp.scale, inp.bias)
            logits = adapters.adapter_logits(ti, image_keys, text_keys, labels, inp.class_text, c.alpha, c.theta, c.beta, inp.scale, inp.bias)
            rows.append(_row(cfg, "adapter", k, seed, adapters.accuracy(logits, tl), c.val_accuracy, _selected_on(cfg),
                             alpha=c.alpha, theta=c.theta, beta=c.beta, keys=keys))
    return pd.DataFrame(rows)


def text_key_rows(inp: Inputs, cfg: dict, adapter: pd.DataFrame) -> pd.DataFrame:
    """Is a caption worth it? The adapter at every K and seed with each kind of text key
    (``TEXT_KEYS``), every variant's hyper-parameters chosen on validation alike: ``adapter`` (the
    caption-key rows already computed) plus class-name keys and no text keys."""
    return pd.concat([adapter, adapter_rows(inp, cfg, "classname"), adapter_rows(inp, cfg, "none")], ignore_index=True)


def trainable_rows(inp: Inputs, cfg: dict, adapter_choices: pd.DataFrame) -> pd.DataFrame:
    """Trainable adapter for every K and seed. ``trainable.method: ours``: started from that K
    and seed's training-free choice of (alpha, theta, beta) (the rows of 04_adapter), learning
    rate and epoch chosen on validation. ``authors``: the authors' model and loop, whose epoch is
    chosen on test (the row says so in ``selected_on``)."""
    ti, _, tl = inp.split("test")
    t = cfg["trainable"]
    start = adapter_choices.set_index(["shots", "seed"])
    rows = []
    for k in tqdm(cfg["shots"], desc="trainable shots"):
        for seed in seed_list(cfg):
            keys, caption_keys, labels = inp.shots(k, seed)
            if t["method"] == "authors":
                fit = fit_authors(keys, labels, caption_keys, inp.class_text, ti, tl, inp.scale, inp.bias, seed=seed)
                rows.append(_row(cfg, "trainable", k, seed, fit.test_accuracy, float("nan"), "test", epoch=fit.epoch,
                                 rescored=fit.rescored))
                continue
            if (k, seed) not in start.index:
                raise KeyError(f"no training-free choice for shots={k}, seed={seed}; rerun 04_adapter with the same shots and seeds")
            c = start.loc[(k, seed)]
            vi, _, vl = inp.validation(cfg, k, seed)
            fit = fit_trainable(keys, labels, caption_keys, inp.class_text, vi, vl, float(c["alpha"]), float(c["theta"]), float(c["beta"]),
                                t["lr"], t["epochs"], t["weight_decay"], t["eval_every"], inp.scale, inp.bias, seed=seed,
                                patience=t["patience"])
            with torch.no_grad():
                acc = adapters.accuracy(fit.model.eval()(ti), tl)
            rows.append(_row(cfg, "trainable", k, seed, acc, fit.val_accuracy, _selected_on(cfg), alpha=float(c["alpha"]),
                             theta=float(c["theta"]), beta=float(c["beta"]), lr=fit.lr, epoch=fit.epoch))
    return pd.DataFrame(rows)
