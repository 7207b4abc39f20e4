"""What every benchmark shares: the machine it ran on and where its figure is recorded.

Each ``bench/<name>.py`` prints its measurements, writes the same text to
``results/bench/<name>.txt`` with this machine's description, and ends with the line
``<name> ratio: <number>`` (the pipeline benchmark: ``pipeline noop_seconds: <number>``).
Ratios are measured within one run, so a noisy machine moves both sides alike.
"""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def machine() -> list[str]:
    import torch

    cpu = platform.processor() or ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [f"machine: {platform.system()} {platform.machine()}, {cpu or 'cpu'}, {os.cpu_count()} cores, "
             f"python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads)"]
    if torch.cuda.is_available():
        lines.append(f"gpu: {torch.cuda.get_device_name(0)}")
    return lines


def write(name: str, lines: list[str]) -> Path:
    """results/bench/<name>.txt with ``lines``."""
    out = ROOT / "results" / "bench" / f"{name}.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    return out


class Report:
    """Lines printed as they come and written to results/bench/<name>.txt at the end."""

    def __init__(self, name: str):
        self.name, self.lines = name, [f"# bench/{name}.py", *machine()]
        for line in self.lines:
            print(line, flush=True)

    def add(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def finish(self, figure: float, label: str = "ratio") -> Path:
        self.add(f"{self.name} {label}: {figure:.4g}")
        return write(self.name, self.lines)


if __name__ == "__main__":
    sys.exit("run a benchmark: python bench/<name>.py")
