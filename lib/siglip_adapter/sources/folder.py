"""``folder``: an image tree on disk.

- Class folders: ``<root>/<class>/<file>`` (Caltech101's 101_ObjectCategories, EuroSAT, DTD's
  images/, Food-101's images/); deeper nesting is fine, the first folder is the class.
- Flat folder: ``dataset.filename_regex`` takes the class from the file name, e.g. Pets'
  ``images/Great_Pyrenees_12.jpg`` with ``^(?P<class>.+)_\\d+\\.jpg$``.
- Official splits (optional): ``dataset.split_files: {train: ..., val: ..., test: ...}``, text files
  whose lines start with an image's path relative to the root, with or without its extension
  (Pets' annotations/trainval.txt, Food-101's meta/train.txt), or CSV files with that path in
  ``dataset.split_file_column`` (the EuroSAT Kaggle input's train.csv).

Listing stats every file but decodes none; an empty or unreadable file is already reported here.
Ids are paths relative to the root, sorted.
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

from .base import FileSource, finish, resolve_root
from .images import has_image_extension, stat_problem


def list_images(root: Path) -> tuple[list[str], list[dict]]:
    """(usable relative paths, skipped [{path, reason}]); files without an image extension are
    not candidates (annotations, .mat files, READMEs)."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: image folder not found (dataset.root)")
    files, skipped = [], []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            if not has_image_extension(name):
                continue
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            problem = stat_problem(full)
            if problem:
                skipped.append({"path": rel, "reason": problem})
            else:
                files.append(rel)
    return sorted(files), sorted(skipped, key=lambda r: r["path"])


def class_of(rel: str, pattern: re.Pattern | None) -> str | None:
    if pattern is None:
        return rel.split("/", 1)[0] if "/" in rel else None
    m = pattern.search(rel.rsplit("/", 1)[-1])
    if not m:
        return None
    return m.group("class") if "class" in pattern.groupindex else m.group(1)


def read_split_file(path: Path, column: str | None) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: split file not found (dataset.split_files)")
    if path.suffix.lower() == ".csv":
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            col = column or reader.fieldnames[0]
            if col not in (reader.fieldnames or []):
                raise ValueError(f"{path}: no column '{col}' (dataset.split_file_column); columns are {reader.fieldnames}")
            return [row[col].strip() for row in reader if row[col].strip()]
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]


def official_splits(root: Path, d: dict, ids: list[str]) -> dict[str, str]:
    """id -> split from ``dataset.split_files``; entries match an id with or without extension."""
    by_key = {}
    for i in ids:
        by_key[i] = i
        by_key.setdefault(os.path.splitext(i)[0], i)
    out = {}
    for split, file in (d.get("split_files") or {}).items():
        if split not in ("train", "val", "test"):
            raise ValueError(f"dataset.split_files: unknown split '{split}' (train, val, test)")
        p = Path(file)
        p = p if p.is_absolute() else root / p
        for entry in read_split_file(p, d.get("split_file_column")):
            hit = by_key.get(entry.replace("\\", "/"))
            if hit is not None:
                out[hit] = split
    return out


def folder_source(d: dict) -> FileSource:
    root = resolve_root(d)
    regex = d.get("filename_regex")
    pattern = re.compile(regex) if regex else None
    files, skipped = list_images(root)
    entries = []
    for rel in files:
        c = class_of(rel, pattern)
        if c is None:
            why = f"file name does not match dataset.filename_regex {regex!r}" if pattern else \
                "not inside a class folder (expected <root>/<class>/<image>, or --regex / dataset.filename_regex for the class in file names)"
            skipped.append({"path": rel, "reason": why})
        else:
            entries.append([rel, c, None])
    if d.get("split_files"):
        split_of = official_splits(root, d, [e[0] for e in entries])
        missing = [e[0] for e in entries if e[0] not in split_of]
        for e in entries:
            e[2] = split_of.get(e[0])
        # Images that no split list names are not part of the official protocol.
        entries = [e for e in entries if e[2] is not None]
        if not entries:
            raise ValueError(f"{root}: no image matches the entries of dataset.split_files (e.g. {missing[:3]})")
    return FileSource(**finish("folder", str(root), [tuple(e) for e in entries], d, skipped=skipped))
