"""A run's inputs (its manifest and features, read through the run's index of the feature store)
and the shape of a result row: what every stage that scores methods reads and writes.

Every row is one (method, shots, seed) with the accuracy on test, the validation accuracy that
chose the hyper-parameters, what chose them (``selected_on``) and the chosen values, so each
number in Table I traces back to a CSV row.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pandas as pd
import torch

from .data import read_manifest, sample_shots
from .paths import RUN_COLUMNS, RunPaths
from .store import Features, FeatureStore, content_hash


@dataclass
class Inputs:
    """Features of one run, read through the run's index of the feature store (02_embed)."""

    manifest: pd.DataFrame
    image: Features  # over every image read
    caption: Features  # over every captioned image (only the shots under ``captions.only_shots``)
    class_text: torch.Tensor  # (N, D)
    scale: float
    bias: float
    views: Features | None = None  # the shot images' augmented views (``shot_views.n`` > 0), ids ``<image id>#v<j>``

    @property
    def classnames(self) -> list[str]:
        """The class names in label order."""
        return list(self.manifest.drop_duplicates("label").sort_values("label")["classname"])

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

    def shot_views(self, k: int, seed: int, n: int) -> torch.Tensor | None:
        """(n, N*K, D): the ``n`` augmented views of one K-shot sample's images (in ``shots``' order),
        or None with n = 0."""
        if not n:
            return None
        if self.views is None:
            raise KeyError(f"shot_views.n is {n} but the run's features have no views; rerun 02_embed")
        from .views import view_ids

        ids = sample_shots(self.manifest, k, seed)["image_id"].tolist()
        return self.views.take(view_ids(ids, n)).reshape(n, len(ids), -1)

    def fingerprint(self) -> str:
        """SHA-256 of everything a method reads from these inputs: the manifest, every feature row
        with its id, the class prompts and the logit form (part of ``methods.loop.cells_key``)."""
        h = hashlib.sha256(pd.util.hash_pandas_object(self.manifest, index=False).to_numpy().tobytes())
        for feats in (self.image, self.caption) + ((self.views,) if self.views is not None else ()):
            h.update(json.dumps(list(feats.ids)).encode() + content_hash(feats.values).encode())
        h.update(content_hash(self.class_text).encode() + repr((float(self.scale), float(self.bias))).encode())
        return h.hexdigest()

    def validation(self, cfg: dict, k: int, seed: int | None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """The images that choose hyper-parameters for K shots and one seed: the whole validation
        split (also for seed None), or (``validation.per_class`` n > 0) min(K, n) per class drawn
        from it for that seed, or (``validation.images`` none) no image at all."""
        n = int(cfg["validation"]["per_class"])
        if not has_validation(cfg):
            images, captions, labels = self.split("val")
            return images[:0], None if captions is None else captions[:0], labels[:0]
        if n == 0 or seed is None:
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
    form = cfg["methods"]["zero_shot"]["logit_form"]
    if form == "siglip":
        scale, bias = prompts.meta["logit_scale"], prompts.meta["logit_bias"]
    else:
        scale, bias = LOGIT_SCALES[form], 0.0
    return Inputs(manifest, feats["image"], feats["caption"], prompts.values, scale, bias, feats.get("view"))


def run_columns(cfg: dict) -> dict:
    """The run's name columns of a result row: dataset, backbone, protocol."""
    return dict(zip(RUN_COLUMNS, (cfg["run"]["dataset"], cfg["backbone"], cfg["protocol"])))


def result_row(cfg, method, shots, seed, test_acc, val_acc, selected_on, search, candidates, **chosen) -> dict:
    """One method's row at one cell: where and how it chose (``search``: the rule, ``candidates``:
    how many settings it compared) and what it chose (``chosen``)."""
    return {**run_columns(cfg), "method": method, "shots": shots, "seed": seed,
            "accuracy": test_acc, "val_accuracy": val_acc, "selected_on": selected_on, "search": search, "candidates": candidates,
            "logit_form": cfg["methods"]["zero_shot"]["logit_form"], **chosen}


def has_validation(cfg: dict) -> bool:
    """Whether the protocol gives validation images (``validation.images``; support_only: none)."""
    return cfg["validation"].get("images", "split") != "none"


def selected_on(cfg: dict) -> str:
    if not has_validation(cfg):
        return "none"
    return "val" if int(cfg["validation"]["per_class"]) == 0 else f"val_min_k_{cfg['validation']['per_class']}"
