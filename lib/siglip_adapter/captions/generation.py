"""Generation in half precision, checked by construction: a batch whose scores went bad is made
again in fp32 (``GenerationGuard``; the captioner and the summariser both generate through it)."""

from __future__ import annotations

import torch


class _ScoreWatch:
    """A logits processor that changes nothing and notes whether any step's scores went bad: NaN
    or +inf anywhere, or a row with every token at -inf (what an overflow in half precision
    leaves; a plain -inf is a processor's legitimate ban)."""

    def __init__(self):
        self.bad = False

    def __call__(self, input_ids, scores):
        if not self.bad:
            self.bad = bool(torch.isnan(scores).any() or torch.isposinf(scores).any() or torch.isneginf(scores).all(dim=-1).any())
        return scores


class GenerationGuard:
    """``generate`` in a half precision, checked by construction: a batch whose generation
    produced bad scores (``_ScoreWatch``) or an empty text is generated again in fp32 (a float
    copy of the model, made once, on the same device), and the caller is told so that the
    captions record it (``fp32_caption`` / ``fp32_summary``, counted in the caption quality)."""

    def __init__(self, model, precision: str):
        self.model, self.precision, self._fp32 = model, precision, None

    def generate(self, inputs: dict, decode, **kw) -> tuple[list[str], bool]:
        """(texts, whether they were made again in fp32); ``decode(sequences) -> texts``."""
        from transformers import LogitsProcessorList

        watch = _ScoreWatch()
        texts = decode(self.model.generate(**inputs, logits_processor=LogitsProcessorList([watch]), **kw))
        if self.precision == "fp32" or not (watch.bad or any(not t.strip() for t in texts)):
            return texts, False
        if self._fp32 is None:
            import copy

            self._fp32 = copy.deepcopy(self.model).float()
        floats = {k: v.float() if torch.is_tensor(v) and torch.is_floating_point(v) else v for k, v in inputs.items()}
        return decode(self._fp32.generate(**floats, **kw)), True
