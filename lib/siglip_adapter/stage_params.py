"""What each kind of stage reads of ``params/``, one small file per kind: the ``stage_params`` stage.

``python -m siglip_adapter.stage_params DATASET`` writes ``results/stage_params/<dataset>/<kind>.json``
for every kind of ``READS``: the values of the sections that kind of stage reads (``methods`` or one
dotted key such as ``methods.zero_shot`` of ``params/defaults.yaml``; the whole dataset file; the
keys of ``params/run.yaml`` named), keyed by file and section, in a stable layout. A file is
rewritten only when its content changes.

Why not DVC's own ``params:`` on each stage: DVC records the values of a stage's params in
``dvc.lock`` and, after every stage it runs, parses the whole lock file (keeping its comments) and
writes it back. With every run recording the sections it reads (the method grids, backbones,
profiles and protocols: 300 to 700 lines a stage) the lock grew to 21,500 lines, and that parse and
write cost about 2.5 s of a small stage's 12.5 on the 2-core machine, under the repository lock.
Here the ``stage_params`` stage of each dataset records the parameter files once (its ``params:``
are the whole files), and each stage depends on its kind's file instead: a stage reruns exactly
when a section it reads changes, as before, and ``dvc status`` after an edit of ``params/`` names
``stage_params@<dataset>`` (its params changed); the stages that read the edited section follow
when ``dvc repro`` has rewritten their kind's file. ``dvc params diff`` reads the recorded values
as before.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from .atomic import write_atomic
from .paths import project_root

DEFAULTS = "params/defaults.yaml"
RUN = "params/run.yaml"
DATASET = "params/<dataset>.yaml"  # the dataset's own file, always read whole

# kind of stage -> {params file: sections it reads (None: the whole file)}. A notebook stage of
# dvc.yaml depends on results/stage_params/<dataset>/<kind>.json; what it reads is listed here, once.
READS: dict[str, dict[str, list[str] | None]] = {
    "captions": {DEFAULTS: ["protocols", "switches", "profile", "profiles", "split", "data", "shots", "n_seeds", "seed_base",
                            "encoder", "backbone", "backbones", "captions"], DATASET: None},
    "embed": {DEFAULTS: ["protocols", "switches", "profile", "profiles", "data", "encoder", "backbone", "backbones", "shot_views"],
              DATASET: None},
    # the zero-shot methods' own keys only, not every method's (tests/test_pipeline.py checks it)
    "zero_shot": {DEFAULTS: ["protocols", "switches", "protocol", "validation", "methods.zero_shot", "methods.zero_shot_captions",
                             "shots", "n_seeds", "seed_base"], DATASET: None},
    # the profile too: its methods.instead may change the methods run (the offline profile's coop_val)
    "adapter": {DEFAULTS: ["protocols", "switches", "protocol", "profile", "profiles", "shots", "shot_views", "n_seeds", "seed_base", "methods",
                           "validation"], DATASET: None},
    # CoOp trains through the encoder's text tower: the encoder and backbone settings too
    "trainable": {DEFAULTS: ["protocols", "switches", "protocol", "profile", "profiles", "shots", "shot_views", "n_seeds", "seed_base",
                             "methods", "encoder", "backbone", "backbones", "validation"], DATASET: None},
    "ablation": {DEFAULTS: None, DATASET: None, RUN: ["backbones"]},
    "cards": {DEFAULTS: None, DATASET: None},
}


class StageParamsError(ValueError):
    """A parameter file missing, unreadable, or without a section ``READS`` names: one line naming both."""


def _read(path: Path) -> dict:
    """A parameter file as data, read as the kit's own loader (``config.read_yaml``) reads it. Not that
    loader itself: its module's functions import the schema and the method registry, which this
    stage would then have to list as dependencies and rerun for."""
    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except FileNotFoundError:
        raise StageParamsError(f"{path}: parameter file not found") from None
    except yaml.YAMLError as e:
        raise StageParamsError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise StageParamsError(f"{path}: expected a mapping at the top level")
    return data


def _section(data: dict, key: str, file: str):
    value = data
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise StageParamsError(f"{file}: no section {key} (siglip_adapter.stage_params.READS names it)")
        value = value[part]
    return value


def values(dataset: str, kind: str, root: Path | None = None) -> dict:
    """{params file: {section: value}} of what ``kind`` of stage reads for ``dataset``."""
    root = project_root() if root is None else root
    out = {}
    for file, keys in READS[kind].items():
        name = file.replace("<dataset>", dataset)
        data = _read(root / name)
        out[name] = data if keys is None else {k: _section(data, k, name) for k in keys}
    return out


def path(dataset: str, kind: str, root: Path | None = None) -> Path:
    return (project_root() if root is None else root) / "results" / "stage_params" / dataset / f"{kind}.json"


def write(dataset: str, root: Path | None = None) -> None:
    """Write every kind's file for ``dataset`` whose content changed."""
    for kind in READS:
        text = json.dumps(values(dataset, kind, root), indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        target = path(dataset, kind, root)
        if target.is_file() and target.read_text() == text:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, lambda tmp, text=text: tmp.write_text(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m siglip_adapter.stage_params", description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", help="datasets of params/run.yaml (params/<dataset>.yaml)")
    args = parser.parse_args(argv)
    try:
        for ds in args.datasets:
            write(ds)
    except StageParamsError as e:
        print(f"stage_params: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
