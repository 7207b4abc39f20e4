"""Image sources, one module per kind, behind one interface; ``dataset.source`` picks one.

- ``folder``: an image tree, ``<root>/<class>/<file>`` or a flat folder whose file names carry
  the class through ``dataset.filename_regex``; optional official split lists.
- ``hf``: a Hugging Face dataset id or a local folder of Parquet files (``datasets.load_dataset``).
- ``coop``: CoOp's ``split_zhou_<Dataset>.json`` over an image root (train / val / test).
- ``fashion-mnist``: the IDX files of Debian's ``dataset-fashion-mnist`` (else the hub).

Every source lists its images without decoding one: ``ids`` (stable strings, sorted), ``labels``,
``classnames`` (derived from the data, then cleaned by the dataset's class map), ``splits`` (the
source's own train / val / test per id, or None), ``found`` (candidate files) and ``skipped``
(files already known to be bad while listing, e.g. empty). ``open(id)`` decodes one image to RGB
or raises ``ImageError`` with the reason.

A new kind is one module here, ``<kind>.py``, with a ``sources.base.Source`` subclass (or a
``FileSource`` and ``base.finish``) and ``<kind>_source(d)`` building it from ``cfg["dataset"]``.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from typing import Callable

from ..paths import in_kaggle, kaggle_input
from .base import Source

SHARED = ("base", "images")  # this package's modules that are not a kind of source


def _kinds() -> dict[str, str]:
    """{kind: module}: each module of this package is a kind of source (``fashion_mnist`` is
    ``fashion-mnist``), listed without importing it."""
    return {info.name.replace("_", "-"): info.name for info in pkgutil.iter_modules(__path__) if info.name not in SHARED}


SOURCE_KINDS = tuple(sorted(_kinds()))  # dataset.source's choices (schema)


def _registry() -> dict[str, Callable[[dict], Source]]:
    """{kind: its ``<module>_source(d)``}, each module imported on first use."""
    return {kind: getattr(importlib.import_module(f"{__name__}.{module}"), f"{module}_source") for kind, module in _kinds().items()}


KAGGLE_IMAGES_ENV = "SIGLIP_ADAPTER_KAGGLE_IMAGES"  # a kernel's images input (OWNER/SLUG), over dataset.kaggle.dataset_source


def effective_dataset(d: dict) -> dict:
    """``cfg['dataset']`` as this machine reads it. Inside a Kaggle kernel a dataset with a
    ``dataset.kaggle`` block (the authors' input layout) reads that layout from the mounted input it
    names (``dataset_source``, or the kernel's own choice in ``SIGLIP_ADAPTER_KAGGLE_IMAGES``),
    found under either of Kaggle's mount layouts (``paths.kaggle_input``); its ``root`` and split
    files are relative to the mount. An input that is not mounted is an error naming the paths
    tried, never a silent fall-back to another copy of the data (the ``paper`` protocol's splits
    and class names depend on the authors' layout). Elsewhere the block is ignored."""
    k = d.get("kaggle") or {}
    if not k or not in_kaggle():
        return d
    ref = os.environ.get(KAGGLE_IMAGES_ENV) or k.get("dataset_source")
    if not ref:
        raise FileNotFoundError(f"dataset {d.get('name')}: dataset.kaggle names no dataset_source; attach the images' Kaggle "
                                "dataset (siglip-adapter kaggle --images DATASET=OWNER/SLUG) or set dataset.kaggle.dataset_source")
    mount = kaggle_input(ref, "dataset", f"dataset {d.get('name')} (dataset.kaggle)")
    layout = {key: v for key, v in k.items() if key != "dataset_source"}
    layout["root"] = str(mount / (layout.get("root") or "."))
    return {**{key: v for key, v in d.items() if key != "kaggle"}, **layout}


def build_source(cfg: dict) -> Source:
    """The source that ``cfg['dataset']`` describes (its Kaggle layout inside a kernel)."""
    d = effective_dataset(cfg["dataset"])
    kind = d.get("source")
    sources = _registry()
    if kind not in sources:
        raise ValueError(f"dataset.source '{kind}' is not one of {sorted(sources)}")
    return sources[kind](d)

