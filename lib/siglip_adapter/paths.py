"""Every path derives from the project root, never from the current directory."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def project_root() -> Path:
    """The folder holding ``dvc.yaml`` and ``params/``.

    ``SIGLIP_ADAPTER_ROOT`` wins; else the checkout this package was installed from (editable
    install); else the first parent of the current directory that looks like the project.
    """
    env = os.environ.get("SIGLIP_ADAPTER_ROOT")
    if env:
        return Path(env).resolve()
    candidates = [Path(__file__).resolve().parents[2], *Path.cwd().resolve().parents, Path.cwd().resolve()]
    for c in candidates:
        if (c / "params" / "defaults.yaml").is_file():
            return c
    raise FileNotFoundError(
        "cannot find the project root (a folder with params/defaults.yaml); "
        "set SIGLIP_ADAPTER_ROOT to the checkout of the kit"
    )


def model_path(model_id: str) -> str:
    """A model id as ``from_pretrained`` takes it: a folder relative to the project root (such as
    the tiny local models the tests build) becomes absolute; a hub id is returned unchanged."""
    if model_id and not os.path.isabs(model_id) and (project_root() / model_id).is_dir():
        return str(project_root() / model_id)
    return model_id


def kaggle_root() -> Path:
    """Where a Kaggle machine's folders are: ``SIGLIP_ADAPTER_KAGGLE_ROOT`` (a simulated machine in
    the tests), else ``/kaggle``. Under it: ``input/`` (read-only mounts), ``working/`` (the
    kernel's downloadable output) and ``temp/`` (scratch space, gone with the session)."""
    return Path(os.environ.get("SIGLIP_ADAPTER_KAGGLE_ROOT") or "/kaggle")


def in_kaggle() -> bool:
    """True inside a Kaggle kernel (its environment names the run type, or the machine's
    ``input/`` folder exists under ``kaggle_root()``)."""
    return bool(os.environ.get("KAGGLE_KERNEL_RUN_TYPE")) or (kaggle_root() / "input").is_dir()


# How Kaggle mounts what a kernel attaches, by kind: the old layout puts every source at
# input/<slug>, the newer one at input/<kind>/<owner>/<slug> (public notebooks show both).
KAGGLE_KINDS = {"dataset": "datasets", "kernel": "notebooks", "model": "models"}


def kaggle_mounts(ref: str, kind: str = "dataset") -> list[Path]:
    """The folders where Kaggle may mount ``ref`` (``owner/slug``), in the order they are tried."""
    owner, _, name = ref.partition("/")
    if not owner or not name or "/" in name:
        raise ValueError(f"a Kaggle {kind} is named OWNER/SLUG, got {ref!r}")
    base = kaggle_root() / "input"
    return [base / KAGGLE_KINDS[kind] / owner / name, base / name]


def kaggle_input(ref: str, kind: str = "dataset", what: str = "") -> Path:
    """The mounted folder of the Kaggle ``kind`` ``ref`` (``owner/slug``) under either layout; a
    ``FileNotFoundError`` naming every path tried when it is not mounted (``what`` says who asked)."""
    tried = kaggle_mounts(ref, kind)
    for path in tried:
        if path.is_dir():
            return path
    raise FileNotFoundError(f"{what + ': ' if what else ''}the Kaggle {kind} {ref} is not mounted (tried "
                            f"{', '.join(map(str, tried))}); add it to the kernel's sources")


def data_root() -> Path:
    """Where relative ``dataset.root`` paths point: ``SIGLIP_ADAPTER_DATA``, else ``<root>/data``."""
    env = os.environ.get("SIGLIP_ADAPTER_DATA")
    return Path(env).resolve() if env else project_root() / "data"


def output_root() -> Path:
    """Where results and caches are written: ``SIGLIP_ADAPTER_OUTPUT``; else the project root, or,
    inside a Kaggle kernel whose checkout is read-only (an input), ``temp/siglip-adapter`` under
    the Kaggle root: never ``working/``, whose files are the kernel's download (only the archive
    and its state file go there, ``siglip_adapter.kernel``)."""
    env = os.environ.get("SIGLIP_ADAPTER_OUTPUT")
    if env:
        return Path(env).resolve()
    root = project_root()
    if in_kaggle() and not os.access(root, os.W_OK):
        return kaggle_root() / "temp" / "siglip-adapter"
    return root


RUN_COLUMNS = ["dataset", "backbone", "protocol"]  # what names a run, in its folders and in every per-run table


@dataclass(frozen=True)
class RunPaths:
    """Where one run (a dataset on a backbone under a protocol) reads and writes.

    A plain run (``overlay=""``) writes small outputs to
    ``results/runs/<dataset>/<backbone>/<protocol>/`` (git) and its captions and feature index to
    ``cache/<dataset>/<backbone>/<protocol>/`` (DVC). The stores that runs share, content-keyed so
    every protocol and backbone reuses what another already computed under the same settings, are
    ``cache/<dataset>/features/``, ``cache/<dataset>/captions/`` and ``cache/<dataset>/cells/``. Table I,
    figures and the analysis notebook sit beside ``runs/`` in ``results/``. An overlay run (e.g.
    the ``smoke`` configuration that the notebook tests use) writes under ``build/<overlay>/`` so
    it never touches the real results.
    """

    root: Path
    dataset: str
    overlay: str = ""
    protocol: str = "corrected"
    backbone: str = "offline-conse"

    @property
    def base(self) -> Path:
        return self.root / "build" / self.overlay if self.overlay else self.root

    @property
    def results(self) -> Path:
        return self.base / "results" / "runs" / self.dataset / self.backbone / self.protocol

    @property
    def cache(self) -> Path:
        return self.dataset_cache / self.backbone / self.protocol

    @property
    def dataset_cache(self) -> Path:
        """The stores shared by every backbone and protocol of the dataset."""
        return self.base / "cache" / self.dataset

    @property
    def results_root(self) -> Path:
        return self.base / "results"

    @property
    def images(self) -> Path:
        """The dataset's image fingerprint (``fingerprint``), shared by its runs."""
        return self.base / "results" / "runs" / self.dataset / "images.json"

    @property
    def manifest(self) -> Path:
        return self.results / "manifest.parquet"

    @property
    def skipped(self) -> Path:
        return self.results / "skipped.csv"

    @property
    def data_report(self) -> Path:
        return self.results / "data.json"

    @property
    def captions(self) -> Path:
        return self.cache / "captions.parquet"

    @property
    def features(self) -> Path:
        """The content-keyed feature store (shared by the dataset's protocols)."""
        return self.dataset_cache / "features"

    @property
    def cells(self) -> Path:
        """Finished K x seed cells of the methods (``methods.loop.method_rows``), keyed by what they
        depend on: a killed stage resumes from them (shared by the dataset's protocols)."""
        return self.dataset_cache / "cells"

    @property
    def features_index(self) -> Path:
        """This run's entries of the feature store: what the later stages read."""
        return self.cache / "features.json"

    def metrics(self, stage: str) -> Path:
        return self.results / f"{stage}.json"

    def rows(self, stage: str) -> Path:
        return self.results / f"{stage}.csv"

    def ensure(self) -> "RunPaths":
        self.results.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        return self


def run_paths(dataset: str, overlay: str = "", protocol: str = "corrected", backbone: str = "offline-conse") -> RunPaths:
    return RunPaths(output_root(), dataset, overlay or "", protocol or "corrected", backbone or "offline-conse").ensure()


def paths_of(cfg: dict) -> RunPaths:
    """The paths of the run that ``cfg`` (``config.load_config``) describes."""
    run = cfg["run"]
    return run_paths(run["dataset"], run["overlay"], run["protocol"], run["backbone"])
