"""Where a model runs and at what precision: the device (``auto``: the GPU when there is one), the
precision (``auto``: bf16 on GPUs with native bf16, fp16 on older ones such as Kaggle's T4, fp32 on
the CPU), autocast at it, and ``numerics``, what besides weights and inputs decides a forward's
last bits (part of every feature key). The captioner and the summariser use them too."""

from __future__ import annotations

import contextlib

import torch

from ..schema import PRECISIONS


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
