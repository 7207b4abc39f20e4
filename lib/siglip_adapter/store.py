"""Content-keyed feature cache in safetensors (never pickle).

An entry's key is a hash of everything that changes its content (the ``fields``: encoder and
preprocessing, dataset, split manifest hash, prompt template, caption settings). The file is
named by that key and also stores the fields and the row ids; loading checks both, so an
entry made under other settings is refused rather than reused. A run's index (``features.json``) names the entries
of one run for the later stages.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file


class StaleCacheError(RuntimeError):
    pass


@dataclass
class Features:
    ids: list[str]
    values: torch.Tensor  # (len(ids), D), float32, L2-normalised
    fields: dict
    meta: dict

    def take(self, ids: Sequence[str]) -> torch.Tensor:
        """Rows for ``ids`` in that order: (len(ids), D)."""
        pos = {i: n for n, i in enumerate(self.ids)}
        missing = [i for i in ids if i not in pos]
        if missing:
            raise KeyError(f"{len(missing)} ids have no features (e.g. {missing[:3]})")
        return self.values[[pos[i] for i in ids]]


def cache_key(fields: dict) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:20]


def code_version(*modules: str) -> str:
    """A hash of the code of the kit's ``modules`` (dotted names under ``siglip_adapter``), comments
    and formatting left out: part of a cache key, so an entry made by other code is not reused
    (the stores outlive the runs that fill them)."""
    import importlib.util

    return code_hash([Path(importlib.util.find_spec(f"siglip_adapter.{name}").origin) for name in modules])


def code_hash(paths) -> str:
    """Hash of Python files' syntax trees: a comment or layout change keeps it, a code change does not."""
    import ast

    h = hashlib.sha256()
    for path in paths:
        h.update(ast.dump(ast.parse(Path(path).read_text())).encode())
    return h.hexdigest()[:16]


class FeatureStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, kind: str, fields: dict) -> Path:
        return self.root / f"{kind}-{cache_key(fields)}.safetensors"

    def save(self, kind: str, fields: dict, ids: Sequence[str], values: torch.Tensor, meta: dict | None = None) -> Path:
        if values.shape[0] != len(ids):
            raise ValueError(f"{kind}: {values.shape[0]} feature rows for {len(ids)} ids")
        path = self.path(kind, fields)
        tmp = path.with_name(path.name + ".tmp")
        header = {"fields": json.dumps(fields, sort_keys=True, default=str), "ids": json.dumps(list(ids)), "meta": json.dumps(meta or {})}
        save_file({"values": values.detach().float().contiguous().cpu()}, str(tmp), metadata=header)
        os.replace(tmp, path)  # atomic: a crash leaves the old entry or none, never half a file
        return path

    def load_path(self, path: Path, fields: dict | None = None) -> Features:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such cache entry; run notebooks/02_embed")
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
            values = f.get_tensor("values")
        stored = json.loads(header.get("fields", "{}"))
        if fields is not None and stored != json.loads(json.dumps(fields, sort_keys=True, default=str)):
            changed = sorted(k for k in set(stored) | set(fields) if stored.get(k) != fields.get(k))
            raise StaleCacheError(f"{path}: made with other settings (differs in {changed}); refusing to reuse it")
        ids = json.loads(header.get("ids", "[]"))
        if len(ids) != values.shape[0]:
            raise StaleCacheError(f"{path}: {values.shape[0]} rows but {len(ids)} ids; the entry is corrupt")
        return Features(ids, values, stored, json.loads(header.get("meta", "{}")))

    def load(self, kind: str, fields: dict) -> Features:
        return self.load_path(self.path(kind, fields), fields)

    def get_or_compute(self, kind: str, fields: dict, ids: Sequence[str], compute: Callable[[Sequence[str]], torch.Tensor],
                       meta: dict | None = None, chunk_size: int | None = None) -> tuple[Features, bool]:
        """The entry for ``fields`` if it holds exactly ``ids``; else compute, save and return it.

        With ``chunk_size``, rows are computed in chunks, each saved under ``.partial/`` as it
        finishes, so an interrupted run resumes at the first missing chunk. Returns
        (features, reused).
        """
        ids = list(ids)
        path = self.path(kind, fields)
        if path.is_file():
            feats = self.load_path(path, fields)
            if feats.ids == ids:
                return feats, True
        if chunk_size is None:
            values = compute(ids)
        else:
            parts = FeatureStore(self.root / ".partial" / path.stem)
            chunks = []
            for n, start in enumerate(range(0, len(ids), chunk_size)):
                chunk_ids = ids[start : start + chunk_size]
                part_fields = {**fields, "part": n, "part_ids": cache_key({"ids": chunk_ids})}
                if parts.path(kind, part_fields).is_file():
                    chunk = parts.load(kind, part_fields).values
                else:
                    chunk = compute(chunk_ids)
                    parts.save(kind, part_fields, chunk_ids, chunk)
                chunks.append(chunk)
            values = torch.cat(chunks) if chunks else torch.empty(0)
        self.save(kind, fields, ids, values, meta)
        if chunk_size is not None:
            shutil.rmtree(self.root / ".partial" / path.stem, ignore_errors=True)
            with contextlib.suppress(OSError):
                (self.root / ".partial").rmdir()  # only if no other entry is half done
        return self.load(kind, fields), False

    # The index names the entries of one run, so later stages need no encoder settings.
    def write_index(self, entries: dict[str, dict], path: Path) -> Path:
        index = {kind: {"file": self.path(kind, fields).name, "fields": fields} for kind, fields in entries.items()}
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(index, indent=2, sort_keys=True, default=str) + "\n")
        os.replace(tmp, path)
        return path

    def load_index(self, path: Path) -> dict[str, Features]:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no feature index; run notebooks/02_embed")
        index = json.loads(path.read_text())
        return {kind: self.load_path(self.root / e["file"], e["fields"]) for kind, e in index.items()}
