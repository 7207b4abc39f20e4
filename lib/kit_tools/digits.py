"""The ``digits`` offline dataset: scikit-learn's bundled handwritten digits as a PNG class-folder
tree, read back through the ``folder`` source like any user's images.

``python -m kit_tools.digits OUT`` writes ``OUT/<digit>/<index>.png`` (1,797 8x8
greyscale images, 10 classes) from ``sklearn.datasets.load_digits``, which ships inside
scikit-learn, so no download is needed. Pixel values 0..16 are scaled to 0..255 as stored (ink
bright on dark); ``dataset.invert`` in ``params/digits.yaml`` decides what the encoder sees.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image


def write_digits(out: Path) -> int:
    from sklearn.datasets import load_digits

    digits = load_digits()
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for n, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = tmp / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(np.rint(image * 255.0 / 16.0), 0, 255).astype(np.uint8)
        # No timestamps or text chunks: the same input writes the same bytes on every machine.
        Image.fromarray(pixels, mode="L").save(folder / f"{n:04d}.png", optimize=False)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return len(digits.images)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path, help="folder to write (replaced)")
    args = ap.parse_args(argv)
    print(f"digits: wrote {write_digits(args.out)} images to {args.out}")


if __name__ == "__main__":
    main()
