"""Stage helpers for 01_captions and 02_embed: the checked split manifest, which images get
captions, and the content-keyed features every later stage reads.

Two pools in the dataset's feature store carry the expensive work across runs, protocols and
splits: the image tower's output per image id (``tower_rows``: an image is run through the model
once per preprocessing, and the offline captioner reads its labels from the same rows) and text
features per text (``text_rows``). A run's own entries (``embed_all``) are assembled from them."""

from __future__ import annotations

import hashlib
import json
from typing import Callable, Sequence

import pandas as pd
import torch

from .captions import (CAPTION_COLUMNS, build_captioner, build_summariser, caption_flags, caption_images, caption_quality, caption_settings, caption_store,
                       read_captions, write_captions)
from .config import check_shots
from .config import seeds as seed_list
from .data import find_bad_images, images_read, make_manifest, manifest_hash, read_manifest, shot_image_ids
from .encoders import build_encoder, encode_image_ids, encode_text_list
from .paths import RunPaths
from .prompts import class_prompts
from .shard import Shard
from .sources import build_source
from .sources.base import Source
from .store import Features, FeatureStore, cache_key, code_version, write_atomic


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


def image_identity(cfg: dict) -> dict:
    """What decides an image's pixels besides its id: the dataset, its source kind, inversion."""
    d = cfg["dataset"]
    return {"dataset": d["name"], "source": d["source"], "invert": bool(d.get("invert", False))}


def tower_rows(cfg: dict, store: FeatureStore, source, encoder, shard: Shard | None = None) -> Callable[[Sequence[str]], torch.Tensor]:
    """ids -> the encoder's image-tower outputs (``tower_pixels``), from the store's pool for this
    encoder setting and these images; only ids never seen are decoded and run (``shard``: shared
    by the processes that all call it alike, see ``FeatureStore.rows``)."""
    fields = {"kind": "image_tower", **encoder.tower_fields(), **image_identity(cfg), "code": code_version("encoders", "sources.images")}
    e, workers = cfg["encoder"], cfg["data"]["num_workers"]

    def compute(ids):
        return encode_image_ids(encoder, source, ids, e["batch_size"], workers, desc="image tower", tower=True)

    return lambda ids: store.rows("image_tower", fields, ids, compute, e["chunk_size"], shard)[0].values


def text_id(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def text_rows(store: FeatureStore, encoder, texts: Sequence[str], desc: str = "texts", shard: Shard | None = None) -> torch.Tensor:
    """(len(texts), D) text features from the store's pool for this encoder (keyed per text), only
    texts never seen being encoded."""
    fields = {"kind": "text", **encoder.text_fields(), "code": code_version("encoders")}
    by_id = {text_id(t): t for t in texts}
    feats, _ = store.rows("text", fields, [text_id(t) for t in texts], lambda ids: encode_text_list(encoder, [by_id[i] for i in ids], desc=desc),
                          shard=shard)
    return feats.values


def captioner_for(cfg: dict, store: FeatureStore, source, encoder):
    """The configured captioner; the offline one reads the image tower's stored outputs."""
    if cfg["captions"]["captioner"] == "offline-labels":
        return build_captioner(cfg, encoder, tower_rows(cfg, store, source, encoder))
    return build_captioner(cfg, encoder)


def make_captions(cfg: dict, cache_root, source, manifest: pd.DataFrame, encoder, captioner, summariser,
                  shard: Shard | None = None) -> pd.DataFrame:
    """The captions of the images this run captions, through the dataset's shared caption store
    under ``cache_root`` (cache/<dataset>/); ``shard``: this process's share of them."""
    c = cfg["captions"]
    settings = caption_settings(captioner, summariser, encoder, c["min_summary_tokens"], images=image_identity(cfg), cleaning=c["cleaning"],
                                summarise=c["summarise"])
    return caption_images(source, ids_to_caption(manifest, cfg), captioner, summariser, encoder, settings,
                          caption_store(cache_root, settings), batch_size=c["batch_size"], chunk_size=c["chunk_size"],
                          num_workers=cfg["data"]["num_workers"], classnames=dict(zip(manifest["image_id"], manifest["classname"])),
                          min_summary_tokens=c["min_summary_tokens"], cleaning=c["cleaning"], summarise=c["summarise"], shard=shard)


def run_captions(cfg: dict, paths: RunPaths, source, manifest: pd.DataFrame, encoder, captioner, summariser) -> pd.DataFrame:
    """The run's captions (``make_captions``), written to the run's captions table."""
    df = make_captions(cfg, paths.dataset_cache, source, manifest, encoder, captioner, summariser)
    write_captions(df, paths.captions)
    return df


def write_caption_quality(paths: RunPaths, caps: pd.DataFrame, manifest: pd.DataFrame, token_limit: int, n_examples: int = 4) -> dict:
    """The run's caption quality (``caption_quality``) as ``captions_quality.json`` and a few
    examples as ``caption_examples.csv`` (flagged ones: leaked, repeated, empty or cut; and clean
    ones, the first by image id of each), beside the run's other results for 06_analysis."""
    flags = caption_flags(caps, dict(zip(manifest["image_id"], manifest["classname"])))
    quality = caption_quality(flags, token_limit)
    write_atomic(paths.results / "captions_quality.json", lambda p: p.write_text(json.dumps(quality, indent=2, sort_keys=True) + "\n"))
    bad = flags["prompt_leak"] | flags["class_leak"] | flags["repetition"] | flags["empty"] | flags["truncated"]
    picked = pd.concat([flags[bad].head(n_examples).assign(kind="flagged"), flags[~bad].head(n_examples).assign(kind="clean")])
    picked = picked.merge(manifest[["image_id", "classname"]], on="image_id")
    write_atomic(paths.results / "caption_examples.csv", lambda p: picked.to_csv(p, index=False))
    return quality




def feature_fields(cfg: dict, encoder, manifest: pd.DataFrame, captions: pd.DataFrame, image_ids: list[str]) -> dict[str, dict]:
    """The cache-key fields of each feature kind of a run: everything that changes its content,
    and the ids it holds (runs that read other images get their own entry)."""
    d = cfg["dataset"]
    data = {**image_identity(cfg), "manifest": manifest_hash(manifest)}
    enc = {**encoder.cache_fields(), "code": code_version("encoders", "prompts", "sources.images")}
    settings = {k: captions[k].iloc[0] for k in captions.columns if k not in CAPTION_COLUMNS} if len(captions) else {}
    names = list(manifest.drop_duplicates("label").sort_values("label")["classname"])
    return {
        "image": {"kind": "image", **enc, **data, "ids": cache_key({"ids": list(image_ids)})},
        "caption": {"kind": "caption", **enc, **data, **settings,
                    "captions": cache_key({"captions": list(zip(captions["image_id"], captions["caption"]))})},
        # The exact prompt strings, not just the template and names: any change to how a prompt
        # is built makes a new entry.
        "class_prompt": {"kind": "class_prompt", **enc, "prompts": class_prompts(names, d["template"])},
    }


def feature_jobs(cfg: dict, store: FeatureStore, source, manifest: pd.DataFrame, encoder, captioned: pd.DataFrame,
                 shard: Shard | None = None):
    """Per kind (image, caption, class_prompt): (fields, ids, compute(ids) -> features), computing
    through the store's pools (``shard``: each process its share). Only the images some stage
    reads are embedded (K-shot sets, val, test); captions as captioned."""
    read = ids_to_read(manifest, cfg)
    fields = feature_fields(cfg, encoder, manifest, captioned, read)
    tower = tower_rows(cfg, store, source, encoder, shard)

    def image_features(ids):
        if hasattr(encoder, "set_label_embeddings"):  # ConSE mixes label-name embeddings: the text pool keeps them
            encoder.set_label_embeddings(text_rows(store, encoder, encoder.label_prompts, desc="label names", shard=shard))
        return encoder.from_tower(tower(ids))

    texts = dict(zip(captioned["image_id"], captioned["caption"]))
    return {
        "image": (fields["image"], read, image_features),
        "caption": (fields["caption"], captioned["image_id"].tolist(),
                    lambda ids: text_rows(store, encoder, [texts[i] for i in ids], desc="caption features", shard=shard)),
        "class_prompt": (fields["class_prompt"], fields["class_prompt"]["prompts"], lambda ps: text_rows(store, encoder, list(ps), shard=shard)),
    }


def _meta(encoder) -> dict:
    return {"logit_scale": encoder.logit_scale, "logit_bias": encoder.logit_bias}


def features(cfg: dict, store: FeatureStore, source, manifest: pd.DataFrame, encoder, captioned: pd.DataFrame,
             shard: Shard | None = None) -> dict[str, Features]:
    """A run's features in memory (no entry of its own written; the pools fill as needed;
    ``shard``: each process fills its share, then every process has them all)."""
    meta = _meta(encoder)
    return {kind: Features(list(ids), compute(ids), f, meta) for kind, (f, ids, compute) in
            feature_jobs(cfg, store, source, manifest, encoder, captioned, shard).items()}


def embed_all(cfg: dict, paths: RunPaths, source, manifest: pd.DataFrame, encoder, shard: Shard | None = None) -> pd.DataFrame:
    """Image, caption and class-prompt features into the dataset's store, and the run's index of
    them; returns what was done per kind (``reused``: the run's entry was found, nothing computed).
    ``shard``: every process fills its share of the pools; the main one then writes the run's
    entries and index from them (the others return an empty report)."""
    shard = shard or Shard()
    store = FeatureStore(paths.features)
    captioned = read_captions(paths.captions, ids_to_caption(manifest, cfg))
    meta = _meta(encoder)
    fields, report = {}, []
    for kind, (f, ids, compute) in feature_jobs(cfg, store, source, manifest, encoder, captioned, shard).items():
        if shard.world > 1:
            values = compute(ids)  # every process alike: its share of the pools, then all the rows
            compute = lambda _, v=values: v  # noqa: E731
        if not shard.is_main:
            continue
        feats, reused = store.get_or_compute(kind, f, ids, compute, meta=meta)
        fields[kind] = f
        report.append({"kind": kind, "rows": len(feats.ids), "dim": feats.values.shape[1], "reused": reused, "file": store.path(kind, f).name})
    if shard.is_main:
        store.write_index(fields, paths.features_index)
    return pd.DataFrame(report)


# ---------------------------------------------------------------------------------------------
# The stages outside the notebooks (`siglip-adapter captions | embed`, one process or many under
# `accelerate launch`): the calls 01_captions and 02_embed make, with this process's shard.


def caption_stage(cfg: dict, paths: RunPaths, shard: Shard | None = None, manifest_ready: bool = False) -> pd.DataFrame:
    """01_captions: the checked split (unless ``manifest_ready``: the run's manifest.parquet is
    current), the captions (each process its share), and the run's captions table and caption
    quality (written by the main process). Returns the captions."""
    shard = shard or Shard()
    cfg = shard.configure(cfg)
    source = build_source(cfg)
    if shard.is_main and not manifest_ready:
        build_manifest(cfg, paths, source)
    shard.wait()
    manifest = read_manifest(paths.manifest)
    encoder = build_encoder(cfg)
    captioner = captioner_for(cfg, FeatureStore(paths.features), source, encoder)
    caps = make_captions(cfg, paths.dataset_cache, source, manifest, encoder, captioner, build_summariser(cfg), shard)
    if shard.is_main:
        write_captions(caps, paths.captions)
        write_caption_quality(paths, caps, manifest, encoder.max_text_tokens)
    return caps


def embed_stage(cfg: dict, paths: RunPaths, shard: Shard | None = None) -> pd.DataFrame:
    """02_embed: the run's features (``embed_all``) from its manifest and captions."""
    shard = shard or Shard()
    cfg = shard.configure(cfg)
    return embed_all(cfg, paths, build_source(cfg), read_manifest(paths.manifest), build_encoder(cfg), shard)
