"""What a captions table says about its captions: per caption, leakage of the prompt or of the class
the prompt gave, repetition, empty, summarised, cut (``caption_flags``); over a run, their rates and
the length histogram (``caption_quality``)."""

from __future__ import annotations

import pandas as pd

from ..prompts import clean_classname
from .clean import _SENTENCE_END, _drop_repeated_ngrams, _words


def has_repetition(text: str, n: int = 6) -> bool:
    """A repeated sentence, an immediately repeated run of words (what ``clean_caption`` removes),
    or any run of ``n`` words that occurs twice (a caption repeated to a minimum length)."""
    sentences = [" ".join(_words(s)) for s in _SENTENCE_END.split(text or "")]
    sentences = [s for s in sentences if s]
    words = _words(text or "")
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    return (len(set(sentences)) < len(sentences) or len(set(grams)) < len(grams)
            or any(_drop_repeated_ngrams(s) != " ".join(s.split()) for s in _SENTENCE_END.split(text or "")))


def prompt_fragment(caption: str, prompt: str, n: int = 4) -> bool:
    """Whether the caption carries ``n`` consecutive words of its prompt."""
    c, p = _words(caption), _words(prompt)
    grams = {tuple(p[i : i + n]) for i in range(len(p) - n + 1)}
    return any(tuple(c[i : i + n]) in grams for i in range(len(c) - n + 1))


def names_class(caption: str, classname: str) -> bool:
    """Whether the caption names the class (its cleaned name, word for word)."""
    name = " ".join(_words(clean_classname(classname)))
    return bool(name) and f" {name} " in f" {' '.join(_words(caption))} "


def caption_flags(caps: pd.DataFrame, classnames: dict[str, str]) -> pd.DataFrame:
    """Per caption: ``prompt_leak`` (a 4-word fragment of its prompt), ``class_given`` (the prompt
    named the class), ``class_leak`` (given and repeated in the caption), ``names_class`` (the
    caption names its class, given or recognised), ``repetition`` (in the raw or the final text), with
    ``empty``, ``summarised``, ``truncated``, ``n_tokens`` and ``fp32_caption`` / ``fp32_summary``
    (made again in fp32, ``GenerationGuard``)."""
    out = caps[["image_id", "prompt", "caption", "n_tokens", "empty", "summarised", "truncated", "fp32_caption", "fp32_summary"]].copy()
    names = out["image_id"].map(classnames)
    out["class_given"] = [names_class(q, n) for q, n in zip(out["prompt"], names)]
    out["names_class"] = [names_class(c, n) for c, n in zip(out["caption"], names)]
    out["class_leak"] = out["class_given"] & out["names_class"]
    out["prompt_leak"] = [prompt_fragment(c, q) for c, q in zip(out["caption"], out["prompt"])]
    out["repetition"] = [has_repetition(r) or has_repetition(c) for r, c in zip(caps["raw"], caps["caption"])]
    return out


QUALITY_BINS = (0, 8, 16, 24, 32, 48, 64, 96, 128)


def caption_quality(flags: pd.DataFrame, token_limit: int) -> dict:
    """Rates over a run's captions (``caption_flags``): leakage (a prompt fragment, or the class
    name the prompt gave), repetition, empty, summarised, cut; the captions and summaries made
    again in fp32 after a half-precision generation went bad (counts); the length histogram in
    encoder tokens (``QUALITY_BINS``, upper edges inclusive)."""
    n = max(len(flags), 1)
    rate = lambda col: round(float(flags[col].sum()) / n, 6)  # noqa: E731
    leak = flags["prompt_leak"] | flags["class_leak"]
    hist = pd.cut(flags["n_tokens"], bins=[-1, *QUALITY_BINS[1:], 10**6], labels=False).value_counts().sort_index()
    return {"captions": int(len(flags)), "token_limit": int(token_limit), "leakage": round(float(leak.sum()) / n, 6),
            "prompt_leak": rate("prompt_leak"), "class_leak": rate("class_leak"), "class_given": rate("class_given"),
            "names_class": rate("names_class"), "repetition": rate("repetition"), "empty": rate("empty"),
            "summarised": rate("summarised"), "truncated": rate("truncated"),
            "fp32_captions": int(flags["fp32_caption"].sum()), "fp32_summaries": int(flags["fp32_summary"].sum()),
            "median_tokens": float(flags["n_tokens"].median()) if len(flags) else 0.0,
            "length_histogram": {f"<= {QUALITY_BINS[i + 1]}" if i + 1 < len(QUALITY_BINS) else f"> {QUALITY_BINS[-1]}": int(hist.get(i, 0))
                                 for i in range(len(QUALITY_BINS))}}
