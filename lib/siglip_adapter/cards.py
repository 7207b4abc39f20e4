"""Saved adapters ("skill packs"): a fitted method as one safetensors file plus a JSON card.

The safetensors file holds the method's tensors (``Fitted.state``: keys, weights, class prompts)
and, in its header, the card; the card (``<name>.json``, the same JSON) says what the tensors
mean and where they came from: the method, the backbone (the encoder's cache fields: model id,
revision, preprocessing) and the parameters that rebuild it, how images are read (inverted or
not), the dataset, its class names and prompts, shots, seed, the chosen hyper-parameters, the
validation and test accuracy, and the weights file's SHA-256; and, fitted on the validation images
that chose the hyper-parameters, its ``calibration`` (the softmax temperature that minimises their
negative log-likelihood) and its ``far_from_classes`` threshold (on the top calibrated probability).
``predict`` loads the backbone once, embeds every image once, applies every card and refuses a card
made on another backbone; an image that cannot be read is reported in its rows, not fatal.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .atomic import write_atomic
from .methods import registry
from .methods.loop import Fitted, Labelled

CARD_FORMAT = 1  # cards without ``calibration`` (saved before it) are format 1 too: they predict without probabilities
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
LOAD_KEYS = ("method", "hyper_parameters", "weights", "weights_sha256")  # what load_card reads
PREDICT_KEYS = ("backbone", "encoder", "images", "dataset", "classnames")  # and what predict reads besides
LOG_T_BOUNDS = (math.log(1e-4), math.log(1e4))  # the temperature search: cosine logits need ~0.01, a probe's ~1
FAR_QUANTILE = 0.01  # an image is far from the classes below the top probability of 1% of validation images
COLUMNS = ["image", "card", "method", "dataset", "class", "score", "probability", "far_from_classes", "error"]


class CardError(ValueError):
    """A card that cannot be used: not a card, broken, tampered, unknown, or made on another backbone."""


def backbone_fields(encoder) -> dict:
    """What a card's features must have been made with: the encoder's cache fields, less the
    precision and the numerics (bf16 on one GPU and fp32 on a CPU with any thread count read the same model)."""
    return {k: v for k, v in json.loads(json.dumps(encoder.cache_fields(), default=str)).items() if k not in ("precision", "numerics")}


def card_for(fitted: Fitted, cfg: dict, encoder, classnames: Sequence[str], prompts: Sequence[str], shots: int, seed: int,
             test_accuracy: float, val: Labelled) -> dict:
    """The card of a method fitted on one run's K shots (everything but the weights' file and hash),
    calibrated on ``val``, the validation images that chose its hyper-parameters."""
    return {"format": CARD_FORMAT, "method": fitted.method, "backbone": backbone_fields(encoder),
            "encoder": {k: v for k, v in cfg["encoder"].items()}, "images": {"invert": bool(cfg["dataset"].get("invert", False))},
            "dataset": cfg["dataset"]["name"], "protocol": cfg["protocol"], "classnames": list(classnames), "prompts": list(prompts),
            "shots": int(shots), "seed": int(seed), "hyper_parameters": fitted.chosen, "val_accuracy": float(fitted.val_accuracy),
            "test_accuracy": float(test_accuracy), **calibration(fitted.logits(val.images), val.labels)}


# ---------------------------------------------------------------------------------------------
# Calibration: probabilities from a card's logits, and images far from every class


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The temperature T > 0 that minimises the mean negative log-likelihood of softmax(logits / T)
    over (logits (M, N), labels (M,)): a bounded 1-D search over log T (the likelihood is convex in
    1 / T, so it has one minimum in log T)."""
    from scipy.optimize import minimize_scalar

    z, y = logits.double(), labels.long()
    nll = lambda log_t: float(torch.nn.functional.cross_entropy(z / math.exp(log_t), y))  # noqa: E731
    return math.exp(minimize_scalar(nll, bounds=LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6}).x)


def calibration(logits: torch.Tensor, labels: torch.Tensor) -> dict:
    """The card's ``calibration`` and ``far_from_classes`` blocks from its validation logits (M, N)
    and labels (M,): the temperature, and the top calibrated probability below which an image is
    far from every class (the ``FAR_QUANTILE`` of the validation images'). Nothing without images."""
    if not len(labels):
        return {}
    t = fit_temperature(logits, labels)
    top = top_probability(logits, t)
    return {"calibration": {"temperature": t, "fitted_on": "validation", "n_images": len(labels)},
            "far_from_classes": {"score": "top calibrated probability", "threshold": float(torch.quantile(top, FAR_QUANTILE)),
                                 "quantile": FAR_QUANTILE, "fitted_on": "validation", "n_images": len(labels)}}


def class_probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(M, N) calibrated class probabilities, softmax(logits / temperature), in float64 (as calibrated)."""
    return (logits.double() / temperature).softmax(-1)


def top_probability(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """(M,) each image's highest calibrated class probability: its predicted class's."""
    return class_probabilities(logits, temperature).max(-1).values


def save_card(fitted: Fitted, card: dict, path: Path) -> Path:
    """``path`` (``.json``) and its ``.safetensors`` beside it, each written atomically; returns the card's path."""
    path = Path(path).with_suffix(".json")
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = path.with_suffix(".safetensors")
    tensors = {k: v.detach().cpu().clone().contiguous() for k, v in fitted.state.items()}  # one buffer each (keys may alias)
    body = {**card, "method": fitted.method, "hyper_parameters": fitted.chosen, "weights": weights.name}
    declared = registry.get(fitted.method)
    if not declared.in_kit:  # a method kept outside the kit: the module that load_card imports
        body["module"] = declared.module
    write_atomic(weights, lambda tmp: save_file(tensors, str(tmp), metadata={"card": json.dumps(body, sort_keys=True, default=str)}))
    body["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(body, indent=2, sort_keys=True, default=str) + "\n"))
    return path


def load_card(path: Path) -> tuple[dict, Fitted]:
    """(card, fitted method) from a card's ``.json``; a path that is not a card's (its weights, a
    folder, another file), a card of another format or with a key missing, a weights file that is
    not the one the card names (edited, truncated, replaced) or an unknown method is refused."""
    path = Path(path)
    card = read_card(path)
    require(card, LOAD_KEYS, path)
    weights = path.with_name(card["weights"])
    if not weights.is_file() or hashlib.sha256(weights.read_bytes()).hexdigest() != card["weights_sha256"]:
        raise CardError(f"{path}: {weights.name} is missing or not the file the card was saved with (SHA-256 differs)")
    try:
        if card.get("module"):  # a method kept outside the kit (methods.modules)
            import importlib

            importlib.import_module(card["module"])
        registry.get(card["method"])
    except ImportError as e:
        raise CardError(f"{path}: method '{card['method']}' is in module '{card['module']}', which does not import here: {e}") from e
    except ValueError as e:
        raise CardError(f"{path}: {e}") from e
    with safe_open(str(weights), framework="pt") as f:
        state = {k: f.get_tensor(k) for k in f.keys()}
    return card, Fitted(card["method"], state, card["hyper_parameters"], card.get("val_accuracy", float("nan")))


def read_card(path: Path) -> dict:
    """A card's JSON, or a ``CardError`` saying what ``path`` is instead."""
    if path.is_dir():
        cards = sorted(p.name for p in path.glob("*.json") if p.with_suffix(".safetensors").is_file())
        raise CardError(f"{path}: a folder, not a card; " + (f"its cards: {', '.join(cards)}" if cards else "it holds no card (.json)"))
    if path.suffix == ".safetensors":
        beside = path.with_suffix(".json")
        raise CardError(f"{path}: the weights file of a card; pass the card's .json next to it"
                        + (f" ({beside})" if beside.is_file() else f" (no {beside.name} there)"))
    if not path.is_file():
        raise CardError(f"{path}: no such card")
    try:
        card = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CardError(f"{path}: not a card (not JSON: {e})") from e
    if not isinstance(card, dict) or "format" not in card:
        raise CardError(f"{path}: not a card (no 'format' key)")
    if card["format"] != CARD_FORMAT:
        raise CardError(f"{path}: card format {card['format']!r}, but this kit reads format {CARD_FORMAT} (a card of another "
                        "version of the kit: use that version, or save the card again with this one)")
    return card


def require(card: dict, keys: Sequence[str], path) -> None:
    """A ``CardError`` naming the card and the first of ``keys`` it lacks."""
    missing = [k for k in keys if k not in card]
    if missing:
        raise CardError(f"{path}: broken card: missing key '{missing[0]}'" + (f" (and {missing[1:]})" if missing[1:] else ""))


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


def embed_readable(encoder, files: Sequence[Path], invert: bool, batch_size: int = 32,
                   num_workers: int | str = "auto") -> tuple[torch.Tensor | None, dict[int, str]]:
    """((M, D) features of the M files that decode, in order, or None when none does; {position in
    ``files``: reason} for the others, ``siglip-adapter scan``'s reasons). Each image is decoded once
    (in DataLoader workers, as the embed stage does) and embedded once."""
    from .data import iter_batches
    from .encoders.base import collate

    source = _Files(files, invert)
    feats, bad = [], {}
    for ids, pixels, errors in iter_batches(source, source.ids, batch_size, num_workers, encoder.preprocess, desc="images"):
        if any(e is not None for e in errors):  # the batch comes unstacked: the decoded ones go on
            bad.update({int(i): e for i, e in zip(ids, errors) if e is not None})
            pixels = [p for p, e in zip(pixels, errors) if e is None]
            if not pixels:
                continue
        # Stacked in the worker (a tensor, or one per model input) when every image decoded.
        feats.append(encoder.encode_pixels(pixels if isinstance(pixels, (torch.Tensor, dict)) else collate(pixels)))
    return (torch.cat(feats) if feats else None), bad


def embed_files(encoder, files: Sequence[Path], invert: bool, batch_size: int = 32, num_workers: int | str = "auto") -> torch.Tensor:
    """(len(files), D) image features (``embed_readable``); unreadable files are an ``ImageError``
    naming each with its reason."""
    from .sources.images import ImageError

    feats, bad = embed_readable(encoder, files, invert, batch_size, num_workers)
    if bad:
        raise ImageError(f"{len(bad)} of {len(files)} images cannot be read: " + "; ".join(f"{files[n]}: {e}" for n, e in sorted(bad.items())))
    return feats


def predict(card_paths: Sequence[str | Path], inputs: Sequence[str | Path], device: str = "auto",
            batch_size: int = 32) -> tuple[pd.DataFrame, list[str]]:
    """(rows, notes): one row per image x card (``COLUMNS``: the predicted class, its logit, its
    calibrated probability and whether the image is far from every class; or the ``error`` that
    kept an image from being read), and a line per unreadable image and per card saved without
    calibration. The first card's encoder parameters build the backbone, once; every card must match it."""
    from .encoders import build_encoder
    from .inputs import load_inputs

    cards = [(str(p), *load_card(p)) for p in card_paths]
    for name, card, _ in cards:
        require(card, PREDICT_KEYS, name)
    files = image_files(inputs)
    first = cards[0][1]
    encoder = build_encoder({"encoder": {**first["encoder"], "device": device}})
    invert = bool(first["images"]["invert"])
    for name, card, _ in cards:
        check_backbone(card, encoder, invert, name)
    # DataLoader workers pay for their start-up over many batches; a handful of images is decoded here.
    feats, bad = embed_readable(encoder, files, invert, batch_size, "auto" if len(files) > 2 * batch_size else 0)
    rows = [row for name, card, fitted in cards for row in card_rows(name, card, fitted, files, feats, bad)]
    notes = [f"{files[n]}: {reason}" for n, reason in sorted(bad.items())]
    notes += [f"{name}: saved without calibration (an older card): no probability or far_from_classes; save it again with "
              "siglip-adapter card" for name, card, _ in cards if "calibration" not in card]
    return pd.DataFrame(rows, columns=COLUMNS), notes


def card_rows(name: str, card: dict, fitted: Fitted, files: Sequence[Path], feats: torch.Tensor | None, bad: dict[int, str]) -> list[dict]:
    """One card's rows, in ``files`` order: for each image that decoded (``feats`` (M, D), in
    order) its prediction, for each other its error."""
    base = {"card": name, "method": card["method"], "dataset": card["dataset"]}
    out = {n: {"image": str(files[n]), **base, "error": reason} for n, reason in bad.items()}
    good = [n for n in range(len(files)) if n not in bad]
    if good:
        logits = fitted.logits(feats)
        top, cal = logits.max(-1), card.get("calibration")
        probability = top_probability(logits, cal["temperature"]).tolist() if cal else [None] * len(good)
        far = [p < card["far_from_classes"]["threshold"] for p in probability] if cal else probability
        out.update({n: {"image": str(files[n]), **base, "class": card["classnames"][int(i)], "score": float(v), "probability": p,
                        "far_from_classes": f, "error": None} for n, v, i, p, f in zip(good, top.values, top.indices, probability, far)})
    return [out[n] for n in range(len(files))]


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
    from .methods import loop
    from .config import load_config
    from .encoders import build_encoder
    from .inputs import load_inputs
    from .paths import paths_of
    from .prompts import class_prompts

    cfg = load_config(dataset, overlay, protocol=protocol, backbone=backbone)
    paths = paths_of(cfg)
    rows = pd.concat([pd.read_csv(paths.rows(stage)) for stage in ("04_adapter", "05_trainable")], ignore_index=True)
    k = int(shots or max(cfg["shots"]))
    r = best_row(rows, k, loop.names(cfg))
    inp = load_inputs(paths, cfg)
    encoder = build_encoder(cfg)
    name, seed = str(r["method"]), int(r["seed"])
    task = loop.task_for(inp, cfg, k, seed, encoder)
    fitted = task.fitted(name, loop.params_of(cfg, name))
    test = fitted.accuracy(loop.Labelled(*inp.split("test")))
    if abs(test - float(r["accuracy"])) > 1e-5 or abs(fitted.val_accuracy - float(r["val_accuracy"])) > 1e-5:
        raise RuntimeError(f"{name} at {k} shots, seed {seed}: the refit scores test {test:.6f} / val {fitted.val_accuracy:.6f}, its "
                           f"row {float(r['accuracy']):.6f} / {float(r['val_accuracy']):.6f}: the stage is not reproducible")
    out = Path(out) if out is not None else paths.results_root / dataset / "cards"
    out.mkdir(parents=True, exist_ok=True)
    for old in list(out.glob("*.json")) + list(out.glob("*.safetensors")):  # one card: the current best
        old.unlink()
    card = card_for(fitted, cfg, encoder, inp.classnames, class_prompts(inp.classnames, cfg["dataset"]["template"]), k, seed, test,
                    task.val)
    return save_card(fitted, card, out / f"{name}_{k}shot_seed{seed}.json")
