"""Captions: describe an image, clean the text, summarise it under the encoder's token limit.

Hub profile: SmolVLM-256M-Instruct describes, the text is cleaned (``clean_caption``), T5
summarises captions longer than the encoder's text limit (``summarize: `` prefix through
``generate``; every caption under the authors' ``summarise: always``), then the token limit is
enforced with the encoder's own tokenizer. Offline profile: the ConSE encoder's ImageNet
tower names its top labels in a sentence, and the token limit is enforced.

The prompt is ``captions.vlm_prompt``, or (the authors' switch) ``captions.class_template`` with the
image's class name filled in, or its first character. The offline captioner honours the caption
switches by their effect: a prompt that names the class makes the caption name it, a kept chat
prompt appears in the caption, a minimum summary length repeats the caption up to it.

Captions are stored per dataset in part files under a folder keyed by every setting that changes
a caption (``caption_store``), written as they finish: an interrupted run resumes, and another
protocol or split with the same settings reuses every caption already made.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from . import budget
from .data import load_images
from .encoders import batched, resolve_device, resolve_precision, torch_dtype
from .paths import model_path
from .prompts import clean_classname
from .shard import Shard

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


PROMPT_KEYS = ("vlm_prompt", "vlm_prompt_class", "class_template", "keep_chat_prompt")


def caption_prompt(prompting: dict, classname: str | None = None) -> str:
    """The prompt a captioner is given for one image: ``vlm_prompt``; or, with ``vlm_prompt_class``
    ``template``, ``class_template`` with the class name filled in; or ``template_first_char``,
    the template's first character (the authors' EuroSAT and DTD scripts index the string)."""
    mode = prompting.get("vlm_prompt_class", "none")
    if mode == "none":
        return prompting["vlm_prompt"]
    if mode == "template_first_char":
        return prompting["class_template"][0]
    if classname is None:
        raise ValueError("a class-template caption prompt needs each image's class name")
    return prompting["class_template"].format(clean_classname(classname))


class LabelCaptioner:
    """Offline captioner: a sentence naming the image model's top ImageNet labels.

    It reads no prompt, so the authors' caption switches act by their effect: a prompt that names
    the image's class puts the class first in the caption (a VLM told the answer repeats it), and
    ``keep_chat_prompt`` writes the conversation into the caption as a whole-sequence decode does."""

    def __init__(self, encoder, n_labels: int = 3, prompting: dict | None = None, tower_rows=None):
        """``tower_rows`` (ids -> the encoder's image-tower outputs, e.g. a feature store's pool):
        when given, ``describe_ids`` reads the labels from it without decoding any image."""
        if not hasattr(encoder, "top_labels"):
            raise TypeError("the offline captioner needs an encoder with an ImageNet tower (offline-conse)")
        self.encoder, self.n_labels, self.tower_rows = encoder, n_labels, tower_rows
        self.model_id = f"offline-labels/{encoder.model_id}"
        self.prompting = {k: (prompting or {}).get(k, d) for k, d in zip(PROMPT_KEYS, ("", "none", "{}", False))}
        self.prompt = f"top-{n_labels} ImageNet labels"

    @property
    def reads_ids(self) -> bool:
        return self.tower_rows is not None

    def settings(self) -> dict:
        from .store import cache_key

        # The labels come from the encoder's ImageNet tower: its setting (weights,
        # preprocessing, precision) decides them, recorded as one hash.
        return {"captioner": self.model_id, "prompt": self.prompt, "labels": self.n_labels,
                "label_model": cache_key(self.encoder.tower_fields()), **self.prompting}

    def prompt_for(self, classname: str | None = None) -> str:
        """The prompt this image's caption answers (the authors' class prompt, or none: labels)."""
        return caption_prompt(self.prompting, classname) if self.prompting["vlm_prompt_class"] != "none" else self.prompt

    def describe(self, images: Sequence[Image.Image], classnames: Sequence[str | None] | None = None) -> list[str]:
        return self._sentences(self.encoder.top_labels(images, self.n_labels), classnames)

    def describe_ids(self, ids: Sequence[str], classnames: Sequence[str | None] | None = None) -> list[str]:
        """Like ``describe``, from the tower outputs of ``tower_rows`` (identical labels)."""
        return self._sentences(self.encoder.labels_from_probs(self.tower_rows(list(ids)), self.n_labels), classnames)

    def _sentences(self, top: list[list[tuple[str, float]]], classnames: Sequence[str | None] | None) -> list[str]:
        classnames = list(classnames) if classnames is not None else [None] * len(top)
        out = []
        for labels, cls in zip(top, classnames):
            names = [n for n, _ in labels]
            prompt = self.prompt_for(cls)
            # Only a prompt built from the class template names the class; a name that merely
            # occurs in another prompt (class "3" in "top-3 ImageNet labels") tells nothing.
            if cls is not None and self.prompting["vlm_prompt_class"] == "template":
                names = [clean_classname(cls)] + [n for n in names if n != clean_classname(cls)][: self.n_labels - 1]
            rest = " or ".join(f"a {n}" for n in names[1:])
            text = f"a photo of a {names[0]}" + (f", or possibly {rest}" if rest else "")
            if self.prompting["keep_chat_prompt"]:
                text = f"User: {prompt} Assistant: {text}"
            out.append(text)
        return out


class VLMCaptioner:
    """SmolVLM (or another image-text-to-text model) describing images in batches.

    The weights are loaded in the encoder's precision (``encoder.precision``: bf16 where the GPU
    has it natively, fp16 on Kaggle's T4s, fp32 on the CPU), so no autocast is needed."""

    def __init__(self, model, processor, model_id: str, prompt: str, max_new_tokens: int = 48, device: str = "auto",
                 precision: str = "auto", revision: str = "", num_beams: int = 1, prompting: dict | None = None, image_splitting: bool = False):
        self.device = resolve_device(device)
        self.precision = resolve_precision(self.device, precision)
        self.model = model.eval().to(self.device, dtype=torch_dtype(self.precision))
        self.processor = processor
        # Batched generation with a decoder-only model needs the prompts aligned on the right.
        self.processor.tokenizer.padding_side = "left"
        self.model_id, self.prompt, self.max_new_tokens, self.revision = model_id, prompt, max_new_tokens, revision
        self.num_beams, self.image_splitting = num_beams, image_splitting
        self.guard, self.last_fp32 = GenerationGuard(self.model, self.precision), False
        self.prompting = {"vlm_prompt": prompt, "vlm_prompt_class": "none", "class_template": "{}", "keep_chat_prompt": False,
                          **{k: v for k, v in (prompting or {}).items() if k in PROMPT_KEYS}}

    @classmethod
    def from_pretrained(cls, model_id: str, prompt: str, revision: str = "", device: str = "auto", precision: str = "auto",
                        image_splitting: bool = False, **kw) -> "VLMCaptioner":
        from transformers import AutoModelForImageTextToText, AutoProcessor

        dtype = torch_dtype(resolve_precision(resolve_device(device), precision))
        rev = revision or None
        # Without image splitting SmolVLM spends 64 image tokens per image instead of up to ~1,100.
        processor = AutoProcessor.from_pretrained(model_id, revision=rev, do_image_splitting=image_splitting)
        model = AutoModelForImageTextToText.from_pretrained(model_id, revision=rev, dtype=dtype)
        return cls(model, processor, model_id, prompt, device=device, precision=precision, revision=revision,
                   image_splitting=image_splitting, **kw)

    def settings(self) -> dict:
        return {"captioner": self.model_id, "captioner_revision": self.revision, "prompt": self.prompt,
                "max_new_tokens": self.max_new_tokens, "decoding": "greedy" if self.num_beams == 1 else f"beam{self.num_beams}",
                "dtype": self.precision, "image_splitting": self.image_splitting, **self.prompting}

    def prompt_for(self, classname: str | None = None) -> str:
        return caption_prompt(self.prompting, classname)

    @torch.inference_mode()
    def describe(self, images: Sequence[Image.Image], classnames: Sequence[str | None] | None = None) -> list[str]:
        classnames = list(classnames) if classnames is not None else [None] * len(images)
        texts = [self.processor.apply_chat_template(
            [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt_for(c)}]}],
            add_generation_prompt=True) for c in classnames]
        inputs = self.processor(text=texts, images=[[im.convert("RGB")] for im in images], return_tensors="pt", padding=True)
        inputs.pop("token_type_ids", None)  # some tokenizers add them; generate() rejects unknown kwargs
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(torch_dtype(self.precision))
        start = 0 if self.prompting["keep_chat_prompt"] else inputs["input_ids"].shape[1]  # the authors' whole-sequence decode keeps the prompt
        texts, self.last_fp32 = self.guard.generate(dict(inputs), lambda out: self.processor.batch_decode(out[:, start:], skip_special_tokens=True),
                                                    max_new_tokens=self.max_new_tokens, do_sample=False, num_beams=self.num_beams)
        return texts


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


def t5_precision(device: torch.device, precision: str) -> str:
    """T5 v1 overflows in fp16 (its activations exceed fp16's range), so it runs in bf16 where the
    GPU has it natively and in fp32 otherwise."""
    p = resolve_precision(device, precision)
    return "fp32" if p == "fp16" else p


class T5Summariser:
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


def build_captioner(cfg: dict, encoder, tower_rows=None):
    """The captioner ``cfg['captions']`` names; ``tower_rows`` (see ``LabelCaptioner``) lets the
    offline one read stored image-tower outputs instead of running the tower again."""
    c = cfg["captions"]
    prompting = {k: c[k] for k in PROMPT_KEYS}
    if c["captioner"] == "offline-labels":
        return LabelCaptioner(encoder, c["top_labels"], prompting, tower_rows)
    if c["captioner"] == "smolvlm":
        cap = VLMCaptioner.from_pretrained(model_path(c["vlm_model_id"]), c["vlm_prompt"], revision=c["vlm_revision"],
                                           max_new_tokens=c["vlm_max_new_tokens"], device=cfg["encoder"]["device"],
                                           precision=cfg["encoder"]["precision"], num_beams=c["vlm_num_beams"], prompting=prompting,
                                           image_splitting=c["vlm_image_splitting"])
        cap.model_id = c["vlm_model_id"]  # the configured id, not a machine's path, keys the cache
        return cap
    raise ValueError(f"captions.captioner '{c['captioner']}' is not one of ['offline-labels', 'smolvlm']")


def build_summariser(cfg: dict):
    """The optional model summariser (None for ``token-limit``: the limit alone is applied)."""
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


def caption_settings(captioner, summariser, encoder, min_summary_tokens: int = 0, images: dict | None = None,
                     cleaning: str = "full", summarise: str = "over_limit") -> dict:
    """Everything that changes a caption's text: the images (``images``: the source and how it is
    read, e.g. inverted), the captioner's model, revision, prompt settings, generation settings and
    dtype, the summariser's (or the offline minimum length), and the token limit with its
    tokenizer, and the version of the code that makes captions. Not the split: a caption belongs
    to an image, whatever its split."""
    from .store import code_version

    summary = summariser.settings() if summariser else {"summariser": "token-limit", "min_summary_tokens": min_summary_tokens}
    return {**{f"image_{k}": v for k, v in (images or {}).items()}, **captioner.settings(), **summary, "cleaning": cleaning,
            "summarise": summarise,
            "token_limit": encoder.max_text_tokens, "token_counter": encoder.model_id,
            "token_counter_revision": getattr(encoder, "revision", ""), "code": code_version(*CAPTION_CODE)}


# Per image: its prompt, the raw, cleaned, summarised and final text, its token count, whether it
# was empty, summarised or cut, and whether its caption / summary had to be made again in fp32.
CAPTION_COLUMNS = ["image_id", "prompt", "raw", "clean", "summary", "caption", "n_tokens", "empty", "summarised", "truncated",
                   "fp32_caption", "fp32_summary"]
# The code a caption's text depends on (decoding, prompts, the offline captioner's image tower).
CAPTION_CODE = ("captions", "prompts", "encoders", "sources.images")


def _write_part(path: Path, rows: list[tuple]) -> None:
    """One part of a caption store (``store.write_part``: atomic, with the SHA-256 of its rows)."""
    from .store import write_part

    write_part(path, pd.DataFrame(rows, columns=CAPTION_COLUMNS))


def _stored(store: Path) -> dict[str, tuple]:
    """Every caption already in a store folder: {image id: row}. A bad part (``store.read_parts``:
    unreadable, or edited or truncated on disk) is removed with a warning and its captions are
    made again."""
    from .store import read_parts

    have = {}
    for frame in read_parts(store, CAPTION_COLUMNS, "captions", "part-*.parquet").values():
        for row in frame.itertuples(index=False):
            have[row.image_id] = tuple(row)
    return have


def finish_captions(raw: Sequence[str], prompts: Sequence[str], summariser, encoder, cleaning: str = "full",
                    summarise: str = "over_limit", min_summary_tokens: int = 0) -> list[tuple]:
    """Raw descriptions -> (raw, clean, summary, caption, n_tokens, empty, summarised, truncated, fp32_summary) each.

    ``cleaning`` ``full``: ``clean_caption`` against the image's prompt; ``none``: whitespace only
    (the authors kept the decoded text as it was). An empty result becomes ``PLACEHOLDER``
    (``empty``). The summariser (T5) runs on a caption longer than the encoder's text limit, or on
    every caption with ``summarise: always`` (the authors'); offline, a minimum summary length
    repeats the caption up to it (``lengthen``). The final text is cut with the encoder's own
    tokenizer (``truncated`` says so), so the encoder never truncates anything silently."""
    if cleaning not in ("full", "none"):
        raise ValueError(f"captions.cleaning '{cleaning}' is not one of ['full', 'none']")
    if summarise not in ("over_limit", "always"):
        raise ValueError(f"captions.summarise '{summarise}' is not one of ['over_limit', 'always']")
    tidy = (lambda t, q: clean_caption(t, q)) if cleaning == "full" else (lambda t, q: re.sub(r"\s+", " ", t or "").strip())
    clean = [tidy(t, q) for t, q in zip(raw, prompts)]
    empty = [not c for c in clean]
    clean = [c or PLACEHOLDER for c in clean]
    summary, fp32 = [""] * len(clean), [False] * len(clean)
    if summariser:
        todo = [i for i, c in enumerate(clean) if summarise == "always" or encoder.count_tokens(c) > encoder.max_text_tokens]
        for i, text in zip(todo, summariser.summarise([clean[i] for i in todo]) if todo else []):
            summary[i] = tidy(text, prompts[i]) or clean[i]
            fp32[i] = bool(getattr(summariser, "last_fp32", False))
    elif min_summary_tokens > 0:
        summary = [lengthen(c, min_summary_tokens, encoder) for c in clean]
    out = []
    for r, c, sm, e, f in zip(raw, clean, summary, empty, fp32):
        text = sm or c
        final = encoder.truncate(text)
        n = encoder.count_tokens(final)
        out.append((r, c, sm, final, n, e, bool(sm), final != text, f))
    return out


def caption_images(source, ids: Sequence[str], captioner, summariser, encoder, settings: dict, store: Path,
                   batch_size: int = 8, chunk_size: int = 256, num_workers: int | str = "auto",
                   classnames: dict[str, str] | None = None, min_summary_tokens: int = 0, cleaning: str = "full",
                   summarise: str = "over_limit", shard: Shard | None = None) -> pd.DataFrame:
    """Describe -> clean -> summarise (or lengthen, offline) -> enforce the token limit, for every id
    (``finish_captions``).

    ``store`` is the folder of one ``settings`` (see ``caption_store``): captions already there
    are reused whatever run made them; the missing ones are made in parts of ``chunk_size``, each
    written atomically as it finishes, so an interrupted run resumes with nothing lost or redone.
    ``classnames`` ({id: class}) fills class-template prompts. Returns one row per id (sorted):
    ``CAPTION_COLUMNS`` (the prompt, the raw, cleaned, summarised and final text, its token count,
    and whether it was empty, summarised or cut), plus the settings as columns. ``shard`` (every
    process of it calls this alike): each makes its share of the parts (``Shard.take``), then
    reads the others'; the parts and the result are those of one process.
    """
    from .store import cache_key

    ids = sorted(ids)
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    shard = shard or Shard()
    shard.agree("the caption store", store.name)
    shard.wait()  # every process sees the same finished parts, so all cut the same chunks
    have = _stored(store)
    todo = [i for i in ids if i not in have]
    chunks = list(batched(todo, chunk_size))
    mine = shard.take(chunks)
    if shard.world > 1:
        print(f"{shard}: {len(mine)} of {len(chunks)} caption parts", flush=True)
    for n, chunk in enumerate(tqdm(mine, desc="caption parts" if shard.world == 1 else f"caption parts ({shard})", unit="part")):
        if n:  # at least one part per call, then the time budget (siglip_adapter.budget) between parts
            budget.check("caption parts")
        rows = []
        if getattr(captioner, "reads_ids", False):  # no image to decode (offline labels from the stored tower outputs)
            batches = ((list(b), None) for b in batched(chunk, max(batch_size, 256)))
        else:
            batches = load_images(source, chunk, batch_size, num_workers, desc="captioning")
        for batch, images in batches:
            names = [classnames.get(i) if classnames else None for i in batch]
            prompts = [captioner.prompt_for(c) for c in names]
            raw = captioner.describe(images, names) if images is not None else captioner.describe_ids(batch, names)
            retried = bool(getattr(captioner, "last_fp32", False))  # this batch was captioned again in fp32 (GenerationGuard)
            done = finish_captions(raw, prompts, summariser, encoder, cleaning, summarise, min_summary_tokens)
            rows += [(i, q, *d[:-1], retried, d[-1]) for i, q, d in zip(batch, prompts, done)]
        _write_part(store / f"part-{cache_key({'ids': list(chunk)})}.parquet", rows)  # whole or absent
        have.update({r[0]: r for r in rows})
    if shard.world > 1:
        shard.wait()
        have = _stored(store)  # the other processes' parts
    out = pd.DataFrame([have[i] for i in ids], columns=CAPTION_COLUMNS)
    for k, v in settings.items():
        if k not in CAPTION_COLUMNS:  # the per-image prompt stays; the settings' default prompt is in vlm_prompt
            out[k] = v
    return out


def caption_store(cache_root: Path, settings: dict) -> Path:
    """The store folder of captions made under ``settings`` (shared by every run of a dataset)."""
    from .store import cache_key

    return Path(cache_root) / "captions" / cache_key(settings)


def write_captions(df: pd.DataFrame, path: Path) -> None:
    """Write a run's captions table atomically."""
    from .atomic import write_atomic

    write_atomic(path, lambda tmp: df.to_parquet(tmp, index=False))


def read_captions(path: Path, ids: Sequence[str] | None = None) -> pd.DataFrame:
    """Captions for ``ids`` in that order (all, sorted by id, for None); an id without a
    caption is an error naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no captions; run notebooks/01_captions first")
    df = pd.read_parquet(path).set_index("image_id")
    if ids is None:
        return df.sort_index().reset_index()
    missing = [i for i in ids if i not in df.index]
    if missing:
        raise ValueError(f"{path}: no caption for {len(missing)} images (e.g. {missing[:3]}); rerun 01_captions")
    return df.loc[list(ids)].reset_index()


# ---------------------------------------------------------------------------------------------
# Quality: what a captions table says about its captions


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
