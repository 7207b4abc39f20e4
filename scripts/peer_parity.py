"""Record a peer's own numbers on the parity feature sets (``kit_tools.parity``), once, for the
parity tests (``tests/test_parity.py``), which compare the kit's methods with them in CI, where
no copy of the peers' code exists.

    git clone https://github.com/mrflogs/ICLR24 ~/peers/ICLR24            # never into this repository
    .venv/bin/python scripts/peer_parity.py gda --code ~/peers/ICLR24
    .venv/bin/python scripts/peer_parity.py tip_adapter --code ~/peers/Tip-Adapter

writes ``tests/fixtures/parity/<method>.json``: the peer's repository and commit, the function
run, its settings, the fingerprint of each feature set, and per dataset, K and seed its test
accuracy and the hyper-parameters it chose.

The peer's function runs as published, on the CPU. The script supplies what the peer's entry
point would have loaded (features, labels, the zero-shot classifier) and stands in for what does
not exist here and the function does not use: ``.cuda()`` is the identity, and torchvision, the
peer's dataset modules and its CLIP package are empty modules (their loaders and model are
replaced by the features). The zero-shot classifier is the class-prompt features as they are: the
peers' logits are ``100 x cosine`` (CLIP's scale), the unit the kit's methods read their grids in.
Each adjustment a peer needs is named at its runner below.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import types
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lib"))
from kit_tools import parity  # noqa: E402


class _Anything(types.ModuleType):
    """A stand-in module: any attribute is another stand-in (the peers import names they never call here)."""

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Anything(f"{self.__name__}.{name}")

    def __call__(self, *args, **kwargs):
        return _Anything(f"{self.__name__}()")


def _import_peer(code: Path, module: str, stand_ins: list[str]):
    """``module`` of the peer's checkout, with ``stand_ins`` as empty modules and CUDA as the CPU."""
    for name in stand_ins:
        sys.modules[name] = _Anything(name)
    torch.Tensor.cuda = lambda self, *a, **k: self  # the peers move every tensor to the GPU
    torch.nn.Module.cuda = lambda self, *a, **k: self
    # The peers' ``cls_acc`` takes float() of a one-element array: an error under the NumPy 2.4 measured here
    # (deprecated since 1.25). A one-element tensor's .numpy() is 0-d here.
    to_numpy = getattr(torch.Tensor.numpy, "__wrapped__", torch.Tensor.numpy)
    torch.Tensor.numpy = functools.wraps(to_numpy)(lambda self, *a, **k: to_numpy(self, *a, **k).reshape(()) if self.numel() == 1 else to_numpy(self, *a, **k))
    sys.path.insert(0, str(code))
    return importlib.import_module(module)


@contextlib.contextmanager
def _inside(folder):
    """The working directory set to ``folder`` for a while (``contextlib.chdir`` is Python 3.11's)."""
    here = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(here)


def _commit(code: Path) -> str:
    return subprocess.run(["git", "-C", str(code), "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()


def _last(pattern: str, text: str) -> list[str]:
    found = re.findall(pattern, text)
    if not found:
        raise RuntimeError(f"the peer printed no line matching {pattern!r}; its output:\n{text[-2000:]}")
    return list(found[-1]) if isinstance(found[-1], tuple) else [found[-1]]


class _Identity:
    """The peer's CLIP model where the images are already features."""

    def __init__(self, dtype=torch.float32):
        self.dtype = dtype

    def encode_image(self, x):
        return x


def gda(code: Path, data: parity.ParitySet, k: int, seed: int) -> dict:
    """mrflogs/ICLR24 ``main_few_shots.run``: its loader gives the shots' features once (one view:
    ``augment_epoch`` 1; the kit's parity set has one view per shot), its validation and test
    features are the module globals its ``main`` sets."""
    peer = _import_peer(code, "main_few_shots", ["torchvision", "torchvision.transforms", "datasets", "datasets.imagenet",
                                                 "datasets.utils", "clip", "clip.simple_tokenizer"])
    (peer.val_features, peer.val_labels), (peer.test_features, peer.test_labels) = data.split("val"), data.split("test")
    images, labels = data.shots(k, seed)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        acc = peer.run({"augment_epoch": 1}, [(images, labels)], data.class_text.T.contiguous(), _Identity())
    alpha, _ = _last(r"best_val_alpha: (\S+) \t best_val_acc: (\S+)", out.getvalue())
    return {"accuracy": acc / 100, "chosen": {"alpha": float(alpha)}}


def tip_adapter(code: Path, data: parity.ParitySet, k: int, seed: int, search_scale=(7, 3), search_step=(200, 20)) -> dict:
    """gaopengcuhk/Tip-Adapter ``utils.build_cache_model`` then ``main.run_tip_adapter``, with the
    search of its ImageNet, Pets and UCF101 configs (``search_scale`` [7, 3], ``search_step``
    [200, 20]; neither offline dataset has a config of its own). One view per shot
    (``augment_epoch`` 1). The cache values are cast to float32 after ``build_cache_model`` (it
    makes them float16 for a float16 CLIP on the GPU; a CPU product needs one dtype, and one-hot
    values are exact in both)."""
    peer = _import_peer(code, "main", ["torchvision", "torchvision.transforms", "datasets", "datasets.utils", "clip"])
    images, labels = data.shots(k, seed)
    (val, val_labels), (test, test_labels) = data.split("val"), data.split("test")
    returned = {}  # what the peer's functions return, recorded as they pass (run_tip_adapter only prints)
    for name in ("search_hp", "cls_acc"):
        f = getattr(peer, name)
        setattr(peer, name, lambda *a, _f=f, _name=name, **k: returned.setdefault(_name, []).append(_f(*a, **k)) or returned[_name][-1])
    with tempfile.TemporaryDirectory() as tmp:
        cfg = {"load_cache": False, "augment_epoch": 1, "cache_dir": tmp, "shots": k, "search_hp": True,
               "search_scale": list(search_scale), "search_step": list(search_step), "init_beta": 1, "init_alpha": 1.17}
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            keys, values = peer.build_cache_model(cfg, _Identity(), [(images, labels)])
            peer.run_tip_adapter(cfg, keys, values.float(), val, val_labels, test, test_labels, data.class_text.T.contiguous())
    (beta, alpha), acc = returned["search_hp"][-1], returned["cls_acc"][-1]  # its last accuracy: Tip-Adapter on test
    return {"accuracy": acc / 100, "chosen": {"beta": float(beta), "alpha": float(alpha)}}


def proker(code: Path, data: parity.ParitySet, k: int, seed: int, beta=(0.5, 3, 20), lmbda=(0.001, 1, 10)) -> dict:
    """omarnust/BReg-Adapter ``trainers/proker.py::ProKeR`` (training-free ProKeR), with its
    default selection (``hp_selection`` 'tip-adapter': the whole validation split) and the grid its
    Caltech101, FGVC, Food-101 and UCF101 configs share. It reads its grid from
    ``./configs/<backbone>/configs_proker/<dataset>.yaml`` and writes its choice beside it, so it
    runs in a temporary folder holding that one config. One view per shot (``augment_epoch`` 1).
    The choice is read from its printed line; the accuracy is its ``main.run``'s, ``cls_acc`` of
    the returned logits."""
    peer = _import_peer(code, "trainers.proker", ["torchvision", "torchvision.transforms", "datasets", "clip"])
    utils = importlib.import_module("utils")
    images, labels = data.shots(k, seed)
    (val, val_labels), (test, test_labels) = data.split("val"), data.split("test")
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp, _inside(tmp):
        folder = Path("configs/RN50/configs_proker")
        folder.mkdir(parents=True)
        (folder / f"{data.dataset}.yaml").write_text(f"beta: {list(beta)}\nlmbda: {list(lmbda)}\n")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            logits = peer.ProKeR(images, labels, val, val_labels, test, data.class_text.T.contiguous(), data.dataset, k, seed, "tip-adapter")
    beta_, lmbda_ = _last(r"best: beta=(\S+), lmbda=(\S+),", out.getvalue())
    number = lambda v: float(re.sub(r"tensor\((\S+?)\)", r"\1", v))  # noqa: E731  (it prints 0-d tensors)
    return {"accuracy": utils.cls_acc(logits, test_labels) / 100, "chosen": {"beta": number(beta_), "lmbda": number(lmbda_)}}


def lp_pp(code: Path, data: parity.ParitySet, k: int, seed: int, epochs: int = 300) -> dict:
    """FereshteShakeri/FewShot-CLIP-Strong-Baseline ``methods.linear_probe_p2.LinearProbe_P2``
    (LP++) with its base config's 300 epochs. Its ``forward`` takes loaders and the CLIP model: here
    one batch of the shots' features (one view), one of the validation features (all of them: the
    kit's validation split, where its ``main`` draws K per class) and the identity for the model.
    Its ``main`` seeds the global RNG with the task's number before its loaders draw; here the RNG
    is seeded with the seed right before the call, as the kit's ``lp_pp`` does, so the bias starts
    alike. The chosen epoch is counted from its printed lines (1-based: epochs done).

    Its ``utils.get_one_hot`` makes float16 one-hots, which only the float16 features of a GPU CLIP
    multiply with: the recorded cells run it on the parity set's float32 features with that one-hot
    in float32 (the one adjustment); ``fp16`` beside each cell is the same call as their GPU runs
    it, every tensor in float16 (reported, not tested: another precision is other inputs)."""
    peer = _import_peer(code, "methods.linear_probe_p2", ["torchvision", "torchvision.transforms", "clip", "clip.simple_tokenizer",
                                                          "matplotlib", "matplotlib.pyplot"])
    utils = sys.modules["methods.utils"]
    half_one_hot = getattr(utils.get_one_hot, "__wrapped__", utils.get_one_hot)
    images, labels = data.shots(k, seed)
    (val, val_labels), (test, test_labels) = data.split("val"), data.split("test")

    def call(dtype):
        utils.get_one_hot = functools.wraps(half_one_hot)(lambda y_s, num_classes: half_one_hot(y_s, num_classes).to(dtype))
        method = peer.LinearProbe_P2({"train_epoch": epochs, "shots": k, "dataset": data.dataset, "output_dir": ""})
        out = io.StringIO()
        torch.manual_seed(seed)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):  # it renormalises in place: copies
            _, acc = method.forward([(images.to(dtype), labels)], [(val.to(dtype), val_labels)], test.to(dtype), test_labels,
                                    data.class_text.T.contiguous().to(dtype), _Identity(dtype), None)
        lines = out.getvalue().splitlines()
        last_test = max(i for i, line in enumerate(lines) if line.startswith("The accuracy for test data is"))
        return {"accuracy": float(acc) / 100, "chosen": {"epoch": sum(line.startswith("Running model for epoch") for line in lines[:last_test])}}

    return {**call(torch.float32), "fp16": call(torch.float16)}


PEERS = {
    "gda": (gda, "mrflogs/ICLR24", "main_few_shots.run", {"augment_epoch": 1, "alpha": [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0]}),
    "tip_adapter": (tip_adapter, "gaopengcuhk/Tip-Adapter", "utils.build_cache_model, main.run_tip_adapter (utils.search_hp)",
                    {"augment_epoch": 1, "search_scale": [7, 3], "search_step": [200, 20]}),
    "proker": (proker, "omarnust/BReg-Adapter", "trainers.proker.ProKeR (training-free ProKeR), utils.cls_acc",
               {"augment_epoch": 1, "hp_selection": "tip-adapter", "beta": [0.5, 3, 20], "lmbda": [0.001, 1, 10]}),
    "lp_pp": (lp_pp, "FereshteShakeri/FewShot-CLIP-Strong-Baseline", "methods.linear_probe_p2.LinearProbe_P2.forward",
              {"augment_epoch": 1, "train_epoch": 300, "validation": "the parity set's validation split",
               "precision": "float32 (their get_one_hot's float16 one-hot cast to float32); fp16: every tensor in float16, as on their GPU"}),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("method", choices=sorted(PEERS))
    ap.add_argument("--code", type=Path, required=True, help="a checkout of the peer's repository (git clone)")
    ap.add_argument("--datasets", nargs="+", default=["digits", "fashion_mnist"])
    ap.add_argument("--out", type=Path, default=parity.FOLDER)
    args = ap.parse_args(argv)
    run, repo, function, settings = PEERS[args.method]
    record = {"method": args.method, "repository": repo, "commit": _commit(args.code), "function": function, "settings": settings,
              "device": "cpu", "features": {}, "cells": []}
    for dataset in args.datasets:
        data = parity.load(dataset)
        record["features"][dataset] = data.fingerprint()
        for k, seed in data.cells():
            cell = run(args.code, data, k, seed)
            record["cells"].append({"dataset": dataset, "shots": k, "seed": seed, **cell})
            print(f"{args.method} {dataset} K={k} seed={seed}: {cell['accuracy']:.4f} {cell['chosen']}", flush=True)
    out = args.out / f"{args.method}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(out)


if __name__ == "__main__":
    main()
