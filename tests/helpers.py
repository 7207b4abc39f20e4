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
