"""CLIP through transformers: SigLIP's image path (the checkpoint's own processor); text padded by
its tokenizer to the batch's longest text and passed with the attention mask, at most the model's
77 tokens; the model's logit scale, no bias."""

from __future__ import annotations

from typing import Sequence

from .siglip import SiglipEncoder


class ClipEncoder(SiglipEncoder):
    """CLIP dual encoder from transformers. The causal text tower pools at the end-of-text token,
    so a text's feature does not depend on its batch's padding."""

    name = "clip"
    text_padding = "longest"
    text_attention_mask = True
    logit_bias = 0.0  # CLIP learned a scale only

    def text_inputs(self, texts: Sequence[str]) -> dict:
        tok = self.tokenizer(self._texts(texts), padding=True, max_length=self.max_text_tokens, truncation=True, return_tensors="pt")
        return {"input_ids": tok["input_ids"].to(self.device), "attention_mask": tok["attention_mask"].to(self.device)}

    def input_embeddings(self):
        """The text tower's token table (CLIPModel does not expose one: CoOp's context slots)."""
        return self.model.text_model.embeddings.token_embedding


ENCODER = ClipEncoder
