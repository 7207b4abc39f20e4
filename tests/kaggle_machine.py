"""A simulated Kaggle machine under a temporary folder: what ``tests/test_kaggle_machine.py`` runs
the generated kernel notebooks on.

The folder stands for ``/kaggle`` (the kit reads it from ``SIGLIP_ADAPTER_KAGGLE_ROOT``, which the
kernel notebook's ``kaggle_root`` parameter sets): ``input/`` holds the kit as a dataset (the
project's files as git lists them, no ``.git``, no environment or caches) and an image dataset in
the authors' layout, under Kaggle's newer mount layout (``input/datasets/<owner>/<slug>``) or the
older one (``input/<slug>``); ``working/`` starts empty. Nothing in ``input/`` may change (the test
takes a snapshot: running as root, permissions would not stop a write). The kernels run with
``install="check"``: this machine's Python stands for Kaggle's image, and the kernel verifies
that every requirement its run needs is installed instead of calling pip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

USER = "alice"
KIT = f"{USER}/siglip-adapter-kit"
DIGITS = f"{USER}/digits-png"


def project_files(root: Path) -> list[str]:
    """The project's files as a clean checkout has them: tracked and new, not ignored."""
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=root, check=True, capture_output=True).stdout
    return [f for f in out.decode().split("\0") if f and (root / f).is_file()]


@dataclass
class KaggleMachine:
    root: Path
    layout: str = "new"  # new: input/datasets/<owner>/<slug>, input/notebooks/<owner>/<slug> | old: input/<slug>

    def mount(self, ref: str, kind: str = "datasets") -> Path:
        owner, slug = ref.split("/")
        return self.root / "input" / (f"{kind}/{owner}/{slug}" if self.layout == "new" else slug)

    @property
    def working(self) -> Path:
        return self.root / "working"

    def snapshot(self) -> dict[str, str]:
        """{path: SHA-256} of everything under input/."""
        base = self.root / "input"
        return {str(p.relative_to(base)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(base.rglob("*")) if p.is_file()}

    def attach_output(self, other: "KaggleMachine", kernel_ref: str) -> Path:
        """Another kernel's output (its working/) mounted here as a kernel source."""
        dest = self.mount(kernel_ref, "notebooks")
        shutil.copytree(other.working, dest)
        return dest


def new_machine(folder: Path, project: Path, layout: str = "new", extra_files: dict[str, str] | None = None,
                extra_trees: dict[str, Path] | None = None, digits: Path | None = None) -> KaggleMachine:
    """A machine with the kit (``project``'s files plus ``extra_files`` {path: text} and
    ``extra_trees`` {path: folder}) and, given ``digits`` (a folder of the digits PNG class
    folders), the images dataset holding it as ``digits/``."""
    m = KaggleMachine(Path(folder), layout)
    kit = m.mount(KIT)
    for rel in project_files(project):
        (kit / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(project / rel, kit / rel)
    for rel, text in (extra_files or {}).items():
        (kit / rel).parent.mkdir(parents=True, exist_ok=True)
        (kit / rel).write_text(text)
    for rel, tree in (extra_trees or {}).items():
        shutil.copytree(tree, kit / rel, dirs_exist_ok=True)
    if digits is not None:
        shutil.copytree(digits, m.mount(DIGITS) / "digits")
    m.working.mkdir(parents=True)
    return m


def run_kernel(m: KaggleMachine, out: Path, dataset: str, protocol: str = "corrected", **kw) -> dict:
    """Write the kernel with ``siglip_adapter.kaggle.write_kernel`` (as ``siglip-adapter kaggle``
    does), execute its notebook with papermill on the machine ``m``, and return the state file's
    contents. ``kw``: write_kernel's (overlay, ablation, images, part, budget_hours, ...)."""
    import papermill

    from siglip_adapter.kaggle import write_kernel

    folder = write_kernel(out, dataset, protocol, USER, KIT, kaggle_root=str(m.root), install="check", **kw)
    meta = json.loads((folder / "kernel-metadata.json").read_text())
    env = {"KAGGLE_KERNEL_RUN_TYPE": "Batch", "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        papermill.execute_notebook(str(folder / meta["code_file"]), str(out / f"executed-{meta['code_file']}"), cwd=str(out),
                                   kernel_name="python3", progress_bar=False)
    finally:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    states = list(m.working.glob("*.state.json"))
    assert len(states) == 1, states
    return {**json.loads(states[0].read_text()), "metadata": meta}
