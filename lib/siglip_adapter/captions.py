"""Captions: describe an image, clean the text, summarise it under the encoder's token limit.

Hub profile: SmolVLM-256M-Instruct describes, T5 summarises (``summarize: `` prefix through
``generate``), then the token limit is enforced. Offline profile: the ConSE encoder's ImageNet
tower names its top labels in a sentence, and the token limit is enforced. Captioning writes
resumable part files, so an interrupted run picks up where it stopped.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Sequence

import pandas as pd
import torch
from PIL import Image
from tqdm.auto import tqdm

from .data import load_images
from .encoders import batched, resolve_device, resolve_precision, torch_dtype
from .paths import model_path

_CHAT_PREFIX = re.compile(r"^\s*(assistant|answer|caption)\s*:\s*", re.IGNORECASE)


def clean_caption(text: str) -> str:
    """One tidy sentence-ish string: no chat prefix, quotes, line breaks or doubled spaces."""
    text = _CHAT_PREFIX.sub("", text.strip())
    text = text.strip().strip('"').strip("'")
    text = re.sub(r"\s+", " ", text).strip()
    if text and text[-1] not in ".!?":
        text += "."
    return text


class LabelCaptioner:
    """Offline captioner: a sentence naming the image model's top ImageNet labels."""

    def __init__(self, encoder, n_labels: int = 3):
        if not hasattr(encoder, "top_labels"):
            raise TypeError("the offline captioner needs an encoder with an ImageNet tower (offline-conse)")
        self.encoder, self.n_labels = encoder, n_labels
        self.model_id = f"offline-labels/{encoder.model_id}"
        self.prompt = f"top-{n_labels} ImageNet labels"

    def settings(self) -> dict:
        from .store import cache_key

        # The labels come from the encoder's ImageNet tower: its whole setting (weights,
        # preprocessing, precision) decides them, recorded as one hash.
        return {"captioner": self.model_id, "prompt": self.prompt, "labels": self.n_labels,
                "label_model": cache_key(self.encoder.cache_fields())}

    def describe(self, images: Sequence[Image.Image]) -> list[str]:
        out = []
        for labels in self.encoder.top_labels(images, self.n_labels):
            names = [n for n, _ in labels]
            rest = " or ".join(f"a {n}" for n in names[1:])
            out.append(f"a photo of a {names[0]}" + (f", or possibly {rest}" if rest else ""))
        return out


class VLMCaptioner:
    """SmolVLM (or another image-text-to-text model) describing images in batches.

    The weights are loaded in the encoder's precision (``encoder.precision``: bf16 where the GPU
    has it natively, fp16 on T4 / P100, fp32 on the CPU), so no autocast is needed."""

    def __init__(self, model, processor, model_id: str, prompt: str, max_new_tokens: int = 48, device: str = "auto",
                 precision: str = "auto", revision: str = ""):
        self.device = resolve_device(device)
        self.precision = resolve_precision(self.device, precision)
        self.model = model.eval().to(self.device, dtype=torch_dtype(self.precision))
        self.processor = processor
        # Batched generation with a decoder-only model needs the prompts aligned on the right.
        self.processor.tokenizer.padding_side = "left"
        self.model_id, self.prompt, self.max_new_tokens, self.revision = model_id, prompt, max_new_tokens, revision

    @classmethod
    def from_pretrained(cls, model_id: str, prompt: str, revision: str = "", device: str = "auto", precision: str = "auto", **kw) -> "VLMCaptioner":
        from transformers import AutoModelForImageTextToText, AutoProcessor

        dtype = torch_dtype(resolve_precision(resolve_device(device), precision))
        rev = revision or None
        # Without image splitting SmolVLM spends 64 image tokens per image instead of up to ~1,100.
        processor = AutoProcessor.from_pretrained(model_id, revision=rev, do_image_splitting=False)
        model = AutoModelForImageTextToText.from_pretrained(model_id, revision=rev, dtype=dtype)
        return cls(model, processor, model_id, prompt, device=device, precision=precision, revision=revision, **kw)

    def settings(self) -> dict:
        return {"captioner": self.model_id, "captioner_revision": self.revision, "prompt": self.prompt,
                "max_new_tokens": self.max_new_tokens, "decoding": "greedy", "dtype": self.precision}

    @torch.inference_mode()
    def describe(self, images: Sequence[Image.Image]) -> list[str]:
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = self.processor(text=[text] * len(images), images=[[im.convert("RGB")] for im in images], return_tensors="pt", padding=True)
        inputs.pop("token_type_ids", None)  # some tokenizers add them; generate() rejects unknown kwargs
        inputs = inputs.to(self.device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(torch_dtype(self.precision))
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        return self.processor.batch_decode(new_tokens, skip_special_tokens=True)


def t5_precision(device: torch.device, precision: str) -> str:
    """T5 v1 overflows in fp16 (its activations exceed fp16's range), so it runs in bf16 where the
    GPU has it natively and in fp32 otherwise."""
    p = resolve_precision(device, precision)
    return "fp32" if p == "fp16" else p


class T5Summariser:
    """T5 summaries through ``generate`` with the ``summarize: `` task prefix."""

    def __init__(self, model, tokenizer, model_id: str, max_new_tokens: int = 48, device: str = "auto", precision: str = "auto",
                 revision: str = ""):
        self.device = resolve_device(device)
        self.precision = t5_precision(self.device, precision)
        self.model = model.eval().to(self.device, dtype=torch_dtype(self.precision))
        self.tokenizer, self.model_id, self.max_new_tokens, self.revision = tokenizer, model_id, max_new_tokens, revision

    @classmethod
    def from_pretrained(cls, model_id: str, revision: str = "", **kw) -> "T5Summariser":
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        rev = revision or None
        return cls(AutoModelForSeq2SeqLM.from_pretrained(model_id, revision=rev), AutoTokenizer.from_pretrained(model_id, revision=rev),
                   model_id, revision=revision, **kw)

    def settings(self) -> dict:
        return {"summariser": self.model_id, "summariser_revision": self.revision, "summariser_max_new_tokens": self.max_new_tokens,
                "summariser_dtype": self.precision}

    @torch.inference_mode()
    def summarise(self, texts: Sequence[str]) -> list[str]:
        tok = self.tokenizer([f"summarize: {t}" for t in texts], padding=True, truncation=True, max_length=512, return_tensors="pt")
        inputs = {k: tok[k].to(self.device) for k in ("input_ids", "attention_mask")}
        out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        return self.tokenizer.batch_decode(out, skip_special_tokens=True)


def build_captioner(cfg: dict, encoder):
    c = cfg["captions"]
    if c["captioner"] == "offline-labels":
        return LabelCaptioner(encoder, c["top_labels"])
    if c["captioner"] == "smolvlm":
        cap = VLMCaptioner.from_pretrained(model_path(c["vlm_model_id"]), c["vlm_prompt"], revision=c["vlm_revision"],
                                           max_new_tokens=c["vlm_max_new_tokens"], device=cfg["encoder"]["device"],
                                           precision=cfg["encoder"]["precision"])
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
                                            device=cfg["encoder"]["device"], precision=cfg["encoder"]["precision"])
        summ.model_id = c["t5_model_id"]
        return summ
    raise ValueError(f"captions.summariser '{c['summariser']}' is not one of ['token-limit', 't5']")


def caption_settings(captioner, summariser, encoder, manifest_hash: str) -> dict:
    """Everything that changes a caption's text: the captioner's model, revision, exact prompt,
    generation settings and dtype, the summariser's, and the token limit with its tokenizer."""
    return {**captioner.settings(), **(summariser.settings() if summariser else {"summariser": "token-limit"}),
            "token_limit": encoder.max_text_tokens, "token_counter": encoder.model_id,
            "token_counter_revision": getattr(encoder, "revision", ""), "manifest": manifest_hash}


def caption_images(source, ids: Sequence[str], captioner, summariser, encoder, settings: dict, parts_dir: Path,
                   batch_size: int = 8, chunk_size: int = 256, num_workers: int | str = "auto") -> pd.DataFrame:
    """Describe -> clean -> summarise -> enforce the token limit, for every id.

    Images decode in DataLoader workers. Parts of ``chunk_size`` captions are written to
    ``parts_dir`` (one folder per ``settings``) as they finish; a rerun with the same ids reuses
    them. Returns one row per id with the raw, cleaned and final caption and its token count,
    plus the settings as columns.
    """
    ids = sorted(ids)
    parts_dir = Path(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    frames = []
    chunks = list(batched(ids, chunk_size))
    for n, chunk in enumerate(tqdm(chunks, desc="caption parts", unit="part")):
        part = parts_dir / f"part-{n:05d}.parquet"
        if part.is_file():
            done = pd.read_parquet(part)
            if done["image_id"].tolist() == list(chunk):
                frames.append(done)
                continue
        rows = []
        for batch, images in load_images(source, chunk, batch_size, num_workers, desc=f"part {n}"):
            raw = captioner.describe(images)
            clean = [clean_caption(t) for t in raw]
            summary = [clean_caption(t) for t in summariser.summarise(clean)] if summariser else clean
            final = [encoder.truncate(t) for t in summary]
            rows += [(i, r, c, f, encoder.count_tokens(f)) for i, r, c, f in zip(batch, raw, clean, final)]
        df = pd.DataFrame(rows, columns=["image_id", "raw", "clean", "caption", "n_tokens"])
        tmp = part.with_suffix(".tmp")
        df.to_parquet(tmp, index=False)
        tmp.replace(part)  # a part is either whole or absent
        frames.append(df)
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["image_id", "raw", "clean", "caption", "n_tokens"])
    for k, v in settings.items():
        out[k] = v
    return out


def write_captions(df: pd.DataFrame, path: Path, parts_dir: Path | None = None) -> None:
    """Write the captions table atomically, then drop the finished run's part files."""
    tmp = path.with_suffix(".tmp")
    df.to_parquet(tmp, index=False)
    tmp.replace(path)
    if parts_dir is not None:
        shutil.rmtree(parts_dir, ignore_errors=True)


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
