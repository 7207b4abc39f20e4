"""What explains the gap between the paper's Table I and the corrected protocol: each switch of the
``paper`` protocol turned on alone over ``corrected`` (``corrected+<switch>``) and turned off alone
from ``paper`` (``paper-<switch>``), on one dataset.

Every variant runs end to end in one process (split, captions, features, Table I's three columns)
through the same content-keyed stores as the notebooks, so it computes only what its switch
changes: another preprocessing runs the image tower on images it has not seen under it, another
caption setting makes those captions and their text features; the rest is read back. Sources,
encoders and image checks are shared by the variants.

Columns (``COLUMNS``): Table I's three as each variant defines them: zero-shot; column 2 (zero-shot
with captions, or the authors' fixed cache); column 3 (the trainable adapter) at the variant's
smallest shots (1; EuroSAT's 4 under ``author_shots``). A variant uses at most ``ablation.n_seeds``
seeds (one under ``one_seed_42``); every row records its seed. A switch's effect on a column is
the mean accuracy with it minus without it: ``(corrected+X) - corrected`` and ``paper - (paper-X)``.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from . import budget, stages
from . import shard as sharding
from .captions.summarise import build_summariser
from .config import ConfigError, load_config, read_yaml, unknown_name
from .methods import loop
from .encoders import build_encoder
from .inputs import inputs_from
from .paths import RunPaths, output_root, project_root
from .runs import ablation_arguments
from .shard import Shard
from .sources import build_source
from .store import FeatureStore, cache_key, write_atomic

COLUMNS = ("zero_shot", "zero_shot_captions", "trainable")
ON, OFF = "corrected", "paper"  # switches are turned on alone over ON, off alone from OFF


def variants(root: Path | None = None, switches: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(protocol name, switch, direction) for the two bases and each switch of ``paper`` (or the
    ``switches`` named): direction ``base``, ``on`` (over corrected) or ``off`` (from paper)."""
    defaults = read_yaml((root or project_root()) / "params" / "defaults.yaml")
    paper = list(defaults["protocols"][OFF] or [])
    unknown = [s for s in switches or [] if s not in paper]
    if unknown:
        raise ConfigError("--switches: " + unknown_name("switch", unknown[0], paper, plural=f"switches of the '{OFF}' protocol in params/defaults.yaml"))
    out = [(ON, "", "base"), (OFF, "", "base")]
    for s in switches or paper:
        out += [(f"{ON}+{s}", s, "on"), (f"{OFF}-{s}", s, "off")]
    return out


def variant_config(dataset: str, protocol: str, overlay: str = "", root: Path | None = None, backbone: str | None = None) -> dict:
    """A variant's parameters with Table I's columns only: its smallest shots, at most
    ``ablation.n_seeds`` seeds."""
    cfg = copy.deepcopy(load_config(dataset, overlay, root, protocol, backbone))
    cfg["shots"] = [min(cfg["shots"])]
    cfg["n_seeds"] = min(int(cfg["n_seeds"]), int(cfg["ablation"]["n_seeds"]))
    return cfg


class Ablation:
    """The variants of one dataset, sharing sources, encoders, image checks and stores."""

    def __init__(self, dataset: str, overlay: str = "", root: Path | None = None, out_root: Path | None = None, backbone: str | None = None,
                 shard: Shard | None = None):
        """``backbone``: a name of ``backbones`` (None: the parameters' own). ``shard``: this
        process's share of the captions and features when several processes run the ablation
        (``accelerate launch``, as the stages); the main one alone fits the methods and has rows."""
        self.dataset, self.overlay, self.root = dataset, overlay or "", root or project_root()
        self.shard = shard or Shard()
        base = load_config(dataset, self.overlay, self.root, backbone=backbone)
        self.backbone = base["backbone"]
        self.paths = RunPaths(out_root or output_root(), dataset, self.overlay, backbone=self.backbone)
        self.store = FeatureStore(self.paths.features)
        self._memo: dict[tuple, object] = {}
        self._seen: dict[str, dict] = {}

    def _once(self, kind: str, settings: dict, build):
        key = (kind, cache_key(settings))
        if key not in self._memo:
            self._memo[key] = build()
        return self._memo[key]

    def source(self, cfg: dict):
        return self._once("source", cfg["dataset"], lambda: build_source(cfg))

    def encoder(self, cfg: dict):
        """One encoder per encoder setting (another preprocessing is another encoder)."""
        return self._once("encoder", cfg["encoder"], lambda: build_encoder(cfg))

    def config(self, protocol: str) -> dict:
        return variant_config(self.dataset, protocol, self.overlay, self.root, self.backbone)

    def run_variant(self, protocol: str) -> pd.DataFrame:
        """One row per column, shots and seed for one variant (the stage functions' rows)."""
        cfg = self.config(protocol)
        source = self.source(cfg)
        manifest, _ = stages.split.checked_manifest(cfg, source, self._seen.setdefault(cache_key(cfg["dataset"]), {}))
        encoder = self.encoder(cfg)
        captioner = self._once("captioner", {**cfg["captions"], **cfg["encoder"], **stages.pools.image_identity(cfg)},
                               lambda: stages.captions.captioner_for(cfg, self.store, source, encoder))
        summariser = self._once("summariser", {**cfg["captions"], **cfg["encoder"]}, lambda: build_summariser(cfg))
        caps = stages.captions.make_captions(cfg, self.paths.dataset_cache, source, manifest, encoder, captioner, summariser, self.shard)
        feats = stages.embed.features(cfg, self.store, source, manifest, encoder, caps, self.shard)
        if not self.shard.is_main:
            return pd.DataFrame()
        inp = inputs_from(manifest, feats, cfg)
        rows = pd.concat([loop.method_rows(inp, cfg, names, store=self.paths.cells) for names in (loop.names(cfg, kind="zero-shot"), ["trainable"])],
                         ignore_index=True)  # method-major: zero-shot's rows, then the trainable adapter's
        return rows[rows["method"].isin(COLUMNS)]

    def run(self, switches: list[str] | None = None) -> pd.DataFrame:
        """Every variant's rows, with its ``switch`` and ``direction`` (none in a process other
        than the main one)."""
        frames = []
        for protocol, switch, direction in tqdm(variants(self.root, switches), desc=f"ablation {self.dataset}", unit="variant"):
            frames.append(self.run_variant(protocol).assign(variant=protocol, switch=switch, direction=direction))
        if not self.shard.is_main:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True).drop(columns="protocol")


ROW_COLUMNS = ["dataset", "variant", "switch", "direction", "method", "shots", "seed", "accuracy", "val_accuracy", "selected_on"]


def write_rows(rows: pd.DataFrame, path: Path) -> Path:
    """The ablation's per-seed rows as CSV, written atomically."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    ordered = rows.reindex(columns=ROW_COLUMNS + [c for c in rows.columns if c not in ROW_COLUMNS])
    return write_atomic(path, lambda tmp: ordered.to_csv(tmp, index=False, float_format="%.6g"))


def rows_path(dataset: str, overlay: str = "", out_root: Path | None = None) -> Path:
    """Where a dataset's ablation rows go: ``results/ablation/<dataset>.csv``."""
    return RunPaths(out_root or output_root(), dataset, overlay or "").results_root / "ablation" / f"{dataset}.csv"


def run_from_args(args: argparse.Namespace) -> tuple[pd.DataFrame, Path]:
    """Run the ablation that ``args`` (``runs.ablation_arguments``) describe and write its rows. With
    ``shards.processes`` above one it launches itself in that many processes (``accelerate
    launch``, as ``01_captions`` and ``02_embed`` do) and reads back the rows they wrote."""
    base = load_config(args.dataset, args.overlay, backbone=args.backbone)
    variants(switches=args.switches)  # a --switches mistake said before any process starts or model loads
    out = args.out or rows_path(args.dataset, args.overlay)
    n = sharding.processes(base["shards"]["processes"])
    if n > 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        argv = [args.dataset, "--overlay", args.overlay, "--out", str(out)] + (["--backbone", args.backbone] if args.backbone else []) \
            + (["--switches", *args.switches] if args.switches else [])
        sharding.run_relayed(sharding.accelerate_command(n, ["-m", "siglip_adapter.ablation", *argv]), f"ablation {args.dataset}: {n} processes")
        return pd.read_csv(out), Path(out)
    me = sharding.current(base["shards"]["timeout_hours"])
    rows = Ablation(args.dataset, args.overlay, backbone=args.backbone, shard=me).run(args.switches)
    return rows, (write_rows(rows, out) if me.is_main else Path(out))


def main(argv: list[str] | None = None) -> int:
    """``python -m siglip_adapter.ablation DATASET``: the rows only (what ``dvc repro`` runs;
    ``siglip-adapter ablation`` also prints the effects)."""
    ap = argparse.ArgumentParser(prog="python -m siglip_adapter.ablation", description=__doc__.split("\n\n")[0])
    ablation_arguments(ap)
    try:
        _, path = run_from_args(ap.parse_args(argv))
    except budget.OutOfTime as e:  # a Kaggle kernel's budget: the finished parts are stored, a rerun resumes
        print(f"ablation: {e}", file=sys.stderr)
        return budget.EXIT_OUT_OF_TIME
    except ConfigError as e:  # a mistake in an argument or a params file: one line that names it
        print(f"python -m siglip_adapter.ablation: {e}", file=sys.stderr)
        return 2
    print(f"rows: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
