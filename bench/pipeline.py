"""The pipeline as a user waits for it: the whole offline `make repro`, a no-op `make repro` (and a
no-op plain `dvc repro` beside it), and what one adapter parameter reruns.

    python bench/pipeline.py [--warm] [--skip-full]

1. The whole run: ``make repro ARGS=-f`` (the README's command, every stage forced: each
   method, protocol, the ablation and the cards) after removing ``cache/`` (the feature and
   caption stores), unless ``--warm``. Wall time and peak memory: the largest sum of the
   proportional set size (PSS) of every process it started, with summed RSS beside it (sampled
   every 0.2 s; PSS where it could be a new peak: ``run_measured``) (targets: 10 minutes and 3 GB
   on 2 cores, after the installs). It rewrites results/ exactly as ``make repro`` does.
2. A no-op ``make repro`` right after, as the README gives it (target: 10 s; it re-hashes every
   dataset's images, then stops), and a no-op plain ``dvc repro`` for comparison.
3. One value of ``methods.adapter.theta`` changed in params/defaults.yaml (restored afterwards), and the
   stages ``dvc repro`` would then run, printed: those ``dvc status`` names once the stage_params
   stages (each dataset's first) have written what each kind of stage reads.

The last line is ``pipeline noop_seconds: <seconds of the no-op make repro>``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Report  # noqa: E402

from siglip_adapter.runs import run_datasets  # noqa: E402

BIN = Path(sys.executable).parent


def _env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "DVC": str(BIN / "dvc"), "PYTHON": sys.executable}


def _pss(p: psutil.Process) -> int:
    """PSS of one process in bytes: each shared page split among the processes that map it (a
    forked worker's copy-on-write pages, the torch libraries every Python maps), so the PSS of all
    processes adds up to the memory they occupy, where summed RSS counts a shared page once per
    process. Reading it walks the process's page tables (~15 ms for an 800 MB process); where it
    cannot be read, RSS stands in for it."""
    try:
        return getattr(p.memory_full_info(), "pss", None) or p.memory_info().rss
    except psutil.AccessDenied:
        return p.memory_info().rss


def _command(argv: list[str]) -> str:
    """A process's command line as the report shows it: the environment's bin folder and the
    project root left out (no machine's paths in results/), at most 80 characters."""
    text = " ".join(argv).replace(f"{BIN}{os.sep}", "").replace(f"{ROOT}{os.sep}", "")
    return text[:80]


def run_measured(cmd: list[str], log: Path, pss_every: float = 1.0) -> dict:
    """Run ``cmd``; returns seconds, exit code, and the peaks of the summed RSS (sampled every
    0.2 s) and summed PSS of it and all its descendants, with the largest processes at the PSS peak
    (``top``: (PSS, RSS, command)). PSS costs far more to read than RSS, and the sampler shares the
    2 cores with what it measures, so it is read only where it could set a new peak (PSS <= RSS,
    so a sample whose summed RSS is below the PSS peak cannot), and then at most every
    ``pss_every`` seconds, or at once when the summed RSS is a new high."""
    peak = {"pss": 0, "rss": 0, "top": []}
    with open(log, "w") as out:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=_env())
        root = psutil.Process(proc.pid)
        done = threading.Event()

        def sample():
            last_pss = -pss_every
            while not done.is_set():
                seen = []
                try:
                    for p in [root, *root.children(recursive=True)]:
                        try:
                            seen.append((p.memory_info().rss, p))
                        except psutil.Error:
                            pass
                except psutil.Error:
                    pass
                rss = sum(r for r, _ in seen)
                now = time.perf_counter()
                if rss > peak["pss"] and (rss > peak["rss"] or now - last_pss >= pss_every):
                    last_pss, measured = now, []
                    for r, p in seen:
                        try:
                            measured.append((_pss(p), r, p))
                        except psutil.Error:
                            pass
                    pss = sum(m[0] for m in measured)
                    if pss > peak["pss"]:
                        top = []
                        for ps, r, p in sorted(measured, key=lambda x: -x[0])[:6]:
                            try:
                                top.append((ps, r, _command(p.cmdline())))
                            except psutil.Error:
                                top.append((ps, r, "?"))
                        peak["pss"], peak["top"] = pss, top
                peak["rss"] = max(peak["rss"], rss)
                done.wait(0.2)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        seconds = time.perf_counter() - t
        done.set()
        sampler.join()
    return {**peak, "seconds": seconds, "code": code}


def reruns_after_theta_change(report: Report) -> list[str]:
    """The stages ``dvc repro`` would run after one value of ``methods.adapter.theta`` changes in
    params/defaults.yaml: what ``dvc status`` reports once the stage_params stages (the first of
    each dataset's run) have rewritten their files (restored afterwards; nothing is recorded)."""
    defaults = ROOT / "params" / "defaults.yaml"
    text = defaults.read_text()
    lines = text.splitlines()
    start = lines.index(next(line for line in lines if line.startswith("  adapter:")))  # methods.adapter
    old = next(line for line in lines[start:] if line.strip().startswith("theta:") and "[" in line)
    new = old.replace("15.0]", "20.0]")
    report.add(f"changed in params/defaults.yaml (methods.adapter): {old.split('#')[0].strip()} -> {new.split('#')[0].strip()}")
    write_params = [sys.executable, "-m", "siglip_adapter.stage_params", *run_datasets(ROOT)]
    try:
        defaults.write_text(text.replace(old, new, 1))
        subprocess.run(write_params, cwd=ROOT, env=_env(), check=True)
        status = subprocess.run([str(BIN / "dvc"), "status", "--json"], cwd=ROOT, capture_output=True, text=True, env=_env())
    finally:
        defaults.write_text(text)
        subprocess.run(write_params, cwd=ROOT, env=_env(), check=True)
    if status.returncode:
        raise SystemExit(f"dvc status failed: {status.stdout[-2000:]}{status.stderr[-2000:]}")
    return [stage for stage, entries in json.loads(status.stdout or "{}").items() if entries != ["always changed"]]


def noop(report: Report, cmd: list[str], name: str, target: float | None) -> float:
    """Seconds ``cmd`` takes with nothing to do; fails when it ran any stage but the ``images``
    ones (always run: they re-hash each dataset's images and change nothing when those did not)."""
    t = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=_env())
    seconds = time.perf_counter() - t
    ran = [line for line in (done.stdout + done.stderr).splitlines() if "Running stage" in line or " started" in line]
    ran = [line for line in ran if "images@" not in line]
    report.add(f"no-op {name}: {seconds:.1f} s" + (f" (target {target} s)" if target else "") + f"; stages run besides images@*: {len(ran)}")
    if done.returncode or ran:
        raise SystemExit(f"the no-op {name} ran stages or failed: {done.stdout[-2000:]}{done.stderr[-2000:]}")
    return seconds


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--warm", action="store_true", help="keep cache/ (the stores and the finished method cells): every stage still reruns, reading them")
    ap.add_argument("--skip-full", action="store_true", help="only the no-op and the parameter change (results/bench/pipeline-noop.txt)")
    args = ap.parse_args(argv)
    report = Report("pipeline-noop" if args.skip_full else "pipeline")  # the full run's report is kept apart
    log_dir = ROOT / ".dvc" / "tmp"
    log_dir.mkdir(parents=True, exist_ok=True)

    if not args.skip_full:
        if not args.warm:
            shutil.rmtree(ROOT / "cache", ignore_errors=True)
        run = run_measured(["make", "repro", "ARGS=-f"], log_dir / "bench-pipeline.log")
        seconds, code = run["seconds"], run["code"]
        report.add(f"make repro, every stage forced ({'warm stores' if args.warm else 'empty cache/'}): {seconds / 60:.2f} min "
                   f"({seconds:.0f} s, target 600 s), peak memory of all its processes {run['pss'] / 2**30:.2f} GB PSS "
                   f"(target 3 GB; summed RSS, which counts shared pages once per process: {run['rss'] / 2**30:.2f} GB), "
                   f"exit {code} (log .dvc/tmp/bench-pipeline.log)")
        report.add("  largest at the peak (PSS / RSS): "
                   + "; ".join(f"{ps / 2**20:.0f}/{r / 2**20:.0f} MB {c}" for ps, r, c in run["top"]))
        if code:
            raise SystemExit("make repro failed")

    noop_s = noop(report, ["make", "repro"], "make repro", target=10)
    noop(report, [str(BIN / "dvc"), "repro"], "plain dvc repro", target=None)

    stages = reruns_after_theta_change(report)
    report.add(f"stages dvc repro would rerun ({len(stages)}): {', '.join(stages)} (those whose own inputs changed once the "
               "stage_params stages have run; the analysis follows when their outputs do)")
    report.finish(noop_s, label="noop_seconds")
    return noop_s


if __name__ == "__main__":
    main()
