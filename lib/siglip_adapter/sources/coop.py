"""``coop``: CoOp's split files, ``split_zhou_<Dataset>.json``, over an image root.

The file holds ``{"train": [[path, label, classname], ...], "val": [...], "test": [...]}`` with
paths relative to ``dataset.root``: the field's standard train / val / test (CoOp, Tip-Adapter).
Class order is the file's label order; names come from the file and then the dataset's class map.
Listed files are stat-ed, not decoded: a missing or empty one is reported in ``skipped``.
"""

from __future__ import annotations

import json
from pathlib import Path

from .base import FileSource, finish, resolve_root
from .images import stat_problem


def read_coop_split(path: Path) -> dict[str, list[tuple[str, int, str]]]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CoOp split file not found (dataset.split_file)")
    data = json.loads(path.read_text())
    missing = {"train", "val", "test"} - set(data)
    if missing:
        raise ValueError(f"{path}: a CoOp split file needs train, val and test lists; missing {sorted(missing)}")
    out = {}
    for split in ("train", "val", "test"):
        rows = []
        for n, item in enumerate(data[split]):
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[1], int)):
                raise ValueError(f"{path}: {split}[{n}] is not [path, label, classname]: {item!r}")
            rows.append((str(item[0]).replace("\\", "/"), int(item[1]), str(item[2])))
        out[split] = rows
    return out


def coop_source(d: dict) -> FileSource:
    root = resolve_root(d)
    split_file = resolve_root(d, "split_file")
    splits = read_coop_split(split_file)
    names: dict[int, str] = {}
    for rows in splits.values():
        for _, label, name in rows:
            if names.setdefault(label, name) != name:
                raise ValueError(f"{split_file}: label {label} is called both {names[label]!r} and {name!r}")
    if sorted(names) != list(range(len(names))):
        raise ValueError(f"{split_file}: labels are not 0..{len(names) - 1}")
    raw_order = [names[i] for i in range(len(names))]
    entries, skipped = [], []
    for split, rows in splits.items():
        for rel, label, _ in rows:
            problem = stat_problem(root / rel)
            if problem:
                skipped.append({"path": rel, "reason": problem})
            else:
                entries.append((rel, raw_order[label], split))
    return FileSource(**finish("coop", str(root), entries, d, raw_order=raw_order, skipped=skipped))
