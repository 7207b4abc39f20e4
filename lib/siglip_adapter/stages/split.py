"""01_captions' first step, the split: the run's manifest, checked (unreadable images skipped and
counted, each class's K shots available), and which images are read and captioned."""

from __future__ import annotations

import json

import pandas as pd

from ..config import check_shots
from ..config import seeds as seed_list
from ..data import find_bad_images, images_read, make_manifest, shot_image_ids
from ..paths import RunPaths
from ..sources.base import Source
from ..store import write_atomic


class TooManySkipped(RuntimeError):
    pass


def checked_manifest(cfg: dict, source: Source, seen: dict | None = None) -> tuple[pd.DataFrame, list[dict]]:
    """The split, with every image a stage will read fully decoded once first.

    Listing decodes nothing; then the images that the K-shot sets, validation and test need are
    checked in DataLoader workers, bad ones leave the manifest, and the split is drawn again
    (only the newly needed images are checked) until every image it reads is good. Returns
    (manifest, skipped [{path, reason}]): listing-time and decode-time failures together.
    ``seen`` ({"checked": set, "bad": dict}, filled in place) carries the checks across calls on
    the same source (the ablation's variants), so no image is decoded twice.
    """
    s = cfg["split"]
    k_max, seeds = max(cfg["shots"]), seed_list(cfg)
    seen = seen if seen is not None else {}
    bad: dict[str, str] = seen.setdefault("bad", {})
    checked: set[str] = seen.setdefault("checked", set())
    while True:
        manifest = make_manifest(source, cfg["dataset"].get("per_class"), s["fractions"], s["seed"], s["method"], s["val_from_train"], exclude=bad,
                                 keep_source_test=s["keep_source_test"])
        check_shots(cfg, manifest)
        todo = [i for i in images_read(manifest, k_max, seeds) if i not in checked]
        if not todo:
            break
        bad.update(find_bad_images(source, todo, cfg["data"]["num_workers"]))
        checked.update(todo)
    skipped = source.skipped + [{"path": source.path_of(i), "reason": r} for i, r in sorted(bad.items())]
    return manifest, skipped


def data_report(source: Source, manifest: pd.DataFrame, skipped: list[dict]) -> dict:
    """Counts that reconcile: found = used + skipped (used: images the split may draw from)."""
    return {"source": source.kind, "root": source.display_root, "found": source.found, "used": source.found - len(skipped),
            "skipped": len(skipped), "classes": len(source.classnames), "manifest_rows": len(manifest),
            "split_method": str(manifest["split_method"].iloc[0]),
            "per_split": {k: int(v) for k, v in manifest["split"].value_counts().sort_index().items()}}


def check_skipped_share(report: dict, max_fraction: float) -> None:
    share = report["skipped"] / max(report["found"], 1)
    if share > max_fraction:
        raise TooManySkipped(f"{report['root']}: {report['skipped']} of {report['found']} images are unusable ({share:.1%}, above "
                             f"data.max_skipped_fraction = {max_fraction}); see `siglip-adapter scan {report['root']}` for each file and reason")


def build_manifest(cfg: dict, paths: RunPaths, source: Source) -> pd.DataFrame:
    """Checked manifest, its ``skipped.csv`` and ``data.json`` next to it; too many bad files stop
    the run with an error naming the folder and the count."""
    manifest, skipped = checked_manifest(cfg, source)
    report = data_report(source, manifest, skipped)
    write_atomic(paths.skipped, lambda p: pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(p, index=False))
    write_atomic(paths.data_report, lambda p: p.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n"))
    check_skipped_share({**report, "root": source.root}, cfg["data"]["max_skipped_fraction"])
    write_atomic(paths.manifest, lambda p: manifest.to_parquet(p, index=False))
    return manifest


def ids_to_read(manifest: pd.DataFrame, cfg: dict) -> list[str]:
    """Images some stage reads (``data.images_read``): embedded, nothing else."""
    return images_read(manifest, max(cfg["shots"]), seed_list(cfg))


def ids_to_caption(manifest: pd.DataFrame, cfg: dict) -> list[str]:
    """Images captioned: those read, or (``captions.only_shots``) the K-shot sets alone."""
    if cfg["captions"]["only_shots"]:
        return shot_image_ids(manifest, max(cfg["shots"]), seed_list(cfg))
    return ids_to_read(manifest, cfg)
