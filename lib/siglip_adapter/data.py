"""Data: the split manifest, K-shot sampling, and batched image loading in DataLoader workers.

Sources live in ``siglip_adapter.sources`` (one module per kind). The manifest is a table
(image_id, label, classname, split, split_method) written to parquet; every later stage reads
images through it, so the split is fixed once and its hash enters every cache key.

``split.method``:
- ``stratified`` (default; the paper's stated protocol): per class, ``split.fractions`` (70/20/10)
  of ``dataset.per_class`` images (all if unset);
- ``official``: the source's own train / test (Pets' trainval / test, Food-101's train / test, a hub
  dataset's splits); validation is the source's own where it has one, else
  ``split.val_from_train`` of each class's training images;
- ``coop``: the train / val / test of a CoOp split file, as given;
- ``shuffled`` (the authors' scripts): one seeded permutation of all images (``per_class`` of each
  first, when set), classes ignored, cut at ``split.fractions``; with ``split.keep_source_test`` a
  source's own test split stays as it is and the rest is cut at the train : val ratio.
Within a class, images are ordered by a seeded hash of their id, never by listing order, so the
manifest does not depend on how a folder was listed, and dropping a bad image moves no other image
to another split.
"""

from __future__ import annotations

import functools
import hashlib
import os
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .schema import SPLIT_METHODS
from .sources.base import SPLITS, Source
from .sources.images import ImageError

MANIFEST_COLUMNS = ["image_id", "label", "classname", "split", "split_method"]


@functools.lru_cache(maxsize=1 << 20)  # a run's manifests (the ablation makes one per variant) order the same ids again
def _order_key(seed: int, image_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\0{image_id}".encode(), digest_size=8).digest(), "big")


def _ordered(ids: np.ndarray, seed: int) -> np.ndarray:
    return ids[np.argsort([_order_key(seed, i) for i in ids], kind="stable")]


def make_manifest(source: Source, per_class: int | None, fractions: dict[str, float], seed: int, method: str = "stratified",
                  val_from_train: float = 0.2, exclude: Iterable[str] = (), keep_source_test: bool = False) -> pd.DataFrame:
    """The split of ``source`` (bad images in ``exclude`` left out), one row per image used.

    stratified: per class, counts are rounded so train gets the remainder; every class keeps at
    least one image in each split, so a class too small for that is an error naming it.
    """
    if method not in SPLIT_METHODS:
        raise ValueError(f"split.method '{method}' is not one of {list(SPLIT_METHODS)}")
    ids = np.asarray(source.ids, dtype=object)
    keep = ~np.isin(ids, list(set(exclude))) if exclude else np.ones(len(ids), dtype=bool)
    if method == "shuffled":
        return _shuffled(source, ids, keep, per_class, fractions, seed, keep_source_test)
    own = source.splits
    if method != "stratified":
        if own is None:
            raise ValueError(f"split.method '{method}' needs a source with its own splits; {source.root} ({source.kind}) has none")
        present = set(own[keep].tolist())
        if method == "coop" and (source.kind != "coop" or present != set(SPLITS)):
            raise ValueError(f"split.method 'coop' needs the 'coop' source (a split_zhou_*.json); got '{source.kind}' with splits {sorted(present)}")
        if not {"train", "test"} <= present:
            raise ValueError(f"split.method '{method}': {source.root} has splits {sorted(present)}, needs train and test")
    rows = []
    for label, name in enumerate(source.classnames):
        in_class = keep & (source.labels == label)
        if method == "stratified":
            members = _ordered(ids[in_class], seed)
            n = len(members) if per_class is None else min(per_class, len(members))
            if n < 3:
                raise ValueError(f"class {name!r} has {len(members)} usable images; each split needs at least one")
            n_val = max(1, int(round(fractions["val"] * n)))
            n_test = max(1, int(round(fractions["test"] * n)))
            n_train = n - n_val - n_test
            if n_train < 1:
                raise ValueError(f"class {name!r}: {n} images leave no training images")
            assigned = zip(members[:n], ["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
        else:
            by = {s: _ordered(ids[in_class & (own == s)], seed) for s in SPLITS}
            if method == "official" and len(by["val"]) == 0:
                n_val = max(1, int(round(val_from_train * len(by["train"]))))
                by["val"], by["train"] = by["train"][:n_val], by["train"][n_val:]
            for s in SPLITS:
                if len(by[s]) == 0:
                    raise ValueError(f"class {name!r} has no usable '{s}' images under split.method '{method}'")
            assigned = [(i, s) for s in SPLITS for i in by[s]]
        rows += [(i, label, name, s, method) for i, s in assigned]
    return _table(rows)


def _table(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    return df.sort_values(["split", "label", "image_id"], kind="stable").reset_index(drop=True)


def _shuffled(source: Source, ids: np.ndarray, keep: np.ndarray, per_class: int | None, fractions: dict[str, float], seed: int,
              keep_source_test: bool) -> pd.DataFrame:
    """The kept images (``per_class`` of each class first, hash-ordered, when set) permuted once
    with ``seed`` (ids sorted first, so listing order never matters) and cut at the fractions;
    with ``keep_source_test`` the source's own test split stays test and the rest is cut at the
    train : val ratio."""
    if per_class is not None:
        chosen: set[str] = set()
        for label in range(len(source.classnames)):
            chosen.update(_ordered(ids[keep & (source.labels == label)], seed)[:per_class])
        keep = np.fromiter((i in chosen for i in ids.tolist()), dtype=bool, count=len(ids))
    own_test = (source.splits == "test") if (keep_source_test and source.splits is not None) else np.zeros(len(ids), dtype=bool)
    pool = np.sort(ids[keep & ~own_test])
    pool = pool[np.random.default_rng(seed).permutation(len(pool))]
    if own_test[keep].any():
        n_val = int(round(fractions["val"] / (fractions["train"] + fractions["val"]) * len(pool)))
        cut = {"val": pool[:n_val], "train": pool[n_val:], "test": ids[keep & own_test]}
    else:
        n_val, n_test = int(round(fractions["val"] * len(pool))), int(round(fractions["test"] * len(pool)))
        cut = {"test": pool[:n_test], "val": pool[n_test : n_test + n_val], "train": pool[n_test + n_val :]}
    label_of = dict(zip(ids.tolist(), source.labels.tolist()))
    rows = [(i, label_of[i], source.classnames[label_of[i]], split, "shuffled") for split, members in cut.items() for i in members]
    df = _table(rows)
    for split in SPLITS:
        if not (df["split"] == split).any():
            raise ValueError(f"split.method 'shuffled' left the '{split}' split empty ({len(pool)} images, fractions {fractions})")
    return df


def manifest_hash(manifest: pd.DataFrame) -> str:
    """Content hash of the split: changes when any image, label or split assignment changes."""
    h = hashlib.sha256()
    for row in manifest[["image_id", "label", "split"]].itertuples(index=False):
        h.update(f"{row.image_id}\t{row.label}\t{row.split}\n".encode())
    return h.hexdigest()[:16]


def read_manifest(path) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no split manifest; run notebooks/01_captions first")
    df = pd.read_parquet(path)
    missing = set(MANIFEST_COLUMNS) - set(df.columns)
    if missing:
        raise ValueError(f"{path}: manifest lacks columns {sorted(missing)}; rerun notebooks/01_captions")
    return df


def sample_shots(manifest: pd.DataFrame, k: int, seed: int, split: str = "train", strict: bool = True) -> pd.DataFrame:
    """K images per class of ``split`` for one seed (the K-shot set; on ``val``, a few-shot
    validation set).

    Each class's images are shuffled once per seed and the first K taken, so for a fixed seed the
    1-shot set is inside the 2-shot set, and so on: the shots sweep adds data rather than
    redrawing it. ``strict``: a class with fewer than K images is an error; else it gives all it has.
    """
    pool = manifest[manifest["split"] == split].sort_values(["label", "image_id"], kind="stable")
    picked = []
    for label, pos in pool.groupby("label", sort=True).indices.items():  # positions, in image_id order
        if len(pos) < k and strict:
            raise ValueError(f"class {pool['classname'].iloc[pos[0]]!r} has {len(pos)} {split} images, fewer than K={k}")
        picked.append(pos[np.random.default_rng([seed, int(label)]).permutation(len(pos))[:k]])
    return pool.iloc[np.concatenate(picked) if picked else []].reset_index(drop=True)[manifest.columns]


def shot_image_ids(manifest: pd.DataFrame, k_max: int, seeds: Sequence[int]) -> list[str]:
    """Every image that some seed's K-shot set uses, for K up to ``k_max``."""
    used = set()
    for s in seeds:
        used.update(sample_shots(manifest, k_max, s)["image_id"])
    return sorted(used)


def images_read(manifest: pd.DataFrame, k_max: int, seeds: Sequence[int]) -> list[str]:
    """The images some stage reads: every seed's K-shot set (K up to ``k_max``), validation and
    test. Only these are checked, captioned and embedded; the rest of train is never decoded."""
    evaluated = manifest.loc[manifest["split"].isin(["val", "test"]), "image_id"]
    return sorted(set(shot_image_ids(manifest, k_max, seeds)) | set(evaluated))


# ---------------------------------------------------------------------------------------------
# Batched loading: decoding (and the encoder's preprocessing) in DataLoader workers


def resolve_workers(n: int | str) -> int:
    """``auto``: one worker per core the computation leaves spare (at most 8); 0 decodes in the
    main process, between batches. Without a GPU, torch's intra-op threads run the forward on
    ``torch.get_num_threads()`` cores, and a worker on one of them stalls the whole parallel
    forward while it decodes: on 2 cores with 2 threads, decoding in the main process keeps the
    embed stage at 0.93 of the bare forward against 0.88 with one worker (``bench/embed.py``).
    With a GPU the forward needs one core to feed it."""
    if n == "auto":
        busy = 1 if torch.cuda.is_available() else torch.get_num_threads()
        return max(0, min(8, (os.cpu_count() or 1) - busy))
    return int(n)


class _Images(torch.utils.data.Dataset):
    def __init__(self, source: Source, ids: Sequence[str], transform: Callable | None, check_only: bool):
        self.source, self.ids, self.transform, self.check_only = source, list(ids), transform, check_only

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, n: int):
        try:
            im = self.source.open(self.ids[n])
        except ImageError as e:
            return n, None, str(e)
        if self.check_only:
            return n, None, None
        return n, (self.transform(im) if self.transform else im), None


def stack(items: Sequence):
    """Per-image outputs of a transform as one batch: tensors of one shape stacked, (B, ...); dicts
    of such tensors (an image processor with several inputs) stacked key by key; else None."""
    if not items:
        return None
    if all(isinstance(x, torch.Tensor) for x in items) and len({tuple(x.shape) for x in items}) == 1:
        return torch.stack(list(items))
    if all(isinstance(x, dict) for x in items) and len({tuple(x) for x in items}) == 1:
        parts = {k: stack([x[k] for x in items]) for k in items[0]}
        return parts if all(v is not None for v in parts.values()) else None
    return None


def _collate(items):
    """A batch as (positions, payload, errors), built in the worker. When every item is
    transformed pixels of one shape (``stack``), the payload is the stacked batch, so the main
    process receives one tensor (or one per model input) per batch and stacks nothing; else the
    list of items."""
    xs = [x for _, x, _ in items]
    batch = stack(xs)
    return [n for n, _, _ in items], (xs if batch is None else batch), [e for _, _, e in items]


def iter_batches(source: Source, ids: Sequence[str], batch_size: int, num_workers: int | str = "auto", transform: Callable | None = None,
                 desc: str = "images", check_only: bool = False) -> Iterator[tuple[list[str], list, list[str | None]]]:
    """Yield (ids, images or transformed tensors, error per image) in ``ids`` order, batch by
    batch, decoded in worker processes; peak memory holds a few batches, not the dataset. With a
    ``transform`` to tensors and no unreadable image in the batch, the tensors come stacked,
    (B, ...), or a dict of such batches (``stack``)."""
    workers = resolve_workers(num_workers)
    loader = torch.utils.data.DataLoader(_Images(source, ids, transform, check_only), batch_size=batch_size, shuffle=False,
                                         num_workers=workers, collate_fn=_collate, prefetch_factor=2 if workers else None,
                                         persistent_workers=False)
    it = iter(loader)
    bar = tqdm(desc=desc, unit="batch", total=len(loader))
    try:
        for positions, payload, errors in it:
            bar.update(1)
            yield [ids[n] for n in positions], payload, errors
    finally:
        bar.close()
        # Shut the workers down here, in this process: a finished iterator left for the garbage
        # collector would be copied into the next loader's forked workers and fail there.
        del it


def load_images(source: Source, ids: Sequence[str], batch_size: int, num_workers: int | str = "auto", transform: Callable | None = None,
                desc: str = "images") -> Iterator[tuple[list[str], list]]:
    """Like ``iter_batches`` for images already checked: a bad one now is an error naming it."""
    for batch_ids, items, errors in iter_batches(source, ids, batch_size, num_workers, transform, desc):
        for i, e in zip(batch_ids, errors):
            if e is not None:
                raise ImageError(f"{source.root}/{source.path_of(i)}: {e} (the file changed since the manifest was built?)")
        yield batch_ids, items


def find_bad_images(source: Source, ids: Sequence[str], num_workers: int | str = "auto", batch_size: int = 32,
                    desc: str = "checking images") -> dict[str, str]:
    """{id: reason} for every image of ``ids`` that does not decode to RGB (full decode)."""
    bad = {}
    for batch_ids, _, errors in iter_batches(source, ids, batch_size, num_workers, desc=desc, check_only=True):
        bad.update({i: e for i, e in zip(batch_ids, errors) if e is not None})
    return bad
