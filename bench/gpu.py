"""The hub profile's two heavy models on a CUDA GPU, against what the card itself can do.

    python bench/gpu.py [--precision auto] [--batch-sizes 64 256 512] [--caption-batch 16]

1. The card's matmul rate, measured: square matmuls in the precision the kit resolves
   (``encoder.precision: auto``: bf16 on GPUs with native bf16, fp16 on Kaggle's T4s).
2. SigLIP-B/16 image throughput through the kit's ``SiglipEncoder.encode_pixels`` with random
   weights from ``SiglipConfig()`` (siglip-base-patch16-224's sizes; weights do not change the
   speed), at each batch size; its floating-point work per image is counted by
   ``torch.utils.flop_counter`` on the tower itself, so the achieved rate is images/s x FLOPs per image.
3. SmolVLM-256M-sized captioning (Idefics3 with SmolVLM-256M's sizes: a SigLIP-B/16 vision tower at
   512 px, a 30-layer 576-wide Llama text model, 64 image tokens per image) through the kit's
   ``VLMCaptioner.describe`` at the hub profile's caption batch size, every caption forced to
   ``captions.vlm_max_new_tokens`` tokens: captions/s and generated tokens/s.

The last line reads ``gpu ratio: <number>``: SigLIP's achieved FLOP rate at the best batch size
over the measured matmul rate (the share of the card's dense-math rate the encoder reaches).
Without CUDA it prints why it skips and exits 0 (nothing is written). ``--smoke`` runs the same
code with tiny sizes on whatever device there is, to check the code paths (CI); its figures are
not measurements and go to ``--out`` only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Report  # noqa: E402

# SmolVLM-256M-Instruct's sizes (its config.json): vision SigLIP-B/16 at 512 px, text SmolLM2-135M.
SMOLVLM_256M = {"vision": dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12, image_size=512,
                               patch_size=16),
                "text": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                             vocab_size=49280),
                "scale_factor": 4, "image_size": 512}
TINY_VLM = {"vision": dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
            "text": dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
                         vocab_size=400),
            "scale_factor": 2, "image_size": 32}


def timed(fn, repeats: int, sync) -> float:
    """Seconds per call of ``fn`` after one warm-up call."""
    fn()
    sync()
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync()
    return (time.perf_counter() - t) / repeats


def matmul_rate(device, dtype, n: int, repeats: int, sync) -> float:
    """FLOP/s of an n x n x n matmul (2 n^3 per product)."""
    import torch

    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n**3 / timed(lambda: a @ b, repeats, sync)


def siglip_encoder(precision: str, device: str, tiny: bool):
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    from siglip_adapter.encoders.siglip import SiglipEncoder

    torch.manual_seed(0)
    cfg = SiglipConfig() if not tiny else SiglipConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8))
    size = cfg.vision_config.image_size
    processor = SiglipImageProcessor(size={"height": size, "width": size})
    return SiglipEncoder(SiglipModel(cfg), processor, None, model_id="random-siglip", device=device, precision=precision), size


def image_flops(encoder, size: int) -> int:
    """Floating-point operations of the image tower on one image (the kit's own call)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        encoder.encode_pixels(torch.randn(1, 3, size, size))
    return counter.get_total_flops()


def captioner(precision: str, device: str, sizes: dict, max_new_tokens: int):
    """The kit's ``VLMCaptioner`` over an Idefics3 model of ``sizes`` with random weights, the
    processor of the tiny local SmolVLM (its tokenizer and chat template) resized to the image
    size, and end-of-sequence turned off so every caption is ``max_new_tokens`` long."""
    import torch
    from transformers import AutoProcessor, Idefics3Config, Idefics3ForConditionalGeneration, Idefics3ImageProcessor, Idefics3Processor

    from siglip_adapter.captions.captioners import VLMCaptioner
    from kit_tools.tiny_models import build_smolvlm

    with tempfile.TemporaryDirectory() as tmp:
        tiny = AutoProcessor.from_pretrained(build_smolvlm(Path(tmp) / "smolvlm"))
    side = sizes["image_size"]
    tokens = (side // sizes["vision"]["patch_size"]) ** 2 // sizes["scale_factor"] ** 2
    ip = Idefics3ImageProcessor(do_image_splitting=False, size={"longest_edge": side}, max_image_size={"longest_edge": side})
    proc = Idefics3Processor(ip, tiny.tokenizer, image_seq_len=tokens, chat_template=tiny.chat_template)
    tok = proc.tokenizer
    cfg = Idefics3Config(vision_config=sizes["vision"],
                         text_config=dict(model_type="llama", pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, **sizes["text"]),
                         scale_factor=sizes["scale_factor"], image_token_id=proc.image_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = Idefics3ForConditionalGeneration(cfg)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = None  # random weights: no early stop, every caption is max_new_tokens long
    model.generation_config.min_new_tokens = max_new_tokens
    cap = VLMCaptioner(model, proc, "random-smolvlm-256m", "Describe this image.", max_new_tokens=max_new_tokens, device=device,
                       precision=precision)
    return cap, tokens


def main(argv: list[str] | None = None) -> float | None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precision", default="auto", help="auto | bf16 | fp16 | fp32 (the kit's encoder.precision)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256, 512])
    ap.add_argument("--caption-batch", type=int, default=None, help="default: the hub profile's captions.batch_size")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="default: captions.vlm_max_new_tokens")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on any device: checks the code, measures nothing")
    ap.add_argument("--out", type=Path, default=None, help="where the report goes (default results/bench/gpu.txt)")
    args = ap.parse_args(argv)

    import torch
    from PIL import Image

    from siglip_adapter.config import read_yaml
    from siglip_adapter.encoders.device import resolve_device, resolve_precision, torch_dtype

    if not torch.cuda.is_available() and not args.smoke:
        print("gpu: skipped: no CUDA device here (torch.cuda.is_available() is False); run it on a GPU machine", flush=True)
        return None
    device = "cuda" if torch.cuda.is_available() else "cpu"
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    precision = resolve_precision(resolve_device(device), args.precision)
    defaults = read_yaml(ROOT / "params" / "defaults.yaml")  # the hub profile's caption batch and length
    caps = {**defaults["captions"], **(defaults["profiles"]["hub"].get("captions") or {})}
    caption_batch = args.caption_batch or (2 if args.smoke else caps["batch_size"])
    new_tokens = args.max_new_tokens or (4 if args.smoke else caps["vlm_max_new_tokens"])
    batch_sizes = [2, 4] if args.smoke else args.batch_sizes
    repeats = 1 if args.smoke else args.repeats

    report = Report("gpu")
    if args.smoke:
        report.add("SMOKE RUN: tiny sizes, figures are not measurements")
    report.add(f"device {device}, precision {precision} ({args.precision})")
    rate = matmul_rate(device, torch_dtype(precision), 256 if args.smoke else 8192, repeats, sync)
    report.add(f"matmul {'256' if args.smoke else '8192'}^3 in {precision}: {rate / 1e12:.1f} TFLOP/s (measured)")

    encoder, size = siglip_encoder(precision, device, args.smoke)
    flops = image_flops(encoder, size)
    report.add(f"SigLIP{'' if args.smoke else '-B/16'} image tower at {size} px: {flops / 1e9:.2f} GFLOP per image (counted)")
    best = 0.0
    for bs in batch_sizes:
        pixels = torch.randn(bs, 3, size, size)
        if device == "cuda":
            pixels = pixels.pin_memory()
        speed = bs / timed(lambda: encoder.encode_pixels(pixels), repeats, sync)
        share = speed * flops / rate
        best = max(best, share)
        report.add(f"encode_pixels batch {bs}: {speed:.0f} images/s = {speed * flops / 1e12:.1f} TFLOP/s, {share:.2f} of the matmul rate")
    if device == "cuda":
        report.add(f"peak GPU memory (encoder) {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    del encoder

    cap, tokens = captioner(precision, device, TINY_VLM if args.smoke else SMOLVLM_256M, new_tokens)
    side = (TINY_VLM if args.smoke else SMOLVLM_256M)["image_size"]
    images = [Image.new("RGB", (side, side), (20 * i % 255, 90, 160)) for i in range(caption_batch)]
    seconds = timed(lambda: cap.describe(images), max(1, repeats // 5), sync)
    report.add(f"SmolVLM{'' if args.smoke else '-256M'}-sized captioner, batch {caption_batch}, {tokens} image tokens per image, "
               f"{new_tokens} new tokens each: {caption_batch / seconds:.1f} captions/s, {caption_batch * new_tokens / seconds:.0f} tokens/s")
    if device == "cuda":
        report.add(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    if args.out is not None or args.smoke:
        report.lines.append(f"gpu ratio: {best:.4g}")
        print(report.lines[-1], flush=True)
        out = args.out or Path(tempfile.mkdtemp()) / "gpu.txt"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(report.lines) + "\n")
    else:
        report.finish(best)
    return best


if __name__ == "__main__":
    main()
