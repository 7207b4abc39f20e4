"""The stages, named as the notebooks that run them: ``split`` and ``captions`` (01_captions),
``embed`` (02_embed), over the dataset's feature ``pools``. 03_zero_shot, 04_adapter and
05_trainable run the methods' one loop (``methods.loop``); 06_analysis is ``report``. Callers
name the stage: ``stages.captions.run_captions``, ``stages.embed.embed_all``."""

from . import captions, embed, pools, split  # noqa: F401  (the stages as attributes of the package)
