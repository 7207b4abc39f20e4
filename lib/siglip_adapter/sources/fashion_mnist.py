"""``fashion-mnist``: the IDX files of Debian's ``dataset-fashion-mnist``, else the hub.

The IDX files carry no class names, so this dataset (not one of the paper's) names its classes
in ``params/fashion_mnist.yaml``. Images are held in memory as uint8 arrays; ids are
``<part>/<index>``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .base import Source


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


class ArraySource(Source):
    """Grey or RGB images held in memory as uint8 arrays, with ids ``<part>/<index>``."""

    def __init__(self, parts: dict[str, tuple[np.ndarray, np.ndarray]], classnames: list[str], invert: bool = False, root: str = "memory"):
        ids = [f"{p}/{i}" for p, (x, _) in parts.items() for i in range(len(x))]
        labels = np.concatenate([np.asarray(y, dtype=np.int64) for _, y in parts.values()])
        own = [p for p, (x, _) in parts.items() for _ in range(len(x))]
        splits = np.asarray(own, dtype=object) if set(own) <= {"train", "val", "test"} else None
        super().__init__(kind="fashion-mnist", root=root, classnames=list(classnames), ids=ids, labels=labels, splits=splits,
                         found=len(ids), invert=invert, raw_classnames=list(classnames))
        self._images = {p: x for p, (x, _) in parts.items()}
        if self.labels.min() < 0 or self.labels.max() >= len(self.classnames):
            raise ValueError(f"labels span {self.labels.min()}..{self.labels.max()} but there are {len(self.classnames)} classnames")

    def open(self, image_id: str) -> Image.Image:
        part, _, index = image_id.partition("/")
        if part not in self._images or not index.isdigit() or int(index) >= len(self._images[part]):
            raise KeyError(f"unknown image id {image_id!r}")
        im = Image.fromarray(self._images[part][int(index)]).convert("RGB")
        return ImageOps.invert(im) if self.invert else im


def fashion_mnist_source(d: dict) -> ArraySource:
    if not d.get("classnames"):
        raise ValueError("dataset.classnames is required for source 'fashion-mnist' (its IDX files carry no names)")
    root = Path(d.get("idx_dir", "/usr/share/datasets/fashion-mnist"))
    names = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
    parts = {}
    for part, (img, lab) in names.items():
        found = [root / f"{n}{ext}" for n in (img, lab) for ext in (".gz", "") if (root / f"{n}{ext}").is_file()]
        if len(found) != 2:
            return _from_hub(d, reason=f"no IDX files for '{part}' in {root}")
        parts[part] = (read_idx(found[0]), read_idx(found[1]))
    return ArraySource(parts, _names(d), invert=d.get("invert", False), root=str(root))


def _from_hub(d: dict, reason: str) -> ArraySource:
    import datasets

    hub_id = d.get("hub_id", "zalando-datasets/fashion_mnist")
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
    return ArraySource(parts, _names(d), invert=d.get("invert", False), root=hub_id)


def _names(d: dict) -> list[str]:
    """The names params give, cleaned like every source's (``classname_style`` and friends)."""
    from .base import clean_classnames

    return clean_classnames(d["classnames"], d)[1]
