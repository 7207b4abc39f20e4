"""Class prompts whose context words are learned vectors (CoOp's prompt), through a frozen text tower.

A prompt is ``"<init> <class name>."``; the tokens of ``init`` (e.g. "a photo of a") are the
context slots. ``ContextPrompts.features(ctx)`` runs the encoder's own text path
(``text_inputs`` -> ``text_features``) with the token-embedding table's output replaced by
``ctx`` at those slots (a forward hook on the table), so the tower, its padding, masking and
pooling are the encoder's and nothing is re-implemented per architecture. At ``ctx =
init_context()`` (the table's rows for the init words) the features equal ``encode_texts`` of the
same prompts. Gradients reach ``ctx`` only: the tower's weights are frozen.
"""

from __future__ import annotations

from typing import Sequence

import torch

from .prompts import clean_classname


class ContextPrompts:
    """The N class prompts of a dataset with ``init``'s tokens as learnable context slots."""

    def __init__(self, encoder, classnames: Sequence[str], init: str = "a photo of a"):
        self.encoder, self.init = encoder, init
        self.prompts = [f"{init} {clean_classname(c)}." for c in classnames]
        self.inputs = encoder.text_inputs(self.prompts)
        ids = self.inputs["input_ids"]
        init_ids = encoder.tokenizer(init, add_special_tokens=False)["input_ids"]
        if not init_ids:
            raise ValueError("CoOp: the context init phrase has no tokens")
        self.slots = torch.stack([self._find(row, init_ids, p) for row, p in zip(ids.tolist(), self.prompts)])  # (N, n_ctx)
        self.n_ctx = len(init_ids)
        self._init_ids = torch.tensor(init_ids, device=ids.device)

    @staticmethod
    def _find(row: list[int], sub: list[int], prompt: str) -> torch.Tensor:
        for i in range(len(row) - len(sub) + 1):
            if row[i : i + len(sub)] == sub:
                return torch.arange(i, i + len(sub))
        raise ValueError(f"CoOp: the init phrase's tokens are not found in the tokenised prompt {prompt!r} (tokenizer merged them)")

    def init_context(self) -> torch.Tensor:
        """(n_ctx, E) the token table's rows of the init words (float32, a detached copy)."""
        with torch.no_grad():
            return self.encoder.input_embeddings()(self._init_ids).float().cpu().clone()

    def features(self, ctx: torch.Tensor) -> torch.Tensor:
        """(N, D) normalised class-prompt features with ``ctx`` (n_ctx, E) in the context slots,
        differentiable in ``ctx``; on the CPU."""
        table = self.encoder.input_embeddings()
        rows = torch.arange(len(self.prompts))[:, None]

        def put_context(module, args, out):
            out = out.clone()
            out[rows, self.slots.to(out.device)] = ctx.to(device=out.device, dtype=out.dtype)
            return out

        frozen = [p for p in self._tower_parameters() if p.requires_grad]
        for p in frozen:
            p.requires_grad_(False)
        handle = table.register_forward_hook(put_context)
        try:
            return self.encoder.text_features(self.inputs).cpu()
        finally:
            handle.remove()
            for p in frozen:
                p.requires_grad_(True)

    def _tower_parameters(self):
        table = self.encoder.input_embeddings()
        model = getattr(self.encoder, "text_model", None) or getattr(self.encoder, "model", None)
        return list(model.parameters()) if isinstance(model, torch.nn.Module) else list(table.parameters())

    def __deepcopy__(self, memo):
        """The tower is shared, never copied (a trained model holding this is copied per best epoch)."""
        return self
