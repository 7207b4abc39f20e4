"""Data: image sources, the stratified split manifest, and K-shot sampling.

A source is anything with ``classnames``, ``ids`` (stable string ids), ``labels`` (one int per
id) and ``load(ids) -> list[PIL.Image]``. The manifest is a table (image_id, label, classname,
split) written to parquet; every later stage reads images through it, so the split is fixed
once and its hash enters every cache key.
"""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
import pandas as pd
from PIL import Image

SPLITS = ("train", "val", "test")


class ImageSource(Protocol):
    classnames: list[str]
    ids: list[str]
    labels: np.ndarray

    def load(self, ids: Sequence[str]) -> list[Image.Image]: ...


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST: the IDX files of Debian's dataset-fashion-mnist, else the hub


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (gzip or plain) as a uint8 array; the format is MNIST's: magic, dims, data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} bytes (truncated?)")
    return data.reshape(dims)


class ArraySource:
    """Grey or RGB images held in memory as uint8 arrays, with ids ``<part>/<index>``."""

    def __init__(self, parts: dict[str, tuple[np.ndarray, np.ndarray]], classnames: list[str], invert: bool = False):
        self.classnames = list(classnames)
        self.invert = invert
        self._images = {p: x for p, (x, _) in parts.items()}
        self.ids = [f"{p}/{i}" for p, (x, _) in parts.items() for i in range(len(x))]
        self.labels = np.concatenate([np.asarray(y, dtype=np.int64) for _, y in parts.values()])
        if self.labels.min() < 0 or self.labels.max() >= len(self.classnames):
            raise ValueError(f"labels span {self.labels.min()}..{self.labels.max()} but there are {len(self.classnames)} classnames")

    def load(self, ids: Sequence[str]) -> list[Image.Image]:
        out = []
        for image_id in ids:
            part, _, index = image_id.partition("/")
            if part not in self._images or not index.isdigit() or int(index) >= len(self._images[part]):
                raise KeyError(f"unknown image id {image_id!r}")
            a = self._images[part][int(index)]
            if self.invert:
                a = 255 - a
            out.append(Image.fromarray(a).convert("RGB"))
        return out


def fashion_mnist_source(cfg_dataset: dict) -> ArraySource:
    d = Path(cfg_dataset.get("idx_dir", "/usr/share/datasets/fashion-mnist"))
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    parts = {}
    for part, (img, lab) in names.items():
        found = [d / f"{n}{ext}" for n in (img, lab) for ext in (".gz", "") if (d / f"{n}{ext}").is_file()]
        if len(found) != 2:
            return _fashion_mnist_from_hub(cfg_dataset, reason=f"no IDX files for '{part}' in {d}")
        parts[part] = (read_idx(found[0]), read_idx(found[1]))
    return ArraySource(parts, cfg_dataset["classnames"], invert=cfg_dataset.get("invert", False))


def _fashion_mnist_from_hub(cfg_dataset: dict, reason: str) -> ArraySource:
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - datasets is a core dependency
        raise RuntimeError(f"{reason}, and the datasets package is missing") from e
    hub_id = cfg_dataset.get("hub_id", "zalando-datasets/fashion_mnist")
    try:
        ds = datasets.load_dataset(hub_id)
    except Exception as e:
        raise RuntimeError(
            f"{reason}; loading '{hub_id}' from the Hugging Face hub failed too ({type(e).__name__}: {e}). "
            "Install Debian's dataset-fashion-mnist (make data) or give hub access."
        ) from e
    parts = {}
    for part in ("train", "test"):
        images = np.stack([np.asarray(im.convert("L")) for im in ds[part]["image"]])
        parts[part] = (images, np.asarray(ds[part]["label"]))
    return ArraySource(parts, cfg_dataset["classnames"], invert=cfg_dataset.get("invert", False))


SOURCES = {"fashion-mnist": fashion_mnist_source}


def build_source(cfg: dict) -> ImageSource:
    kind = cfg["dataset"]["source"]
    if kind not in SOURCES:
        raise ValueError(f"dataset.source '{kind}' is not one of {sorted(SOURCES)}")
    return SOURCES[kind](cfg["dataset"])


# ---------------------------------------------------------------------------------------------
# Split manifest and K-shot sampling


def make_manifest(source: ImageSource, per_class: int | None, fractions: dict[str, float], seed: int) -> pd.DataFrame:
    """Draw ``per_class`` images of each class (all if None) and split each class 70/20/10.

    Per class, the counts are rounded so train gets the remainder; every class keeps at least
    one image in each split, so a class too small for that is an error.
    """
    rng = np.random.default_rng(seed)
    ids = np.asarray(source.ids)
    rows = []
    for label, name in enumerate(source.classnames):
        members = np.flatnonzero(source.labels == label)
        n = len(members) if per_class is None else min(per_class, len(members))
        if n < 3:
            raise ValueError(f"class {name!r} has {len(members)} images; each split needs at least one")
        chosen = rng.permutation(members)[:n]
        n_val = max(1, int(round(fractions["val"] * n)))
        n_test = max(1, int(round(fractions["test"] * n)))
        n_train = n - n_val - n_test
        if n_train < 1:
            raise ValueError(f"class {name!r}: {n} images leave no training images")
        split = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
        rows += [(ids[i], label, name, s) for i, s in zip(chosen, split)]
    df = pd.DataFrame(rows, columns=["image_id", "label", "classname", "split"])
    return df.sort_values(["split", "label", "image_id"], kind="stable").reset_index(drop=True)


def manifest_hash(manifest: pd.DataFrame) -> str:
    """Content hash of the split: changes when any image, label or split assignment changes."""
    h = hashlib.sha256()
    for row in manifest[["image_id", "label", "split"]].itertuples(index=False):
        h.update(f"{row.image_id}\t{row.label}\t{row.split}\n".encode())
    return h.hexdigest()[:16]


def read_manifest(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no split manifest; run notebooks/01_captions first")
    df = pd.read_parquet(path)
    missing = {"image_id", "label", "classname", "split"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: manifest lacks columns {sorted(missing)}")
    return df


def sample_shots(manifest: pd.DataFrame, k: int, seed: int) -> pd.DataFrame:
    """K training images per class for one seed.

    Each class's training images are shuffled once per seed and the first K taken, so for a
    fixed seed the 1-shot set is inside the 2-shot set, and so on: the shots sweep adds data
    rather than redrawing it.
    """
    train = manifest[manifest["split"] == "train"]
    picked = []
    for label, group in train.groupby("label", sort=True):
        if len(group) < k:
            raise ValueError(f"class {group['classname'].iloc[0]!r} has {len(group)} training images, fewer than K={k}")
        ids = np.sort(group["image_id"].to_numpy())
        order = np.random.default_rng([seed, int(label)]).permutation(len(ids))
        picked.append(group.set_index("image_id").loc[ids[order[:k]]].reset_index())
    return pd.concat(picked, ignore_index=True)[manifest.columns]


def shot_image_ids(manifest: pd.DataFrame, k_max: int, seeds: Sequence[int]) -> list[str]:
    """Every image that some seed's K-shot set uses, for K up to ``k_max``."""
    used = set()
    for s in seeds:
        used.update(sample_shots(manifest, k_max, s)["image_id"])
    return sorted(used)
