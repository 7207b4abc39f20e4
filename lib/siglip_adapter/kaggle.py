"""Kaggle kernels: one folder per dataset x backbone x protocol of a run, ready for ``kaggle kernels push``.

``siglip-adapter kaggle --user NAME --kit-dataset NAME/siglip-adapter-kit`` writes, under
``kaggle/<dataset>-<backbone>-<protocol>/``, a ``kernel-metadata.json`` (the Kaggle CLI's
documented fields: two T4s, internet on, the kit's dataset and the images' dataset as sources) and
a notebook made from ``kaggle_run.ipynb`` (beside this module) with its parameters baked in by
papermill; what the notebook does on Kaggle is ``siglip_adapter.kernel``. ``--ablation`` adds a
``<dataset>-ablation`` kernel per dataset (``siglip_adapter.ablation``). ``--part N`` writes the
follow-up kernels that continue part N-1 from its output (a kernel that ran out of time).
``--plan`` prints what each kernel will caption and embed and, given measured rates, its GPU hours.
Nothing here can reach Kaggle: pushing, status and output downloads are the user's commands
(README, "Kaggle kernels").
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from .config import ConfigError, load_config
from .runs import run_backbones, run_datasets, run_protocols

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


def kernel_title(dataset: str, name: str, part: int = 1) -> str:
    return f"SigLIP-Adapter {dataset} {name}" + (f" part {part}" if part > 1 else "")


def kernel_metadata(dataset: str, name: str, user: str, kit_dataset: str, images: str | None, private: bool = True,
                    part: int = 1) -> dict:
    """``name``: ``<backbone>-<protocol>`` or ``ablation``. Part N > 1 mounts part N-1's output
    (``kernel_sources``), from which it continues."""
    title = kernel_title(dataset, name, part)
    return {
        "id": f"{user}/{slug(title)}",
        "title": title,
        "code_file": f"{slug(title)}.ipynb",
        "language": "python",
        "kernel_type": "notebook",
        "is_private": private,
        "enable_gpu": True,
        # Kaggle's "GPU T4 x2": the hub profile's shards.processes auto then captions and embeds
        # in two processes, one per T4 (siglip_adapter.shard).
        "machine_shape": "NvidiaTeslaT4",
        "enable_internet": True,  # the hub profile downloads SigLIP, SmolVLM and T5; pip installs what is missing
        "dataset_sources": [kit_dataset] + ([images] if images else []),
        "competition_sources": [],
        "kernel_sources": [f"{user}/{slug(kernel_title(dataset, name, part - 1))}"] if part > 1 else [],
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
                 private: bool = True, overlay: str = "", ablation: bool = False, switches: str = "", backbone: str = "",
                 part: int = 1, budget_hours: float = 11.0, **notebook) -> Path:
    """One kernel folder: metadata and the parameterised notebook, for ``dataset`` on ``backbone``
    ("": the parameters' own) under ``protocol``, or (``ablation``) the dataset's ablation of the
    paper's switches (``switches``: a space-separated subset). ``notebook``: further parameters of
    ``kaggle_run.ipynb`` (the tests' ``kaggle_root`` and ``install``)."""
    import papermill

    if part < 1:
        raise ValueError(f"part must be >= 1, got {part}")
    name = "ablation" if ablation else "-".join(p for p in (backbone, protocol) if p)
    meta = kernel_metadata(dataset, name, user, kit_dataset, images, private, part)
    validate(meta)
    folder = Path(out) / slug(f"{dataset}-{name}" + (f"-part-{part}" if part > 1 else ""))
    folder.mkdir(parents=True, exist_ok=True)
    params = {"dataset": dataset, "protocol": protocol, "backbone": backbone, "overlay": overlay, "kit": kit_dataset, "images": images or "",
              "ablation": ablation, "switches": switches, "previous": (meta["kernel_sources"] or [""])[0], "part": part,
              "budget_hours": float(budget_hours), **notebook}
    papermill.execute_notebook(str(Path(__file__).with_name("kaggle_run.ipynb")), str(folder / meta["code_file"]),
                               parameters=params, prepare_only=True, progress_bar=False)
    (folder / "kernel-metadata.json").write_text(json.dumps(meta, indent=2) + "\n")
    return folder


def images_input(cfg: dict, given: str | None) -> str | None:
    """The Kaggle dataset a kernel attaches for ``cfg``'s images: ``given`` (``--images``), else
    ``dataset.kaggle.dataset_source``; None for a dataset without a ``dataset.kaggle`` block. A
    block that names no input, with none given, is an error (the kernel would stop on it)."""
    block = cfg["dataset"].get("kaggle") or {}
    ref = given or block.get("dataset_source")
    if block and not ref:
        raise ConfigError(f"params/{cfg['dataset']['name']}.yaml: dataset.kaggle names no dataset_source; give the Kaggle "
                          f"dataset of its images with --images {cfg['dataset']['name']}=OWNER/SLUG")
    return ref


def kernel_runs(datasets: list[str] | None, protocols: list[str] | None, backbones: list[str] | None,
                ablation: bool) -> list[tuple[str, str, str, bool]]:
    """(dataset, backbone, protocol, ablation) of every kernel (default: ``params/run.yaml``'s
    runs; the ablation kernels on the first backbone, over ``corrected``)."""
    datasets, protocols = datasets or run_datasets(), protocols or run_protocols()
    # Without --backbones: params/run.yaml's for its datasets, each other dataset's own (a paper dataset's hub backbone).
    own = {ds: backbones or (run_backbones() if ds in run_datasets() else [load_config(ds)["backbone"]]) for ds in datasets}
    runs = [(ds, bb, proto, False) for ds in datasets for bb in own[ds] for proto in protocols]
    return runs + ([(ds, own[ds][0], "corrected", True) for ds in datasets] if ablation else [])


def write_kernels(out: Path, user: str, kit_dataset: str, datasets: list[str] | None = None, protocols: list[str] | None = None,
                  images: dict[str, str] | None = None, private: bool = True, ablation: bool = False,
                  backbones: list[str] | None = None, part: int = 1, budget_hours: float = 11.0) -> list[Path]:
    """A kernel folder for every run of ``kernel_runs``. Every run's parameters and images input
    are checked before any file is written."""
    runs = kernel_runs(datasets, protocols, backbones, ablation)
    if not re.fullmatch(r"[A-Za-z0-9_-]+", user or ""):
        raise ValueError(f"--user: {user!r} is not a Kaggle user name (letters, digits, '-', '_')")
    for flag, ref in [("--kit-dataset", kit_dataset), *((f"--images {ds}=", ref) for ds, ref in (images or {}).items())]:
        if not re.fullmatch(_SOURCES["items"]["pattern"][1:-1], ref or ""):
            raise ValueError(f"{flag}: {ref!r} is not a Kaggle dataset OWNER/SLUG")
    sources = {}
    flags = {key: flag for key, flag, given in (("protocol", "--protocols", protocols), ("backbone", "--backbones", backbones)) if given}
    for ds, bb, proto, _ in runs:
        cfg = load_config(ds, protocol=proto, backbone=bb, given_as=flags)  # an unknown name fails here, naming its flag, before any file is written
        sources[ds] = images_input(cfg, (images or {}).get(ds))
    return [write_kernel(out, ds, proto, user, kit_dataset, sources[ds], private, ablation=abl, backbone=bb, part=part,
                         budget_hours=budget_hours) for ds, bb, proto, abl in runs]


# ---------------------------------------------------------------------------------------------
# --plan: what each kernel will compute, before any GPU time is spent


def planned_images(cfg: dict) -> tuple[int, int, str]:
    """(images captioned, images embedded, how they were counted) for one run: exactly, from the
    split the run will draw, when the images are on this machine; else at most the images the
    source holds (``dataset.size``); else (-1, -1)."""
    from unittest.mock import patch

    from .data import make_manifest
    from .sources import build_source
    from .stages.split import ids_to_caption, ids_to_read

    try:
        with patch.dict(os.environ, {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}):  # a hub dataset counts only when downloaded
            source = build_source(cfg)
    except Exception as e:  # noqa: BLE001 - a hub dataset not downloaded, a folder not here: fall back to the declared size
        size = cfg["dataset"].get("size")
        why = f"images not on this machine ({type(e).__name__})"
        return (size, size, f"at most dataset.size; {why}") if size else (-1, -1, f"unknown: {why} and no dataset.size")
    s = cfg["split"]
    manifest = make_manifest(source, cfg["dataset"].get("per_class"), s["fractions"], s["seed"], s["method"], s["val_from_train"],
                             keep_source_test=s["keep_source_test"])
    return len(ids_to_caption(manifest, cfg)), len(ids_to_read(manifest, cfg)), "the split, drawn here"


def measured_rates(report: Path | None = None) -> tuple[dict[str, float] | None, str]:
    """({caption, embed}: images per second, where they come from) as ``bench/gpu.py`` measured
    them (``results/bench/gpu.txt``: SigLIP-B/16 images/s at its best batch, SmolVLM-256M-sized
    greedy captions/s, on one GPU); (None, why) without a report or for a smoke run's."""
    from .paths import project_root

    report = Path(report) if report is not None else project_root() / "results" / "bench" / "gpu.txt"
    if not report.is_file():
        return None, f"no {report.name} (bench/gpu.py has not been run on a GPU for this kit)"
    text = report.read_text()
    if "SMOKE RUN" in text:
        return None, f"{report} is a smoke run's, not a measurement"
    embed = [float(m) for m in re.findall(r"encode_pixels batch \d+: ([0-9.]+) images/s", text)]
    caption = re.findall(r"([0-9.]+) captions/s", text)
    if not embed or not caption:
        return None, f"{report}: no images/s and captions/s lines"
    where = next((line.removeprefix("machine: ") for line in text.splitlines() if line.startswith("machine: ")), "an unnamed machine")
    return ({"caption": float(caption[0]), "embed": max(embed)},
            f"measured by bench/gpu.py on {where.split(',')[0]} ({report.name}: one GPU, SmolVLM-256M-sized greedy captions; "
            "beam search and SmolVLM-500M under `paper` are slower)")


def plan(runs: list[tuple[str, str, str, bool]], rates: dict[str, float] | None = None, budget_hours: float = 11.0) -> list[dict]:
    """One row per kernel: images captioned and embedded and, with ``rates`` ({caption, embed}:
    images per second on the kernel's GPUs, measured), GPU hours and whether they fit
    ``budget_hours``. An ablation kernel counts each distinct caption setting's captions and
    each distinct preprocessing's images once (what its stores compute)."""
    from .ablation import variant_config, variants
    from .store import cache_key

    rows = []
    for ds, bb, proto, abl in runs:
        protos = [v[0] for v in variants()] if abl else [proto]
        captions, embeds, how = {}, {}, ""
        for p in protos:
            cfg = variant_config(ds, p, backbone=bb) if abl else load_config(ds, protocol=p, backbone=bb)
            n_cap, n_emb, how = planned_images(cfg)
            captions[cache_key({**cfg["captions"], **cfg["encoder"], "split": cfg["split"]})] = n_cap
            embeds[cache_key({**cfg["encoder"], "split": cfg["split"]})] = n_emb
        known = all(v >= 0 for v in [*captions.values(), *embeds.values()])
        row = {"kernel": f"{ds}-ablation" if abl else f"{ds}-{bb}-{proto}", "captions": sum(captions.values()) if known else None,
               "embeds": sum(embeds.values()) if known else None, "counted": how, "gpu_hours": None, "fits": None}
        if known and rates:
            row["gpu_hours"] = round((row["captions"] / rates["caption"] + row["embeds"] / rates["embed"]) / 3600.0, 2)
            row["fits"] = row["gpu_hours"] <= budget_hours
        rows.append(row)
    return rows
