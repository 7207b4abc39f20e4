"""Record a peer's own numbers on the parity feature sets (``kit_tools.parity``), once, for the
parity tests (``tests/test_parity.py``), which compare the kit's methods with them in CI, where
no copy of the peers' code exists.

    git clone https://github.com/mrflogs/ICLR24 ~/peers/ICLR24            # never into this repository
    .venv/bin/python scripts/peer_parity.py gda --code ~/peers/ICLR24
    .venv/bin/python scripts/peer_parity.py tip_adapter --code ~/peers/Tip-Adapter
    git clone https://github.com/KaiyangZhou/Dassl.pytorch ~/peers/Dassl   # CLAP's trainer is Dassl's
    pip install --target ~/peers/deps yacs                                 # Dassl's config package
    .venv/bin/python scripts/peer_parity.py clap --code ~/peers/CLAP --deps ~/peers/Dassl ~/peers/deps
    .venv/bin/python scripts/peer_parity.py linear_probe --code ~/peers/CoOp      # KaiyangZhou/CoOp: its lpclip script
    .venv/bin/python scripts/peer_parity.py clip_adapter --code ~/peers/CLIP-Adapter --deps ~/peers/CoOp ~/peers/Dassl ~/peers/deps
    .venv/bin/python scripts/peer_parity.py coop --code ~/peers/CoOp --deps ~/peers/Dassl ~/peers/deps

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
import copy
import functools
import importlib
import io
import json
import math
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
from siglip_adapter.prompts import clean_classname  # noqa: E402


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


def _recording(module, name: str, into: list) -> None:
    """``module.<name>`` replaced by the peer's own function that also appends what it returns to
    ``into`` (its own: not a wrapper an earlier cell left, as the module is imported once)."""
    f = getattr(module, name)
    f = getattr(f, "__wrapped__", f)
    setattr(module, name, functools.wraps(f)(lambda *a, **k: into.append(f(*a, **k)) or into[-1]))


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
    returned = {"search_hp": [], "cls_acc": []}  # what the peer's functions return, recorded as they pass (run_tip_adapter only prints)
    for name, into in returned.items():
        _recording(peer, name, into)
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


class _Batches:
    """A Dassl train loader's length and batch size, all CLAP's epoch reads of it."""

    def __init__(self, n_images: int, batch_size: int):
        self.batch_size = batch_size
        self.n = max(1, n_images // batch_size) if n_images >= batch_size else 1  # drop_last for a full loader

    def __len__(self):
        return self.n


def _dassl_schedulers() -> None:
    """Dassl's warm-up schedulers pass ``verbose`` to ``LRScheduler.__init__``, which torch 2.7 removed:
    the argument is dropped (it only printed)."""
    init = getattr(torch.optim.lr_scheduler.LRScheduler.__init__, "__wrapped__", torch.optim.lr_scheduler.LRScheduler.__init__)
    torch.optim.lr_scheduler.LRScheduler.__init__ = functools.wraps(init)(lambda self, optimizer, last_epoch=-1, verbose=None: init(self, optimizer, last_epoch))


_DASSL_STAND_INS = ["torch.utils.tensorboard", "torchvision", "torchvision.transforms", "torchvision.transforms.functional", "gdown", "wilds",
                    "ftfy"]  # what Dassl and the peers' CLIP packages import at load time and these runs never call


def _dassl_peer(code: Path, module: str, config: str, options: list, seed: int, script_args: dict | None = None, configs: Path | None = None):
    """(the peer's trainer module, its Dassl config): the config built as its ``train.py`` builds
    it (Dassl's defaults, its ``extend_cfg``, the trainer config file, ``options``), the RNGs
    seeded as Dassl seeds them, on the CPU. ``script_args``: the command-line arguments its
    ``extend_cfg`` reads from the script's globals (TaskRes's, set when it runs as ``__main__``);
    ``configs``: the checkout whose ``configs/trainers`` holds ``config`` (default: ``code``)."""
    peer = _import_peer(code, module, _DASSL_STAND_INS)
    _dassl_schedulers()
    from dassl.config import get_cfg_default
    from dassl.utils import set_random_seed

    train = importlib.import_module("train")
    if script_args is not None:
        train.args = types.SimpleNamespace(**script_args)
    cfg = get_cfg_default()
    train.extend_cfg(cfg)
    cfg.merge_from_file(str((configs or code) / "configs" / "trainers" / config))
    cfg.merge_from_list([*options, "SEED", seed, "USE_CUDA", False])
    set_random_seed(seed)
    return peer, cfg


_CLIP = types.SimpleNamespace(dtype=torch.float32, logit_scale=torch.nn.Parameter(torch.tensor(math.log(100.0))))  # CLIP's scale: ln 100


def _dassl_trainer(custom_clip, trainer_class, cfg, part: str, learner):
    """The peer's ``CustomCLIP`` (image encoder the identity) holding ``learner`` as ``part``, and
    its trainer with Dassl's optimizer and scheduler for that part, as its ``build_model`` makes
    them (only ``part`` trains)."""
    from dassl.engine import TrainerBase
    from dassl.optim import build_lr_scheduler, build_optimizer

    model = object.__new__(custom_clip)
    torch.nn.Module.__init__(model)
    model.image_encoder, model.logit_scale, model.dtype = torch.nn.Identity(), _CLIP.logit_scale, torch.float32
    setattr(model, part, learner)
    for name, param in model.named_parameters():
        param.requires_grad_(part in name)
    model = model.float()
    trainer = object.__new__(trainer_class)
    TrainerBase.__init__(trainer)
    trainer.cfg, trainer.device, trainer.model = cfg, torch.device("cpu"), model
    trainer.optim = build_optimizer(getattr(model, part), cfg.OPTIM)
    trainer.sched = build_lr_scheduler(trainer.optim, cfg.OPTIM)
    trainer.register_model(part, getattr(model, part), trainer.optim, trainer.sched)
    trainer.start_epoch, trainer.max_epoch = 0, cfg.OPTIM.MAX_EPOCH
    return model, trainer


def _dassl_epochs(trainer, images: torch.Tensor, labels: torch.Tensor) -> None:
    """Dassl's ``TrainerX.run_epoch`` for every epoch over a torch ``DataLoader`` of the shots'
    features (one view each), with Dassl's ``RandomSampler`` and ``drop_last`` rule."""
    size = trainer.cfg.DATALOADER.TRAIN_X.BATCH_SIZE
    shots = [{"img": x, "label": y} for x, y in zip(images, labels)]
    trainer.train_loader_x = torch.utils.data.DataLoader(shots, batch_size=size, sampler=torch.utils.data.RandomSampler(shots),
                                                         drop_last=len(shots) >= size)
    for trainer.epoch in range(trainer.start_epoch, trainer.max_epoch):
        trainer.run_epoch()


def clip_adapter(code: Path, data: parity.ParitySet, k: int, seed: int) -> dict:
    """gaopengcuhk/CLIP-Adapter ``clip_adapter.py``: its ``CustomCLIP`` (ratio 0.2) holding its
    ``Adapter`` (reduction 4; their ``Adapter(1024, 4)`` is CLIP RN50's width: here the features'
    width), trained by its ``CLIP_Adapter`` trainer with the CoOp configs its README points to
    (KaiyangZhou/CoOp in ``--deps``: ``configs/trainers/CoOp/rn50_ep50`` at 1 shot, ``rn50_ep100``
    at 2-4, ``rn50`` at 8-16, as CoOp's COOP.md assigns them; CoOp's ``train.py`` builds the config),
    on Dassl. Its ``build_model`` is done here with its classes (image encoder the identity, its text
    encoder returning the class prompts' features), then Dassl's ``run_epoch`` for every epoch
    (``_dassl_epochs``); the accuracy is the last epoch's model on the test features."""
    coop = next(Path(d) for d in sys.path if (Path(d) / "configs" / "trainers" / "CoOp").is_dir())
    config = "rn50_ep50" if k == 1 else "rn50_ep100" if k <= 4 else "rn50"
    peer, cfg = _dassl_peer(code, "clip_adapter", f"CoOp/{config}.yaml", [], seed, configs=coop)
    images, labels = data.shots(k, seed)
    test, test_labels = data.split("test")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        model, trainer = _dassl_trainer(peer.CustomCLIP, peer.CLIP_Adapter, cfg, "adapter", peer.Adapter(images.shape[1], 4))
        model.text_encoder = lambda: data.class_text
        _dassl_epochs(trainer, images, labels)
        with torch.no_grad():
            acc = float((model(test).argmax(-1) == test_labels).float().mean())
    return {"accuracy": acc, "chosen": {"epoch": trainer.max_epoch}}


def clap(code: Path, data: parity.ParitySet, k: int, seed: int, constraint: str = "l2") -> dict:
    """jusiro/CLAP ``trainers/adapters.py``: its ``ADAPTER`` trainer with ``INIT`` ZS and ``CONSTRAINT``
    ``constraint`` (l2: CLAP; none: ZS-LP) and its one trainer config (``SGD_lr1e-1_B256_ep300``),
    on Dassl (``--deps``). What its ``build_model`` and ``train`` do is done here in their order with
    their own classes and functions: ``AdapterMethod`` on the class prompts, Dassl's optimizer and
    scheduler, the zero-shot logits of the shots from ``CustomCLIP.forward`` (its image encoder the
    identity), ``init_lagrangian_multipliers``, then ``TrainerXCostume.run_epoch`` for every epoch
    (one view per shot: ``epochs_aumentation`` 1). Its Dassl ``after_epoch`` (checkpoints, a test
    pass over images) is not run; the accuracy is ``run_epoch``'s own test accuracy after the last
    step. CLIP's ``logit_scale`` is ``ln 100``. Adjustment: ``_dassl_schedulers``."""
    adapters, cfg = _dassl_peer(code, "trainers.adapters", "SGD_lr1e-1_B256_ep300.yaml",
                                ["TRAINER.ADAPTER.INIT", "ZS", "TRAINER.ADAPTER.CONSTRAINT", constraint], seed)
    images, labels = data.shots(k, seed)
    test, test_labels = data.split("test")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        model, trainer = _dassl_trainer(adapters.CustomCLIP, adapters.ADAPTER, cfg, "adapter",
                                        adapters.AdapterMethod(cfg, _CLIP, data.class_text.clone()))
        trainer.train_loader_x = _Batches(len(labels), cfg.DATALOADER.TRAIN_X.BATCH_SIZE)
        trainer.labels_test, trainer.features_test = test_labels, test
        with torch.no_grad():
            trainer.logits_zs, trainer.features_train = model(images, return_features=True)
        trainer.labels_train = labels
        if model.adapter.apply_constraint != "none":
            model.adapter.device = trainer.device
            model.adapter.init_lagrangian_multipliers(trainer.labels_train, trainer.logits_zs)
        for trainer.epoch in range(trainer.start_epoch, trainer.max_epoch):
            summary = trainer.run_epoch()
    return {"accuracy": summary["acc_test"] / 100, "chosen": {"epoch": trainer.max_epoch}}


def ape(code: Path, data: parity.ParitySet, k: int, seed: int) -> dict:
    """yangyangyang127/APE ``main.APE`` (training-free APE) with its Caltech101 config (search
    [7, 7, 1] x [200, 20, 20], w [0.5, 0.5]) and the kit's Q for the parity set's dimensions
    (``methods.ape.kept_dimensions``: their 800 of 1,024 is 300 of 384). Its cache is what its
    ``load_few_shot_feature`` would load: keys (D, N*K) class by class (its ``cal_criterion``
    reshapes them so), one-hot values; one view per shot. ``cal_criterion`` reads and writes
    ``caches/<dataset>/`` under the working directory, so each call runs in a fresh temporary
    folder. The accuracy is its last ``cls_acc`` (APE on test); the choice is its last printed
    best setting (two decimals)."""
    from siglip_adapter.methods.ape import kept_dimensions

    peer = _import_peer(code, "main", ["torchvision", "torchvision.transforms", "datasets", "datasets.imagenet", "datasets.utils", "clip",
                                       "cv2"])
    images, labels = data.shots(k, seed)
    order = torch.argsort(labels, stable=True)
    images, labels = images[order], labels[order]
    (val, val_labels), (test, test_labels) = data.split("val"), data.split("test")
    config = {"search_scale": [7, 7, 1], "search_step": [200, 20, 20], "init_beta": 1, "init_alpha": 1, "init_gamma": 0.1,
              "w_training_free": [0.5, 0.5], "backbone": "RN50"}
    q = kept_dimensions({"feat_num": 800, "feat_dims": 1024}, images.shape[1])
    cfg = {**config, "dataset": data.dataset, "shots": k, "training_free_feat_num": q}
    returned = []
    _recording(peer, "cls_acc", returned)
    out = io.StringIO()
    with tempfile.TemporaryDirectory() as tmp, _inside(tmp):
        Path("caches", data.dataset).mkdir(parents=True)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            peer.APE(cfg, images.T.contiguous(), torch.nn.functional.one_hot(labels).float(), val, val_labels, test, test_labels,
                     data.class_text.T.contiguous())
    alpha, beta, gamma = _last(r"New best setting, alpha: (\S+), beta: (\S+), gamma: (\S+);", out.getvalue())
    return {"accuracy": returned[-1] / 100, "chosen": {"beta": float(beta), "alpha": float(alpha), "gamma": float(gamma), "feat_num": q}}


def taskres(code: Path, data: parity.ParitySet, k: int, seed: int, scale: float = 0.5) -> dict:
    """geekyutao/TaskRes ``trainers/taskres.py``: its ``TaskRes`` trainer as ``train_regular.sh``
    runs it (``adam_lr2e-3_B256_ep100`` up to 4 shots, ``ep200`` from 8, ``RESIDUAL_SCALE`` 0.5),
    on Dassl (``--deps``). What its ``build_model`` does is done here with its own classes
    (``TaskResLearner`` on the class prompts, ``CustomCLIP`` with the identity as image encoder,
    Dassl's optimizer and scheduler); then Dassl's ``TrainerX.run_epoch`` for every epoch over a
    torch ``DataLoader`` of the shots' features (one view each; Dassl's ``RandomSampler`` and
    ``drop_last`` rule), seeded as Dassl seeds it. The accuracy is its final model's on the test
    features (Dassl's ``after_train`` tests the last epoch). Adjustment: ``_dassl_schedulers``."""
    config = "adam_lr2e-3_B256_ep100" if k <= 4 else "adam_lr2e-3_B256_ep200"
    peer, cfg = _dassl_peer(code, "trainers.taskres", f"TaskRes/{config}.yaml", ["TRAINER.TaskRes.RESIDUAL_SCALE", scale], seed,
                            script_args={"enhanced_base": "none"})
    images, labels = data.shots(k, seed)
    test, test_labels = data.split("test")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        model, trainer = _dassl_trainer(peer.CustomCLIP, peer.TaskRes, cfg, "prompt_learner",
                                        peer.TaskResLearner(cfg, None, _CLIP, data.class_text.clone()))
        _dassl_epochs(trainer, images, labels)
        with torch.no_grad():
            acc = float((model(test).argmax(-1) == test_labels).float().mean())
    return {"accuracy": acc, "chosen": {"epoch": trainer.max_epoch}}


@functools.lru_cache(maxsize=None)
def _coop_tower(dim: int):
    """(the kit's ``ClipEncoder`` over ``parity.coop_encoder``'s tiny CLIP, in a temporary folder)."""
    return parity.coop_encoder(Path(tempfile.mkdtemp()) / "clip", dim)


def _openai_text_clip(encoder, clip_model_module):
    """The tiny CLIP's text tower as OpenAI CLIP's model holds it (``clip.model.Transformer`` of the
    peer's checkout, its ``token_embedding``, ``positional_embedding``, ``ln_final``,
    ``text_projection``, ``logit_scale`` at ln 100), with the transformers weights converted, and a
    tokenize with the encoder's tokenizer (``coop`` sets the module's ``_tokenizer``, which counts
    the class names' tokens, to it too). OpenAI's tokenizer pads with 0 and its end-of-text id is
    the vocabulary's highest (the peer pools at ``argmax``): the tiny vocabulary's end-of-text id and
    its highest are swapped, in the ids and in the token table's rows."""
    from torch import nn

    hf = encoder.model.text_model
    width, n_layers = hf.config.hidden_size, hf.config.num_hidden_layers
    vocab = hf.config.vocab_size
    swap = torch.arange(vocab)
    eot = encoder.tokenizer.eos_token_id
    swap[[eot, vocab - 1]] = swap[[vocab - 1, eot]]
    length = hf.embeddings.position_embedding.weight.shape[0]
    mask = clip_model_module.CLIP.build_attention_mask(types.SimpleNamespace(context_length=length))
    transformer = clip_model_module.Transformer(width, n_layers, hf.config.num_attention_heads, mask)
    state = {}
    for i, layer in enumerate(hf.encoder.layers):
        a, to = layer.self_attn, f"resblocks.{i}."
        state[to + "attn.in_proj_weight"] = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight])
        state[to + "attn.in_proj_bias"] = torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias])
        for ours, theirs in (("self_attn.out_proj", "attn.out_proj"), ("layer_norm1", "ln_1"), ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj"),
                             ("layer_norm2", "ln_2")):
            for p in ("weight", "bias"):
                state[f"{to}{theirs}.{p}"] = layer.get_submodule(ours).get_parameter(p)
    transformer.load_state_dict({k: v.detach().clone() for k, v in state.items()})
    ln_final = clip_model_module.LayerNorm(width)
    ln_final.load_state_dict(hf.final_layer_norm.state_dict())
    token_embedding = nn.Embedding(vocab, width)
    token_embedding.weight.data.copy_(hf.embeddings.token_embedding.weight.detach()[swap])
    clip_model = types.SimpleNamespace(
        transformer=transformer, ln_final=ln_final, token_embedding=token_embedding, dtype=torch.float32,
        positional_embedding=nn.Parameter(hf.embeddings.position_embedding.weight.detach().clone()),
        text_projection=nn.Parameter(encoder.model.text_projection.weight.detach().T.clone()),
        logit_scale=_CLIP.logit_scale, visual=types.SimpleNamespace(input_resolution=224))

    def tokenize(texts, context_length: int = length, truncate: bool = False):
        texts = [texts] if isinstance(texts, str) else texts
        out = torch.zeros(len(texts), context_length, dtype=torch.long)
        for row, text in zip(out, texts):
            ids = swap[torch.tensor(encoder.tokenizer(text)["input_ids"])]
            row[: len(ids)] = ids
        return out

    return clip_model, tokenize


def coop(code: Path, data: parity.ParitySet, k: int, seed: int) -> dict:
    """KaiyangZhou/CoOp ``trainers/coop.py`` as ``scripts/coop/main.sh`` runs it (``N_CTX`` 16,
    ``CSC`` False, ``CLASS_TOKEN_POSITION`` end; ``rn50_ep50`` at 1 shot, ``rn50_ep100`` at 2 and 4,
    ``rn50`` from 8, COOP.md's assignment), on Dassl (``--deps``): its ``PromptLearner`` (the random
    context drawn after Dassl's seeding), ``TextEncoder`` and ``CustomCLIP`` over
    ``_openai_text_clip`` (the tiny CLIP text tower of ``parity.coop_encoder``, which the kit's CoOp
    runs on in the test), the identity as image encoder, Dassl's optimizer and scheduler for the
    prompt learner; then ``TrainerX.run_epoch`` for every epoch (``_dassl_epochs``). ``PREC`` fp32 (on
    the CPU; their default fp16 needs a GPU). The class names are the kit's, cleaned as every prompt
    of the kit cleans them (``prompts.clean_classname``: "T-shirt/top" -> "T-shirt or top"; their
    datasets' own lists are cleaned by hand). The accuracy is the last epoch's on the test features."""
    tower = _coop_tower(data.class_text.shape[1])  # first: transformers is imported before the stand-ins (torchvision) exist
    config = "rn50_ep50" if k == 1 else "rn50_ep100" if k <= 4 else "rn50"
    options = ["TRAINER.COOP.N_CTX", 16, "TRAINER.COOP.CSC", False, "TRAINER.COOP.CLASS_TOKEN_POSITION", "end", "TRAINER.COOP.PREC", "fp32"]
    peer, cfg = _dassl_peer(code, "trainers.coop", f"CoOp/{config}.yaml", options, seed)
    from dassl.utils import set_random_seed

    clip_model, peer.clip.tokenize = _openai_text_clip(tower, importlib.import_module("clip.model"))
    peer._tokenizer = types.SimpleNamespace(encode=lambda text: tower.tokenizer(text, add_special_tokens=False)["input_ids"])  # name lengths
    images, labels = data.shots(k, seed)
    test, test_labels = data.split("test")
    set_random_seed(seed)  # as Dassl seeds it before building the model (the tower above drew from the RNG)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        learner = peer.PromptLearner(cfg, [clean_classname(c) for c in parity.classnames_of(data.dataset)], clip_model)
        model, trainer = _dassl_trainer(peer.CustomCLIP, peer.CoOp, cfg, "prompt_learner", learner)
        model.tokenized_prompts = learner.tokenized_prompts
        model.text_encoder = peer.TextEncoder(clip_model).requires_grad_(False)
        _dassl_epochs(trainer, images, labels)
        with torch.no_grad():
            acc = float((model(test).argmax(-1) == test_labels).float().mean())
    return {"accuracy": acc, "chosen": {"epoch": trainer.max_epoch}}


def ape_t(code: Path, data: parity.ParitySet, k: int, seed: int) -> dict:
    """yangyangyang127/APE ``main.APE_T`` (APE-T, with ``utils.APE_Training``) with its Caltech101
    config (training_feat_num 900, w_training [0.2, 0.8], lr and eps 1e-3, 30 epochs) and the
    kit's share of the parity set's dimensions (``methods.ape.kept_dimensions``: 338 of 384). As
    its ``main`` would run it after ``APE``: the criterion file APE's run saves (prompts and shots:
    ``cal_criterion(..., only_use_txt=False)``, their own function, with APE's weights) is written
    first, in a fresh temporary folder; its train loader is a shuffling torch ``DataLoader`` of the
    shots' features (one view), seeded with the seed. The accuracy is its last ``cls_acc`` (APE-T
    on test); the choice: its printed best epoch (1-based here) and best setting (two decimals).

    It does not run as written, so the adjustments, each named: the config key it reads and no
    config has (``feat_num``: the trained count); ``APE_Training``'s dimensions taken at the
    trained count (its ``cal_criterion`` call reads the training-free one, which must equal the
    residual's width); ``.half()`` the identity (a float32 run, the kit's precision; their GPU's
    is float16); and ``torch.save``/``torch.load`` of the best epoch's adapter (a whole module)
    kept in memory (no pickle is read from disk; the criterion, a tensor, is written and read)."""
    from siglip_adapter.methods.ape import kept_dimensions

    peer = _import_peer(code, "main", ["torchvision", "torchvision.transforms", "datasets", "datasets.imagenet", "datasets.utils", "clip",
                                       "cv2"])
    utils = sys.modules["utils"]
    images, labels = data.shots(k, seed)
    order = torch.argsort(labels, stable=True)
    images, labels = images[order], labels[order]
    (val, val_labels), (test, test_labels) = data.split("val"), data.split("test")
    q_free, q = (kept_dimensions({"feat_num": n, "feat_dims": 1024}, images.shape[1]) for n in (800, 900))
    cfg = {"search_scale": [7, 7, 1], "search_step": [200, 20, 20], "init_beta": 1, "init_alpha": 1, "eps": 0.001, "lr": 0.001,
           "train_epoch": 30, "w_training_free": [0.5, 0.5], "w_training": [0.2, 0.8], "backbone": "RN50", "dataset": data.dataset,
           "shots": k, "training_free_feat_num": q_free, "training_feat_num": q}
    keys, values, text = images.T.contiguous(), torch.nn.functional.one_hot(labels).float(), data.class_text.T.contiguous()
    returned, kept = [], {}
    _recording(peer, "cls_acc", returned)
    saved = (torch.Tensor.half, torch.save, torch.load)
    torch.Tensor.half = lambda self, *a, **kw: self
    torch.save = lambda obj, path, *a, **kw: (kept.__setitem__(str(path), copy.deepcopy(obj)) if isinstance(obj, torch.nn.Module)
                                              else saved[1](obj, path, *a, **kw))  # the criterion (a tensor) as they write it
    torch.load = lambda path, *a, **kw: kept[str(path)] if str(path) in kept else saved[2](path, *a, **kw)
    out = io.StringIO()
    try:
        with tempfile.TemporaryDirectory() as tmp, _inside(tmp):
            Path("caches", data.dataset).mkdir(parents=True)
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                utils.cal_criterion({**cfg, "w": cfg["w_training_free"]}, text, images, only_use_txt=False)  # APE's run: keys (N*K, D)
                run = {**cfg, "cache_dir": str(Path("caches", data.dataset)), "feat_num": q, "training_free_feat_num": q}
                loader = torch.utils.data.DataLoader(list(zip(images, labels)), batch_size=256, shuffle=True)
                torch.manual_seed(seed)
                peer.APE_T(run, keys, values, val, val_labels, test, test_labels, text, _Identity(), loader)
    finally:
        torch.Tensor.half, torch.save, torch.load = saved
    epoch = _last(r"best test accuracy: \S+, at epoch: (\d+)", out.getvalue())[0]
    alpha, beta = _last(r"New best setting, alpha: (\S+), beta: (\S+);", out.getvalue())
    return {"accuracy": returned[-1] / 100, "chosen": {"beta": float(beta), "alpha": float(alpha), "epoch": int(epoch) + 1, "feat_num": q}}


def tip_adapter_f(code: Path, data: parity.ParitySet, k: int, seed: int) -> dict:
    """gaopengcuhk/Tip-Adapter ``utils.build_cache_model`` then ``main.run_tip_adapter_F``, with its
    ImageNet and Pets config (lr 1e-3, 20 epochs, init_beta 1, init_alpha 1.17, search [7, 3] x
    [200, 20]), one view per shot, a shuffling torch ``DataLoader`` of the shots' features as its
    train loader, seeded with the seed. It picks the epoch on the split it is given as test; the
    kit picks on validation, so it is given the validation split there, and the test accuracy is
    scored here from what it chose, with its own formula (its last lines): the best epoch's keys
    it saved and the (beta, alpha) its ``search_hp`` returned. Adjustments: the keys are float32
    (its fp16 cache is cast, as for ``tip_adapter``), and its ``torch.save``/``torch.load`` of the
    best keys (a ``Parameter``) is kept in memory (no pickle is read from disk)."""
    peer = _import_peer(code, "main", ["torchvision", "torchvision.transforms", "datasets", "datasets.utils", "clip"])
    images, labels = data.shots(k, seed)
    (val, val_labels), (test, test_labels) = data.split("val"), data.split("test")
    text = data.class_text.T.contiguous()
    searched, kept = [], {}
    _recording(peer, "search_hp", searched)
    saved = (torch.save, torch.load)
    torch.save = lambda obj, path, *a, **kw: kept.__setitem__(str(path), obj.detach().clone())
    torch.load = lambda path, *a, **kw: torch.nn.Parameter(kept[str(path)].clone())
    out = io.StringIO()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            cfg = {"load_cache": False, "augment_epoch": 1, "cache_dir": tmp, "shots": k, "search_hp": True, "search_scale": [7, 3],
                   "search_step": [200, 20], "init_beta": 1, "init_alpha": 1.17, "lr": 0.001, "train_epoch": 20}
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
                keys, values = peer.build_cache_model(cfg, _Identity(), [(images, labels)])
                loader = torch.utils.data.DataLoader(list(zip(images, labels)), batch_size=256, shuffle=True)
                torch.manual_seed(seed)
                peer.run_tip_adapter_F(cfg, keys, values.float(), val, val_labels, val, val_labels, text, _Identity(), loader)
    finally:
        torch.save, torch.load = saved
    (best_keys,) = (v for path, v in kept.items() if "best_F_" in path)
    beta, alpha = searched[0]
    logits = 100.0 * test @ text + ((-1) * (beta - beta * (test @ best_keys.t()))).exp() @ values.float() * alpha
    epoch = _last(r"at epoch: (\d+)", out.getvalue())[0]
    return {"accuracy": peer.cls_acc(logits, test_labels) / 100, "chosen": {"beta": float(beta), "alpha": float(alpha), "epoch": int(epoch) + 1}}


def linear_probe(code: Path, data: parity.ParitySet, k: int, seed: int, steps: int = 8, val_per_class: int = 4) -> dict:
    """KaiyangZhou/CoOp ``lpclip/linear_probe.py`` as its ``linear_probe.sh`` runs it (8 steps), as a
    script: it reads ``<feature_dir>/<dataset>/{train,val,test}.npz`` and draws, for 1, 2, 4, 8 and
    16 shots in turn, K training and min(K, 4) validation features per class from them. Here
    train.npz holds exactly the cell's K shots and val.npz exactly the parity set's min(K, 4)-per-
    class validation sample (``ParitySet.val_sample``), so its draw at our K takes them all (in its
    own order: the file is laid out so that its order is the kit's); ``--num_run 1``. Its loop goes on to larger K, which a file of K per class cannot
    give: it stops there with NumPy's error, after writing our K's lines. Test accuracy and C are
    read from its ``report/*_details.txt``: the last step's line (the model it reports)."""
    import numpy as np

    images, labels = data.shots(k, seed)  # grouped by class in label order (data.sample_shots)
    (val, val_labels), (test, test_labels) = data.split("val"), data.split("test")
    idx = data.val_sample(k, seed, val_per_class)
    # Its draw permutes each class's rows (np.random.seed(1), then one choice per class in label order); lbfgs's
    # stopping point at a large C depends on the rows' order, so the file holds each class's shots where that
    # draw will take them back in the kit's order.
    rows = np.empty(len(labels), dtype=np.int64)
    np.random.seed(1)
    for label in np.unique(labels.numpy()):
        at = np.flatnonzero(labels.numpy() == label)
        rows[np.random.choice(at, size=len(at), replace=False)] = at
    arrays = {"train": (images[rows], labels[rows]), "val": (val[idx], val_labels[idx]), "test": (test, test_labels)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "feat" / data.dataset
        folder.mkdir(parents=True)
        for name, (x, y) in arrays.items():
            np.savez(folder / f"{name}.npz", feature_list=x.double().numpy(), label_list=y.numpy())  # float64, as its feat_extractor.py saves lists
        run = subprocess.run([sys.executable, str(code / "lpclip" / "linear_probe.py"), "--dataset", data.dataset, "--feature_dir", "feat",
                              "--num_step", str(steps), "--num_run", "1"], cwd=tmp, capture_output=True, text=True)
        details = Path(tmp) / "report" / f"feat_s{steps}r1_details.txt"
        text = details.read_text() if details.exists() else ""
    lines = re.findall(rf"^{re.escape(data.dataset)}, seed 1, {k} shot, weight (\S+), test_acc (\S+)$", text, flags=re.M)
    if len(lines) != steps:
        raise RuntimeError(f"linear_probe.py wrote {len(lines)} of {steps} lines for {k} shots; its output:\n{(run.stdout + run.stderr)[-2000:]}")
    c, acc = lines[-1]
    return {"accuracy": float(acc) / 100, "chosen": {"C": float(c)}}


PEERS = {
    "gda": (gda, "mrflogs/ICLR24", "main_few_shots.run", {"augment_epoch": 1, "alpha": [0.0001, 0.001, 0.01, 0.1, 1.0, 10.0, 100.0]}),
    "tip_adapter": (tip_adapter, "gaopengcuhk/Tip-Adapter", "utils.build_cache_model, main.run_tip_adapter (utils.search_hp)",
                    {"augment_epoch": 1, "search_scale": [7, 3], "search_step": [200, 20]}),
    "tip_adapter_f": (tip_adapter_f, "gaopengcuhk/Tip-Adapter", "utils.build_cache_model, main.run_tip_adapter_F (utils.search_hp)",
                      {"augment_epoch": 1, "config": "imagenet / oxford_pets (lr 0.001, train_epoch 20, init_beta 1, init_alpha 1.17, "
                       "search_scale [7, 3], search_step [200, 20])", "epoch chosen on": "the validation split (given in test's place)"}),
    "proker": (proker, "omarnust/BReg-Adapter", "trainers.proker.ProKeR (training-free ProKeR), utils.cls_acc",
               {"augment_epoch": 1, "hp_selection": "tip-adapter", "beta": [0.5, 3, 20], "lmbda": [0.001, 1, 10]}),
    "lp_pp": (lp_pp, "FereshteShakeri/FewShot-CLIP-Strong-Baseline", "methods.linear_probe_p2.LinearProbe_P2.forward",
              {"augment_epoch": 1, "train_epoch": 300, "validation": "the parity set's validation split",
               "precision": "float32 (their get_one_hot's float16 one-hot cast to float32); fp16: every tensor in float16, as on their GPU"}),
    "clap": (clap, "jusiro/CLAP", "trainers.adapters: AdapterMethod, CustomCLIP, ADAPTER (TrainerXCostume.run_epoch), on Dassl",
             {"INIT": "ZS", "CONSTRAINT": "l2", "config": "SGD_lr1e-1_B256_ep300", "epochs_aumentation": 1}),
    "zs_lp": (functools.partial(clap, constraint="none"), "jusiro/CLAP", "the same as clap, CONSTRAINT none",
              {"INIT": "ZS", "CONSTRAINT": "none", "config": "SGD_lr1e-1_B256_ep300", "epochs_aumentation": 1}),
    "ape": (ape, "yangyangyang127/APE", "main.APE (utils.cal_criterion, utils.cls_acc)",
            {"config": "caltech101 (search_scale [7, 7, 1], search_step [200, 20, 20], w_training_free [0.5, 0.5])",
             "training_free_feat_num": "the kit's rule: round(D x 800 / 1024) = 300 for D = 384", "augment_epoch": 1}),
    "taskres": (taskres, "geekyutao/TaskRes", "trainers.taskres: TaskResLearner, CustomCLIP, TaskRes (Dassl TrainerX.run_epoch)",
                {"config": "adam_lr2e-3_B256_ep100 (K <= 4), adam_lr2e-3_B256_ep200 (K >= 8)", "RESIDUAL_SCALE": 0.5, "views": 1}),
    "ape_t": (ape_t, "yangyangyang127/APE", "main.APE_T (utils.APE_Training, utils.cal_criterion, utils.cls_acc)",
              {"config": "caltech101 (training_feat_num 900, w_training [0.2, 0.8], lr 0.001, eps 0.001, train_epoch 30)",
               "training_feat_num": "the kit's rule: round(D x 900 / 1024) = 338 for D = 384", "augment_epoch": 1,
               "adjustments": "feat_num set; APE_Training's dimensions at the trained count; .half() the identity (float32); "
                              "the best epoch's adapter kept in memory"}),
    "clip_adapter": (clip_adapter, "gaopengcuhk/CLIP-Adapter", "clip_adapter.py: Adapter, CustomCLIP, CLIP_Adapter (Dassl TrainerX.run_epoch)",
                     {"config": "KaiyangZhou/CoOp configs/trainers/CoOp: rn50_ep50 (K = 1), rn50_ep100 (K = 2, 4), rn50 (K = 8, 16)",
                      "ratio": 0.2, "reduction": 4, "views": 1}),
    "coop": (coop, "KaiyangZhou/CoOp", "trainers.coop: PromptLearner, TextEncoder, CustomCLIP, CoOp (Dassl TrainerX.run_epoch)",
             {"config": "configs/trainers/CoOp: rn50_ep50 (K = 1), rn50_ep100 (K = 2, 4), rn50 (K = 8, 16)", "N_CTX": 16, "CSC": False,
              "CLASS_TOKEN_POSITION": "end", "PREC": "fp32", "views": 1,
              "text_tower": {"builder": "kit_tools.parity.coop_encoder", "seed": 0, **parity.COOP_TOWER}}),
    "linear_probe": (linear_probe, "KaiyangZhou/CoOp", "lpclip/linear_probe.py (as linear_probe.sh: --num_step 8), one run per cell",
                     {"num_step": 8, "search_list": [1e6, 1e4, 1e2, 1, 1e-2, 1e-4, 1e-6], "val_per_class": 4,
                      "validation": "min(K, 4) per class of the parity set's validation split (ParitySet.val_sample)"}),
}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("method", choices=sorted(PEERS))
    ap.add_argument("--code", type=Path, required=True, help="a checkout of the peer's repository (git clone)")
    ap.add_argument("--datasets", nargs="+", default=["digits", "fashion_mnist"])
    ap.add_argument("--out", type=Path, default=parity.FOLDER)
    ap.add_argument("--deps", type=Path, nargs="*", default=[], help="folders the peer's code imports from (CLAP: a Dassl.pytorch checkout, yacs)")
    args = ap.parse_args(argv)
    sys.path[:0] = [str(d) for d in args.deps]
    run, repo, function, settings = PEERS[args.method]
    record = {"method": args.method, "repository": repo, "commit": _commit(args.code), "function": function, "settings": settings,
              "device": "cpu", "threads": torch.get_num_threads(), "features": {}, "cells": []}
    if args.deps:
        record["dependencies"] = {str(d.name): _commit(d) if (d / ".git").exists() else "not a git checkout" for d in args.deps}
    for dataset in args.datasets:
        data = parity.load(dataset)
        record["features"][dataset] = data.fingerprint()
        if "text_tower" in settings:  # trained through the text tower: the prompts' class names are inputs too
            record.setdefault("classnames", {})[dataset] = parity.classnames_of(dataset)
        for k, seed in data.cells():
            cell = run(args.code, data, k, seed)
            record["cells"].append({"dataset": dataset, "shots": k, "seed": seed, **cell})
            print(f"{args.method} {dataset} K={k} seed={seed}: {cell['accuracy']:.4f} {cell['chosen']}", flush=True)
    out = args.out / f"{args.method}.json"
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(out)


if __name__ == "__main__":
    main()
