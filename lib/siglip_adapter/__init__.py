"""SigLIP-Adapter reproducibility kit: few-shot classification with a frozen dual encoder.

Modules, one concern each: ``config`` (params), ``data`` (sources, splits, K-shot sampling),
``prompts``, ``encoders`` (SigLIP through transformers, and the offline ConSE encoder),
``captions`` (describe, clean, summarise), ``store`` (content-keyed feature cache),
``adapters`` (zero-shot, training-free adapter, search), ``trainable``, ``experiment``
(the seed x shots loops the notebooks report) and ``report`` (Table I, plots).
"""

__version__ = "0.1.0"
