"""Image transforms that hold no model, so DataLoader workers can run them: ``Squash`` (to a square,
uint8), ``Normalise`` (a whole batch at once, in the main process), ``SquashNormalise`` (both, on one
image), ``ProcessorTransform`` (a transformers image processor on one image) and
``processor_settings`` (everything a processor's configuration holds, for the feature key)."""

from __future__ import annotations

import json
from typing import Sequence

import numpy as np
import torch
from PIL import Image


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


def processor_settings(image_processor) -> dict:
    """Everything an image processor's configuration holds (its class, size, crop, filter,
    rescaling, mean, std, patching), as JSON: part of the feature key, so that two checkpoints or
    revisions whose processors differ in any setting never share features."""
    d = image_processor.to_dict() if hasattr(image_processor, "to_dict") else dict(vars(image_processor))
    d = {k: v for k, v in d.items() if not k.startswith("_") and k != "processor_class"}
    return json.loads(json.dumps({"class": type(image_processor).__name__, **d}, sort_keys=True, default=str))
