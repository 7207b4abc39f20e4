"""Class prompts: one template per dataset, applied to cleaned class names."""

from __future__ import annotations

import re


def clean_classname(name: str) -> str:
    """Readable class name: underscores to spaces, '/' alternatives to 'or', single spaces."""
    name = name.replace("_", " ").replace("/", " or ")
    return re.sub(r"\s+", " ", name).strip()


def class_prompts(classnames: list[str], template: str) -> list[str]:
    """One prompt per class: ``template.format(cleaned name)``; the template holds ``{}``."""
    if "{}" not in template:
        raise ValueError(f"prompt template {template!r} has no '{{}}' for the class name")
    return [template.format(clean_classname(c)) for c in classnames]
