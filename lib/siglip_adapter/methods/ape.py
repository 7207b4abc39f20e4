"""APE (Zhu et al., ICCV 2023, "Not All Features Matter: Enhancing Few-shot CLIP with Adaptive Prior
Refinement"), training-free: a Tip-Adapter cache on the Q feature dimensions that best separate
the classes, its values re-weighted by how much zero-shot disagrees with each shot's label.

``ape`` follows the authors' ``APE`` (yangyangyang127/APE, ``main.py``, with ``utils.cal_criterion``):

- the criterion per dimension, ``-w0 sim + w1 var``: ``sim`` the mean product over every pair of a
  class's and another class's features (its prompt and its shots), ``var`` the variance of the
  class prompts across classes; the top Q dimensions are kept and prompts, shots and queries are
  renormalised on them;
- each shot's value is its one-hot label times ``exp(gamma KL)``, KL (log 2) between its label
  and the softmax of its *unscaled* cosines to the prompts on the Q dimensions;
- logits ``zero-shot + alpha exp(-beta (1 - f' F'^T)) V``, alpha against zero-shot of
  ``100 x cosine`` on all dimensions (``methods.loop.peer_unit``);
- (beta, alpha, gamma) searched as theirs: ``search_step`` values of each, beta and alpha from 0.1
  up to (not including) ``search_scale``, gamma from 0; beta outer, gamma inner, the first best
  kept: 200 x 20 x 20 = 80,000 candidates.

Q: their configs give a count for CLIP RN50's 1,024 dimensions (400-800); the kit keeps the same
share of the backbone's dimensions, ``Q = round(D x feat_num / feat_dims)`` (the offline encoder's
384: 300 for their 800), which is their own count on a 1,024-dimension backbone. The defaults are
their Caltech101 config; a dataset file may set its own.

Where the authors differ and the kit does not follow: their keys average 10 augmented views, their
prompts are CuPL's, and their ImageNet is scored on its validation split after searching on it.
The search is batched (every gamma and a block of alphas in one product); ``tests/test_parity.py``
checks ``ape`` against the authors' own ``APE`` on recorded features.

``ape_t`` is their trained APE-T (``main.APE_T`` with ``utils.APE_Training``): a learned weight
per shot's value and a learned residual per class on the top ``training_feat_num`` dimensions
(their criterion with ``w_training``), added to both the prompts and the shots' keys, on all the
dimensions (no renormalisation); AdamW (``lr``, eps ``eps``, weight decay 0.1), a cosine over every
step, batches of 256 shuffled shots, cross-entropy on ``100 f W' + init_alpha exp(-init_beta
(1 - f K'^T)) V'``; the epoch with the best validation accuracy at those initial values is kept
(the first best), then (beta, alpha) are searched on validation over APE's first two grids. At
the authors' commit APE-T does not run as written: its call is commented out of ``main``, it reads
a config key no config has (``feat_num``: the trained count), and ``APE_Training`` takes its
dimensions from the training-free count while its residual has the trained count, which differ
on eight of their eleven configs; the kit takes the trained count for both (what the residual's
shape says). As in their ``main`` the criterion is the one APE's run saved (prompts and shots).
Their model runs in float16 on the GPU and each epoch sees fresh augmented views; here float32
and the stored features."""

from __future__ import annotations

import math
from typing import Annotated

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..schema import Count, NonNegative, Positive
from .cache import accuracy_along, first_best
from .loop import NO_VALIDATION, Fitted, Task, peer_unit, zero_shot_of, zero_shot_state
from .registry import MethodParams, method
from .training import shuffled_batches

Triple = Annotated[list[Positive], Field(min_length=3, max_length=3)]


class Params(MethodParams):
    search_scale: Triple  # [beta, alpha, gamma]: each grid's end (not included)
    search_step: Annotated[list[Count], Field(min_length=3, max_length=3)]  # values in each grid
    feat_num: Count  # the authors' Q for a backbone of feat_dims dimensions
    feat_dims: Count  # the dimensions their Q is for (CLIP RN50: 1024)
    w: Annotated[list[NonNegative], Field(min_length=2, max_length=2)]  # the criterion's weights of sim and var
    init: Triple  # [beta, alpha, gamma]: their config's initial values, evaluated before the search; the choice with no validation image


def grids(params: dict) -> tuple[list[float], list[float], list[float]]:
    """The authors' beta, alpha and gamma lists (beta and alpha from 0.1, gamma from 0; ends excluded)."""
    (sb, sa, sg), (nb, na, ng) = params["search_scale"], params["search_step"]
    return ([i * (sb - 0.1) / nb + 0.1 for i in range(nb)], [i * (sa - 0.1) / na + 0.1 for i in range(na)],
            [i * sg / ng for i in range(ng)])


def kept_dimensions(params: dict, dims: int) -> int:
    """Q for a backbone of ``dims`` dimensions: the authors' share, ``round(dims x feat_num / feat_dims)``, at most ``dims``."""
    return min(dims, max(1, round(dims * params["feat_num"] / params["feat_dims"])))


def criterion(class_text: torch.Tensor, shots: torch.Tensor, labels: torch.Tensor, w) -> torch.Tensor:
    """(D,) ``-w0 sim + w1 var``: sim the mean over pairs of different classes' features (each
    class's prompt and shots) of their elementwise product, var the prompts' variance across classes."""
    n = class_text.shape[0]
    sums = class_text + torch.zeros_like(class_text).index_add_(0, labels, shots)  # (N, D): a class's prompt and shots summed
    counts = 1 + torch.bincount(labels, minlength=n).to(shots.dtype)
    pairs = counts.sum() ** 2 - (counts ** 2).sum()
    sim = (sums.sum(0) ** 2 - (sums ** 2).sum(0)) / pairs  # sum over i != j of s_i * s_j
    return -w[0] * sim + w[1] * torch.var(class_text.T, dim=1)


def prepare(task: Task, params: dict) -> dict[str, torch.Tensor]:
    """The refined cache: kept dimensions, renormalised keys and prompts on them, and each shot's KL."""
    s = task.shots
    q = kept_dimensions(params, s.images.shape[1])
    _, idx = torch.topk(criterion(task.class_text, s.images, s.labels, params["w"]), k=q)
    text = F.normalize(task.class_text[:, idx], dim=-1)
    keys = F.normalize(s.images[:, idx], dim=-1)
    values = F.one_hot(s.labels, task.n_classes).float()
    key_logits = (keys @ text.T).softmax(1)
    div = torch.sum(values * torch.log2((values + 1e-6) / (key_logits + 1e-6)), dim=1)[:, None]
    return {**zero_shot_state(task), "dims": idx, "keys": keys, "values": values, "div": div}


def _affinity(state: dict, images: torch.Tensor) -> torch.Tensor:
    return F.normalize(images[:, state["dims"]], dim=-1) @ state["keys"].T


def score(state, chosen, images):
    beta, alpha, gamma = chosen["beta"], chosen["alpha"], chosen["gamma"]
    cache = ((-1) * (beta - beta * _affinity(state, images))).exp() @ (state["values"] * (state["div"] * gamma).exp())
    return zero_shot_of(state, images) + (alpha * peer_unit(state["scale"])) * cache


def search(state: dict, images: torch.Tensor, labels: torch.Tensor, betas, alphas, gammas) -> tuple[tuple[float, float, float], float]:
    """The first (beta, alpha, gamma) in the authors' loop order with the best accuracy on ``images``."""
    zs = zero_shot_of(state, images)
    values = state["values"][None] * (state["div"][None] * torch.tensor(gammas, dtype=zs.dtype)[:, None, None]).exp()  # (G, NK, N)
    acc = grid_accuracies(zs, _affinity(state, images), values, labels, betas, torch.tensor(alphas, dtype=zs.dtype) * peer_unit(state["scale"]))
    b, a, g = first_best(acc)
    return (float(betas[b]), float(alphas[a]), float(gammas[g])), float(acc[b, a, g])


def grid_accuracies(zs, affinity, values, labels, betas, weights) -> torch.Tensor:
    """(B, A, G) accuracies of ``zs + weight exp(-beta (1 - affinity)) values[g]`` at every beta,
    weight and value set (``values`` (G, NK, N)): one cache product per beta for every value set,
    every weight at once along the line the logits follow in it (``accuracy_along``)."""
    g, nk, n = values.shape
    flat = values.permute(1, 0, 2).reshape(nk, g * n)  # every value set side by side: one matrix product per beta
    acc = torch.empty(len(betas), len(weights), g)
    for i, beta in enumerate(betas):
        cache = (((-1) * (beta - beta * affinity)).exp() @ flat).view(-1, g, n).permute(1, 0, 2)  # (G, M, N)
        acc[i] = accuracy_along(zs, cache, labels, weights).T
    return acc


@method("ape", params=Params, score=score, label="APE", kind="training-free", order=67, search="authors' grid (beta x alpha x gamma)")
def fit(task: Task, params: dict) -> Fitted:
    state = prepare(task, params)
    if not task.has_validation:  # support_only: their initial values
        beta, alpha, gamma = params["init"]
        return Fitted("ape", state, {"beta": beta, "alpha": alpha, "gamma": gamma, "feat_num": int(len(state["dims"]))},
                      search=f"{NO_VALIDATION}: the config's initial values", candidates=1)
    betas, alphas, gammas = grids(params)
    (beta, alpha, gamma), val = search(state, task.val.images, task.val.labels, betas, alphas, gammas)
    return Fitted("ape", state, {"beta": beta, "alpha": alpha, "gamma": gamma, "feat_num": int(len(state["dims"]))}, val,
                  candidates=len(betas) * len(alphas) * len(gammas))


class TrainedParams(MethodParams):
    search_scale: Triple  # APE's; the first two grids are searched after training
    search_step: Annotated[list[Count], Field(min_length=3, max_length=3)]
    feat_dims: Count  # the dimensions their counts are for (CLIP RN50: 1024)
    training_feat_num: Count  # APE-T's dimensions for a backbone of feat_dims dimensions (the kit keeps the share)
    w_training: Annotated[list[NonNegative], Field(min_length=2, max_length=2)]
    init_beta: Positive  # the sharpness and cache weight it trains with (and chooses the epoch at)
    init_alpha: Positive
    lr: Positive  # AdamW's, annealed on a cosine over every step
    eps: Positive
    epochs: Count
    batch_size: Count


def by_class(images: torch.Tensor, labels: torch.Tensor):
    """The shots class by class (stable), as the authors' cache holds them."""
    order = torch.argsort(labels, stable=True)
    return images[order], labels[order]


class APETrained(nn.Module):
    """APE-T's learned parts: a weight per shot's value, a residual per class on the kept dimensions."""

    def __init__(self, n_shots: int, n_classes: int, dims: torch.Tensor):
        super().__init__()
        self.register_buffer("dims", dims)
        self.value_weights = nn.Parameter(torch.ones(n_shots, 1))
        self.res = nn.Parameter(torch.zeros(n_classes, len(dims)))

    def forward(self, keys, text_t, values, key_labels):
        """(the keys plus their class's residual, the prompts (D, N) plus theirs, the values times their weights)."""
        new_keys = keys.clone()
        new_keys[:, self.dims] = new_keys[:, self.dims] + self.res[key_labels]
        new_text = text_t.clone()
        new_text[self.dims, :] = text_t[self.dims, :] + self.res.t()
        return new_keys, new_text, values * self.value_weights


def trained_logits(images, keys, text_t, values, beta, alpha):
    """APE-T's logits in the authors' unit: ``100 f W' + alpha exp(-beta (1 - f K'^T)) V'``."""
    return 100.0 * images @ text_t + ((-1) * (beta - beta * (images @ keys.t()))).exp() @ values * alpha


def score_trained(state, chosen, images):
    logits = trained_logits(images, state["keys"], state["text_t"], state["values"], chosen["beta"], chosen["alpha"])
    return peer_unit(state["scale"]) * logits + state["bias"]  # the run's logit form (argmax unchanged)


def _val_accuracy(logits, labels) -> float:
    return float((logits.argmax(-1) == labels).float().mean())


@method("ape_t", params=TrainedParams, score=score_trained, label="APE-T", kind="trained", order=68,
        search="epoch at fixed values, then authors' grid (beta x alpha)")
def fit_trained(task: Task, params: dict) -> Fitted:
    keys, key_labels = by_class(task.shots.images, task.shots.labels)
    val, n = task.val, task.n_classes
    q = kept_dimensions({"feat_num": params["training_feat_num"], "feat_dims": params["feat_dims"]}, keys.shape[1])
    _, dims = torch.topk(criterion(task.class_text, keys, key_labels, params["w_training"]), k=q)  # APE's sim, APE-T's weights
    values, text_t = F.one_hot(key_labels, n).float(), task.class_text.t()
    torch.manual_seed(task.seed)
    adapter = APETrained(len(keys), n, dims)
    size = int(params["batch_size"])
    opt = torch.optim.AdamW(adapter.parameters(), lr=params["lr"], eps=params["eps"], weight_decay=1e-1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, params["epochs"] * math.ceil(len(keys) / size))
    beta0, alpha0 = params["init_beta"], params["init_alpha"]
    top, kept, history = 0.0, (0, (keys, text_t, values)), []
    for epoch in range(params["epochs"]):
        adapter.train()
        for idx in shuffled_batches(len(keys), size):  # their loader's batches
            images, labels = keys[idx], key_labels[idx]
            loss = F.cross_entropy(trained_logits(images, *adapter(keys, text_t, values, key_labels), beta0, alpha0), labels)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        adapter.eval()
        with torch.no_grad():
            now = tuple(t.detach().clone() for t in adapter(keys, text_t, values, key_labels))
        acc = _val_accuracy(trained_logits(val.images, *now, beta0, alpha0), val.labels)
        history.append({"lr": float(params["lr"]), "epoch": epoch + 1, "loss": loss.item(), "val_accuracy": acc})
        if acc > top or not task.has_validation:  # no validation (support_only): the last epoch
            top, kept = acc, (epoch + 1, now)
    epoch, (new_keys, new_text, new_values) = kept
    if not task.has_validation:  # the initial values
        state = {**zero_shot_state(task), "keys": new_keys, "text_t": new_text, "values": new_values}
        return Fitted("ape_t", state, {"beta": float(beta0), "alpha": float(alpha0), "epoch": epoch, "feat_num": q}, history=history,
                      search=f"{NO_VALIDATION}: the last epoch at the config's initial values", candidates=1)
    betas, alphas, _ = grids(params)
    acc = grid_accuracies(100.0 * val.images @ new_text, val.images @ new_keys.t(), new_values[None], val.labels, betas,
                          torch.tensor(alphas, dtype=new_values.dtype))[:, :, 0]  # trained_logits at every (beta, alpha)
    b, a = first_best(acc)  # beta outer
    beta, alpha, val_acc = betas[b], alphas[a], float(acc[b, a])
    state = {**zero_shot_state(task), "keys": new_keys, "text_t": new_text, "values": new_values}
    return Fitted("ape_t", state, {"beta": float(beta), "alpha": float(alpha), "epoch": epoch, "feat_num": q}, val_acc, history,
                  candidates=params["epochs"] + len(betas) * len(alphas))
