"""What every image source is: ``Source`` (a listing of ids, labels, class names and the source's
own splits, and ``open(id)``), ``FileSource`` (files under a root), and the helpers the kinds share
(``finish`` builds a source from its listing, ``clean_classnames``, ``resolve_root``). A new kind
of source is a module in this package with a ``Source`` subclass and a ``<kind>_source(d)``."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from ..paths import data_root
from .images import open_rgb

SPLITS = ("train", "val", "test")


@dataclass
class Source:
    """What every source provides; subclasses fill it from their listing and define ``open``."""

    kind: str
    root: str  # where the images are, for messages and reports
    classnames: list[str]
    ids: list[str]
    labels: np.ndarray
    splits: np.ndarray | None = None  # the source's own split of each id, or None
    skipped: list[dict] = field(default_factory=list)  # [{path, reason}] found while listing
    found: int = 0  # candidate images listed, bad ones included
    invert: bool = False
    raw_classnames: list[str] = field(default_factory=list)

    def open(self, image_id: str) -> Image.Image:  # pragma: no cover - each source defines it
        raise NotImplementedError

    @property
    def display_root(self) -> str:
        """``root`` relative to the project when inside it, and a Kaggle input as Kaggle names it
        (``/kaggle/input/...``, wherever ``paths.kaggle_root`` is): what committed reports record,
        so they do not depend on where a checkout or a machine lives."""
        from ..paths import kaggle_root, project_root

        root = Path(self.root).resolve()
        for base, shown in ((project_root(), ""), (kaggle_root().resolve() / "input", "/kaggle/input/")):
            try:
                return shown + root.relative_to(base).as_posix()
            except (ValueError, FileNotFoundError):
                continue
        return self.root

    def path_of(self, image_id: str) -> str:
        """How a report names an image (a path relative to the root, or ``split/index``)."""
        return image_id

    def load(self, ids: Sequence[str]) -> list[Image.Image]:
        return [self.open(i) for i in ids]


class FileSource(Source):
    """Images as files under ``root``; ids are their paths relative to it (folder, coop)."""

    def open(self, image_id: str) -> Image.Image:
        return open_rgb(Path(self.root) / image_id, self.invert)


# ---------------------------------------------------------------------------------------------
# Class names: derived from the data, then cleaned by the dataset's map


def _norm(name: str) -> str:
    """Key for matching a class map entry: case, spaces, '_' and '-' ignored."""
    return re.sub(r"[\s_\-]+", "", name).lower()


def clean_classnames(raw: Sequence[str], d: dict) -> tuple[list[str | None], list[str]]:
    """Per raw class name: its cleaned name, or None when ``dataset.drop_classes`` drops it.

    ``dataset.class_map`` renames (keys match whatever case and separators the data uses, so one
    map serves folder names and hub label names alike); ``classname_case: lower`` lower-cases;
    then underscores become spaces. ``classname_style: authors`` skips the map and the drops and
    lower-cases, as the authors' scripts did. Returns (cleaned per raw, the kept names in order).
    """
    if d.get("classname_style") == "authors":
        # The authors' scripts: folder or file-name stems lower-cased, "_" -> " ", nothing
        # renamed or dropped (the `author_classnames` switch).
        d = {k: v for k, v in d.items() if k not in ("class_map", "drop_classes")} | {"classname_case": "lower"}
    renames = {_norm(k): v for k, v in (d.get("class_map") or {}).items()}
    drops = {_norm(k) for k in (d.get("drop_classes") or [])}
    present = {_norm(r) for r in raw}
    # A rename whose source is absent is fine when its target is there (data already cleaned,
    # e.g. CoOp's split files); one with neither is a typo, and an error.
    unknown = sorted(k for k, v in (d.get("class_map") or {}).items() if _norm(k) not in present and _norm(v) not in present)
    if unknown:
        known = ", ".join(sorted(raw)[:8])
        raise ValueError(f"dataset.class_map names classes the data does not have: {unknown} (it has e.g. {known})")
    out: list[str | None] = []
    for r in raw:
        if _norm(r) in drops:
            out.append(None)
            continue
        name = renames.get(_norm(r), r)
        if d.get("classname_case", "keep") == "lower":
            name = name.lower()
        out.append(re.sub(r"\s+", " ", name.replace("_", " ")).strip())
    kept = [n for n in out if n is not None]
    if len(set(kept)) != len(kept):
        raise ValueError(f"class names collide after cleaning: {sorted(n for n in kept if kept.count(n) > 1)}")
    return out, kept


def finish(kind: str, root: str, entries: list[tuple[str, str, str | None]], d: dict, raw_order: Sequence[str] | None = None,
           skipped: list[dict] | None = None, found: int | None = None) -> dict:
    """Common tail of every listing: (id, raw class, own split or None) -> the Source fields.

    Classes are ordered as ``raw_order`` (a hub label feature's order) or sorted; dropped classes
    leave with their images; ids are sorted so nothing depends on listing order.
    """
    if not entries:
        first = f": {len(skipped)} files skipped, e.g. {skipped[0]['path']}: {skipped[0]['reason']}" if skipped else ""
        raise ValueError(f"{root}: no usable images found (source '{kind}'){first}")
    raw = list(raw_order) if raw_order is not None else sorted({c for _, c, _ in entries})
    cleaned, kept = clean_classnames(raw, d)
    label_of = {}
    for r, c in zip(raw, cleaned):
        if c is not None:
            label_of[r] = kept.index(c)
    rows = sorted((i, label_of[c], s) for i, c, s in entries if c in label_of)
    splits = [s for _, _, s in rows]
    return dict(kind=kind, root=root, classnames=kept, ids=[i for i, _, _ in rows],
                labels=np.asarray([lab for _, lab, _ in rows], dtype=np.int64),
                splits=np.asarray(splits, dtype=object) if any(s is not None for s in splits) else None,
                skipped=list(skipped or []), found=len(rows) + len(skipped or []) if found is None else found,
                invert=bool(d.get("invert", False)), raw_classnames=raw)


# ---------------------------------------------------------------------------------------------
# Where the data is


def resolve_root(d: dict, key: str = "root") -> Path:
    """``dataset.<key>`` as a path: absolute as given, relative to the data root otherwise."""
    value = d.get(key)
    if not value:
        raise ValueError(f"dataset.{key} is required for source '{d.get('source')}'")
    p = Path(os.path.expanduser(str(value)))
    return p if p.is_absolute() else data_root() / p
