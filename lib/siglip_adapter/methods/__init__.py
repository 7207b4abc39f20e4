"""The field's few-shot methods, one module each, behind one interface.

A method is a module here that declares its parameters (a pydantic ``Params``), its label, kind
(zero-shot, training-free or trained) and place in tables to the registry (``registry.method``),
beside its two functions: ``fit(task, params) -> Fitted`` sees one K-shot sample and the
protocol's validation images (``loop.Task``), chooses its hyper-parameters on validation only and
returns the tensors it needs with its choice; ``score(state, chosen, images) -> logits`` scores
any images from them, so a fitted method saves to a file and loads back (``siglip_adapter.cards``).
``loop.method_rows`` runs every method named in ``methods.run`` at every K and seed. Adding a
method is one module here (or one that ``methods.modules`` names) plus its ``methods.<name>``
parameters. A method that starts from another's validation choice (Tip-Adapter-F from Tip-Adapter,
the trainable adapter from the training-free one) names it (``start=``): its params then carry the
other's under ``start`` and ``Task.fitted`` fits that one once per task. Methods that train run in
05_trainable, the others in 04_adapter.

Shared by several methods: ``cache`` (eq. 6, the cache methods' one function, and its search),
``training`` (the trained methods' one loop). This file imports nothing: reading the registry or
the parameter schema does not load the loop.
"""
