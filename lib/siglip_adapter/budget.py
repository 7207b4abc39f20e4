"""A wall-clock budget for the long stages (a Kaggle GPU session ends after 12 hours).

A kernel sets ``SIGLIP_ADAPTER_DEADLINE`` (seconds since the epoch); the loops that write
resumable parts (caption parts, feature-pool chunks, finished K x seed cells) call ``check``
before each part after their first, so a process always makes some progress, every finished part
is on disk, and a stage past its deadline stops with ``OutOfTime`` instead of being killed in the
middle of one. A later run finds those parts and computes only the rest. Without the variable
there is no budget.
"""

from __future__ import annotations

import os
import time

DEADLINE_ENV = "SIGLIP_ADAPTER_DEADLINE"
EXIT_OUT_OF_TIME = 75  # a process stopped by its budget (BSD's EX_TEMPFAIL: try again later)


class OutOfTime(RuntimeError):
    """The time budget ran out between two parts; what was finished is stored."""


def deadline() -> float | None:
    value = os.environ.get(DEADLINE_ENV)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"{DEADLINE_ENV}={value!r}: expected seconds since the epoch") from None


def expired() -> bool:
    end = deadline()
    return end is not None and time.time() >= end


def check(what: str) -> None:
    """Raise ``OutOfTime`` when the deadline has passed (``what``: the work that stops)."""
    if expired():
        raise OutOfTime(f"{what}: the time budget ran out ({DEADLINE_ENV}); the finished parts are stored and a rerun "
                        "continues from them")


def deadline_env(hours: float, start: float | None = None) -> dict[str, str]:
    """The environment that gives the processes a budget of ``hours`` from ``start`` (now)."""
    if hours <= 0:
        raise ValueError(f"time budget must be > 0 hours, got {hours}")
    return {DEADLINE_ENV: repr((start if start is not None else time.time()) + hours * 3600.0)}
