"""The captioners: ``LabelCaptioner`` (offline: the encoder's top ImageNet labels in a sentence) and
``VLMCaptioner`` (SmolVLM or another image-text-to-text model), behind ``Captioner``; and the prompt
an image's caption answers (``caption_prompt``: ``captions.vlm_prompt``, or the authors' class
template with the image's class name filled in, or its first character)."""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image

from ..encoders.device import resolve_device, resolve_precision, torch_dtype
from ..prompts import clean_classname
from ..store import cache_key
from .generation import GenerationGuard

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


class Captioner:
    """What every captioner has: ``settings`` (everything that changes its text, for the caption
    store's key), ``prompt_for`` (the prompt an image's caption answers) and ``describe`` (images,
    with their class names for class-template prompts -> raw texts). ``reads_ids``: it describes
    from image ids instead (``describe_ids``, no image decoded); ``last_fp32``: the last batch was
    made again in fp32 (``generation.GenerationGuard``)."""

    model_id: str
    reads_ids = False
    last_fp32 = False

    def settings(self) -> dict:
        raise NotImplementedError

    def prompt_for(self, classname: str | None = None) -> str:
        raise NotImplementedError

    def describe(self, images: Sequence[Image.Image], classnames: Sequence[str | None] | None = None) -> list[str]:
        raise NotImplementedError

    def describe_ids(self, ids: Sequence[str], classnames: Sequence[str | None] | None = None) -> list[str]:
        raise TypeError(f"captioner '{self.model_id}' describes images, not ids")


class LabelCaptioner(Captioner):
    """Offline captioner: a sentence naming the image model's top ImageNet labels.

    It reads no prompt, so the authors' caption switches act by their effect: a prompt that names
    the image's class puts the class first in the caption (a VLM told the answer repeats it), and
    ``keep_chat_prompt`` writes the conversation into the caption as a whole-sequence decode does."""

    def __init__(self, encoder, n_labels: int = 3, prompting: dict | None = None, tower_rows=None):
        """``tower_rows`` (ids -> the encoder's image-tower outputs, e.g. a feature store's pool):
        when given, ``describe_ids`` reads the labels from it without decoding any image."""
        if not encoder.has_label_tower:
            raise TypeError("the offline captioner needs an encoder with an ImageNet tower (offline-conse)")
        self.encoder, self.n_labels, self.tower_rows = encoder, n_labels, tower_rows
        self.model_id = f"offline-labels/{encoder.model_id}"
        self.prompting = {k: (prompting or {}).get(k, d) for k, d in zip(PROMPT_KEYS, ("", "none", "{}", False))}
        self.prompt = f"top-{n_labels} ImageNet labels"

    @property
    def reads_ids(self) -> bool:
        return self.tower_rows is not None

    def settings(self) -> dict:
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
        return self._sentences(self.encoder.labels_from_tower(self.tower_rows(list(ids)), self.n_labels), classnames)

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


class VLMCaptioner(Captioner):
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


def build_captioner(cfg: dict, encoder, tower_rows=None) -> Captioner:
    """The captioner ``cfg['captions']`` names; ``tower_rows`` (see ``LabelCaptioner``) lets the
    offline one read stored image-tower outputs instead of running the tower again."""
    from ..paths import model_path

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
