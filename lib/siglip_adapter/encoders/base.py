"""The interface every encoder family implements (``Encoder``), and what the stages do with any
encoder: a list of image ids embedded through DataLoader workers (``encode_image_ids``), a list of
texts in batches (``encode_text_list``).

An encoder's differences from another are declared here as attributes with defaults (its logit
scale and bias, the label prompts its image path mixes, whether its image tower names labels), so
no caller tests for a method's presence."""

from __future__ import annotations

import abc
from typing import Any, Callable, ClassVar, Iterable, Sequence

import torch
from PIL import Image
from tqdm.auto import tqdm


class TokenLimit:
    """A text limit in a tokenizer's tokens (the encoder's: the captions are cut to what its text
    tower reads): ``count_tokens`` and ``truncate`` to ``max_text_tokens``; ``model_id`` and
    ``revision`` name the tokenizer's model (part of the caption settings)."""

    tokenizer: Any
    max_text_tokens: int
    model_id: str
    revision: str = ""  # the checkpoint's pinned revision, where there is one

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=True)["input_ids"])

    def truncate(self, text: str, max_tokens: int | None = None) -> str:
        """The longest prefix of ``text`` that tokenises to at most ``max_tokens`` (with specials)."""
        max_tokens = max_tokens or self.max_text_tokens
        if self.count_tokens(text) <= max_tokens:
            return text
        n_special = self.count_tokens("")
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=getattr(self.tokenizer, "is_fast", False))
        keep = max(0, max_tokens - n_special)
        if "offset_mapping" in enc and keep > 0:
            cut = text[: enc["offset_mapping"][keep - 1][1]]
        else:
            cut = self.tokenizer.decode(enc["input_ids"][:keep], skip_special_tokens=True)
        while cut and self.count_tokens(cut) > max_tokens:  # decode can re-merge pieces
            cut = cut[: cut.rstrip().rfind(" ")] if " " in cut.strip() else cut[:-1]
        return cut.strip()


class Encoder(TokenLimit, abc.ABC):
    """A dual encoder: images and texts to L2-normalised float32 features on the CPU, in one space.

    Image path: ``preprocess`` (picklable, image -> (3, H, W) tensor or {input name: tensor}; run
    by DataLoader workers) then ``encode_pixels`` on a batch. It splits at the image tower:
    ``tower_pixels`` (the expensive part, which the stores keep per image, keyed by
    ``tower_fields``) then ``from_tower``. Text path: ``text_inputs`` -> ``text_features`` (with
    gradients: CoOp trains through it, starting from the token table ``input_embeddings``, with
    ``text_tower_parameters`` frozen); ``encode_texts`` is the same under inference mode. The
    tokenizer's ``count_tokens`` / ``truncate`` (``TokenLimit``) enforce the caption token limit
    (``max_text_tokens``). ``cache_fields`` is everything that changes the features (the key of
    every feature entry), ``text_fields`` what changes a text's.

    A family is one module of this package whose ``ENCODER`` subclass builds itself from the
    ``encoder`` params (``from_config``)."""

    name: ClassVar[str]  # encoder.name in the params: the family's module name, "_" written "-"
    device: torch.device
    precision: str  # resolved: fp32, bf16 or fp16 (``device.resolve_precision``)
    preprocess: Callable[[Image.Image], Any]

    logit_scale: float = 1.0  # zero-shot logits: scale * cosine + bias (SigLIP's learned pair)
    logit_bias: float = 0.0
    # Texts whose features the image path mixes (ConSE: the ImageNet label names). The stages embed
    # them through the text pool and hand them back with ``use_label_embeddings``.
    label_prompts: Sequence[str] = ()
    # Whether ``labels_from_tower`` names each image's top labels (the offline captioner reads them).
    has_label_tower: bool = False

    @classmethod
    @abc.abstractmethod
    def from_config(cls, e: dict) -> "Encoder":
        """The encoder the run's ``cfg["encoder"]`` section describes."""

    # -- keys ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def cache_fields(self) -> dict:
        """Everything that changes an image's or a text's features."""

    @abc.abstractmethod
    def text_fields(self) -> dict:
        """Everything that changes a text's features (not the image side)."""

    def tower_fields(self) -> dict:
        """Everything that changes the image tower's output (``tower_pixels``)."""
        return self.cache_fields()

    # -- images --------------------------------------------------------------------------------
    @abc.abstractmethod
    def encode_pixels(self, pixels) -> torch.Tensor:
        """A batch from ``preprocess`` (``collate``) -> (B, D) features."""

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.encode_pixels(collate([self.preprocess(im) for im in images]))

    def tower_pixels(self, pixels) -> torch.Tensor:
        """A batch -> the image tower's outputs (here the features themselves)."""
        return self.encode_pixels(pixels)

    def from_tower(self, outputs: torch.Tensor) -> torch.Tensor:
        """The tower's outputs -> features (here the identity)."""
        return outputs

    # -- texts ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def text_inputs(self, texts: Sequence[str]) -> dict:
        """Tokenised texts on the device, as the text tower takes them."""

    @abc.abstractmethod
    def text_features(self, inputs: dict) -> torch.Tensor:
        """(M, D) normalised float32 features on the device, differentiable."""

    @abc.abstractmethod
    def input_embeddings(self) -> torch.nn.Module:
        """The text tower's token-embedding table."""

    @abc.abstractmethod
    def text_tower_parameters(self) -> list[torch.nn.Parameter]:
        """The parameters a text forward reads (frozen while CoOp trains its context)."""

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.text_features(self.text_inputs(texts)).cpu()

    # -- what only some families have (declared above) -----------------------------------------
    def use_label_embeddings(self, values: torch.Tensor) -> None:
        """The features of ``label_prompts``, computed elsewhere by this encoder's text tower."""
        raise TypeError(f"encoder '{self.name}' mixes no label embeddings (its label_prompts are empty)")

    def labels_from_tower(self, outputs: torch.Tensor, n: int) -> list[list[tuple[str, float]]]:
        """Each image's ``n`` most probable labels with their probabilities, from tower outputs."""
        raise TypeError(f"encoder '{self.name}' has no label tower; the offline captioner needs one (offline-conse)")

    def top_labels(self, images: Sequence[Image.Image], n: int) -> list[list[tuple[str, float]]]:
        return self.labels_from_tower(self.tower_pixels(collate([self.preprocess(im) for im in images])), n)


def collate(items: Sequence) -> torch.Tensor | dict:
    """Per-image outputs of a ``preprocess`` as one batch (``data.stack``)."""
    from ..data import stack

    batch = stack(items)
    if batch is None:
        raise ValueError("preprocess gave images of different shapes or inputs; they cannot form one batch")
    return batch


def batched(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def encode_image_ids(encoder: Encoder, source, ids: Sequence[str], batch_size: int, num_workers: int | str = "auto", desc: str = "images",
                     tower: bool = False) -> torch.Tensor:
    """(len(ids), D) features, or with ``tower`` the image tower's outputs (``tower_pixels``);
    DataLoader workers decode and preprocess, the model sees batches (a batch the workers could not
    stack arrives as a list and is collated here)."""
    from ..data import load_images

    forward = encoder.tower_pixels if tower else encoder.encode_pixels
    out = [forward(collate(pixels) if isinstance(pixels, list) else pixels)
           for _, pixels in load_images(source, ids, batch_size, num_workers, encoder.preprocess, desc)]
    return torch.cat(out) if out else torch.empty(0)


def encode_text_list(encoder: Encoder, texts: Sequence[str], batch_size: int = 64, desc: str = "texts") -> torch.Tensor:
    out = [encoder.encode_texts(chunk) for chunk in tqdm(list(batched(texts, batch_size)), desc=desc, unit="batch")]
    return torch.cat(out) if out else torch.empty(0)
