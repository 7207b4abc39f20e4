"""``siglip-adapter``: the kit's command line.

    siglip-adapter scan PATH_OR_DATASET [--json] [--source folder|hf|coop] [--regex R] [--split-file F]
    siglip-adapter kaggle --user NAME --kit-dataset NAME/SLUG [--out kaggle] [--datasets ...] [--protocols ...] [--backbones ...]
                          [--images DATASET=OWNER/SLUG ...] [--ablation] [--part N] [--budget-hours H]
    siglip-adapter kaggle --plan [--datasets ...] [--protocols ...] [--backbones ...] [--ablation] [--rates caption=N,embed=N]
    siglip-adapter ablation DATASET [--overlay NAME] [--backbone B] [--switches ...] [--out FILE]
    siglip-adapter captions DATASET [--protocol P] [--backbone B] [--overlay NAME] [--manifest-ready]
    siglip-adapter embed DATASET [--protocol P] [--backbone B] [--overlay NAME]
    siglip-adapter predict --card CARD [--card CARD ...] IMAGES_OR_FOLDER [...] [--json] [--out FILE]
    siglip-adapter card DATASET [--protocol P] [--backbone B] [--shots K] [--overlay NAME] [--out DIR]

``scan`` decodes every image a source lists, in DataLoader workers, and reports what a run would
skip and why, before any GPU time is spent: a class-folder tree by default, a flat folder with
``--regex``, a local Parquet dataset with ``--source hf``, a CoOp split file with ``--source coop``,
or the name of a ``params/<dataset>.yaml``. Exit status: 0 when the unusable share is at most
``--max-skipped`` (the dataset's ``data.max_skipped_fraction`` for a params name), 1 above it,
2 for a usage error or a source that cannot be listed.

``kaggle`` writes a kernel folder (``kernel-metadata.json`` and a parameterised notebook) for every
dataset x backbone x protocol of ``params/run.yaml`` (or those named), for ``kaggle kernels push -p``;
``--part N`` the kernels that continue part N-1; ``--plan`` only prints what each would compute.

``ablation`` runs every switch of the ``paper`` protocol on alone over ``corrected`` and off alone
from ``paper`` for one dataset, and writes the per-seed rows to ``results/ablation/<dataset>.csv``
(``06_analysis`` turns them into ``results/ablation.md`` and its figure).

``captions`` and ``embed`` run what ``01_captions`` and ``02_embed`` compute for one run, writing the
same files; under ``accelerate launch`` (``python -m accelerate.commands.launch --multi_gpu
--num_processes N -m siglip_adapter.cli captions DATASET``) N processes share the work, each its
deterministic share of the parts, and the files equal a one-process run's (see ``siglip_adapter.shard``).

``predict`` applies saved adapters (``siglip_adapter.cards``) to images: the backbone is loaded once,
each image embedded once, and every card writes one row per image (predicted class, its logit, its
calibrated probability and whether the image is far from every class), as CSV or ``--json``. An
image that cannot be read gets a row with its ``error`` and a line on stderr, the others are still
classified (exit status 1); a card made on another backbone or preprocessing is refused (exit status 2).

``card`` saves a run's best method at K shots (the largest by default; highest validation accuracy
over methods and seeds) as a card in ``results/<dataset>/cards/``, refitted from the run's features
and checked against the test accuracy its stage recorded (what ``dvc repro`` runs per dataset).

A mistake in the arguments or the parameter files is one line on stderr naming the flag or the
file and key, with the nearest valid names, and exit status 2. Building the parser imports nothing
heavy (each command imports what it runs), so ``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

from .config import FLAGS, ConfigError, dataset_names, did_you_mean, load_config
from .runs import ablation_arguments, run_arguments


class Parser(argparse.ArgumentParser):
    """argparse's parser with its usage mistakes as one line (the usage is in ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def run_config(args):
    """The parameters of the run that ``args`` name (dataset, ``--overlay``, ``--protocol``, ``--backbone``),
    checked before any heavy module is imported: a mistake names its flag or its file and key."""
    return load_config(args.dataset, args.overlay, protocol=getattr(args, "protocol", None), backbone=args.backbone, given_as=FLAGS)


def scan_source(source, num_workers="auto") -> dict:
    """{found, used, skipped: [{path, reason}]} for every image of ``source`` (full decode)."""
    from .data import find_bad_images

    bad = find_bad_images(source, source.ids, num_workers, desc="scanning")
    skipped = sorted(source.skipped + [{"path": source.path_of(i), "reason": r} for i, r in bad.items()], key=lambda r: r["path"])
    return {"found": source.found, "used": source.found - len(skipped), "skipped": skipped}


def _source_for(args):
    from .sources import build_source

    target = args.target
    is_name = "/" not in target and not Path(target).exists()
    if is_name:
        try:
            names = dataset_names()
        except FileNotFoundError:
            names = []
        if target not in names:
            raise FileNotFoundError(f"{target}: neither a path nor a params/<dataset>.yaml name{did_you_mean(target, names)}"
                                    f" (datasets: {', '.join(names)})")
        cfg = load_config(target)
        return build_source(cfg), cfg["data"]["max_skipped_fraction"]
    d = {"source": args.source, "root": str(Path(target).resolve()), "hub_id": str(Path(target).resolve()),
         "filename_regex": args.regex, "split_file": args.split_file}
    return build_source({"dataset": d}), args.max_skipped


def cmd_scan(args) -> int:
    try:
        source, max_skipped = _source_for(args)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"siglip-adapter scan: {e}", file=sys.stderr)
        return 2
    if args.max_skipped is not None:
        max_skipped = args.max_skipped
    report = scan_source(source, args.workers)
    share = len(report["skipped"]) / max(report["found"], 1)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{source.root} ({source.kind}): {report['found']} images found, {report['used']} usable, "
              f"{len(report['skipped'])} skipped ({share:.1%}); {len(source.classnames)} classes")
        for reason, n in Counter(r["reason"].split(":")[0] for r in report["skipped"]).most_common():
            print(f"  {n:6d}  {reason}")
        for r in report["skipped"][: args.show]:
            print(f"  {r['path']}: {r['reason']}")
        if len(report["skipped"]) > args.show:
            print(f"  ... {len(report['skipped']) - args.show} more (--json lists all)")
    return 1 if share > (max_skipped if max_skipped is not None else 0.05) else 0


def cmd_kaggle(args) -> int:
    from .kaggle import kernel_runs, measured_rates, plan, write_kernels

    try:
        images = dict(item.split("=", 1) for item in args.images)
        rates = {k: float(v) for k, v in (item.split("=", 1) for item in args.rates.split(","))} if args.rates else None
        if rates is not None and (set(rates) != {"caption", "embed"} or min(rates.values()) <= 0):
            raise ValueError
    except ValueError:
        print(f"siglip-adapter kaggle: --images takes DATASET=OWNER/SLUG and --rates caption=N,embed=N (images per second, > 0); "
              f"got --images {args.images} --rates {args.rates}", file=sys.stderr)
        return 2
    try:
        if args.plan:
            where = "--rates (as given)"
            if rates is None:
                rates, where = measured_rates()
            return _print_plan(plan(kernel_runs(args.datasets, args.protocols, args.backbones, args.ablation), rates, args.budget_hours),
                               args.budget_hours, rates, where)
        if not args.user or not args.kit_dataset:
            raise ValueError("--user and --kit-dataset are required to write kernels (only --plan goes without them)")
        folders = write_kernels(args.out, args.user, args.kit_dataset, args.datasets, args.protocols, images, private=not args.public,
                                ablation=args.ablation, backbones=args.backbones, part=args.part, budget_hours=args.budget_hours)
    except (ConfigError, ValueError) as e:
        print(f"siglip-adapter kaggle: {e}", file=sys.stderr)
        return 2
    for f in folders:
        meta = json.loads((f / "kernel-metadata.json").read_text())
        print(f"{f}: {meta['id']} (sources: {', '.join(meta['dataset_sources'] + meta['kernel_sources'])})")
    print(f"push each with: kaggle kernels push -p {args.out}/<name>  (nothing here contacts Kaggle)")
    return 0


def _print_plan(rows: list[dict], budget_hours: float, rates: dict | None, where: str) -> int:
    """The plan's table, then a warning per kernel that would not fit the budget."""
    print(f"{'kernel':40s} {'captions':>9s} {'embeds':>9s} {'GPU h':>6s}  counted from")
    for r in rows:
        n = lambda v: "?" if v is None else str(v)  # noqa: E731
        print(f"{r['kernel']:40s} {n(r['captions']):>9s} {n(r['embeds']):>9s} {n(r['gpu_hours']):>6s}  {r['counted']}")
    if rates is None:
        print(f"GPU hours need measured rates: {where}; run bench/gpu.py on the kernel's GPU (it writes results/bench/gpu.txt) "
              "or give --rates caption=N,embed=N (images per second)")
    else:
        print(f"GPU hours from caption={rates['caption']:g},embed={rates['embed']:g} images/s, {where}")
    for r in rows:
        if r["fits"] is False:
            print(f"warning: {r['kernel']} needs about {r['gpu_hours']} GPU hours, over the {budget_hours} h budget: it will stop and "
                  "be continued by part 2 (--part 2), or give it fewer shots, seeds or images", file=sys.stderr)
    return 0


def cmd_ablation(args) -> int:
    run_config(args)
    from .ablation import run_from_args
    from .report.ablation import ablation_effects, ablation_sentence

    rows, path = run_from_args(args)
    effects = ablation_effects(rows)
    print(effects.round(4).to_string(index=False))
    print(ablation_sentence(args.dataset, effects))
    print(f"rows: {path}")
    return 0


def cmd_stage(args) -> int:
    cfg = run_config(args)
    from . import shard as sharding
    from .paths import paths_of
    from .stages.captions import caption_stage
    from .stages.embed import embed_stage

    paths = paths_of(cfg)
    me = sharding.current(cfg["shards"]["timeout_hours"])
    if args.command == "captions":
        caps = caption_stage(cfg, paths, me, manifest_ready=args.manifest_ready)
        done = f"{len(caps)} captions: {paths.captions}"
    else:
        report = embed_stage(cfg, paths, me)
        done = f"features of {', '.join(f'{r.kind} ({r.rows})' for r in report.itertuples())}: {paths.features_index}"
    if me.is_main:
        print(done, flush=True)
    return 0


def cmd_predict(args) -> int:
    from .cards import predict

    try:
        rows, notes = predict(args.card, args.inputs, device=args.device, batch_size=args.batch_size)
    except FileNotFoundError as e:  # an image or folder argument that is not there
        print(f"siglip-adapter predict: {e}", file=sys.stderr)
        return 2
    for note in notes:
        print(f"siglip-adapter predict: {note}", file=sys.stderr)
    text = _records_json(rows) if args.json else rows.to_csv(index=False, float_format="%.6g")
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 1 if rows["error"].notna().any() else 0


def _records_json(rows) -> str:
    """The rows as a JSON list of records, paths as written (pandas' ``to_json`` escapes '/'), missing values null."""
    records = rows.astype(object).where(rows.notna(), None).to_dict(orient="records")
    return json.dumps(records, indent=2) + "\n"


def cmd_card(args) -> int:
    run_config(args)
    from .cards import save_best

    path = save_best(args.dataset, args.protocol, args.shots, args.overlay, args.out, args.backbone)
    print(f"card: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = Parser(prog="siglip-adapter", description="SigLIP-Adapter reproducibility kit")
    sub = ap.add_subparsers(dest="command", required=True)
    scan = sub.add_parser("scan", help="report the images a run would skip, and why", description=__doc__)
    scan.add_argument("target", help="an image folder, a local Parquet dataset, or a params/<dataset>.yaml name")
    scan.add_argument("--json", action="store_true", help="print one JSON object {found, used, skipped: [{path, reason}]} on stdout")
    scan.add_argument("--source", choices=["folder", "hf", "coop"], default="folder", help="how to read a path (default: folder)")
    scan.add_argument("--regex", default=None, help="flat folder: regular expression whose group 'class' (or 1) is the class, on the file name")
    scan.add_argument("--split-file", default=None, help="--source coop: the split_zhou_<Dataset>.json")
    scan.add_argument("--max-skipped", type=float, default=None, help="unusable share above which the exit status is 1 (default 0.05)")
    scan.add_argument("--workers", default="auto", help="DataLoader workers (default auto)")
    scan.add_argument("--show", type=int, default=20, help="skipped files listed in the text report (default 20)")
    kg = sub.add_parser("kaggle", help="write Kaggle kernel folders, one per dataset x backbone x protocol")
    kg.add_argument("--user", default=None, help="your Kaggle user name (the kernels' owner; required unless --plan)")
    kg.add_argument("--kit-dataset", default=None, help="the Kaggle dataset holding this kit, OWNER/SLUG (required unless --plan)")
    kg.add_argument("--out", type=Path, default=Path("kaggle"), help="where the kernel folders go (default kaggle/)")
    kg.add_argument("--datasets", nargs="+", default=None, help="default: params/run.yaml's datasets")
    kg.add_argument("--protocols", nargs="+", default=None, help="default: params/run.yaml's protocols")
    kg.add_argument("--backbones", nargs="+", default=None, help="default: params/run.yaml's backbones")
    kg.add_argument("--images", nargs="+", default=[], metavar="DATASET=OWNER/SLUG",
                    help="the Kaggle dataset of a dataset's images (default: its dataset.kaggle.dataset_source)")
    kg.add_argument("--public", action="store_true", help="make the kernels public (default private)")
    kg.add_argument("--ablation", action="store_true", help="also one kernel per dataset running the ablation of the paper's switches")
    kg.add_argument("--part", type=int, default=1,
                    help="N > 1: the follow-up kernels that continue part N-1 from its output (a kernel stopped by its budget)")
    kg.add_argument("--budget-hours", type=float, default=11.0,
                    help="each kernel stops cleanly after this long and archives what it has (default 11; Kaggle stops a GPU session at 12)")
    kg.add_argument("--plan", action="store_true", help="print what each kernel will caption and embed (and its GPU hours with --rates); write nothing")
    kg.add_argument("--rates", default=None, metavar="caption=N,embed=N", help="--plan: images per second captioned and embedded on the kernel's GPUs, measured")
    ab = sub.add_parser("ablation", help="each paper switch on alone over corrected and off alone from paper, for one dataset")
    ablation_arguments(ab)
    for name, what in (("captions", "01_captions: the checked split, captions and their quality"),
                       ("embed", "02_embed: the image, caption and class-prompt features")):
        st = sub.add_parser(name, help=f"{what} for one run (sharded under accelerate launch)")
        run_arguments(st)
        if name == "captions":
            st.add_argument("--manifest-ready", action="store_true", help="read the run's manifest.parquet instead of building it")
    pr = sub.add_parser("predict", help="apply saved adapter cards to images")
    pr.add_argument("--card", action="append", required=True, help="a card's .json (repeat for several)")
    pr.add_argument("inputs", nargs="+", help="image files or folders (searched recursively)")
    pr.add_argument("--json", action="store_true", help="JSON records instead of CSV")
    pr.add_argument("--out", default=None, help="write here instead of standard output")
    pr.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    pr.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default 32)")
    cd = sub.add_parser("card", help="save a run's best K-shot method as a card (refitted, checked against its stage row)")
    run_arguments(cd, default_protocol="corrected")
    cd.add_argument("--shots", type=int, default=None, help="K (default: the run's largest)")
    cd.add_argument("--out", type=Path, default=None, help="the cards folder (default results/<dataset>/cards)")
    args = ap.parse_args(argv)
    from .budget import EXIT_OUT_OF_TIME, OutOfTime

    try:
        return _dispatch(args)
    except OutOfTime as e:  # a Kaggle kernel's budget: the finished parts are stored, a rerun resumes
        print(f"siglip-adapter {args.command}: {e}", file=sys.stderr)
        return EXIT_OUT_OF_TIME
    except Exception as e:
        if not _user_error(e):  # a bug of ours: its traceback
            raise
        print(f"siglip-adapter {args.command}: {e}", file=sys.stderr)
        return 2


def _user_error(e: Exception) -> bool:
    """One of the kit's own user-error types: a mistake in an argument or a parameter file, an
    unusable card or image. Those of modules that building the parser does not import are imported
    here, once one is raised (its module is loaded by then)."""
    if isinstance(e, ConfigError):
        return True
    from .cards import CardError
    from .sources.images import ImageError

    return isinstance(e, (CardError, ImageError))


def _dispatch(args) -> int:
    if args.command == "card":
        return cmd_card(args)
    if args.command == "predict":
        return cmd_predict(args)
    if args.command in ("captions", "embed"):
        return cmd_stage(args)
    if args.command == "ablation":
        return cmd_ablation(args)
    if args.command == "scan":
        return cmd_scan(args)
    if args.command == "kaggle":
        return cmd_kaggle(args)
    return 2  # pragma: no cover - argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
