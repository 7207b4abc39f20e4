"""Captioning and embedding shared by processes (``accelerate launch``, siglip_adapter.shard): two
CPU processes on the tiny hub-profile models (SmolVLM, T5, SigLIP) make exactly the files that one
process makes, byte for byte, each process doing part of the work."""

import hashlib
import os
import re
import subprocess
import sys

import pandas as pd
import pytest

from siglip_adapter.shard import Shard, launch_command, processes


def _run(cmd, env):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out.stdout


def _files(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_two_processes_write_the_files_of_one(hub_project, tmp_path):
    # One torch thread per process in both runs: on a CPU, a reduction's float rounding follows the
    # thread count, and accelerate gives each launched process one thread.
    base = {**os.environ, "SIGLIP_ADAPTER_ROOT": str(hub_project), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    logs = {}
    for stage in ("captions", "embed"):
        args = ["-m", "siglip_adapter.cli", stage, "shapes", "--overlay", "tiny_hub"]
        _run([sys.executable, *args], {**base, "SIGLIP_ADAPTER_OUTPUT": str(tmp_path / "one")})
        launch = launch_command(stage, "shapes", "corrected", "tiny_hub", 2)
        logs[stage] = _run(launch, {**base, "SIGLIP_ADAPTER_OUTPUT": str(tmp_path / "two")})
    one, two = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert one == two  # run files, caption parts, pool chunks and feature entries alike
    assert any("captions.parquet" in f for f in one) and any("/chunk-" in f for f in one) and any("features.json" in f for f in one)
    # Both processes made parts: a deterministic shard each, nothing made twice.
    for stage, kind in (("captions", "caption parts"), ("embed", "image_tower chunks")):
        shares = {int(r): (int(m), int(n)) for r, m, n in re.findall(rf"process (\d) of 2: (\d+) of (\d+) {kind}", logs[stage])}
        assert set(shares) == {1, 2} and all(m >= 1 for m, _ in shares.values()), logs[stage]
        assert sum(m for m, _ in shares.values()) == shares[1][1]
    caps = pd.read_parquet(tmp_path / "two" / "build" / "tiny_hub" / "cache" / "shapes" / "tiny-siglip" / "corrected" / "captions.parquet")
    assert caps["image_id"].is_unique and caps["image_id"].is_monotonic_increasing


def test_shard_takes_every_worlds_chunk_and_covers_all():
    chunks = list(range(7))
    parts = [Shard(r, 3).take(chunks) for r in range(3)]
    assert parts == [[0, 3, 6], [1, 4], [2, 5]] and sorted(sum(parts, [])) == chunks
    assert Shard().take(chunks) == chunks and Shard().is_main and not Shard(1, 2).is_main
    cfg = {"encoder": {"device": "auto"}}
    assert Shard(1, 2, "cuda:1").configure(cfg)["encoder"]["device"] == "cuda:1" and cfg["encoder"]["device"] == "auto"
    assert Shard().configure(cfg) is cfg


def test_processes_setting():
    import torch

    assert processes(1) == 1 and processes(4) == 4 and processes("auto") == max(torch.cuda.device_count(), 1)
    with pytest.raises(ValueError):
        processes(0)
    cmd = launch_command("embed", "digits", "paper", "", 2, backbone="clip-b16")
    assert cmd[cmd.index("--num_processes") + 1] == "2" and cmd[-9:] == ["siglip_adapter.cli", "embed", "digits", "--protocol", "paper",
                                                                          "--overlay", "", "--backbone", "clip-b16"]


def test_bad_processes_setting_is_refused(tmp_path, root):
    import shutil

    from siglip_adapter.config import ConfigError, load_config

    shutil.copytree(root / "params", tmp_path / "params")
    (tmp_path / "params" / "overlays" / "bad.yaml").write_text("shards: {processes: 0}\n")
    with pytest.raises(ConfigError, match="shards.processes"):
        load_config("digits", "bad", root=tmp_path)


def test_processes_that_would_fill_different_stores_are_stopped(tmp_path):
    """Ranks whose settings differ (another GPU's precision, say) would each fill their own store
    and wait on each other's parts forever: the shard refuses to go on, naming what differs."""
    script = tmp_path / "disagree.py"
    script.write_text("from siglip_adapter.shard import current\nshard = current()\nshard.agree('the pool', f'pool-{shard.rank}')\n"
                      "print('agreed', flush=True)\n")
    cmd = launch_command("captions", "x", "y", "", 2)
    cmd = cmd[: cmd.index("-m", 3)] + [str(script)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode != 0 and "disagree on the pool" in out.stdout + out.stderr and "agreed" not in out.stdout
