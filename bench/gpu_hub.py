"""The hub profile on a CUDA GPU: what CI (CPU only) cannot show.

1. The six notebooks' code on the tiny local models (``kit_tools.tiny_models``), once per
   precision a user's GPU can resolve to (``auto``: bf16 from compute capability 8.0, else fp16;
   then fp16 and fp32 explicitly), from captions to Table I. Printed per run: the precision the
   encoder resolved, the captioner's and summariser's dtypes, the precision written into the
   feature cache key, and the run's wall time. Image features of each precision are compared with
   fp32's on the same images (minimum cosine).
2. The encoder at SigLIP-base size (the architecture of ``google/siglip-base-patch16-224`` with
   random weights: nothing is downloaded): images per second through ``encode_pixels`` at each
   precision and batch size, and the agreement of fp16 / bf16 features with fp32's.

    python bench/gpu_hub.py [--out results/bench/gpu_hub.txt]

The notebooks' code cells run in one namespace per notebook (papermill's parameter injection,
without a Jupyter kernel), so this runs where only torch and transformers are installed. Its last
line reads ``gpu_hub bf16_speedup ratio: <number>`` (bf16 over fp32 images per second at the
largest batch; ``fp16`` where the GPU has no native bf16).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "lib"))

NOTEBOOKS = ["01_captions", "02_embed", "03_zero_shot", "04_adapter", "05_trainable", "06_analysis"]


def run_notebook(path: Path, params: dict) -> dict:
    """Execute a notebook's code cells in order in one namespace; the first cell (the parameters
    cell) is followed by ``params``, as papermill injects them. Returns the namespace."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    ns: dict = {"__name__": "__main__"}
    for i, cell in enumerate(cells):
        src = "".join(cell["source"])
        if not has_ipython():  # 06_analysis shows Table I as IPython Markdown: plain text here
            src = src.replace("from IPython.display import Markdown", "Markdown = str")
        exec(compile(src, f"{path.name}[{i}]", "exec"), ns)
        if i == 0:
            ns.update(params)
    return ns


def has_ipython() -> bool:
    try:
        import IPython.display  # noqa: F401
    except ImportError:
        return False
    return True


def hub_runs(proj: Path, precisions: list[str], log) -> dict:
    import torch

    base = (proj / "params" / "overlays" / "tiny_hub.yaml").read_text()
    out = {}
    for precision in precisions:
        overlay = f"gpu_{precision}"
        text = base.replace("  device: cpu\n", f"  device: auto\n  precision: {precision}\n")
        assert f"precision: {precision}" in text, "tiny_hub.yaml no longer sets encoder.device: cpu"
        (proj / "params" / "overlays" / f"{overlay}.yaml").write_text(text)
        t0, spaces = time.perf_counter(), {}
        for nb in NOTEBOOKS:
            params = {"overlay": overlay} | ({"datasets": "shapes"} if nb == "06_analysis" else {"dataset": "shapes"})
            spaces[nb] = run_notebook(proj / "notebooks" / f"{nb}.ipynb", params)
        wall = time.perf_counter() - t0
        cap, enc = spaces["01_captions"], spaces["02_embed"]["encoder"]
        index = json.loads((proj / "build" / overlay / "cache" / "shapes" / "tiny-siglip" / "corrected" / "features.json").read_text())
        table = spaces["06_analysis"]["table"]
        images, _, _ = spaces["02_embed"]["inp"].split("test")
        out[precision] = images
        log(f"hub run precision={precision}: encoder {enc.precision} on {enc.device}, "
            f"captioner {cap['captioner'].model.dtype}, summariser {cap['summariser'].model.dtype}, "
            f"cache key precision {index['image']['fields']['precision']}, {len(cap['caps'])} captions, "
            f"Table I rows {len(table)}, wall {wall:.1f} s")
        assert torch.isfinite(images).all() and len(table) > 0
    if "fp32" in out:
        for p, feats in out.items():
            if p != "fp32":
                cos = (feats * out["fp32"]).sum(-1).min().item()
                log(f"tiny SigLIP test-image features, {p} vs fp32: min cosine {cos:.5f}")
    return out


def throughput(log, batch_sizes=(32, 128, 512), repeats: int = 10) -> float:
    """Images per second of ``encode_pixels`` at SigLIP-base size; returns the low-precision
    speed-up over fp32 at the largest batch."""
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    from siglip_adapter.encoders.device import native_bf16, resolve_device
    from siglip_adapter.encoders.siglip import SiglipEncoder

    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig())  # the defaults are siglip-base-patch16-224's sizes
    low = "bf16" if native_bf16(resolve_device("auto")) else "fp16"
    encoders = {p: SiglipEncoder(model, SiglipImageProcessor(), None, model_id="random-base", device="auto", precision=p)
                for p in ("fp32", "fp16", low)}
    pixels = torch.randn(max(batch_sizes), 3, 224, 224)
    ref = encoders["fp32"].encode_pixels(pixels[:64])
    for p in ("fp16", low):
        cos = (encoders[p].encode_pixels(pixels[:64]) * ref).sum(-1).min().item()
        log(f"SigLIP-base random weights, {p} vs fp32 image features: min cosine {cos:.5f}")
    speed = {}
    for bs in batch_sizes:
        batch = pixels[:bs].pin_memory()
        for p, enc in encoders.items():
            enc.encode_pixels(batch)  # warm-up
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(repeats):
                enc.encode_pixels(batch)
            torch.cuda.synchronize()
            speed[(p, bs)] = bs * repeats / (time.perf_counter() - t0)
        log(f"encode_pixels batch {bs}: " + ", ".join(f"{p} {speed[(p, bs)]:.0f} img/s" for p in encoders))
    log(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    return speed[(low, max(batch_sizes))] / speed[("fp32", max(batch_sizes))]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "bench" / "gpu_hub.txt")
    ap.add_argument("--precisions", nargs="+", default=["auto", "fp16", "fp32"])
    args = ap.parse_args(argv)

    import torch
    import transformers

    if not torch.cuda.is_available():
        sys.exit("gpu_hub: no CUDA GPU here; this benchmark is for GPU machines (CI proves the CPU path)")
    lines: list[str] = []

    def log(line: str) -> None:
        print(line, flush=True)
        lines.append(line)

    dev = torch.cuda.get_device_properties(0)
    log(f"machine: {dev.name}, compute capability {dev.major}.{dev.minor}, {dev.total_memory / 2**30:.0f} GiB; "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; torch {torch.__version__}, "
        f"transformers {transformers.__version__}")
    os.environ.setdefault("MPLBACKEND", "Agg")
    from kit_tools.tiny_models import hub_project

    with tempfile.TemporaryDirectory() as tmp:
        proj = hub_project(Path(tmp) / "project", ROOT)
        os.environ.update({"SIGLIP_ADAPTER_ROOT": str(proj), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"})
        hub_runs(proj, args.precisions, log)
    ratio = throughput(log)
    log(f"gpu_hub bf16_speedup ratio: {ratio:.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
