"""Content-keyed feature cache in safetensors (never pickle).

An entry's key is a hash of everything that changes its content (the ``fields``: encoder and
preprocessing, dataset, split manifest hash, prompt template, caption settings). The file is
named by that key and also stores the fields, the row ids and the SHA-256 of its values; loading
checks all three, so an entry made under other settings is refused rather than reused, and a file
edited or truncated on disk is never read as valid (``CorruptCacheError``: the stores compute it
again). A run's index (``features.json``) names the entries of one run for the later stages, with
each entry's SHA-256, so an entry replaced after the index was written is refused too.

Pools (``rows``) keep rows per id under one setting instead (a folder of chunk files, each with
its fields and ids): an image's tower output or a text's features do not depend on the run that
asks, so another split or protocol computes only the ids it lacks.
"""

from __future__ import annotations

import functools
import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from . import budget
from .atomic import write_atomic  # noqa: F401  (the stages' writers import it from here too)
from .shard import Shard


class StaleCacheError(RuntimeError):
    pass


class CorruptCacheError(StaleCacheError):
    """A cache file whose bytes are not what the kit wrote: unreadable, truncated, or values that
    do not match the SHA-256 stored with them."""


STORE_FORMAT = 3  # 2: one sorted JSON header per file (byte-identical across processes); 3: + the values' SHA-256


def content_hash(values: torch.Tensor) -> str:
    """SHA-256 of a float32 tensor's bytes (C order), as stored in every cache file's header."""
    return hashlib.sha256(values.detach().float().contiguous().cpu().numpy().tobytes()).hexdigest()


@dataclass
class Features:
    ids: list[str]
    values: torch.Tensor  # (len(ids), D), float32, L2-normalised
    fields: dict
    meta: dict
    sha256: str = ""  # of ``values`` as stored (a loaded entry's; see ``content_hash``)

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
    """A hash of the code of the kit's ``modules`` (dotted names under ``siglip_adapter``; a package
    stands for all its modules), comments and formatting left out: part of a cache key, so an
    entry made by other code is not reused (the stores outlive the runs that fill them)."""
    import importlib.util

    paths = []
    for name in modules:
        spec = importlib.util.find_spec(f"siglip_adapter.{name}")
        folders = spec.submodule_search_locations
        paths += sorted(p for folder in folders for p in Path(folder).rglob("*.py")) if folders else [Path(spec.origin)]
    return code_hash(paths)


def code_hash(paths) -> str:
    """Hash of Python files' syntax trees without docstrings: a comment, docstring or layout change
    keeps it, a code change does not."""
    h = hashlib.sha256()
    for path in paths:
        h.update(_tree_digest(Path(path).read_text()))
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=None)  # no bound: a least-recently-used cache smaller than the kit, scanned in order, would miss every file
def _tree_digest(source: str) -> bytes:
    """The dump of a module's syntax tree without docstrings (parsed once per source text)."""
    import ast

    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree).encode()


PART_HASH = b"siglip_adapter.sha256"  # a part file's Parquet key-value metadata: the SHA-256 of its rows


def rows_hash(frame) -> str:
    """SHA-256 of a table's values in column order (its JSON rows), as stored in each part file."""
    return hashlib.sha256(frame.to_json(orient="values").encode()).hexdigest()


def write_part(path: Path, frame) -> Path:
    """One part of a resumable table (a DataFrame) as Parquet, atomically (``write_atomic``), with
    the SHA-256 of its rows in its metadata: a crash leaves the part whole or absent, and
    ``read_parts`` tells an edited or truncated part from a good one."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), PART_HASH: rows_hash(frame).encode()})
    return write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def read_parts(folder: Path, columns: Sequence[str], what: str, pattern: str = "*.parquet") -> dict[Path, "object"]:
    """{path: DataFrame} of the good parts in ``folder`` (``write_part``), with exactly ``columns``.
    A part that cannot be read, has other columns, or whose rows do not match the SHA-256 written
    with them (edited or truncated on disk) is removed with a warning: its ``what`` count as
    missing and the caller makes them again."""
    import pyarrow.parquet as pq

    good = {}
    for part in sorted(Path(folder).glob(pattern)):
        try:
            table = pq.read_table(part)
            frame = table.to_pandas()
        except Exception as e:  # truncated or overwritten bytes: pyarrow's parse error
            why = f"unreadable ({type(e).__name__}: {e})"
        else:
            if list(frame.columns) != list(columns):
                why = f"its columns {list(frame.columns)} are not {list(columns)}"
            elif (table.schema.metadata or {}).get(PART_HASH, b"").decode() != rows_hash(frame):
                why = "its rows do not match the SHA-256 stored with them"
            else:
                good[part] = frame
                continue
        warnings.warn(f"{part}: {why}; its {what} will be made again", stacklevel=2)
        part.unlink(missing_ok=True)
    return good


def _write_entry(path: Path, fields: dict, ids: Sequence[str], values: torch.Tensor, meta: dict | None = None) -> Path:
    """One safetensors file holding ``values`` with its fields, row ids and meta in the header (one
    JSON string with sorted keys: safetensors orders several metadata keys differently in every
    process, so the same entry would not be the same bytes), written atomically: a crash leaves the
    old file or none, never half a file."""
    if values.shape[0] != len(ids):
        raise ValueError(f"{path.name}: {values.shape[0]} feature rows for {len(ids)} ids")
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {"values": values.detach().float().contiguous().cpu()}
    entry = {"fields": fields, "ids": list(ids), "meta": meta or {}, "sha256": content_hash(tensors["values"])}
    header = {"entry": json.dumps(entry, sort_keys=True, default=str)}
    return write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


class FeatureStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._pools: dict[Path, dict[str, torch.Tensor]] = {}  # rows of the pools read so far
        self._loaded: dict[Path, set[str]] = {}  # their chunk files already read
        self._verified: dict[Path, str] = {}  # entries this object read or wrote and checked: their SHA-256

    def path(self, kind: str, fields: dict) -> Path:
        return self.root / f"{self._name(kind, fields)}.safetensors"

    @staticmethod
    def _name(kind: str, fields: dict) -> str:
        """An entry's or pool's name: the kind and a key of its fields and of the file format."""
        return f"{kind}-{cache_key({**fields, 'store_format': STORE_FORMAT})}"

    def save(self, kind: str, fields: dict, ids: Sequence[str], values: torch.Tensor, meta: dict | None = None) -> Path:
        return _write_entry(self.path(kind, fields), fields, ids, values, meta)

    def load_path(self, path: Path, fields: dict | None = None) -> Features:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such cache entry; run notebooks/02_embed")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = json.loads((f.metadata() or {}).get("entry", "{}"))
                values = f.get_tensor("values")
        except Exception as e:  # truncated or overwritten bytes: safetensors' or JSON's parse error
            raise CorruptCacheError(f"{path}: unreadable cache file ({type(e).__name__}: {e})") from e
        if "sha256" not in header:
            raise CorruptCacheError(f"{path}: written by an older version of the kit (no content hash); it is computed again")
        if header["sha256"] != content_hash(values):
            raise CorruptCacheError(f"{path}: its values do not match the SHA-256 stored with them (edited on disk)")
        stored = header.get("fields", {})
        if fields is not None and stored != json.loads(json.dumps(fields, sort_keys=True, default=str)):
            changed = sorted(k for k in set(stored) | set(fields) if stored.get(k) != fields.get(k))
            raise StaleCacheError(f"{path}: made with other settings (differs in {changed}); refusing to reuse it")
        ids = header.get("ids", [])
        if len(ids) != values.shape[0]:
            raise CorruptCacheError(f"{path}: {values.shape[0]} rows but {len(ids)} ids; the entry is corrupt")
        self._verified[path] = header["sha256"]
        return Features(ids, values, stored, header.get("meta", {}), header["sha256"])

    def load(self, kind: str, fields: dict) -> Features:
        return self.load_path(self.path(kind, fields), fields)

    def get_or_compute(self, kind: str, fields: dict, ids: Sequence[str], compute: Callable[[Sequence[str]], torch.Tensor],
                       meta: dict | None = None) -> tuple[Features, bool]:
        """The entry for ``fields`` if it holds exactly ``ids``; else compute, save and return it.
        Returns (features, reused). Long computations go through ``rows`` (resumable per chunk)."""
        ids = list(ids)
        path = self.path(kind, fields)
        if path.is_file():
            try:
                feats = self.load_path(path, fields)
                if feats.ids == ids:
                    return feats, True
            except CorruptCacheError as e:
                warnings.warn(f"{e}; computing it again", stacklevel=2)
        self.save(kind, fields, ids, compute(ids), meta)
        return self.load(kind, fields), False

    def rows(self, kind: str, fields: dict, ids: Sequence[str], compute: Callable[[Sequence[str]], torch.Tensor],
             chunk_size: int = 1024, shard: Shard | None = None) -> tuple[Features, int]:
        """Rows for ``ids`` from the pool of ``fields``: one folder per setting holding rows per id
        (an image's features do not depend on which run reads it), so a run that reads other
        images computes only those it lacks. Missing ids are computed in chunks of ``chunk_size``,
        each saved atomically as it finishes: an interrupted run resumes at the first missing chunk
        and redoes nothing. Every chunk file stores ``fields`` and is refused under others.
        ``shard`` (every process of it calls this alike): each computes its share of the chunks
        (``Shard.take``), then all read what the others wrote. Returns (features in the order of
        ``ids``, rows missing before the call)."""
        ids = list(ids)
        shard = shard or Shard()
        folder = self.root / self._name(kind, fields)
        shard.agree("the pool", folder.name)
        shard.wait()  # every process sees the same finished chunks, so all cut the same ones
        have = self._pool(folder, fields)
        missing = [i for i in dict.fromkeys(ids) if i not in have]
        chunks = [missing[s : s + chunk_size] for s in range(0, len(missing), chunk_size)]
        if shard.world > 1 and chunks:
            print(f"{shard}: {len(shard.take(chunks))} of {len(chunks)} {kind} chunks", flush=True)
        for n, chunk in enumerate(shard.take(chunks)):
            if n:  # at least one chunk per call, then the time budget (siglip_adapter.budget) between chunks
                budget.check(f"{kind} chunks")
            values = compute(chunk).detach().float().cpu()
            path = folder / f"chunk-{cache_key({'ids': chunk})}.safetensors"
            _write_entry(path, fields, chunk, values)
            self._loaded[folder].add(path.name)
            have.update(zip(chunk, values))
        if shard.world > 1:
            shard.wait()
            have = self._pool(folder, fields)  # the other processes' chunks
        values = torch.stack([have[i] for i in ids]) if ids else torch.empty(0)
        return Features(ids, values, fields, {}), len(missing)

    def _pool(self, folder: Path, fields: dict) -> dict[str, torch.Tensor]:
        """{id: row} of a pool folder, read once per store object; chunk files that other
        processes wrote since are read on the next call."""
        have = self._pools.setdefault(folder, {})
        loaded = self._loaded.setdefault(folder, set())
        for path in sorted(folder.glob("chunk-*.safetensors")):
            if path.name not in loaded:
                try:
                    part = self.load_path(path, fields)
                except CorruptCacheError as e:  # its rows count as missing: the caller computes them again
                    warnings.warn(f"{e}; its rows will be computed again", stacklevel=3)
                    path.unlink(missing_ok=True)
                    continue
                have.update(zip(part.ids, part.values))
                loaded.add(path.name)
        return have

    # The index names the entries of one run, so later stages need no encoder settings.
    def write_index(self, entries: dict[str, dict], path: Path) -> Path:
        """``entries``: {kind: fields} of saved entries; each is recorded with its file's SHA-256 (as
        this object last checked it, else read again)."""
        sha = {kind: self._verified.get(self.path(kind, f)) or self.load(kind, f).sha256 for kind, f in entries.items()}
        index = {kind: {"file": self.path(kind, fields).name, "fields": fields, "sha256": sha[kind]} for kind, fields in entries.items()}
        return write_atomic(path, lambda tmp: tmp.write_text(json.dumps(index, indent=2, sort_keys=True, default=str) + "\n"))

    def load_index(self, path: Path) -> dict[str, Features]:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no feature index; run notebooks/02_embed")
        index = json.loads(path.read_text())
        out = {}
        for kind, e in index.items():
            out[kind] = self.load_path(self.root / e["file"], e["fields"])
            if out[kind].sha256 != e.get("sha256"):
                raise CorruptCacheError(f"{self.root / e['file']}: not the entry {path} was written with (replaced on disk); "
                                        "delete that file and run the embed stage again (notebooks/02_embed), which recomputes it")
        return out
