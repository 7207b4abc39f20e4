"""Stage helpers for 01_captions and 02_embed: the checked split manifest, which images get
captions, and the content-keyed features every later stage reads."""

from __future__ import annotations

import json

import pandas as pd

from .captions import caption_images, caption_settings, caption_store, read_captions, write_captions
from .config import seeds as seed_list
from .data import find_bad_images, images_read, make_manifest, manifest_hash, shot_image_ids
from .encoders import encode_image_ids, encode_text_list
from .paths import RunPaths
from .prompts import class_prompts
from .sources import Source
from .store import FeatureStore, cache_key, code_version


class TooManySkipped(RuntimeError):
    pass


def checked_manifest(cfg: dict, source: Source) -> tuple[pd.DataFrame, list[dict]]:
    """The split, with every image a stage will read fully decoded once first.

    Listing decodes nothing; then the images that the K-shot sets, validation and test need are
    checked in DataLoader workers, bad ones leave the manifest, and the split is drawn again
    (only the newly needed images are checked) until every image it reads is good. Returns
    (manifest, skipped [{path, reason}]): listing-time and decode-time failures together.
    """
    s = cfg["split"]
    k_max, seeds = max(cfg["shots"]), seed_list(cfg)
    bad: dict[str, str] = {}
    checked: set[str] = set()
    while True:
        manifest = make_manifest(source, cfg["dataset"].get("per_class"), s["fractions"], s["seed"], s["method"], s["val_from_train"], exclude=bad,
                                 keep_source_test=s["keep_source_test"])
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


def _write_atomic(path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    tmp.replace(path)


def build_manifest(cfg: dict, paths: RunPaths, source: Source) -> pd.DataFrame:
    """Checked manifest, its ``skipped.csv`` and ``data.json`` next to it; too many bad files stop
    the run with an error naming the folder and the count."""
    manifest, skipped = checked_manifest(cfg, source)
    report = data_report(source, manifest, skipped)
    _write_atomic(paths.skipped, lambda p: pd.DataFrame(skipped, columns=["path", "reason"]).to_csv(p, index=False))
    _write_atomic(paths.data_report, lambda p: p.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n"))
    check_skipped_share({**report, "root": source.root}, cfg["data"]["max_skipped_fraction"])
    _write_atomic(paths.manifest, lambda p: manifest.to_parquet(p, index=False))
    return manifest


def ids_to_read(manifest: pd.DataFrame, cfg: dict) -> list[str]:
    """Images some stage reads (``data.images_read``): embedded, nothing else."""
    return images_read(manifest, max(cfg["shots"]), seed_list(cfg))


def ids_to_caption(manifest: pd.DataFrame, cfg: dict) -> list[str]:
    """Images captioned: those read, or (``captions.only_shots``) the K-shot sets alone."""
    if cfg["captions"]["only_shots"]:
        return shot_image_ids(manifest, max(cfg["shots"]), seed_list(cfg))
    return ids_to_read(manifest, cfg)


def run_captions(cfg: dict, paths: RunPaths, source, manifest: pd.DataFrame, encoder, captioner, summariser) -> pd.DataFrame:
    """The run's captions, through the dataset's shared caption store."""
    c = cfg["captions"]
    settings = caption_settings(captioner, summariser, encoder, c["min_summary_tokens"])
    df = caption_images(source, ids_to_caption(manifest, cfg), captioner, summariser, encoder, settings,
                        caption_store(paths.dataset_cache, settings), batch_size=c["batch_size"], chunk_size=c["chunk_size"],
                        num_workers=cfg["data"]["num_workers"], classnames=dict(zip(manifest["image_id"], manifest["classname"])),
                        min_summary_tokens=c["min_summary_tokens"])
    write_captions(df, paths.captions)
    return df


CAPTION_KEY_COLUMNS = ("image_id", "prompt", "raw", "clean", "caption", "n_tokens")


def feature_fields(cfg: dict, encoder, manifest: pd.DataFrame, captions: pd.DataFrame, image_ids: list[str]) -> dict[str, dict]:
    """The cache-key fields of each feature kind: everything that changes its content, and the
    ids it holds (runs that read other images get their own entry)."""
    d = cfg["dataset"]
    data = {"dataset": d["name"], "source": d["source"], "invert": d.get("invert", False), "manifest": manifest_hash(manifest)}
    enc = {**encoder.cache_fields(), "code": code_version("encoders", "prompts", "sources.images")}
    settings = {k: captions[k].iloc[0] for k in captions.columns if k not in CAPTION_KEY_COLUMNS} if len(captions) else {}
    names = list(manifest.drop_duplicates("label").sort_values("label")["classname"])
    return {
        "image": {"kind": "image", **enc, **data, "ids": cache_key({"ids": list(image_ids)})},
        "caption": {"kind": "caption", **enc, **data, **settings,
                    "captions": cache_key({"captions": list(zip(captions["image_id"], captions["caption"]))})},
        # The exact prompt strings, not just the template and names: any change to how a prompt
        # is built makes a new entry.
        "class_prompt": {"kind": "class_prompt", **enc, "prompts": class_prompts(names, d["template"])},
    }


def embed_all(cfg: dict, paths: RunPaths, source, manifest: pd.DataFrame, encoder) -> pd.DataFrame:
    """Image, caption and class-prompt features into the dataset's store, and the run's index of
    them; returns what was done per kind (``reused``: found in the store, nothing computed).

    Only the images some stage reads are embedded (K-shot sets, val, test); captions as captioned."""
    store = FeatureStore(paths.features)
    captioned = read_captions(paths.captions, ids_to_caption(manifest, cfg))
    read = ids_to_read(manifest, cfg)
    fields = feature_fields(cfg, encoder, manifest, captioned, read)
    bs, workers = cfg["encoder"]["batch_size"], cfg["data"]["num_workers"]
    texts = dict(zip(captioned["image_id"], captioned["caption"]))
    prompts = fields["class_prompt"]["prompts"]
    jobs = {
        "image": (read, lambda ids: encode_image_ids(encoder, source, ids, bs, workers, desc="image features")),
        "caption": (captioned["image_id"].tolist(), lambda ids: encode_text_list(encoder, [texts[i] for i in ids], desc="caption features")),
        "class_prompt": (prompts, lambda ps: encoder.encode_texts(list(ps))),
    }
    meta = {"logit_scale": encoder.logit_scale, "logit_bias": encoder.logit_bias}
    report = []
    for kind, (ids, compute) in jobs.items():
        feats, reused = store.get_or_compute(kind, fields[kind], ids, compute, meta=meta, chunk_size=cfg["encoder"]["chunk_size"])
        report.append({"kind": kind, "rows": len(feats.ids), "dim": feats.values.shape[1], "reused": reused,
                       "file": store.path(kind, fields[kind]).name})
    store.write_index(fields, paths.features_index)
    return pd.DataFrame(report)
