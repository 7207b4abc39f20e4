"""A VLM's decoded text made into a caption: special tokens, chat artefacts, markdown, echoes of the
prompt and repeats removed (``clean_caption``); the word helpers the quality report shares."""

from __future__ import annotations

import re

# What a VLM's decoded text can carry besides the description. Special tokens: <|im_end|>,
# <end_of_utterance>, </s>, <image>, <row_1_col_2>, [INST] and the like.
_SPECIAL = re.compile(r"<\|?/?[A-Za-z_][A-Za-z0-9_:|.-]{0,40}\|?>|\[/?INST\]")
_ROLE = re.compile(r"(?:^|(?<=\s))(?:user|assistant|system|human|gpt|answer|caption|bot)\s*:\s*", re.IGNORECASE)
_LAST_ANSWER = re.compile(r"(?:^|\s)(?:assistant|gpt|bot)\s*:\s*", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*+\u2022]|\d+[.)])\s+", re.MULTILINE)
_HEADER = re.compile(r"^\s*#{1,6}\s*", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*\*|__|\*|`+)(.+?)\1")
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"[a-z0-9']+")

PLACEHOLDER = "a photo."  # the caption of an image whose cleaned description is empty (counted as `empty`)


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _bigrams(words: list[str]) -> list[tuple[str, str]]:
    return list(zip(words, words[1:]))


def _echoes(sentence: str, prompt_bigrams: set[tuple[str, str]]) -> bool:
    """A sentence of three words or more whose word pairs (80% or more) are the prompt's repeats
    the instruction; sharing words with it (a class name the prompt gave) does not."""
    pairs = _bigrams(_words(sentence))
    return len(pairs) >= 2 and bool(prompt_bigrams) and sum(b in prompt_bigrams for b in pairs) / len(pairs) >= 0.8


def _drop_repeated_ngrams(text: str, max_n: int = 8) -> str:
    """Immediate repeats of a run of 1..max_n words ("a type of food, a type of food") kept once;
    punctuation between the copies goes with the copy."""
    tokens = re.findall(r"\S+", text)
    norm = [" ".join(_words(t)) for t in tokens]
    n = max_n
    while n >= 1:
        i, changed = 0, False
        while i + 2 * n <= len(tokens):
            if all(norm[i + j] for j in range(n)) and norm[i : i + n] == norm[i + n : i + 2 * n]:
                del tokens[i + n : i + 2 * n], norm[i + n : i + 2 * n]
                changed = True
            else:
                i += 1
        if not changed:
            n -= 1
    return " ".join(tokens)


def clean_caption(text: str, prompt: str | None = None) -> str:
    """The description alone: special tokens, chat-template artefacts and role tags (a whole
    transcript keeps only the last answer), markdown (bullets, headers, emphasis, links), sentences
    that echo the prompt, repeated sentences and immediately repeated word runs removed; one line,
    ending in a full stop. Returns "" when nothing is left (``caption_images`` then stores
    ``PLACEHOLDER`` and counts it)."""
    text = _SPECIAL.sub(" ", text or "")
    answers = _LAST_ANSWER.split(text)
    if len(answers) > 1:  # a transcript: what follows the last answer tag is the answer
        text = answers[-1]
    text = _ROLE.sub(" ", text)
    lines = []
    for line in text.split("\n"):  # a list item or header is a sentence of its own; a wrapped line is not
        item = bool(_BULLET.match(line) or _HEADER.match(line))
        line = _EMPHASIS.sub(r"\2", _LINK.sub(r"\1", _HEADER.sub("", _BULLET.sub("", line)))).strip()
        if line and item and line[-1] not in ".!?":
            line += "."
        lines.append(line)
    prompt_bigrams = set(_bigrams(_words(prompt or "")))
    kept, seen = [], set()
    for sentence in _SENTENCE_END.split(" ".join(lines)):
        sentence = _drop_repeated_ngrams(sentence.strip().strip("\"'").strip())
        key = " ".join(_words(sentence))
        if not key or key in seen or _echoes(sentence, prompt_bigrams):
            continue
        seen.add(key)
        kept.append(sentence)
    text = " ".join(kept)
    text = re.sub(r"\s+([,.;:!?])", r"\1", re.sub(r"\s+", " ", text)).strip(" ,;:-")
    text = re.sub(r"([.!?])[.!?]+", r"\1", text)
    if not _words(text):
        return ""
    return text if text[-1] in ".!?" else text + "."
