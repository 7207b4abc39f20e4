"""SigLIP and SigLIP 2 (fixed resolution or NaFlex) through transformers: the hub profile's encoder.

Images go through the checkpoint's own image processor (its size, resize filter, mean and std; a
parameter overrides one only when set); a SigLIP 2 NaFlex checkpoint's processor also returns the
patch mask and spatial shapes, which reach the model with the pixels. Text is tokenised with
``padding="max_length"`` to the model's own text length (64) and passed without an attention
mask, as SigLIP was trained (its text features change with a mask; shorter padding makes its
zero-shot collapse); SigLIP 2 was trained on lower-cased text (``lowercase``). Zero-shot logits
use the model's learned scale and bias."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .base import Encoder
from .device import autocast_for, numerics, resolve_device, resolve_precision
from .transforms import RESAMPLE, ProcessorTransform, processor_settings


def _pooled(out) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features; older versions a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def model_text_length(model, default: int = 64) -> int:
    """The text tower's own length (its position table): SigLIP and SigLIP 2 64, CLIP 77."""
    text = getattr(model.config, "text_config", None)
    return int(getattr(text, "max_position_embeddings", None) or default)


class SiglipEncoder(Encoder):
    """SigLIP or SigLIP 2 (fixed resolution or NaFlex) dual encoder from transformers."""

    name = "siglip"
    text_padding = "max_length"  # the tokenizer pads every text to max_text_tokens
    text_attention_mask = False  # the text tower sees input_ids only

    def __init__(self, model, image_processor, tokenizer, model_id: str, revision: str = "", device: str = "auto",
                 precision: str = "auto", max_text_tokens: int | str = "auto", image_mean=None, image_std=None, resample: str | None = None,
                 lowercase: bool = False):
        self.device = resolve_device(device)
        self.precision = resolve_precision(self.device, precision)
        self.model = model.eval().to(self.device)
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.model_id, self.revision = model_id, revision
        # "auto": the model's own text length, which the caption token limit then follows.
        self.max_text_tokens = model_text_length(model) if max_text_tokens == "auto" else int(max_text_tokens)
        self.lowercase = bool(lowercase)
        # None keeps the processor's own normalisation (SigLIP: mean = std = 0.5; CLIP: its own).
        self.image_mean, self.image_std = image_mean, image_std
        kw = {"image_mean": list(image_mean), "image_std": list(image_std)} if image_mean is not None else {}
        # None keeps the processor's own filter (SigLIP: bicubic); a name overrides it.
        self.resample = resample
        if resample is not None:
            kw["resample"] = RESAMPLE[resample]
        self.preprocess = ProcessorTransform(image_processor, **kw)

    @classmethod
    def from_pretrained(cls, model_id: str, revision: str = "", **kw) -> "SiglipEncoder":
        from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

        rev = revision or None
        return cls(AutoModel.from_pretrained(model_id, revision=rev), AutoImageProcessor.from_pretrained(model_id, revision=rev),
                   AutoTokenizer.from_pretrained(model_id, revision=rev), model_id=model_id, revision=revision, **kw)

    @classmethod
    def from_config(cls, e: dict) -> "SiglipEncoder":
        """From a hub id or a local folder (``paths.model_path``: Kaggle's attached models too)."""
        from ..paths import model_path

        enc = cls.from_pretrained(model_path(e["model_id"]), e["revision"], image_mean=e.get("mean"), image_std=e.get("std"),
                                  resample=e.get("resample"), lowercase=e.get("lowercase", False), device=e["device"],
                                  precision=e["precision"], max_text_tokens=e["max_text_tokens"])
        enc.model_id = e["model_id"]  # the id as configured (not a machine's absolute path) keys the cache
        return enc

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())

    @property
    def logit_bias(self) -> float:
        return float(self.model.logit_bias.detach())

    def text_fields(self) -> dict:
        """What decides a text's features (not the image preprocessing)."""
        return {"encoder": self.name, "model_id": self.model_id, "revision": self.revision, "text_padding": self.text_padding,
                "text_attention_mask": self.text_attention_mask, "max_text_tokens": self.max_text_tokens, "lowercase": self.lowercase,
                "tokenizer": type(self.tokenizer).__name__, "padding_side": getattr(self.tokenizer, "padding_side", None),
                "precision": self.precision, "numerics": numerics(self.device)}

    def cache_fields(self) -> dict:
        ip = self.image_processor
        return {**self.text_fields(), "image_size": getattr(ip, "size", None),
                "resample": self.resample or str(getattr(ip, "resample", None)),
                "mean": list(self.image_mean or ip.image_mean), "std": list(self.image_std or ip.image_std),
                "image_processor": processor_settings(ip)}

    def _model_inputs(self, pixels) -> dict:
        """A batch from ``preprocess`` (pixels, or {input name: tensor} for NaFlex) on the device."""
        if isinstance(pixels, dict):
            return {k: v.to(self.device) for k, v in pixels.items()}
        return {"pixel_values": pixels.to(self.device)}

    @torch.inference_mode()
    def encode_pixels(self, pixels) -> torch.Tensor:
        with autocast_for(self.device, self.precision):
            feats = _pooled(self.model.get_image_features(**self._model_inputs(pixels)))
        return F.normalize(feats.float(), dim=-1).cpu()

    def _texts(self, texts: Sequence[str]) -> list[str]:
        return [t.lower() for t in texts] if self.lowercase else list(texts)

    def count_tokens(self, text: str) -> int:
        return super().count_tokens(text.lower() if self.lowercase else text)

    def text_inputs(self, texts: Sequence[str]) -> dict:
        tok = self.tokenizer(self._texts(texts), padding="max_length", max_length=self.max_text_tokens, truncation=True, return_tensors="pt")
        # input_ids only: SigLIP's text tower was trained on max-length padding with no attention
        # mask, and a mask (which some tokenizers return) changes its features.
        return {"input_ids": tok["input_ids"].to(self.device)}

    def text_features(self, inputs: dict) -> torch.Tensor:
        """Normalised float32 text features on the encoder's device, differentiable (CoOp trains
        through them; ``encode_texts`` is the same under inference mode)."""
        with autocast_for(self.device, self.precision):
            feats = _pooled(self.model.get_text_features(**inputs))
        return F.normalize(feats.float(), dim=-1)

    def input_embeddings(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    def text_tower_parameters(self) -> list[torch.nn.Parameter]:
        """The whole dual model's (its image tower's are not read by a text forward, and freezing
        them changes nothing)."""
        return list(self.model.parameters())


ENCODER = SiglipEncoder
