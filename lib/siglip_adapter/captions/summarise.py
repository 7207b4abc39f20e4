"""From a raw description to the final caption (``Finishing``): cleaned, summarised by T5 when it is
longer than the encoder's text limit (or always, the authors' setting), or lengthened offline to a
minimum summary length, then cut with the encoder's own tokenizer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import torch

from ..encoders.base import TokenLimit
from ..encoders.device import resolve_device, resolve_precision, torch_dtype
from .clean import PLACEHOLDER, clean_caption
from .generation import GenerationGuard

CLEANING = ("full", "none")  # captions.cleaning
SUMMARISE = ("over_limit", "always")  # captions.summarise


class Summariser:
    """What a summariser has: ``settings`` (for the caption store's key), ``summarise`` (texts ->
    summaries) and ``last_fp32`` (its last batch was made again in fp32)."""

    last_fp32 = False

    def settings(self) -> dict:
        raise NotImplementedError

    def summarise(self, texts: Sequence[str]) -> list[str]:
        raise NotImplementedError


def t5_precision(device: torch.device, precision: str) -> str:
    """T5 v1 overflows in fp16 (its activations exceed fp16's range), so it runs in bf16 where the
    GPU has it natively and in fp32 otherwise."""
    p = resolve_precision(device, precision)
    return "fp32" if p == "fp16" else p


class T5Summariser(Summariser):
    """T5 summaries through ``generate`` with the ``summarize: `` task prefix."""

    def __init__(self, model, tokenizer, model_id: str, max_new_tokens: int = 48, device: str = "auto", precision: str = "auto",
                 revision: str = "", min_new_tokens: int = 0, num_beams: int = 1, length_penalty: float = 1.0):
        self.device = resolve_device(device)
        self.precision = t5_precision(self.device, precision)
        self.model = model.eval().to(self.device, dtype=torch_dtype(self.precision))
        self.tokenizer, self.model_id, self.max_new_tokens, self.revision = tokenizer, model_id, max_new_tokens, revision
        self.generation = {"min_new_tokens": min_new_tokens, "num_beams": num_beams, "length_penalty": length_penalty}
        self.guard, self.last_fp32 = GenerationGuard(self.model, self.precision), False

    @classmethod
    def from_pretrained(cls, model_id: str, revision: str = "", **kw) -> "T5Summariser":
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        rev = revision or None
        return cls(AutoModelForSeq2SeqLM.from_pretrained(model_id, revision=rev), AutoTokenizer.from_pretrained(model_id, revision=rev),
                   model_id, revision=revision, **kw)

    def settings(self) -> dict:
        return {"summariser": self.model_id, "summariser_revision": self.revision, "summariser_max_new_tokens": self.max_new_tokens,
                "summariser_dtype": self.precision, **{f"summariser_{k}": v for k, v in self.generation.items()}}

    @torch.inference_mode()
    def summarise(self, texts: Sequence[str]) -> list[str]:
        tok = self.tokenizer([f"summarize: {t}" for t in texts], padding=True, truncation=True, max_length=512, return_tensors="pt")
        inputs = {k: tok[k].to(self.device) for k in ("input_ids", "attention_mask")}
        texts, self.last_fp32 = self.guard.generate(inputs, lambda out: self.tokenizer.batch_decode(out, skip_special_tokens=True),
                                                    max_new_tokens=self.max_new_tokens, do_sample=False, **self.generation)
        return texts


def lengthen(text: str, min_tokens: int, encoder) -> str:
    """The offline stand-in for a summariser forced to a minimum length (T5's ``min_length``):
    the caption repeated until it has ``min_tokens`` tokens, as forced generation tends to repeat."""
    if not text or min_tokens <= 0:
        return text
    out = text
    while encoder.count_tokens(out) < min_tokens:
        out = f"{out} {text}"
    return out


def build_summariser(cfg: dict) -> Summariser | None:
    """The optional model summariser (None for ``token-limit``: the limit alone is applied)."""
    from ..paths import model_path

    c = cfg["captions"]
    if c["summariser"] == "token-limit":
        return None
    if c["summariser"] == "t5":
        summ = T5Summariser.from_pretrained(model_path(c["t5_model_id"]), revision=c["t5_revision"], max_new_tokens=c["t5_max_new_tokens"],
                                            device=cfg["encoder"]["device"], precision=cfg["encoder"]["precision"],
                                            min_new_tokens=c["min_summary_tokens"], num_beams=c["t5_num_beams"],
                                            length_penalty=c["t5_length_penalty"])
        summ.model_id = c["t5_model_id"]
        return summ
    raise ValueError(f"captions.summariser '{c['summariser']}' is not one of ['token-limit', 't5']")


@dataclass(frozen=True)
class Finishing:
    """Raw descriptions -> (raw, clean, summary, caption, n_tokens, empty, summarised, truncated,
    fp32_summary) each (``__call__``).

    ``cleaning`` ``full``: ``clean_caption`` against the image's prompt; ``none``: whitespace only
    (the authors kept the decoded text as it was). An empty result becomes ``PLACEHOLDER``
    (``empty``). The ``summariser`` (T5) runs on a caption longer than the encoder's text limit,
    or on every caption with ``summarise: always`` (the authors'); without one, a minimum summary
    length repeats the caption up to it (``lengthen``, offline). The final text is cut with the
    ``limit``'s tokenizer (the encoder's; ``truncated`` says so), so the encoder never truncates
    anything silently."""

    limit: TokenLimit
    summariser: Summariser | None = None
    cleaning: str = "full"
    summarise: str = "over_limit"
    min_summary_tokens: int = 0

    def __post_init__(self):
        if self.cleaning not in CLEANING:
            raise ValueError(f"captions.cleaning '{self.cleaning}' is not one of {list(CLEANING)}")
        if self.summarise not in SUMMARISE:
            raise ValueError(f"captions.summarise '{self.summarise}' is not one of {list(SUMMARISE)}")

    @classmethod
    def from_config(cls, cfg: dict, limit: TokenLimit, summariser: Summariser | None) -> "Finishing":
        c = cfg["captions"]
        return cls(limit, summariser, c["cleaning"], c["summarise"], c["min_summary_tokens"])

    def settings(self) -> dict:
        """What of the finishing changes a caption's text (part of ``make.caption_settings``)."""
        summary = self.summariser.settings() if self.summariser else {"summariser": "token-limit", "min_summary_tokens": self.min_summary_tokens}
        return {**summary, "cleaning": self.cleaning, "summarise": self.summarise, "token_limit": self.limit.max_text_tokens,
                "token_counter": self.limit.model_id, "token_counter_revision": self.limit.revision}

    def tidy(self, text: str, prompt: str) -> str:
        return clean_caption(text, prompt) if self.cleaning == "full" else re.sub(r"\s+", " ", text or "").strip()

    def __call__(self, raw: Sequence[str], prompts: Sequence[str]) -> list[tuple]:
        limit = self.limit
        clean = [self.tidy(t, q) for t, q in zip(raw, prompts)]
        empty = [not c for c in clean]
        clean = [c or PLACEHOLDER for c in clean]
        summary, fp32 = [""] * len(clean), [False] * len(clean)
        if self.summariser:
            todo = [i for i, c in enumerate(clean) if self.summarise == "always" or limit.count_tokens(c) > limit.max_text_tokens]
            for i, text in zip(todo, self.summariser.summarise([clean[i] for i in todo]) if todo else []):
                summary[i] = self.tidy(text, prompts[i]) or clean[i]
                fp32[i] = bool(self.summariser.last_fp32)
        elif self.min_summary_tokens > 0:
            summary = [lengthen(c, self.min_summary_tokens, limit) for c in clean]
        out = []
        for r, c, sm, e, f in zip(raw, clean, summary, empty, fp32):
            text = sm or c
            final = limit.truncate(text)
            n = limit.count_tokens(final)
            out.append((r, c, sm, final, n, e, bool(sm), final != text, f))
        return out
