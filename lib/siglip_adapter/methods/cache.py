"""The training-free caches of eq. 6 (Tip-Adapter, IDEA, the training-free SigLIP-Adapter): the
equation, its validation search, and the caches' one fit (they differ only in which caption weights
alpha the search may pick).

Names follow the paper: ``alpha`` weighs the caption keys against the image keys, ``theta``
sharpens the affinities, ``beta`` weighs the few-shot term against zero-shot. (Tip-Adapter
calls the sharpness beta and the residual weight alpha; we keep the paper's names.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..schema import Grid, WeightGrid
from .loop import Fitted, Task, zero_shot_logits, zero_shot_state
from .registry import MethodParams


class GridParams(MethodParams):
    """A cache's grid in the run's logit form (IDEA, the wide Tip-Adapter)."""

    theta: Grid  # sharpness
    beta: WeightGrid  # residual weight


def cache_affinity(image_sim: torch.Tensor, caption_sim: torch.Tensor, alpha: float, theta: float) -> torch.Tensor:
    """Eq. 6's affinity, the one place it is written: ``exp(theta (s - 1))`` with
    ``s = (1 - alpha) image_sim + alpha caption_sim`` (the query's cosines to the image keys and to
    the caption keys), elementwise, any shape."""
    return torch.exp(theta * ((1 - alpha) * image_sim + alpha * caption_sim - 1))


def few_shot_logits(images: torch.Tensor, image_keys: torch.Tensor, caption_keys: torch.Tensor, key_labels: torch.Tensor,
                    n_classes: int, alpha: float, theta: float) -> torch.Tensor:
    """The cache term of eq. 6 before beta.

    images (M, D) test features; image_keys (N*K, D) = I_train; caption_keys (N*K, D) = T_train,
    the features of the shots' captions; key_labels (N*K,) class of each shot -> (M, N):
    ``sum over each class's shots of exp(theta (s - 1))``, ``s = (1-alpha) I_train i + alpha T_train i``.
    """
    s = cache_affinity(images @ image_keys.T, images @ caption_keys.T, alpha, theta)
    return s @ F.one_hot(key_labels, n_classes).to(s.dtype)


def adapter_logits(images, image_keys, caption_keys, key_labels, class_text, alpha: float, theta: float, beta: float,
                   scale: float = 1.0, bias: float = 0.0) -> torch.Tensor:
    """Training-free SigLIP-Adapter: ``beta * fewshot + zero-shot`` -> (M, N).

    alpha = 0 is Tip-Adapter's cache; beta = 0 is zero-shot.
    """
    fewshot = few_shot_logits(images, image_keys, caption_keys, key_labels, class_text.shape[0], alpha, theta)
    return beta * fewshot + zero_shot_logits(images, class_text, scale, bias)


@dataclass(frozen=True)
class Choice:
    alpha: float
    theta: float
    beta: float
    val_accuracy: float


GRID_ELEMENTS = 2**25  # at most this many elements (128 MB in float32) per batched tensor of the grid searches


NEAR_END = 1e-3  # a weight this close (relative) to an end of its interval is decided by the logits themselves


def accuracy_along(zs: torch.Tensor, cache: torch.Tensor, labels: torch.Tensor, weights) -> torch.Tensor:
    """(..., W) accuracy of ``argmax(zs + w cache)`` at each weight w, as the logits would give it,
    without forming the logits at every weight.

    zs (M, N), cache (..., M, N), labels (M,). The logits are linear in w, so an image is right on
    one interval of w: ``w (c_y - c_n) >= zs_n - zs_y`` for every other class n bounds w from below
    where ``c_y > c_n`` and from above where ``c_y < c_n``. Each image's interval covers a run of the
    sorted weights, found by binary search, and the runs are counted per weight with a difference
    array: one pass over (..., M, N), none over (..., M, W). Where the interval may not decide as the
    logits' own float arithmetic would (a weight within ``NEAR_END`` of an end, where rounding
    decides, or a class whose cache value equals the label's, where a tie goes to the lower class
    index), those images' logits are computed at those weights exactly as ``zs + w cache`` computes
    them and the count corrected. Equal to the logits' accuracies wherever compared
    (tests/test_adapters.py; every candidate of APE's and Tip-Adapter's grids on the offline runs,
    docs/internals.md); not proven: an end computed from two classes' cache values equal to within
    rounding can be off by more than ``NEAR_END``, and there the logits themselves decide by rounding."""
    weights = torch.as_tensor(weights, dtype=cache.dtype)
    sorted_w, order = torch.sort(weights)
    n_w, (m, n) = len(weights), cache.shape[-2:]
    lead = cache.shape[:-2]
    if m == 0:  # no image (no validation): no accuracy
        return torch.full((*lead, n_w), float("nan"), dtype=cache.dtype)
    y = labels[:, None]
    gap = cache.gather(-1, y.expand(*cache.shape[:-1], 1)) - cache  # (..., M, N): c_y - c_n
    need = zs - zs.gather(-1, y)  # (M, N): zs_n - zs_y
    bound = need / gap
    inf = torch.tensor(float("inf"), dtype=cache.dtype)
    low = torch.where(gap > 0, bound, -inf).amax(-1).reshape(-1, m)  # (L, M): the leading dimensions flattened
    high = torch.where(gap < 0, bound, inf).amin(-1).reshape(-1, m)
    other = torch.arange(n) != y
    flat = ((gap == 0) & other).any(-1).reshape(-1, m)  # a constraint that holds at every weight or none
    first = torch.searchsorted(sorted_w, low.contiguous(), side="left")  # the first weight >= low
    stop = torch.searchsorted(sorted_w, high.contiguous(), side="right")  # the first weight > high
    counts = torch.zeros(low.shape[0], n_w + 1, dtype=torch.int64)
    right = (first < stop).long()
    counts.scatter_add_(1, first, right).scatter_add_(1, stop, -right)
    counts = counts.cumsum(1)[:, :n_w]  # (L, W): images whose interval holds each weight
    # |w - end| <= NEAR_END (|w| + |end|) implies |w - end| <= 2 NEAR_END |end| / (1 - NEAR_END): a band per image
    band = lambda end: torch.where(end.isfinite(), end.abs() * (2 * NEAR_END / (1 - NEAR_END)), -1.0)  # noqa: E731
    rows, imgs = flat.nonzero(as_tuple=True)
    pairs = [_runs(rows, imgs, torch.zeros_like(rows), torch.full_like(rows, n_w))]  # every weight of a flat image
    padded = torch.cat([-inf[None], sorted_w, inf[None]])  # padded[i] is sorted_w[i - 1]
    for end, at in ((low, first), (high, stop)):  # the weights near an end: a run found by binary search, widened, then the band's own test
        b = band(end)
        lo, hi = end - 2 * b, end + 2 * b
        # The weights just below the end's place among them and at or above it (at: the count of
        # weights below low, or at or below high) are the nearest on each side, so a weight lies in
        # [lo, hi] only if one of these two does: the binary searches run on those images only.
        rows, imgs = ((b >= 0) & ((padded[at] >= lo) | (padded[at + 1] <= hi))).nonzero(as_tuple=True)
        near = _runs(rows, imgs, torch.searchsorted(sorted_w, lo[rows, imgs], side="left"),
                     torch.searchsorted(sorted_w, hi[rows, imgs], side="right"))
        keep = (sorted_w[near[2]] - end[near[0], near[1]]).abs() <= b[near[0], near[1]]
        pairs.append(tuple(t[keep] for t in near))
    row, img, at = (torch.cat(t) for t in zip(*pairs))
    if len(row):
        key = torch.unique((row * m + img) * n_w + at)  # each (row, image, weight) once
        row, img, at = key // (m * n_w), key // n_w % m, key % n_w
        w = sorted_w[at]
        exact = (zs[img] + w[:, None] * cache.reshape(-1, m, n)[row, img]).argmax(-1) == labels[img]  # (P,): the logits' own arithmetic
        held = (low[row, img] <= w) & (w <= high[row, img])
        counts.index_put_((row, at), exact.long() - held.long(), accumulate=True)
    out = torch.empty_like(counts)
    out[:, order] = counts
    return (out.to(cache.dtype) / m).reshape(*lead, n_w)


def _runs(rows: torch.Tensor, imgs: torch.Tensor, start: torch.Tensor, stop: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, image, weight index) of every weight index in [start, stop) of each (rows[i], imgs[i]); all 1-D."""
    cnt = (stop - start).clamp_min(0)
    cell = torch.repeat_interleave(torch.arange(len(cnt)), cnt)
    offset = torch.arange(len(cell)) - torch.repeat_interleave(cnt.cumsum(0) - cnt, cnt)
    return rows[cell], imgs[cell], start[cell] + offset


def grid_accuracies(images, labels, image_keys, caption_keys, key_labels, class_text, alphas, thetas, betas,
                    scale: float = 1.0, bias: float = 0.0) -> torch.Tensor:
    """(len(alphas), len(thetas), len(betas)) accuracy of eq. 6 on ``images`` at every grid point:
    the affinities once, then per alpha one batched matrix product over every theta, all betas at
    once along the line the logits follow in beta (``accuracy_along``; bench/hp_search.py measures
    it against one combination at a time)."""
    n = class_text.shape[0]
    zs = zero_shot_logits(images, class_text, scale, bias)
    image_sim, caption_sim = images @ image_keys.T, images @ caption_keys.T
    onehot = F.one_hot(key_labels, n).to(zs.dtype)
    theta_grid = torch.tensor(list(thetas), dtype=zs.dtype)[:, None, None]
    step = max(1, GRID_ELEMENTS // max(1, max(n, len(betas)) * len(labels)))  # thetas per product: (T, M, N) and (T, M, B) stay bounded
    out = torch.empty(len(alphas), len(thetas), len(betas))
    for i, alpha in enumerate(alphas):
        for j in range(0, len(thetas), step):
            fewshot = cache_affinity(image_sim, caption_sim, alpha, theta_grid[j : j + step]) @ onehot  # (T, M, N)
            out[i, j : j + step] = accuracy_along(zs, fewshot, labels, betas)  # zs + beta fewshot at every beta
    return out


def first_best(acc: torch.Tensor) -> tuple[int, ...]:
    """The index of the highest accuracy of a grid, the first in grid order (row-major: the first
    axis outermost, as the peers' nested loops) on ties (``torch.argmax`` returns the first)."""
    return tuple(int(x) for x in np.unravel_index(int(torch.argmax(acc.flatten())), tuple(acc.shape)))


def search_adapter(val_images, val_labels, image_keys, caption_keys, key_labels, class_text, alphas, thetas, betas,
                   scale: float = 1.0, bias: float = 0.0) -> Choice:
    """Grid search of (alpha, theta, beta) by validation accuracy; ties go to the first in grid
    order (smaller alpha, theta, beta). The test split is never seen here."""
    acc = grid_accuracies(val_images, val_labels, image_keys, caption_keys, key_labels, class_text, alphas, thetas, betas, scale, bias)
    i, j, k = first_best(acc)
    return Choice(float(alphas[i]), float(thetas[j]), float(betas[k]), float(acc[i, j, k]))


def fit_cache(name: str, task: Task, alphas, thetas, betas, text_keys=None, image_keys=None) -> Fitted:
    """Eq. 6 with (alpha, theta, beta) searched on validation over the grids (``search_adapter``);
    ``text_keys`` (N*K, D): the cache's text keys, by default the shots' captions; ``image_keys``:
    its image keys, by default the shots' features (Tip-Adapter-F: its trained keys)."""
    s = task.shots
    image_keys = s.images if image_keys is None else image_keys
    keys = s.captions if text_keys is None else text_keys
    if keys is None:
        if any(a != 0 for a in alphas):
            raise ValueError(f"{name}: the shots have no captions, so only alpha = 0 is possible")
        keys = image_keys  # unused at alpha = 0
    c = search_adapter(task.val.images, task.val.labels, image_keys, keys, s.labels, task.class_text, alphas, thetas, betas,
                                task.scale, task.bias)
    state = {**zero_shot_state(task), "image_keys": image_keys, "text_keys": keys, "key_labels": s.labels}
    return Fitted(name, state, {"alpha": c.alpha, "theta": c.theta, "beta": c.beta}, c.val_accuracy,
                  candidates=len(alphas) * len(thetas) * len(betas))


def score_cache(state: dict, chosen: dict, images):
    """Eq. 6 from a cache's state and its chosen (alpha, theta, beta)."""
    return adapter_logits(images, state["image_keys"], state["text_keys"], state["key_labels"], state["class_text"],
                                   chosen["alpha"], chosen["theta"], chosen["beta"], float(state["scale"]), float(state["bias"]))
