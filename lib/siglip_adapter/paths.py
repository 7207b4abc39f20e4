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


@dataclass(frozen=True)
class RunPaths:
    """Where one dataset's run reads and writes.

    A plain run (``overlay=""``) writes small outputs to ``results/<dataset>/`` (git) and heavy
    ones to ``cache/<dataset>/`` (DVC). An overlay run (e.g. the ``smoke`` configuration that the
    notebook tests use) writes under ``build/<overlay>/`` so it never touches the real results.
    """

    root: Path
    dataset: str
    overlay: str = ""

    @property
    def base(self) -> Path:
        return self.root / "build" / self.overlay if self.overlay else self.root

    @property
    def results(self) -> Path:
        return self.base / "results" / self.dataset

    @property
    def cache(self) -> Path:
        return self.base / "cache" / self.dataset

    @property
    def results_root(self) -> Path:
        return self.base / "results"

    @property
    def manifest(self) -> Path:
        return self.results / "manifest.parquet"

    @property
    def captions(self) -> Path:
        return self.cache / "captions.parquet"

    @property
    def features(self) -> Path:
        return self.cache / "features"

    def metrics(self, stage: str) -> Path:
        return self.results / f"{stage}.json"

    def rows(self, stage: str) -> Path:
        return self.results / f"{stage}.csv"

    def ensure(self) -> "RunPaths":
        self.results.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        return self


def run_paths(dataset: str, overlay: str = "") -> RunPaths:
    return RunPaths(project_root(), dataset, overlay or "").ensure()
