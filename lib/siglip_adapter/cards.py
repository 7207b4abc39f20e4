"""Saved adapters ("skill packs"): a fitted method as one safetensors file plus a JSON card.

The safetensors file holds the method's tensors (``Fitted.state``: keys, weights, class prompts)
and, in its header, the card; the card (``<name>.json``, the same JSON) says what the tensors
mean and where they came from: the method, the backbone (the encoder's cache fields: model id,
revision, preprocessing) and the parameters that rebuild it, how images are read (inverted or
not), the dataset, its class names and prompts, shots, seed, the chosen hyper-parameters, the
validation and test accuracy, and the weights file's SHA-256. ``predict`` loads the backbone once,
embeds every image once, applies every card and refuses a card made on another backbone.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .methods import Fitted, scorer
from .atomic import write_atomic

CARD_FORMAT = 1
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


class CardError(ValueError):
    """A card that cannot be used: tampered, unknown, or made on another backbone."""


def backbone_fields(encoder) -> dict:
    """What a card's features must have been made with: the encoder's cache fields, less the
    precision and the numerics (bf16 on one GPU and fp32 on a CPU with any thread count read the same model)."""
    return {k: v for k, v in json.loads(json.dumps(encoder.cache_fields(), default=str)).items() if k not in ("precision", "numerics")}


def card_for(fitted: Fitted, cfg: dict, encoder, classnames: Sequence[str], prompts: Sequence[str], shots: int, seed: int,
             test_accuracy: float) -> dict:
    """The card of a method fitted on one run's K shots (everything but the weights' file and hash)."""
    return {"format": CARD_FORMAT, "method": fitted.method, "backbone": backbone_fields(encoder),
            "encoder": {k: v for k, v in cfg["encoder"].items()}, "images": {"invert": bool(cfg["dataset"].get("invert", False))},
            "dataset": cfg["dataset"]["name"], "protocol": cfg["protocol"], "classnames": list(classnames), "prompts": list(prompts),
            "shots": int(shots), "seed": int(seed), "hyper_parameters": fitted.chosen, "val_accuracy": float(fitted.val_accuracy),
            "test_accuracy": float(test_accuracy)}


def save_card(fitted: Fitted, card: dict, path: Path) -> Path:
    """``path`` (``.json``) and its ``.safetensors`` beside it, each written atomically; returns the card's path."""
    path = Path(path).with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = path.with_suffix(".safetensors")
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in fitted.state.items()}  # one buffer each (keys may alias)
    body = {**card, "method": fitted.method, "hyper_parameters": fitted.chosen, "weights": weights.name}
    write_atomic(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"card": json.dumps(body, sort_keys=True, default=str)}))
    body["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(body, indent=2, sort_keys=True, default=str) + "\n"))
    return path


def load_card(path: Path) -> tuple[dict, Fitted]:
    """(card, fitted method) from a card's ``.json``; a weights file that is not the one the card
    names (edited, truncated, replaced) or an unknown method is refused."""
    path = Path(path)
    if not path.is_file():
        raise CardError(f"{path}: no such card")
    card = json.loads(path.read_text())
    if card.get("format") != CARD_FORMAT:
        raise CardError(f"{path}: card format {card.get('format')!r}, this kit reads {CARD_FORMAT}")
    weights = path.with_name(card["weights"])
    if not weights.is_file() or hashlib.sha256(weights.read_bytes()).hexdigest() != card["weights_sha256"]:
        raise CardError(f"{path}: {weights.name} is missing or not the file the card was saved with (SHA-256 differs)")
    try:
        scorer(card["method"])
    except ValueError as e:
        raise CardError(f"{path}: {e}") from e
    with safe_open(str(weights), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    return card, Fitted(card["method"], state, card["hyper_parameters"], card.get("val_accuracy", float("nan")))


def check_backbone(card: dict, encoder, invert: bool, name: str) -> None:
    """Refuse a card whose backbone or image reading differs from the loaded encoder's."""
    have = backbone_fields(encoder)
    differ = sorted(k for k in set(have) | set(card["backbone"]) if have.get(k) != card["backbone"].get(k))
    if differ:
        raise CardError(f"{name}: made on another backbone or preprocessing than the loaded one (differs in {differ}: "
                        + "; ".join(f"{k}: card {card['backbone'].get(k)!r} vs loaded {have.get(k)!r}" for k in differ) + ")")
    if bool(card["images"]["invert"]) != invert:
        raise CardError(f"{name}: reads images {'inverted' if card['images']['invert'] else 'as they are'}, unlike the first card")


def image_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Image files named or found (recursively, sorted) in folders."""
    out = []
    for item in map(Path, inputs):
        if item.is_dir():
            out += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif item.is_file():
            out.append(item)
        else:
            raise FileNotFoundError(f"{item}: no such image or folder")
    if not out:
        raise FileNotFoundError(f"no images in {', '.join(map(str, inputs))}")
    return out


class _Files:
    """The images ``predict`` reads, as a source for the DataLoader path (decoded in workers)."""

    def __init__(self, files: Sequence[Path], invert: bool):
        self.files, self.invert, self.root = [Path(f) for f in files], invert, Path(".")
        self.ids = [str(n) for n in range(len(self.files))]

    def open(self, image_id: str):
        from .sources.images import open_rgb

        return open_rgb(self.files[int(image_id)], invert=self.invert)

    def path_of(self, image_id: str) -> str:
        return str(self.files[int(image_id)])


def embed_files(encoder, files: Sequence[Path], invert: bool, batch_size: int = 32, num_workers: int | str = "auto") -> torch.Tensor:
    """(len(files), D) image features, each image decoded once (in DataLoader workers, as the
    embed stage does) and embedded once. Unreadable files are reported together at the end, each
    with its reason (``siglip-adapter scan``'s reasons), instead of the first one stopping the run."""
    from .data import iter_batches
    from .encoders import collate
    from .sources.images import ImageError

    source = _Files(files, invert)
    feats, bad = [], []
    for ids, pixels, errors in iter_batches(source, source.ids, batch_size, num_workers, encoder.preprocess, desc="images"):
        bad += [f"{source.path_of(i)}: {e}" for i, e in zip(ids, errors) if e is not None]
        if bad:  # after the first bad file only the reasons are still collected
            continue
        # Stacked in the worker (a tensor, or one per model input) when every image decoded.
        feats.append(encoder.encode_pixels(pixels if isinstance(pixels, (torch.Tensor, dict)) else collate(pixels)))
    if bad:
        raise ImageError(f"{len(bad)} of {len(files)} images cannot be read: " + "; ".join(bad))
    return torch.cat(feats)


def predict(card_paths: Sequence[str | Path], inputs: Sequence[str | Path], device: str = "auto", batch_size: int = 32) -> pd.DataFrame:
    """One row per image x card: the predicted class and its logit. The first card's encoder
    parameters build the backbone, once; every card must match it."""
    from .encoders import build_encoder

    cards = [(str(p), *load_card(p)) for p in card_paths]
    first = cards[0][1]
    encoder = build_encoder({"encoder": {**first["encoder"], "device": device}})
    invert = bool(first["images"]["invert"])
    for name, card, _ in cards:
        check_backbone(card, encoder, invert, name)
    files = image_files(inputs)
    feats = embed_files(encoder, files, invert, batch_size)
    rows = []
    for name, card, fitted in cards:
        top = fitted.logits(feats).max(-1)
        rows += [{"image": str(f), "card": name, "method": card["method"], "dataset": card["dataset"],
                  "class": card["classnames"][int(i)], "score": float(v)} for f, v, i in zip(files, top.values, top.indices)]
    return pd.DataFrame(rows, columns=["image", "card", "method", "dataset", "class", "score"])


def best_row(rows: pd.DataFrame, shots: int, order: Sequence[str]) -> pd.Series:
    """The run's best fitted method at ``shots``: the highest validation accuracy over every
    method (``order``: ``methods.run``) and seed, ties to the earlier method, then the smaller
    seed. Rows chosen on the test set (the authors' trainable model) are never picked."""
    cand = rows[(rows["shots"] == shots) & (rows["selected_on"] != "test") & rows["method"].isin(order)].copy()
    if not len(cand):
        raise CardError(f"no rows at {shots} shots selected on validation for the methods {list(order)}")
    cand["_order"] = cand["method"].map({m: i for i, m in enumerate(order)})
    return cand.sort_values(["val_accuracy", "_order", "seed"], ascending=[False, True, True], kind="stable").iloc[0]


def save_best(dataset: str, protocol: str = "corrected", shots: int | None = None, overlay: str = "", out: Path | None = None,
              backbone: str | None = None) -> Path:
    """Refit the best ``shots``-shot method of a run (``best_row`` over its 04/05 stage rows; the
    largest K by default; ``backbone`` None: the parameters' own) on its shots and seed, check that the refit scores the test accuracy its
    row records (the run is reproducible), and save it as the only card in ``out`` (default
    ``results/<dataset>/cards/``). Returns the card's path."""
    from . import experiment, methods
    from .config import load_config
    from .encoders import build_encoder
    from .paths import paths_of
    from .prompts import class_prompts

    cfg = load_config(dataset, overlay, protocol=protocol, backbone=backbone)
    paths = paths_of(cfg)
    rows = pd.concat([pd.read_csv(paths.rows(stage)) for stage in ("04_adapter", "05_trainable")], ignore_index=True)
    k = int(shots or max(cfg["shots"]))
    r = best_row(rows, k, methods.names(cfg))
    inp = experiment.load_inputs(paths, cfg)
    encoder = build_encoder(cfg)
    name, seed = str(r["method"]), int(r["seed"])
    fitted = methods.task_for(inp, cfg, k, seed, encoder).fitted(name, methods.params_of(cfg, name))
    test = fitted.accuracy(methods.Labelled(*inp.split("test")))
    if abs(test - float(r["accuracy"])) > 1e-5 or abs(fitted.val_accuracy - float(r["val_accuracy"])) > 1e-5:
        raise RuntimeError(f"{name} at {k} shots, seed {seed}: the refit scores test {test:.6f} / val {fitted.val_accuracy:.6f}, its "
                           f"row {float(r['accuracy']):.6f} / {float(r['val_accuracy']):.6f}: the stage is not reproducible")
    out = Path(out) if out is not None else paths.results_root / dataset / "cards"
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("*.json")) + list(out.glob("*.safetensors")):  # one card: the current best
        old.unlink()
    card = card_for(fitted, cfg, encoder, inp.classnames, class_prompts(inp.classnames, cfg["dataset"]["template"]), k, seed, test)
    return save_card(fitted, card, out / f"{name}_{k}shot_seed{seed}.json")
