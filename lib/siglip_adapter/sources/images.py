"""Opening one image file the way every source does: any mode to RGB, or a clear reason why not.

A user's folder always has some bad files. ``open_rgb`` either returns an RGB image or raises
``ImageError`` whose message is the reason a ``skipped`` table records: empty, not an image,
truncated, unreadable, or over Pillow's decompression-bomb limit (the limit is kept; its warning
zone between 1x and 2x the limit is treated as an error too, so no half-checked giant is decoded).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


class ImageError(ValueError):
    """An image that cannot be used; ``str(e)`` is the reason, e.g. 'truncated file'."""


def has_image_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def stat_problem(path: str | Path) -> str | None:
    """Why a listed file cannot be an image, from its directory entry alone (no read): missing,
    unreadable or empty. None when it may be one. Listing uses this; decoding finds the rest."""
    try:
        size = os.stat(path).st_size
    except OSError as e:
        return f"unreadable: {type(e).__name__}: {e.strerror or e}"
    return "empty file (0 bytes)" if size == 0 else None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB: 16-bit and float greys are rescaled (not clipped to white),
    transparency is composited on white, CMYK / palette / 1-bit / grey are converted."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or (im.mode == "I" and a.max(initial=0) > 255) else 255.0
        if im.mode == "F":
            lo, hi = float(a.min(initial=0)), float(a.max(initial=1))
            a = (a - lo) / max(hi - lo, 1e-12) * 255.0
        else:
            a = a / hi * 255.0
        im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), mode="L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(background, im)
    return im.convert("RGB")


def open_rgb(file: str | Path | bytes, invert: bool = False) -> Image.Image:
    """Decode a whole image (path or encoded bytes) to RGB, EXIF orientation applied.

    Raises ``ImageError`` with the reason when it cannot be used.
    """
    where = file if not isinstance(file, (bytes, bytearray)) else None
    try:
        if where is not None and os.path.getsize(where) == 0:
            raise ImageError("empty file (0 bytes)")
        if isinstance(file, (bytes, bytearray)) and len(file) == 0:
            raise ImageError("empty image bytes")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            handle = io.BytesIO(file) if where is None else open(where, "rb")
            with handle, Image.open(handle) as im:
                im.load()  # full decode: a truncated file fails here, not later in a batch
                im = ImageOps.exif_transpose(im)
                rgb = to_rgb(im)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"over Pillow's decompression-bomb limit ({Image.MAX_IMAGE_PIXELS} pixels): {e}") from None
    except UnidentifiedImageError:
        raise ImageError("not an image (Pillow cannot identify it)") from None
    except OSError as e:
        text = str(e)
        if "truncated" in text.lower() or "premature end" in text.lower():
            raise ImageError(f"truncated file: {text}") from None
        raise ImageError(f"unreadable: {type(e).__name__}: {text}") from None
    except (ValueError, SyntaxError, MemoryError) as e:  # some decoders signal corrupt data this way
        raise ImageError(f"corrupt image data: {type(e).__name__}: {e}") from None
    if invert:
        rgb = ImageOps.invert(rgb)
    return rgb
