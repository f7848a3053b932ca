"""Score a study's models on a dataset: the best run per architecture and a top-K ensemble, with intervals.

  hpc-unet evaluate --study S                         (its test set; synthetic studies: a held-out stack)
  hpc-unet evaluate --study S --data other.toml       (transfer: another dataset spec's test set or images)
  hpc-unet evaluate --study S --images A --masks B [--mask labels]
  hpc-unet evaluate --model a.keras --model b.keras --images A --masks B --out DIR
  hpc-unet evaluate --study S --slurm [--partition P ...] [--dry-run]   (one GPU job for large studies)

Writes <study>/analysis/evaluate/<dataset>.csv (table), .png (figure) and .json (per-image scores);
`hpc-unet analyze`/`report` include them in the report.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--study", help="study directory (its completed runs are evaluated)")
    parser.add_argument("--model", action="append", metavar="PATH",
                        help="a .keras file instead of a study's runs (repeatable: each alone plus their ensemble)")
    parser.add_argument("--data", metavar="SPEC", help="a grid spec whose [data] table names the dataset "
                        "(its test set if it has one, else its images)")
    parser.add_argument("--images", help="images to score on (TIFF stack, image, or folder)")
    parser.add_argument("--masks", help="their ground-truth masks (file, or folder paired by stem)")
    parser.add_argument("--mask", choices=("binary", "labels"), help="how to read the masks (default: the "
                        "dataset spec's, else binary)")
    parser.add_argument("--top-k", type=int, default=3, help="ensemble the K best runs (default 3; 1 = none)")
    parser.add_argument("--out", help="output folder (default <study>/analysis/evaluate)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--batch-size", type=int, default=16, help="tiles per forward pass (default 16)")
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--slurm", action="store_true", help="run this evaluation as one GPU job on Slurm")
    parser.add_argument("--dry-run", action="store_true", help="with --slurm: print the sbatch script, submit nothing")
    from hpc_unet.dispatch.slurm import add_slurm_arguments

    add_slurm_arguments(parser)


def _absolute(argv: list[str]) -> list[str]:
    """Path arguments made absolute, so the job finds them from its own working directory."""
    paths = {"--study", "--model", "--data", "--images", "--masks", "--out"}
    out, take = [], False
    for arg in argv:
        if take:
            out.append(str(Path(arg).expanduser().resolve()))
            take = False
            continue
        name, eq, value = arg.partition("=")
        if name in paths and eq:
            out.append(f"{name}={Path(value).expanduser().resolve()}")
        else:
            out.append(arg)
            take = name in paths and not eq
    return out


def submit(args: argparse.Namespace) -> int:
    """One GPU job (submitit, the same helpers as `submit`) that runs this evaluation."""
    from hpc_unet.dispatch import slurm
    from hpc_unet.errors import UserError
    from hpc_unet.study import Study, read_json

    if not args.study:
        raise UserError("--slurm needs --study (the job's scripts and logs go into the study)")
    study = Study.at(args.study).require()
    opts = slurm.options_from_args(args, read_json(study.meta_file).get("slurm", {}) if study.meta_file.exists()
                                   else {})
    opts["job_name"] = "hpc-unet-evaluate"
    folder = study.jobs_dir / "evaluate"
    job_argv = _absolute(_rebuild(args))
    script = slurm.render_sbatch(folder, opts, 1)
    if args.dry_run:
        print(script)
        import shlex

        print(f"# the job runs: hpc-unet evaluate {shlex.join(job_argv)}")
        return 0
    waits = slurm.preflight(opts, script)
    if waits:
        print(waits)
    from hpc_unet.predict.evaluate import job

    executor = slurm.make_executor(folder, opts)
    job_id = executor.submit(job, job_argv).job_id
    print(f"submitted evaluation as Slurm job {job_id}; logs in {folder}; results in "
          f"{Path(args.out) if args.out else study.analysis_dir / 'evaluate'}")
    return 0


def run(args: argparse.Namespace) -> int:
    from hpc_unet.errors import UserError

    if args.top_k < 1:
        raise UserError("--top-k must be a positive integer (1: no ensemble)")
    if args.batch_size < 1:
        raise UserError("--batch-size must be a positive integer")
    if args.study and args.model:
        raise UserError("give either --study or --model, not both")
    if not args.study and not args.model:
        raise UserError("name the models: --study DIR (its completed runs) or --model PATH.keras (repeatable)")
    if args.model and not args.out:
        raise UserError("with --model give --out DIR for the results")
    from hpc_unet.pathguard import check_outputs, study_inputs

    check_outputs({"--out": args.out}, {"--images": args.images, "--masks": args.masks, "--data": args.data,
                                        **{f"--model {m}": m for m in args.model or []},
                                        **(study_inputs(args.study) if args.study else {})}, folders=("--out",))
    if args.slurm:
        return submit(args)
    from hpc_unet.predict import evaluate as ev
    from hpc_unet.study import Study

    study = Study.at(args.study).require() if args.study else None
    dataset = ev.resolve_dataset(study, args.images, args.masks, args.data, args.mask)
    if study is not None:
        from hpc_unet.predict.selection import completed_runs

        runs = completed_runs(study)
        if runs.empty:
            raise UserError(f"{study.root} has no completed experiment with a saved model yet; run "
                            f"`hpc-unet submit --study {study.root}` (or check `hpc-unet status`)")
        paths, labels = list(runs["model"]), list(runs["exp_id"])
        entries = ev.plan_entries(runs, args.top_k)
    else:
        paths = [str(Path(p).expanduser()) for p in args.model]
        labels = _unique([Path(p).parent.parent.name if Path(p).name == "best.keras" else Path(p).stem
                          for p in paths])
        entries = [ev.Entry(label, "single", [i], "", float("nan")) for i, label in enumerate(labels)]
        if len(paths) >= 2:
            entries.append(ev.Entry(f"ensemble-{len(paths)}", "ensemble", list(range(len(paths))), "", float("nan")))
    for p in paths:
        if not Path(p).exists():
            raise UserError(f"--model: {p} does not exist; pass a .keras file saved by a study")
    from hpc_unet.predict.engine import load_model

    used = sorted({m for e in entries for m in e.members})
    models = {i: load_model(Path(paths[i]), name=labels[i], batch_size=args.batch_size) for i in used}
    table, detail = ev.evaluate(models, entries, dataset, seed=args.seed, quiet=args.quiet)
    out = Path(args.out).expanduser() if args.out else study.analysis_dir / "evaluate"  # type: ignore[union-attr]
    files = ev.write(out, dataset, table, detail, {"study": str(study.root) if study else None,
                                                   "top_k": args.top_k, "seed": args.seed})
    _print(table, dataset, files["csv"])
    return 0


def _unique(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        out.append(label if seen[label] == 1 else f"{label}#{seen[label]}")
    return out


def _rebuild(args: argparse.Namespace) -> list[str]:
    """The evaluate arguments the Slurm job repeats (everything but --slurm, --dry-run and Slurm flags)."""
    out: list[str] = []
    for key in ("study", "data", "images", "masks", "mask", "out"):
        if getattr(args, key):
            out += [f"--{key}", str(getattr(args, key))]
    for m in args.model or []:
        out += ["--model", m]
    out += ["--top-k", str(args.top_k), "--seed", str(args.seed), "--batch-size", str(args.batch_size)]
    return out + (["--quiet"] if args.quiet else [])


def _print(table, dataset, csv: Path) -> None:  # noqa: ANN001 (pandas frame, Dataset)
    print(f"evaluated on {dataset.description}: {table['images'].iloc[0]} image(s)")
    width = max(len(e) for e in table["entry"])
    for r in table.itertuples():
        vs = "" if r.kind != "ensemble" or r.iou_vs_best_member != r.iou_vs_best_member else (
            f"  vs best member {r.iou_vs_best_member:+.4f} [{r.iou_vs_best_member_lo:+.4f}, "
            f"{r.iou_vs_best_member_hi:+.4f}]")
        print(f"  {r.entry:<{width}}  IoU {r.iou:.4f} [{r.iou_lo:.4f}, {r.iou_hi:.4f}]  "
              f"Dice {r.dice:.4f} [{r.dice_lo:.4f}, {r.dice_hi:.4f}]{vs}")
    print(f"table: {csv}")
