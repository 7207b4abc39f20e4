import torch
import torch.nn.functional as F


def unit(*shape, seed=0):
    """Random L2-normalised rows, reproducible by seed."""
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


# ---------------------------------------------------------------------------------------------
# Image files shaped like a user's folder: every mode that must load, and the bad files that
# must be reported


def png_bytes(im) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(im) -> bytes:
    import io

    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def bomb_png() -> bytes:
    """A valid PNG whose header claims 20,000 x 20,000 pixels: over Pillow's decompression-bomb
    limit, which Pillow checks when it opens the file (nothing that large is ever allocated)."""
    import struct
    import zlib

    from PIL import Image

    raw = bytearray(png_bytes(Image.new("L", (1, 1))))
    raw[16:24] = struct.pack(">II", 20000, 20000)
    raw[29:33] = struct.pack(">I", zlib.crc32(bytes(raw[12:29])))
    return bytes(raw)


def good_images() -> dict[str, bytes]:
    """name -> encoded bytes, one per mode the loader must turn into RGB."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8))
    rgba = Image.fromarray(rng.integers(0, 255, (20, 24, 4), dtype=np.uint8), mode="RGBA")
    pal = rgb.convert("P", palette=Image.ADAPTIVE, colors=8)
    pal.info["transparency"] = 0
    grey16 = Image.fromarray(np.full((10, 10), 32768, dtype=np.uint16))
    return {"rgb.jpg": jpeg_bytes(rgb), "cmyk.jpg": jpeg_bytes(rgb.convert("CMYK")), "rgba.png": png_bytes(rgba),
            "palette.png": png_bytes(pal), "grey16.png": png_bytes(grey16), "grey.png": png_bytes(rgb.convert("L")),
            "bilevel.png": png_bytes(rgb.convert("1"))}


# The bad files, each with a word its reported reason must contain.
BAD_REASONS = {"truncated.jpg": "truncated", "empty.jpg": "empty", "notes.png": "not an image", "bomb.png": "decompression-bomb"}


def bad_images() -> dict[str, bytes]:
    from PIL import Image

    whole = jpeg_bytes(Image.new("RGB", (64, 64), (200, 30, 30)).resize((64, 64)))
    return {"truncated.jpg": whole[: len(whole) // 2], "empty.jpg": b"", "notes.png": b"this is a text file, not a PNG\n",
            "bomb.png": bomb_png()}


def write_corpus(folder) -> tuple[list[str], list[str]]:
    """Good and bad files (plus a broken link) in ``folder``; returns (good names, bad names)."""
    import os
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    good, bad = good_images(), bad_images()
    for name, data in {**good, **bad}.items():
        (folder / name).write_bytes(data)
    os.symlink(folder / "does-not-exist.jpg", folder / "broken-link.jpg")
    return sorted(good), sorted(bad) + ["broken-link.jpg"]


# ---------------------------------------------------------------------------------------------
# A small run for the adapters and methods: Inputs and the parameters of its loops


def toy_run(n_classes=3, dim=12, seed=0):
    """Inputs and parameters of a small run: 6 train, 4 val and 4 test images per class whose
    features sit near their class prompt, captions near theirs too."""
    import pandas as pd

    from siglip_adapter import data
    from siglip_adapter.inputs import Inputs
    from siglip_adapter.store import Features

    g = torch.Generator().manual_seed(seed)
    class_text = F.normalize(torch.randn(n_classes, dim, generator=g), dim=-1)
    rows = [(f"{s}{c}_{n}", c, f"c{c}", s, "stratified") for c in range(n_classes) for s, m in (("train", 6), ("val", 4), ("test", 4))
            for n in range(m)]
    manifest = pd.DataFrame(rows, columns=data.MANIFEST_COLUMNS)
    labels = torch.tensor(manifest["label"].to_numpy())
    noisy = lambda w: F.normalize(class_text[labels] + w * torch.randn(len(labels), dim, generator=g), dim=-1)  # noqa: E731
    ids = manifest["image_id"].tolist()
    inp = Inputs(manifest, Features(ids, noisy(2.0), {}, {}), Features(ids, noisy(0.8), {}, {}), class_text, 1.0, 0.0)
    cfg = {"run": {"dataset": "toy"}, "protocol": "corrected", "backbone": "toy", "validation": {"per_class": 0}, "shots": [1, 2], "n_seeds": 3, "seed_base": 1,
           "methods": {"zero_shot": {"logit_form": "cosine"}, "adapter": {"alpha": [0.0, 0.5, 1.0], "theta": [1.0, 5.0], "beta": [0.0, 1.0, 4.0]}}}
    return inp, cfg, labels


# ---------------------------------------------------------------------------------------------
# A real `kill -9` in the middle of a run


def kill_midway(script, arg, done) -> int:
    """Run the Python file ``script`` with ``arg`` in a subprocess, SIGKILL it as soon as ``done()``
    is true (finished parts on disk), and return its process id (its half-written files carry it)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, str(script), str(arg)], env={**os.environ, "TQDM_DISABLE": "1"})
    deadline = time.time() + 120
    while not done() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return proc.pid


def counted_method_run(store=None, fits=None, n_seeds=5, pause=0.1):
    """``methods.loop.method_rows`` on a toy run with a real trained method (CLIP-Adapter, which has a
    learning curve), a closed-form one (Tip-Adapter) and ``slow_count``, a zero-shot method that
    takes ``pause`` seconds and appends its (K, seed) to the file ``fits`` each time it is fitted.
    ``store``: where finished cells are kept. Returns (rows, learning curves)."""
    import time
    from pathlib import Path

    from siglip_adapter.methods import loop, registry

    def fit(task, params):
        time.sleep(pause)
        if fits is not None:
            with open(fits, "a") as f:
                f.write(f"{len(task.shots.labels) // task.n_classes} {task.seed}\n")
        state = loop.zero_shot_state(task)
        val = loop.Fitted("slow_count", state).accuracy(task.val)
        return loop.Fitted("slow_count", state, {}, val, [{"lr": 0.0, "epoch": 0, "loss": 1.0, "val_accuracy": val}])

    registry.register("slow_count", lambda state, chosen, images: loop.zero_shot_of(state, images))(fit)
    inp, cfg, _ = toy_run(n_classes=4, dim=16)
    cfg["n_seeds"] = n_seeds
    cfg["methods"] = {**cfg["methods"], "run": ["tip_adapter", "slow_count", "clip_adapter_val"], "tip_adapter": {"search_scale": [7.0, 300.0], "search_step": [2, 2]},
                      "clip_adapter_val": {"ratio": [0.2, 0.6], "reduction": 4, "logit_scale": 100.0, "lr": [0.01], "epochs": 4, "patience": 2,
                                       "weight_decay": 0.01}}
    result = loop.run(inp, cfg, store=Path(store) if store is not None else None,
                      curves_at=(1, cfg["seed_base"]))  # the first cell: the one a killed run has finished
    return result.rows, result.table("curves")
