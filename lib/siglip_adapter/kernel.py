"""What a Kaggle kernel of the kit does (``kaggle_run.ipynb`` calls ``run``), step by step.

1. The kit, a read-only input, is copied to ``temp/siglip-adapter/kit`` under the Kaggle root
   (``paths.kaggle_root``), where its results and caches are written too: ``working/``, the
   kernel's downloadable output, gets only the archive and its state file.
2. What the run needs is installed: the ``kernel`` extra (papermill and a Jupyter kernel), and the
   ``offline`` extra when the run's backbone or captioner is the offline profile's. A torch that
   is already there is kept (the kit's floor is what transformers and accelerate require).
3. A follow-up kernel (``previous``: the earlier kernel's OWNER/SLUG, mounted as a source) unpacks
   that kernel's archive first and skips the stages its state file lists as done; their cached
   parts (captions, feature chunks, fitted cells) are found, so nothing is computed twice.
4. The stages run (``01_captions`` ... ``05_trainable`` under papermill, or the ablation) with a
   deadline (``budget``): a stage past it stops between two parts.
5. Whatever happened, ``working/`` gets ``siglip-adapter-<run>.zip`` (the run's results and the
   dataset's caches, paths relative to the kit's root, so it unpacks where the stages write) and
   ``siglip-adapter-<run>.state.json`` (stages done and remaining, why it stopped, what to do
   next). An error is raised again after both are written.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import budget
from .paths import kaggle_input, kaggle_root

STAGES = ["01_captions", "02_embed", "03_zero_shot", "04_adapter", "05_trainable"]
ABLATION = "ablation"
# Never copied with the kit: version control, environments, DVC's own cache and scratch, caches.
KIT_IGNORE = (".git", ".venv", "cache", "__pycache__", ".dvc/cache", ".dvc/tmp", "build/smoke")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # every archive member's date: the same files make the same archive


@dataclass
class Kernel:
    """One kernel's parameters (the notebook's parameters cell, as ``siglip-adapter kaggle`` wrote them)."""

    dataset: str
    protocol: str = "corrected"
    backbone: str = ""        # a name of backbones ("" = the parameters' own)
    overlay: str = ""
    ablation: bool = False
    switches: str = ""        # ablation: space-separated switches of `paper` ("" = all)
    images: str = ""          # OWNER/SLUG of the images' Kaggle dataset ("" = dataset.kaggle.dataset_source)
    previous: str = ""        # OWNER/SLUG of the kernel this one continues ("" = none)
    part: int = 1             # 1, or the place of this kernel in a chain of follow-ups
    budget_hours: float = 11.0   # Kaggle stops a GPU session at 12 hours; the archive needs a few minutes
    install: str = "pip"      # pip: install what is missing | check: refuse to run when something is missing

    def name(self, backbone: str) -> str:
        """The run's name in the archive's and state file's names."""
        return f"{self.dataset}-ablation" if self.ablation else f"{self.dataset}-{backbone}-{self.protocol}"


@dataclass
class State:
    """What ``working/siglip-adapter-<run>.state.json`` says about a kernel."""

    run: str
    stages: list[str]
    done: list[str] = field(default_factory=list)
    complete: bool = False
    stopped: str = ""         # why the kernel stopped early ("" when complete)
    resumed_from: str = ""
    archive: str = ""
    archive_files: int = 0
    elapsed_s: float = 0.0
    next: str = ""

    @property
    def remaining(self) -> list[str]:
        return [s for s in self.stages if s not in self.done]

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "remaining": self.remaining}, indent=2) + "\n"


def kit_copy(kit_input: Path) -> Path:
    """The kit copied out of its read-only input into the Kaggle root's ``temp/`` (kept when it is
    already there, as in a second run in the same session)."""
    dest = kaggle_root() / "temp" / "siglip-adapter" / "kit"
    if not (dest / "params" / "defaults.yaml").is_file():
        ignore = lambda folder, names: [n for n in names if n in KIT_IGNORE or  # noqa: E731
                                        os.path.relpath(os.path.join(folder, n), kit_input) in KIT_IGNORE]
        shutil.copytree(kit_input, dest, ignore=ignore, dirs_exist_ok=True)
    return dest


def extras_for(cfg: dict) -> list[str]:
    """The kit's extras a run needs: ``kernel`` always, ``offline`` for the offline encoder or captioner."""
    offline = cfg["encoder"]["name"] == "offline-conse" or cfg["captions"]["captioner"] == "offline-labels"
    return ["kernel"] + (["offline"] if offline else [])


def requirements(kit: Path, extras: list[str]) -> list[str]:
    """The requirement strings of the kit (``pyproject.toml``) with ``extras``, the kit's own
    extras that an extra names (``siglip-adapter-kit[kernel]``) followed."""
    import tomllib

    project = tomllib.loads((kit / "pyproject.toml").read_text())["project"]
    reqs, todo, seen = list(project["dependencies"]), list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for r in project["optional-dependencies"][extra]:
            if r.startswith(project["name"] + "["):
                todo += [e.strip() for e in r.split("[", 1)[1].rstrip("]").split(",")]
            else:
                reqs.append(r)
    return reqs


def missing(reqs: list[str]) -> list[str]:
    """The requirements that this Python's installed distributions do not satisfy."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.requirements import Requirement

    out = []
    for text in reqs:
        req = Requirement(text.split("#")[0].strip())
        try:
            have = version(req.name)
        except PackageNotFoundError:
            out.append(f"{text} (not installed)")
            continue
        if req.specifier and not req.specifier.contains(have, prereleases=True):
            out.append(f"{text} (found {have})")
    return out


def install(kit: Path, extras: list[str], mode: str) -> None:
    """``pip``: install the kit with ``extras`` (pip keeps whatever already satisfies a
    requirement, torch included); ``check``: raise naming every requirement not met."""
    if mode == "pip":
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-input", "-e", f"{kit}[{','.join(extras)}]"], check=True)
        return
    if mode != "check":
        raise ValueError(f"install must be 'pip' or 'check', got {mode!r}")
    lacking = missing(requirements(kit, extras))
    if lacking:
        raise RuntimeError(f"the kernel's Python lacks what the run needs (extras {extras}): {'; '.join(lacking)}")


def restore(previous: str, base: Path) -> State:
    """The earlier kernel's state, after unpacking its archive where the run writes (``base``:
    the kit's root, or ``build/<overlay>`` in it)."""
    mount = kaggle_input(previous, "kernel", "the kernel to continue (previous)")
    states = sorted(mount.glob("siglip-adapter-*.state.json"))
    if len(states) != 1:
        raise FileNotFoundError(f"{mount}: expected one siglip-adapter-*.state.json from the earlier kernel, found {len(states)}")
    data = json.loads(states[0].read_text())
    data.pop("remaining", None)
    state = State(**data)
    with zipfile.ZipFile(mount / state.archive) as z:
        z.extractall(base)
    print(f"continuing {previous}: {len(state.done)} stages done ({', '.join(state.done) or 'none'}), "
          f"{state.archive_files} files unpacked", flush=True)
    return state


def write_archive(path: Path, base: Path, outputs: list[Path]) -> int:
    """The outputs (files or folders) in one zip, paths relative to ``base``, members sorted and
    dated alike (the same files give the same bytes), written under a temporary name first.
    Returns the number of files."""
    files = sorted({f for out in outputs for f in ([out] if out.is_file() else out.rglob("*") if out.is_dir() else []) if f.is_file()})
    tmp = path.with_name(path.name + ".partial")
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for f in files:
            info = zipfile.ZipInfo(f.relative_to(base).as_posix(), ZIP_TIME)
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            z.writestr(info, f.read_bytes())
    tmp.replace(path)
    return len(files)


def _stage(nb: str, k: Kernel, kit: Path, paths, backbone: str) -> None:
    import papermill

    (paths.results / "notebooks").mkdir(parents=True, exist_ok=True)
    papermill.execute_notebook(str(kit / "notebooks" / f"{nb}.ipynb"), str(paths.results / "notebooks" / f"{nb}.ipynb"),
                               parameters={"dataset": k.dataset, "protocol": k.protocol, "backbone": backbone, "overlay": k.overlay},
                               cwd=str(kit), kernel_name="python3", progress_bar=False)


def _ablation(k: Kernel, backbone: str) -> None:
    from .shard import run_relayed

    cmd = [sys.executable, "-m", "siglip_adapter.ablation", k.dataset, "--overlay", k.overlay, "--backbone", backbone]
    run_relayed(cmd + (["--switches", *k.switches.split()] if k.switches else []), f"ablation {k.dataset}")


def _out_of_time(e: BaseException) -> bool:
    """A stage stopped by its budget: ``OutOfTime`` here, or raised inside a papermill notebook."""
    return isinstance(e, budget.OutOfTime) or getattr(e, "ename", "") == "OutOfTime"


def run(k: Kernel, kit_ref: str) -> State:
    """The kernel (module docstring): returns its state, or raises a stage's error after writing
    the archive and the state file."""
    start = time.time()
    working = kaggle_root() / "working"
    working.mkdir(parents=True, exist_ok=True)
    kit = kit_copy(kaggle_input(kit_ref, "dataset", "the kit (kit)"))
    os.environ.update({"SIGLIP_ADAPTER_ROOT": str(kit), "PYTHONPATH": os.pathsep.join(filter(None, [str(kit / "lib"), os.environ.get("PYTHONPATH")])),
                       **budget.deadline_env(k.budget_hours, start)})
    if k.images:
        from .sources import KAGGLE_IMAGES_ENV

        os.environ[KAGGLE_IMAGES_ENV] = k.images
    from .config import load_config
    from .paths import paths_of

    cfg = load_config(k.dataset, k.overlay, protocol=k.protocol, backbone=k.backbone or None)
    extras = extras_for(cfg)
    install(kit, extras, k.install)
    backbone, paths = cfg["backbone"], paths_of(cfg)
    state = State(run=k.name(backbone), stages=[ABLATION] if k.ablation else list(STAGES))
    if k.previous:
        before = restore(k.previous, paths.base)
        if before.run != state.run:
            raise ValueError(f"previous: {k.previous} ran {before.run}, not {state.run}")
        state.done, state.resumed_from = list(before.done), k.previous
    print(f"kit {kit}; run {state.run}; profile {cfg['profile']}; extras {extras}; budget {k.budget_hours} h; "
          f"to do: {', '.join(state.remaining) or 'nothing'}", flush=True)
    error = None
    try:
        from .fingerprint import write_fingerprint

        write_fingerprint(cfg)  # the images' fingerprint, which the user's dvc.lock records beside the stages
        for stage in state.remaining:
            if state.done and budget.expired():
                raise budget.OutOfTime(f"{stage}: the time budget ran out before it started")
            t0 = time.time()
            _ablation(k, backbone) if stage == ABLATION else _stage(stage, k, kit, paths, backbone)
            state.done.append(stage)
            print(f"{stage}: done in {time.time() - t0:.0f} s", flush=True)
    except BaseException as e:  # noqa: BLE001 - the archive and the state are written whatever stopped the stages
        if _out_of_time(e):
            state.stopped = f"time budget of {k.budget_hours} h ran out during {state.remaining[0]}"
        else:
            state.stopped, error = f"{type(e).__name__} in {state.remaining[0]}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}", e
    state.complete = not state.remaining
    outputs = [paths.results_root / "ablation" / f"{k.dataset}.csv", paths.dataset_cache] if k.ablation else [paths.results, paths.dataset_cache]
    outputs.append(paths.images)
    state.archive = f"siglip-adapter-{state.run}.zip"
    state.archive_files = write_archive(working / state.archive, paths.base, outputs)
    state.elapsed_s = round(time.time() - start, 1)
    state.next = ("download the archive and unpack it in the kit's root (README: Kaggle kernels)" if state.complete else
                  f"write and push part {k.part + 1} (siglip-adapter kaggle with the same options and --part {k.part + 1}): "
                  "it mounts this kernel's output and continues from it")
    (working / f"siglip-adapter-{state.run}.state.json").write_text(state.to_json())
    print(f"{working / state.archive}: {state.archive_files} files; {'complete' if state.complete else 'stopped: ' + state.stopped}", flush=True)
    if error is not None:
        raise error
    return state
