"""Augmented views of the shot images (``shot_views`` in the parameters): a view is a random
resized crop of the image, flipped left-right with probability ``flip``, drawn from a generator
seeded by (``seed``, image id, view index), so a view is the same in every run, process and
machine. The encoder's own preprocessing then resizes it as any image. This is the augmentation
Tip-Adapter (gaopengcuhk/Tip-Adapter ``build_cache_model``), GDA and ProKeR (mrflogs/ICLR24,
BReg-Adapter) run over their shots: torchvision's ``RandomResizedCrop`` (crop area a uniform
share in ``scale`` of the image, aspect ratio log-uniform in ``ratio``, ten tries, then the
largest central crop within the ratios) and ``RandomHorizontalFlip``.

A view has an id of its own, ``<image id>#v<index>`` (``view_ids``); ``ViewSource`` opens such ids
from the image's source, so the image tower's pool keeps views beside the images (under fields
that name the view settings: ``stages.pools.tower_rows``). Only the shot images get views."""

from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np
from PIL import Image

MARK = "#v"


def view_ids(ids: Sequence[str], n: int) -> list[str]:
    """Every image's ``n`` view ids, view-major: all images' view 0, then view 1, ..."""
    return [f"{i}{MARK}{j}" for j in range(n) for i in ids]


def split_view_id(view_id: str) -> tuple[str, int]:
    """(image id, view index) of a view id."""
    image_id, sep, j = view_id.rpartition(MARK)
    if not sep or not j.isdigit():
        raise ValueError(f"'{view_id}' is not a view id (<image id>{MARK}<index>)")
    return image_id, int(j)


def _rng(seed: int, image_id: str, index: int) -> np.random.Generator:
    digest = hashlib.blake2b(f"{seed}\0{image_id}\0{index}".encode(), digest_size=8).digest()
    return np.random.default_rng(int.from_bytes(digest, "big"))


def crop_box(width: int, height: int, rng: np.random.Generator, scale: Sequence[float], ratio: Sequence[float]) -> tuple[int, int, int, int]:
    """(left, top, crop width, crop height) of a random resized crop of a ``width`` x ``height`` image."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = int(round(math.sqrt(target * aspect))), int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def augment(image: Image.Image, image_id: str, index: int, settings: dict) -> Image.Image:
    """View ``index`` of an image: its crop (at the image's own resolution) and flip."""
    rng = _rng(int(settings["seed"]), image_id, index)
    left, top, w, h = crop_box(image.width, image.height, rng, settings["scale"], settings["ratio"])
    view = image.crop((left, top, left + w, top + h))
    return view.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.uniform() < float(settings["flip"]) else view


class ViewSource:
    """A source's images as views: ``open("<id>#v<j>")`` is view j of image ``<id>``; everything
    else (root, names in messages) is the source's."""

    def __init__(self, source, settings: dict):
        self.source, self.settings = source, dict(settings)

    def open(self, view_id: str) -> Image.Image:
        image_id, index = split_view_id(view_id)
        return augment(self.source.open(image_id), image_id, index, self.settings)

    def path_of(self, view_id: str) -> str:
        image_id, index = split_view_id(view_id)
        return f"{self.source.path_of(image_id)} (view {index})"

    def __getattr__(self, name):
        if name in ("source", "settings"):  # not set yet (unpickling in a worker)
            raise AttributeError(name)
        return getattr(self.source, name)


def settings_of(cfg: dict) -> dict:
    """The view settings that decide the views' pixels (the cache key's part)."""
    v = cfg["shot_views"]
    return {"n": int(v["n"]), "scale": [float(x) for x in v["scale"]], "ratio": [float(x) for x in v["ratio"]], "flip": float(v["flip"]),
            "seed": int(v["seed"])}
