"""SigLIP-Adapter reproducibility kit: few-shot classification with a frozen dual encoder.

In the order the data flows: ``config`` and ``schema`` (the parameters), ``sources`` (where a
dataset's images are) and ``data`` (split, K-shot sampling, image loading), ``captions`` and
``encoders`` (01_captions, 02_embed, helped by ``stages``), ``store`` (content-keyed features),
``inputs`` (a run's split and features), ``methods`` (one module per method, each declaring its
parameters, label and kind to ``methods.registry``; eq. 6 in ``methods.cache``; their one K x seed
loop in ``methods.loop``: what 03-05 report), ``report`` (a stage's files, Table I, figures),
``ablation``, ``cards`` (saved methods for ``predict``) and ``cli``; ``kaggle`` and ``kernel`` run
the stages as Kaggle kernels.
"""

__version__ = "0.1.0"
