"""01_captions: the captions of the images a run needs (``run_captions``; resumable, in parts) and
their quality report; ``caption_stage`` is the same calls outside a notebook (``siglip-adapter
captions``, one process or many under ``accelerate launch``)."""

from __future__ import annotations

import json

import pandas as pd

from ..captions.captioners import build_captioner
from ..captions.make import Batches, caption_images, caption_settings, caption_store, write_captions
from ..captions.quality import caption_flags, caption_quality
from ..captions.summarise import Finishing, build_summariser
from ..data import read_manifest
from ..encoders import build_encoder
from ..paths import RunPaths
from ..shard import Shard
from ..sources import build_source
from ..store import FeatureStore, write_atomic
from .pools import image_identity, tower_rows
from .split import build_manifest, ids_to_caption


def captioner_for(cfg: dict, store: FeatureStore, source, encoder):
    """The configured captioner; the offline one reads the image tower's stored outputs."""
    if cfg["captions"]["captioner"] == "offline-labels":
        return build_captioner(cfg, encoder, tower_rows(cfg, store, source, encoder))
    return build_captioner(cfg, encoder)


def make_captions(cfg: dict, cache_root, source, manifest: pd.DataFrame, encoder, captioner, summariser,
                  shard: Shard | None = None) -> pd.DataFrame:
    """The captions of the images this run captions, through the dataset's shared caption store
    under ``cache_root`` (cache/<dataset>/); ``shard``: this process's share of them."""
    finishing = Finishing.from_config(cfg, encoder, summariser)
    settings = caption_settings(captioner, finishing, images=image_identity(cfg))
    return caption_images(source, ids_to_caption(manifest, cfg), captioner, finishing, settings, caption_store(cache_root, settings),
                          Batches.from_config(cfg), classnames=dict(zip(manifest["image_id"], manifest["classname"])), shard=shard)


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
