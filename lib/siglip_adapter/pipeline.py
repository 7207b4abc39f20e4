"""Stage helpers for 01_captions and 02_embed: the split manifest, which images get captions,
and the content-keyed features every later stage reads."""

from __future__ import annotations

import pandas as pd

from .captions import caption_images, caption_settings, read_captions, write_captions
from .config import seeds as seed_list
from .data import make_manifest, manifest_hash, shot_image_ids
from .encoders import encode_image_ids, encode_text_list
from .paths import RunPaths
from .prompts import class_prompts
from .store import FeatureStore, StaleCacheError, cache_key


def build_manifest(cfg: dict, paths: RunPaths, source) -> pd.DataFrame:
    d = cfg["dataset"]
    manifest = make_manifest(source, d.get("per_class"), cfg["split"]["fractions"], cfg["split"]["seed"])
    tmp = paths.manifest.with_suffix(".tmp")
    manifest.to_parquet(tmp, index=False)
    tmp.replace(paths.manifest)
    return manifest


def ids_to_caption(manifest: pd.DataFrame, cfg: dict) -> list[str]:
    """Images any seed's K-shot set uses (K up to max(shots)), plus every val and test image:
    zero-shot with captions is chosen on val and scored on test, so those need captions too."""
    shots = shot_image_ids(manifest, max(cfg["shots"]), seed_list(cfg))
    evaluated = manifest.loc[manifest["split"].isin(["val", "test"]), "image_id"].tolist()
    return sorted(set(shots) | set(evaluated))


def run_captions(cfg: dict, paths: RunPaths, source, manifest: pd.DataFrame, encoder, captioner, summariser) -> pd.DataFrame:
    ids = ids_to_caption(manifest, cfg)
    settings = caption_settings(captioner, summariser, encoder, manifest_hash(manifest))
    parts = paths.cache / ".partial" / f"captions-{cache_key(settings)}"
    df = caption_images(source, ids, captioner, summariser, encoder, settings, parts,
                        batch_size=cfg["captions"]["batch_size"], chunk_size=cfg["captions"]["chunk_size"])
    write_captions(df, paths.captions, parts)
    return df


def feature_fields(cfg: dict, encoder, manifest: pd.DataFrame, captions: pd.DataFrame) -> dict[str, dict]:
    """The cache-key fields of each feature kind: everything that changes its content."""
    d = cfg["dataset"]
    data = {"dataset": d["name"], "source": d["source"], "invert": d.get("invert", False), "manifest": manifest_hash(manifest)}
    made_for = captions["manifest"].iloc[0] if len(captions) else data["manifest"]
    if made_for != data["manifest"]:
        raise StaleCacheError(f"captions were made for split {made_for}, the manifest is {data['manifest']}; rerun 01_captions")
    enc = encoder.cache_fields()
    caption_settings = {k: captions[k].iloc[0] for k in ("captioner", "prompt", "summariser", "token_limit")}
    return {
        "image": {"kind": "image", **enc, **data},
        "caption": {"kind": "caption", **enc, **data, **caption_settings,
                    "captions": cache_key({"captions": list(zip(captions["image_id"], captions["caption"]))})},
        "class_prompt": {"kind": "class_prompt", **enc, "template": d["template"], "classnames": list(d["classnames"])},
    }


def embed_all(cfg: dict, paths: RunPaths, source, manifest: pd.DataFrame, encoder) -> pd.DataFrame:
    """Image, caption and class-prompt features into the cache; returns what was done per kind."""
    store = FeatureStore(paths.features)
    all_ids = manifest["image_id"].tolist()
    captioned = read_captions(paths.captions)
    fields = feature_fields(cfg, encoder, manifest, captioned)
    bs = cfg["encoder"]["batch_size"]
    texts = dict(zip(captioned["image_id"], captioned["caption"]))
    prompt_of = dict(zip(cfg["dataset"]["classnames"], class_prompts(cfg["dataset"]["classnames"], cfg["dataset"]["template"])))
    jobs = {
        "image": (all_ids, lambda ids: encode_image_ids(encoder, source, ids, bs, desc="image features")),
        "caption": (captioned["image_id"].tolist(), lambda ids: encode_text_list(encoder, [texts[i] for i in ids], desc="caption features")),
        "class_prompt": (cfg["dataset"]["classnames"], lambda ids: encoder.encode_texts([prompt_of[c] for c in ids])),
    }
    meta = {"logit_scale": encoder.logit_scale, "logit_bias": encoder.logit_bias}
    report = []
    for kind, (ids, compute) in jobs.items():
        feats, reused = store.get_or_compute(kind, fields[kind], ids, compute, meta=meta, chunk_size=cfg["encoder"]["chunk_size"])
        report.append({"kind": kind, "rows": len(feats.ids), "dim": feats.values.shape[1], "reused": reused,
                       "file": store.path(kind, fields[kind]).name})
    store.write_index(fields)
    return pd.DataFrame(report)
