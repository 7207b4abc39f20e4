"""``hf``: a Hugging Face dataset through ``datasets.load_dataset``, by hub id or local path.

``dataset.hub_id`` is a hub id (``ethz/food101``) or a folder of Parquet files laid out as the hub
lays them (``data/train-*.parquet``); recent ``datasets`` refuses loading scripts, so only
file-backed datasets work. ``dataset.revision`` pins a hub commit. ``image_column`` and
``label_column`` name the columns; class names come from the label feature (a ``ClassLabel``'s
names, or the sorted values of a string column). ``split_names`` maps the kit's train / val /
test to the dataset's split names (Food-101's test is called ``validation`` on the hub).

The label column is read without touching an image; images decode one by one when a batch
asks for them, so memory does not grow with the dataset.
"""

from __future__ import annotations

from .base import Source, finish, resolve_root
from .images import ImageError, open_rgb

DEFAULT_SPLIT_NAMES = {"train": ["train"], "val": ["validation", "val", "valid"], "test": ["test"]}


class HFSource(Source):
    def __init__(self, datasets_by_split: dict, image_column: str, **fields):
        super().__init__(**fields)
        self._ds = datasets_by_split
        self.image_column = image_column

    def open(self, image_id: str):
        split, _, index = image_id.rpartition("/")
        item = self._ds[split][int(index)][self.image_column]
        if item is None:
            raise ImageError("no image in this row")
        data = item.get("bytes") if isinstance(item, dict) else None
        if data is None and isinstance(item, dict) and item.get("path"):
            return open_rgb(item["path"], self.invert)
        if data is None:
            raise ImageError("no image bytes or path in this row")
        return open_rgb(data, self.invert)


def _load(d: dict):
    import datasets

    ident = str(d.get("hub_id") or "")
    if not ident:
        raise ValueError("dataset.hub_id is required for source 'hf' (a hub id or a local folder of Parquet files)")
    local = resolve_root(d, "hub_id")  # a local folder (absolute, or under the data root) wins over a hub id
    target = str(local) if local.exists() else ident
    try:
        return datasets.load_dataset(target, revision=d.get("revision") or None), target
    except Exception as e:
        raise RuntimeError(f"datasets.load_dataset({target!r}) failed ({type(e).__name__}: {e}); "
                           "check dataset.hub_id (a hub id, or a local folder of Parquet files) and hub access") from e


def hf_source(d: dict) -> HFSource:
    import datasets

    dd, target = _load(d)
    image_col, label_col = d.get("image_column", "image"), d.get("label_column", "label")
    wanted = d.get("split_names")
    chosen = {}
    if wanted:  # exactly the splits named
        for split, name in wanted.items():
            if split not in DEFAULT_SPLIT_NAMES or name not in dd:
                raise ValueError(f"{target}: dataset.split_names maps {split!r} -> {name!r}; splits are train/val/test, the dataset has {list(dd)}")
            chosen[split] = name
    else:
        for split, names in DEFAULT_SPLIT_NAMES.items():
            hit = next((n for n in names if n in dd), None)
            if hit is not None:
                chosen[split] = hit
    if not chosen:
        raise ValueError(f"{target}: none of its splits {list(dd)} is train / validation / test; set dataset.split_names")
    first = dd[next(iter(chosen.values()))]
    for col in (image_col, label_col):
        if col not in first.column_names:
            raise ValueError(f"{target}: no column '{col}' (dataset.image_column / label_column); columns are {first.column_names}")
    feature = first.features[label_col]
    raw_order = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    entries, by_split = [], {}
    for split, name in chosen.items():
        ds = dd[name].cast_column(image_col, datasets.Image(decode=False))
        by_split[name] = ds
        labels = ds.data.column(label_col).to_pylist()
        width = len(str(max(len(ds) - 1, 0)))
        for i, lab in enumerate(labels):
            raw = raw_order[lab] if raw_order is not None else str(lab)
            entries.append((f"{name}/{i:0{width}d}", raw, split))
    if raw_order is None:
        raw_order = sorted({c for _, c, _ in entries})
    fields = finish("hf", target, entries, d, raw_order=raw_order)
    if set(chosen) == {"train"}:
        fields["splits"] = None  # one split only: nothing official to keep
    return HFSource(by_split, image_col, **fields)


