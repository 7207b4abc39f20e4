"""The parity feature sets: a small fixed set of a finished run's features on which the peers'
own code was run once (``scripts/peer_parity.py``) and the kit's methods are run in the tests
(``tests/test_parity.py``), so that CI compares the kit with its peers without their code.

A set is one ``.safetensors`` file per dataset: the class prompts, the validation and test
splits, and a pool of shot images with, per K and seed, the indices of that K-shot sample in the
pool (the shots the run drew: ``data.sample_shots``). Features are stored as float16 (a set stays
near 1 MB) and read back as float32; the peers and the kit read the same float32 values.

    python -m kit_tools.parity digits fashion_mnist       # after `make repro`: tests/fixtures/parity/<dataset>.safetensors
"""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
FOLDER = ROOT / "tests" / "fixtures" / "parity"
SHOTS = (1, 4, 16)
SEEDS = (1, 2, 3)
# CoOp's parity tower: a tiny random CLIP text tower (OpenAI CLIP's MLP is 4 x its width), built
# here by ``coop_encoder`` and loaded by both the kit's CoOp and the authors' (scripts/peer_parity.py).
COOP_TOWER = {"intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}


@dataclass
class ParitySet:
    """One dataset's parity features, as float32 tensors."""

    dataset: str
    arrays: dict[str, np.ndarray]

    def _f(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self.arrays[name].astype(np.float32))

    def _l(self, name: str) -> torch.Tensor:
        return torch.from_numpy(self.arrays[name].astype(np.int64))

    @property
    def class_text(self) -> torch.Tensor:
        return self._f("class_text")

    @property
    def scale(self) -> float:
        return float(self.arrays["logit_form"][0])

    @property
    def bias(self) -> float:
        return float(self.arrays["logit_form"][1])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (M, D), labels (M,)) of ``val`` or ``test``."""
        return self._f(f"{name}_images"), self._l(f"{name}_labels")

    def shots(self, k: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(images (N*K, D), labels (N*K,)) of one K-shot sample."""
        idx = self.arrays[f"shots_{k}_{seed}"]
        return self._f("pool_images")[idx], self._l("pool_labels")[idx]

    def cells(self) -> list[tuple[int, int]]:
        return [(k, s) for k in self.arrays["shots"].tolist() for s in self.arrays["seeds"].tolist()]

    def val_sample(self, k: int, seed: int, per_class: int) -> np.ndarray:
        """Indices into the validation split of min(K, ``per_class``) images per class drawn for one
        cell (the parity set's own draw, with NumPy's generator at ``seed``; the size of CoOp's few-shot
        validation, the kit's ``realistic`` protocol)."""
        labels, rng = self.arrays["val_labels"], np.random.default_rng(seed)
        members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        return np.sort(np.concatenate([rng.choice(m, size=min(k, per_class, len(m)), replace=False) for m in members]))

    def labelled(self, name: str):
        """``val`` or ``test`` as the kit's ``methods.loop.Labelled`` (no captions: the peers use none)."""
        from siglip_adapter.methods.loop import Labelled

        images, labels = self.split(name)
        return Labelled(images, None, labels)

    def task(self, k: int, seed: int, val_per_class: int | None = None, classnames: list[str] | None = None, encoder=None):
        """The kit's ``methods.loop.Task`` of one cell: validation is the whole split, or
        ``val_sample(k, seed, val_per_class)`` of it; ``classnames`` and ``encoder`` for a method
        that trains through the text tower (CoOp: ``coop_encoder``)."""
        from siglip_adapter.methods.loop import Labelled, Task

        images, labels = self.shots(k, seed)
        val = self.labelled("val")
        if val_per_class:
            idx = torch.from_numpy(self.val_sample(k, seed, val_per_class))
            val = Labelled(val.images[idx], None, val.labels[idx])
        return Task(Labelled(images, None, labels), val, self.class_text, self.scale, self.bias, seed, classnames, encoder)

    def fingerprint(self) -> str:
        """SHA-256 over every array (name, dtype, shape, bytes): what a peer's recorded numbers were computed on."""
        h = hashlib.sha256()
        for name in sorted(self.arrays):
            a = np.ascontiguousarray(self.arrays[name])
            h.update(f"{name}:{a.dtype.str}:{a.shape}".encode() + a.tobytes())
        return h.hexdigest()


def coop_encoder(folder: Path, dim: int, seed: int = 0):
    """The CLIP that CoOp's parity runs on, in ``folder``: transformers' ``CLIPModel`` with seeded
    random weights, a ``COOP_TOWER`` text tower projecting to ``dim`` (the parity features' width)
    and ``byte_tokenizer``, as the kit's ``ClipEncoder``. The prompts' features mean nothing; both
    sides train the same context through the same tower."""
    from siglip_adapter.encoders.clip import ClipEncoder

    from .tiny_models import build_clip

    return ClipEncoder.from_pretrained(str(build_clip(folder, seed, dim, COOP_TOWER, byte_tokenizer())), device="cpu")


def byte_tokenizer():
    """``CLIPTokenizer`` over OpenAI CLIP's base vocabulary without its merges: the 256 byte symbols,
    each also with the end-of-word suffix, then start and end of text (the highest id, as in
    CLIP's). Every text is its characters; built the same on every run (a BPE trained here did
    not: the same code gave "x" the ids 86 and 79 in two runs)."""
    from tokenizers import pre_tokenizers
    from transformers import CLIPTokenizer

    symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [*symbols, *(s + "</w>" for s in symbols), "<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=[], model_max_length=77)


def classnames_of(dataset: str) -> list[str]:
    """The dataset's class names in label order, as the committed run's cards record them."""
    import json

    cards = sorted((ROOT / "results" / dataset / "cards").glob("*.json"))
    if not cards:
        raise FileNotFoundError(f"results/{dataset}/cards: no card to read the class names from (make repro)")
    return json.loads(cards[0].read_text())["classnames"]


def path_of(dataset: str, folder: Path = FOLDER) -> Path:
    return folder / f"{dataset}.safetensors"


def load(dataset: str, folder: Path = FOLDER) -> ParitySet:
    from safetensors.numpy import load_file

    return ParitySet(dataset, load_file(path_of(dataset, folder)))


def export(dataset: str, folder: Path = FOLDER, protocol: str = "corrected") -> Path:
    """The parity set of ``dataset``'s committed offline run (its feature store must be filled:
    ``make repro``)."""
    from siglip_adapter.data import sample_shots
    from siglip_adapter.inputs import load_inputs
    from siglip_adapter.runs import open_run

    cfg, paths = open_run(dataset, protocol=protocol)
    inp = load_inputs(paths, cfg)
    samples = {(k, s): sample_shots(inp.manifest, k, s) for k in SHOTS for s in SEEDS}
    pool_ids = sorted({i for rows in samples.values() for i in rows["image_id"]})
    where = {i: n for n, i in enumerate(pool_ids)}
    label_of = dict(zip(inp.manifest["image_id"], inp.manifest["label"]))
    half = lambda t: t.numpy().astype(np.float16)  # noqa: E731
    arrays = {"class_text": half(inp.class_text), "logit_form": np.array([inp.scale, inp.bias], np.float64),
              "shots": np.array(SHOTS), "seeds": np.array(SEEDS),
              "pool_images": half(inp.image.take(pool_ids)), "pool_labels": np.array([label_of[i] for i in pool_ids], np.int16)}
    for name in ("val", "test"):
        images, _, labels = inp.split(name)
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = half(images), labels.numpy().astype(np.int16)
    for (k, s), rows in samples.items():
        arrays[f"shots_{k}_{s}"] = np.array([where[i] for i in rows["image_id"]], np.int32)
    out = path_of(dataset, folder)
    out.parent.mkdir(parents=True, exist_ok=True)
    from safetensors.numpy import save_file

    save_file({name: np.ascontiguousarray(a) for name, a in arrays.items()}, out)
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Write the parity feature sets from the committed offline runs.")
    ap.add_argument("datasets", nargs="+")
    ap.add_argument("--out", type=Path, default=FOLDER)
    args = ap.parse_args(argv)
    for dataset in args.datasets:
        out = export(dataset, args.out)
        print(f"{out} ({out.stat().st_size / 1e6:.2f} MB, sha256 of the arrays {load(dataset, args.out).fingerprint()[:12]})")


if __name__ == "__main__":
    main()
