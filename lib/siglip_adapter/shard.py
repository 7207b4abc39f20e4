"""Captioning and embedding shared by several processes (Hugging Face ``accelerate launch``).

The stores already hold their work in parts keyed by the ids they cover (caption parts, pool
chunks), so sharding is only a question of who makes which part: every process lists the same
missing ids after a barrier, cuts them into the same chunks as one process would, takes every
``world``-th chunk starting at its rank, writes its parts, and waits for the others; then each
reads the parts the others wrote. The chunks, their batches and hence the files are the ones a
single process makes, so the merged run file is byte-identical to a one-process run.

    accelerate launch --multi_gpu --num_processes 2 -m siglip_adapter.cli captions DATASET --protocol P
    accelerate launch --multi_gpu --num_processes 2 -m siglip_adapter.cli embed DATASET --protocol P

Several machines on one shared file system: the same with ``--num_machines``, ``--machine_rank``
and ``--main_process_ip``. ``shards.processes`` in the params makes ``01_captions`` and
``02_embed`` launch this themselves (``launch``), e.g. on Kaggle's two T4s.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from typing import Sequence, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Shard:
    """This process's place among ``world`` processes sharing a stage (rank 0 writes run files)."""

    rank: int = 0
    world: int = 1
    device: str = ""  # the device accelerate gives this process ("" = the params' own)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def take(self, chunks: Sequence[T]) -> list[T]:
        """This process's chunks: every ``world``-th one from its rank (a deterministic shard)."""
        return list(chunks)[self.rank :: self.world]

    def wait(self) -> None:
        """Barrier across the processes (nothing alone)."""
        if self.world > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def agree(self, what: str, value: str) -> None:
        """Stop when the processes disagree on ``value`` (a store's key: machines whose GPUs resolve
        another precision would otherwise each fill a different store)."""
        if self.world > 1:
            from accelerate.utils import gather_object

            values = gather_object([value])
            if len(set(values)) > 1:
                raise RuntimeError(f"{self}: the processes disagree on {what} ({values}); give them the same settings "
                                   "(e.g. encoder.precision) or run them apart")

    def configure(self, cfg: dict) -> dict:
        """``cfg`` with this process's device (``cuda:<local rank>`` under a multi-GPU launch)."""
        if not self.device or self.world == 1:
            return cfg
        return {**cfg, "encoder": {**cfg["encoder"], "device": self.device}}

    def __str__(self) -> str:
        return f"process {self.rank + 1} of {self.world}"


def current(timeout_hours: float | None = None) -> Shard:
    """The shard of this process: one of several under ``accelerate launch`` (its environment
    names a world size), else the whole work. CPU processes talk over gloo. ``timeout_hours``
    (``shards.timeout_hours``): how long a process waits at a barrier for the others (NCCL's
    default, minutes, is shorter than one process's long caption part can take); the first
    call in a process sets it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Shard()
    import datetime

    import torch
    from accelerate import PartialState

    kw = {"timeout": datetime.timedelta(hours=timeout_hours)} if timeout_hours else {}
    state = PartialState(cpu=not torch.cuda.is_available(), **kw)
    device = str(state.device) if state.device.type == "cuda" else "cpu"
    return Shard(state.process_index, state.num_processes, device)


def processes(setting) -> int:
    """``shards.processes`` as a count: ``auto`` is one per visible GPU (at least 1)."""
    if setting == "auto":
        import torch

        return max(torch.cuda.device_count(), 1)
    n = int(setting)
    if n < 1:
        raise ValueError(f"shards.processes must be >= 1 or 'auto', got {setting}")
    return n


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(stage: str, dataset: str, protocol: str, overlay: str, n: int, manifest_ready: bool = False,
                   backbone: str | None = None) -> list[str]:
    """The ``accelerate launch`` command running ``stage`` (captions | embed) in ``n`` processes."""
    cmd = ["-m", "siglip_adapter.cli", stage, dataset, "--protocol", protocol, "--overlay", overlay]
    cmd += ["--backbone", backbone] if backbone else []
    return accelerate_command(n, cmd + (["--manifest-ready"] if manifest_ready else []))


def accelerate_command(n: int, program: list[str]) -> list[str]:
    """``program`` (``-m module args`` or a script and its arguments) under ``accelerate launch``
    in ``n`` processes on this machine."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(n), "--num_machines", "1",
            "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()), *program]


def run_relayed(cmd: list[str], what: str) -> None:
    """Run a command (an ``accelerate launch``, a stage's module), relaying its output line by
    line (so a notebook shows it; a child's own stdout would not), and wait for it. Processes
    stopped by their time budget (``siglip_adapter.budget``) make this raise ``OutOfTime``;
    another failure raises ``CalledProcessError``."""
    from . import budget

    print(f"{what}: {' '.join(cmd[1:])}", flush=True)
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
    if proc.returncode:
        if budget.expired():  # a process stopped at its deadline, and the launcher took the others down
            raise budget.OutOfTime(f"{what}: the time budget ran out; the finished parts are stored")
        raise subprocess.CalledProcessError(proc.returncode, cmd)


def launch(stage: str, cfg: dict, manifest_ready: bool = False) -> bool:
    """Run ``stage`` for ``cfg``'s run in ``shards.processes`` processes and wait for them; False
    (nothing run) for one process. The caller then finds everything in the stores."""
    n = processes(cfg["shards"]["processes"])
    if n == 1:
        return False
    run = cfg["run"]
    run_relayed(launch_command(stage, run["dataset"], run["protocol"], run["overlay"], n, manifest_ready, run["backbone"]),
                 f"{stage}: {n} processes")
    return True
