"""A run: opened in a notebook (``open_run``), listed in ``params/run.yaml`` (the datasets,
protocols and backbones ``dvc repro`` runs) or named on the command line (``run_arguments``)."""

from __future__ import annotations

from pathlib import Path

from .config import ConfigError, load_config, read_yaml
from .paths import RunPaths, paths_of, project_root


def open_run(dataset: str, overlay: str = "", protocol: str | None = None, backbone: str | None = None) -> tuple[dict, RunPaths]:
    """A notebook's run: its merged parameters and output paths, with one line saying what runs
    (``backbone`` empty: the one the parameter files name)."""
    cfg = load_config(dataset, overlay, protocol=protocol, backbone=backbone or None)
    print(f"dataset={dataset}  profile={cfg['profile']}  backbone={cfg['backbone']} ({cfg['encoder']['model_id']})  "
          f"protocol={cfg['protocol']} {cfg['switches']}")
    return cfg, paths_of(cfg)


def run_datasets(root: Path | None = None) -> list[str]:
    """The datasets ``dvc repro`` runs: ``datasets`` of ``params/run.yaml``."""
    return _run_list("datasets", root)


def run_protocols(root: Path | None = None) -> list[str]:
    """The protocols ``dvc repro`` runs each dataset under: ``protocols`` of ``params/run.yaml``."""
    return _run_list("protocols", root)


def run_backbones(root: Path | None = None) -> list[str]:
    """The backbones ``dvc repro`` runs each dataset on: ``backbones`` of ``params/run.yaml`` (the
    first is the one the ablation and the cards use)."""
    return _run_list("backbones", root)


def _run_list(key: str, root: Path | None) -> list[str]:
    root = root or project_root()
    path = root / "params" / "run.yaml"
    names = read_yaml(path).get(key) or []
    if not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: '{key}' must be a non-empty list of names")
    return list(names)


# ---------------------------------------------------------------------------------------------
# A run named on the command line (``siglip-adapter`` and ``python -m siglip_adapter.ablation``):
# building a parser imports nothing heavy.


def run_arguments(ap, protocol: bool = True, default_protocol: str | None = None) -> None:
    """The arguments that name a run: its dataset, ``--overlay``, ``--backbone`` and (``protocol``) ``--protocol``."""
    ap.add_argument("dataset", help="a params/<dataset>.yaml name")
    ap.add_argument("--overlay", default="", help="a params/overlays/<name>.yaml (default none; its outputs go under build/<name>/)")
    ap.add_argument("--backbone", default=None, help="a name of backbones in params/defaults.yaml (default: the parameters' own)")
    if protocol:
        default = default_protocol or "the dataset's"
        ap.add_argument("--protocol", default=default_protocol, help=f"a protocol of params/defaults.yaml (default: {default})")


def ablation_arguments(ap) -> None:
    """The arguments of ``siglip-adapter ablation`` and ``python -m siglip_adapter.ablation``."""
    run_arguments(ap, protocol=False)
    ap.add_argument("--switches", nargs="+", default=None, help="only these switches of the paper protocol (default: all)")
    ap.add_argument("--out", type=Path, default=None, help="the rows CSV (default results/ablation/<dataset>.csv)")
