"""Kaggle kernels: one folder per dataset x protocol of a run, ready for ``kaggle kernels push``.

``siglip-adapter kaggle --user NAME --kit-dataset NAME/siglip-adapter-kit`` writes, under
``kaggle/<dataset>-<protocol>/``, a ``kernel-metadata.json`` (the Kaggle CLI's documented fields:
GPU and internet on, the kit's dataset and the images' dataset as sources) and a notebook made
from ``kaggle_run.ipynb`` (beside this module) with its parameters baked in by papermill. On Kaggle the
notebook copies the kit out of its read-only input, installs it, runs the five stage notebooks
for its dataset and protocol on the GPU, and zips ``results/`` and ``cache/`` into one archive
(a kernel's output download stops at 500 files). ``--ablation`` adds a ``<dataset>-ablation``
kernel per dataset that runs the ablation of the paper's switches (``siglip_adapter.ablation``). Nothing here can reach Kaggle: pushing, status
and output downloads are the user's commands (README, "Kaggle kernels").
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .config import load_config, run_backbones, run_datasets, run_protocols

# kernel-metadata.json as the Kaggle CLI documents it (Kaggle/kaggle-api, "Kernel Metadata"):
# id or id_no; title (its slug is the title lower-cased with dashes); code_file; language;
# kernel_type; the booleans (the CLI writes them as "true" / "false" strings, and reads either);
# the sources as "owner/slug" lists; docker_image and machine_shape as optional strings.
_FLAG = {"oneOf": [{"type": "boolean"}, {"enum": ["true", "false"]}]}
_SOURCES = {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z0-9_-]+/[A-Za-z0-9_.-]+$"}, "uniqueItems": True}
KERNEL_METADATA_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Kaggle kernel-metadata.json",
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": r"^[A-Za-z0-9_-]+/[a-z0-9-]+$"},
        "id_no": {"type": "integer"},
        "title": {"type": "string", "minLength": 5},
        "code_file": {"type": "string", "minLength": 1},
        "language": {"enum": ["python", "r", "rmarkdown"]},
        "kernel_type": {"enum": ["script", "notebook"]},
        "is_private": _FLAG,
        "enable_gpu": _FLAG,
        "enable_tpu": _FLAG,
        "enable_internet": _FLAG,
        "dataset_sources": _SOURCES,
        "competition_sources": {"type": "array", "items": {"type": "string"}},
        "kernel_sources": _SOURCES,
        "model_sources": {"type": "array", "items": {"type": "string"}},
        "docker_image": {"type": "string"},
        "machine_shape": {"type": "string"},
    },
    "required": ["title", "code_file", "language", "kernel_type"],
    "anyOf": [{"required": ["id"]}, {"required": ["id_no"]}],
    "additionalProperties": False,
}


def slug(title: str) -> str:
    """Kaggle's kernel slug of a title: lower-cased, runs of other characters as one dash."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def kernel_metadata(dataset: str, protocol: str, user: str, kit_dataset: str, images: str | None, private: bool = True) -> dict:
    title = f"SigLIP-Adapter {dataset} {protocol}"
    return {
        "id": f"{user}/{slug(title)}",
        "title": title,
        "code_file": f"{slug(title)}.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": private,
        "enable_gpu": True,
        # Kaggle's "GPU T4 x2" (its default GPU is one P100): the hub profile's shards.processes
        # auto then captions and embeds in two processes, one per T4 (siglip_adapter.shard).
        "machine_shape": "NvidiaTeslaT4",
        "enable_internet": True,  # the hub profile downloads SigLIP, SmolVLM and T5
        "dataset_sources": [kit_dataset] + ([images] if images else []),
        "competition_sources": [],
        "kernel_sources": [],
        "model_sources": [],
    }


def validate(metadata: dict) -> None:
    """Raise ``jsonschema.ValidationError`` when the metadata breaks the documented fields; also
    checks what the schema cannot: the id's slug is the title's."""
    import jsonschema

    jsonschema.validate(metadata, KERNEL_METADATA_SCHEMA)
    if "id" in metadata and metadata["id"].split("/", 1)[1] != slug(metadata["title"]):
        raise jsonschema.ValidationError(f"id {metadata['id']!r} does not match the title's slug {slug(metadata['title'])!r}")


def write_kernel(out: Path, dataset: str, protocol: str, user: str, kit_dataset: str, images: str | None = None,
                 private: bool = True, dry_run: bool = False, overlay: str = "", ablation: bool = False, switches: str = "",
                 backbone: str = "") -> Path:
    """One kernel folder: metadata and the parameterised notebook, for ``dataset`` on ``backbone``
    ("": the parameters' own) under ``protocol``. ``dry_run``: the notebook
    installs nothing and runs where it is (tests run it on the offline profile). ``ablation``:
    the dataset's ablation of the paper's switches (``switches``: a space-separated subset) in a
    ``<dataset>-ablation`` kernel, instead of the stages under ``protocol``."""
    import papermill

    name = "ablation" if ablation else "-".join(p for p in (backbone, protocol) if p)
    meta = kernel_metadata(dataset, name, user, kit_dataset, images, private)
    validate(meta)
    folder = Path(out) / slug(f"{dataset}-{name}")
    folder.mkdir(parents=True, exist_ok=True)
    params = {"dataset": dataset, "protocol": protocol, "backbone": backbone, "overlay": overlay, "kit_input": f"/kaggle/input/{kit_dataset.split('/', 1)[1]}",
              "dry_run": dry_run, "ablation": ablation, "switches": switches}
    papermill.execute_notebook(str(Path(__file__).with_name("kaggle_run.ipynb")), str(folder / meta["code_file"]),
                               parameters=params, prepare_only=True, progress_bar=False)
    (folder / "kernel-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def write_kernels(out: Path, user: str, kit_dataset: str, datasets: list[str] | None = None, protocols: list[str] | None = None,
                  images: dict[str, str] | None = None, private: bool = True, ablation: bool = False,
                  backbones: list[str] | None = None) -> list[Path]:
    """A kernel folder for every dataset x backbone x protocol (default: those of
    ``params/run.yaml``), and with ``ablation`` one ablation kernel per dataset (on the first
    backbone). The images' Kaggle dataset comes from ``images`` or the dataset's
    ``dataset.kaggle.dataset_source``."""
    datasets, protocols, backbones = datasets or run_datasets(), protocols or run_protocols(), backbones or run_backbones()
    sources = {}
    for ds in datasets:
        for bb in backbones:
            for proto in protocols:
                cfg = load_config(ds, protocol=proto, backbone=bb)  # an unknown name fails here, before any file is written
        sources[ds] = (images or {}).get(ds) or (cfg["dataset"].get("kaggle") or {}).get("dataset_source")
    folders = [write_kernel(out, ds, proto, user, kit_dataset, sources[ds], private, backbone=bb)
               for ds in datasets for bb in backbones for proto in protocols]
    if ablation:
        folders += [write_kernel(out, ds, "corrected", user, kit_dataset, sources[ds], private, ablation=True, backbone=backbones[0])
                    for ds in datasets]
    return folders
