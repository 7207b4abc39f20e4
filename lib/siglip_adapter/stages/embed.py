"""02_embed: a run's content-keyed features (``embed_all``), assembled from the dataset's pools:
image, caption and class-prompt features every later stage reads; ``embed_stage`` is the same
calls outside a notebook (``siglip-adapter embed``)."""

from __future__ import annotations

import pandas as pd

from ..captions.make import CAPTION_COLUMNS, read_captions
from ..config import seeds as seed_list
from ..data import manifest_hash, read_manifest, shot_image_ids
from ..encoders import build_encoder
from ..paths import RunPaths
from ..prompts import class_prompts
from ..shard import Shard
from ..sources import build_source
from ..store import Features, FeatureStore, cache_key, code_version
from ..views import settings_of as view_settings
from ..views import view_ids
from .pools import image_identity, text_rows, tower_rows
from .split import ids_to_caption, ids_to_read


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
    """Per kind (image, caption, class_prompt; view with ``shot_views.n`` > 0): (fields, ids,
    compute(ids) -> features), computing through the store's pools (``shard``: each process its
    share). Only the images some stage reads are embedded (K-shot sets, val, test); captions as
    captioned; views of the K-shot sets' images alone."""
    read = ids_to_read(manifest, cfg)
    fields = feature_fields(cfg, encoder, manifest, captioned, read)
    tower = tower_rows(cfg, store, source, encoder, shard)

    def features_of(rows):
        if encoder.label_prompts:  # ConSE mixes label-name embeddings: the text pool keeps them
            encoder.use_label_embeddings(text_rows(store, encoder, encoder.label_prompts, desc="label names", shard=shard))
        return encoder.from_tower(rows)

    texts = dict(zip(captioned["image_id"], captioned["caption"]))
    jobs = {
        "image": (fields["image"], read, lambda ids: features_of(tower(ids))),
        "caption": (fields["caption"], captioned["image_id"].tolist(),
                    lambda ids: text_rows(store, encoder, [texts[i] for i in ids], desc="caption features", shard=shard)),
        "class_prompt": (fields["class_prompt"], fields["class_prompt"]["prompts"], lambda ps: text_rows(store, encoder, list(ps), shard=shard)),
    }
    views = view_settings(cfg)
    if views["n"]:  # the shots' augmented views: a pool of their own beside the images'
        view_tower = tower_rows(cfg, store, source, encoder, shard, views)
        ids = view_ids(shot_image_ids(manifest, max(cfg["shots"]), seed_list(cfg)), views["n"])
        jobs["view"] = ({**fields["image"], "kind": "view", "views": views, "ids": cache_key({"ids": ids}),
                                 "code": code_version("encoders", "prompts", "sources.images", "views")}, ids,
                        lambda v: features_of(view_tower(v)))
    return jobs


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


def embed_stage(cfg: dict, paths: RunPaths, shard: Shard | None = None) -> pd.DataFrame:
    """02_embed: the run's features (``embed_all``) from its manifest and captions."""
    shard = shard or Shard()
    cfg = shard.configure(cfg)
    return embed_all(cfg, paths, build_source(cfg), read_manifest(paths.manifest), build_encoder(cfg), shard)
