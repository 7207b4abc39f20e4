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
a caption (``make.caption_store``), written as they finish: an interrupted run resumes, and another
protocol or split with the same settings reuses every caption already made.

Modules, in the order a caption is made: ``captioners`` (the prompt, ``LabelCaptioner``,
``VLMCaptioner``, ``build_captioner``), ``generation`` (half-precision generation made again in fp32
when it goes bad), ``clean`` (``clean_caption``), ``summarise`` (``T5Summariser``,
``build_summariser`` and ``Finishing``: clean, summarise or lengthen, cut), ``make``
(``caption_images`` over a store, the run's captions table) and ``quality`` (what a captions
table says about its captions).
"""

from . import captioners, clean, generation, make, quality, summarise  # noqa: F401
