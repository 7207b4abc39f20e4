"""What a dataset's images are, as one small file DVC can compare: the ``images`` stage.

``python -m siglip_adapter.fingerprint DATASET`` writes ``results/runs/<dataset>/images.json``:
the number of files, their bytes and one SHA-256 over every local file the dataset's source reads
(``dataset.root`` and the split files it names: a class-folder tree, a CoOp split file and its
image folder, a local Parquet folder, the fashion-MNIST IDX files), each by its path relative to
the root and its content. Where the images live is a user's choice in ``params/<dataset>.yaml``,
which ``dvc.yaml`` cannot name per dataset, so the stage is ``always_changed``: every ``dvc repro``
re-reads the folder, and the stages that read images depend on this file, so a rotated, added or
removed image makes exactly them stale while an unchanged folder changes nothing downstream.
A hub dataset (no local copy) is fingerprinted by its id and revision.

A Kaggle kernel writes the file where it reads the images and brings it in its archive; a machine
without the images keeps the recorded file. Contents are hashed once per file version:
``cache/image_hashes/<dataset>.json`` (this machine's, outside the dataset's stores that a Kaggle
kernel archives) remembers each
file's hash under its size and modification time, as DVC's own state database does, so a rerun on
an unchanged folder of any size only lists and stats it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from .atomic import write_atomic
from .sources import effective_dataset
from .sources.base import resolve_root

def local_inputs(d: dict) -> tuple[list[Path], list[str]]:
    """(local files or folders the source reads, hub references it reads instead), by source kind."""
    kind = d.get("source")
    if kind in ("folder", "coop"):
        root = resolve_root(d)
        if not root.is_dir():
            raise FileNotFoundError(f"dataset.root: {root} is not a folder")
        files = [resolve_root(d, "split_file")] if kind == "coop" else []
        files += [resolve_root({"f": f}, "f") for f in (d.get("split_files") or {}).values()]
        return sorted({root, *files}), []
    if kind == "fashion-mnist":
        idx = Path(os.path.expanduser(str(d.get("idx_dir", "/usr/share/datasets/fashion-mnist"))))
        if idx.is_dir():
            return [idx], []
    local = resolve_root(d, "hub_id")  # hf (or fashion-mnist without its IDX files): a local Parquet folder, else the hub
    return ([local], []) if local.exists() else ([], [f"{d['hub_id']}@{d.get('revision') or 'main'}"])


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fingerprint(d: dict, state: dict | None = None) -> dict:
    """{files, bytes, sha256, hub} of the dataset ``d``; ``state`` ({path: [size, mtime_ns, hash]})
    is read for known file versions and updated in place."""
    state = {} if state is None else state
    paths, refs = local_inputs(d)
    total, count, h = 0, 0, hashlib.sha256()
    for base in paths:
        for f in _files(base):
            st = f.stat()
            known = state.get(str(f))
            if known is None or known[:2] != [st.st_size, st.st_mtime_ns]:
                known = state[str(f)] = [st.st_size, st.st_mtime_ns, _sha256(f)]
            rel = f.relative_to(base).as_posix() if f != base else f.name
            h.update(f"{base.name}/{rel}\0{known[2]}\n".encode())
            total, count = total + st.st_size, count + 1
    for ref in refs:
        h.update(f"hub:{ref}\n".encode())
    return {"files": count, "bytes": total, "sha256": h.hexdigest(), "hub": refs}


def write_fingerprint(cfg: dict) -> Path:
    """The fingerprint of ``cfg``'s dataset into its ``images.json``. Where the images are not on
    this machine (a dataset run in a Kaggle kernel, whose archive brings the file) the recorded
    fingerprint is kept, with a note; without one that is an error."""
    from .paths import paths_of

    paths = paths_of(cfg)
    dataset = cfg["run"]["dataset"]
    d = effective_dataset(cfg["dataset"])
    state_file = paths.base / "cache" / "image_hashes" / f"{dataset}.json"  # this machine's paths and times: never archived or shared
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    try:
        fp = {"dataset": dataset, "source": d.get("source"), **fingerprint(d, state)}
    except FileNotFoundError as e:
        if not paths.images.is_file():
            raise
        print(f"images of {dataset}: {e}; keeping the fingerprint recorded in {paths.images} (made where the images are)")
        return paths.images
    state_file.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(state_file, lambda p: p.write_text(json.dumps(state)))
    text = json.dumps(fp, indent=1) + "\n"
    if not paths.images.is_file() or paths.images.read_text() != text:  # unchanged: not rewritten (its modification time stays)
        write_atomic(paths.images, lambda p: p.write_text(text))
    print(f"images of {dataset}: {fp['files']} files, {fp['bytes'] / 1e6:.1f} MB, sha256 {fp['sha256'][:12]}"
          + (f", hub {', '.join(fp['hub'])}" if fp["hub"] else ""))
    return paths.images


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m siglip_adapter.fingerprint", description=__doc__.splitlines()[0])
    ap.add_argument("dataset", nargs="+", help="params/<dataset>.yaml names (`make repro` hashes them all in one process)")
    args = ap.parse_args(argv)
    from .config import ConfigError, load_config

    code = 0
    for dataset in args.dataset:
        try:
            write_fingerprint(load_config(dataset, check_methods=False))  # the methods are not this stage's: no torch
        except (ConfigError, FileNotFoundError, ValueError) as e:
            print(f"images {dataset}: {e}", file=sys.stderr)
            code = 2
    return code


if __name__ == "__main__":
    sys.exit(main())
