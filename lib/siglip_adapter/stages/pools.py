"""The dataset's two feature pools, which carry the expensive work across runs, protocols and
splits: the image tower's output per image id (``tower_rows``: an image is run through the model
once per preprocessing, and the offline captioner reads its labels from the same rows) and text
features per text (``text_rows``)."""

from __future__ import annotations

import hashlib
from typing import Callable, Sequence

import torch

from ..encoders.base import encode_image_ids, encode_text_list
from ..shard import Shard
from ..store import FeatureStore, code_version


def image_identity(cfg: dict) -> dict:
    """What decides an image's pixels besides its id: the dataset, its source kind, inversion."""
    d = cfg["dataset"]
    return {"dataset": d["name"], "source": d["source"], "invert": bool(d.get("invert", False))}


def tower_rows(cfg: dict, store: FeatureStore, source, encoder, shard: Shard | None = None,
               views: dict | None = None) -> Callable[[Sequence[str]], torch.Tensor]:
    """ids -> the encoder's image-tower outputs (``tower_pixels``), from the store's pool for this
    encoder setting and these images; only ids never seen are decoded and run (``shard``: shared
    by the processes that all call it alike, see ``FeatureStore.rows``). ``views``: the ids are
    view ids (``views.view_ids``) under these view settings, a pool of their own."""
    fields = {"kind": "image_tower", **encoder.tower_fields(), **image_identity(cfg), "code": code_version("encoders", "sources.images")}
    if views is not None:
        from ..views import ViewSource

        source = ViewSource(source, views)
        fields = {**fields, "views": {k: v for k, v in views.items() if k != "n"}, "code": code_version("encoders", "sources.images", "views")}
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
