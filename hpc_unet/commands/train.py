"""Train one experiment of a study (what each array task runs); resumes from its newest checkpoint."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study directory")
    parser.add_argument("--experiment", required=True, help="experiment id from the manifest")
    parser.add_argument("--attempt", type=int, help="attempt number, >= 1 (default: the next one)")
    parser.add_argument("--fresh", action="store_true", help="ignore existing checkpoints and start over")


def run(args: argparse.Namespace) -> int:
    from hpc_unet.dispatch.records import next_attempt
    from hpc_unet.errors import UserError
    from hpc_unet.manifest import get_row
    from hpc_unet.study import Study
    from hpc_unet.train.run import run_experiment

    if args.attempt is not None and args.attempt < 1:
        raise UserError(f"--attempt {args.attempt} is invalid: attempts count from 1 (--attempt must be >= 1); "
                        "leave it out to run the next one")
    study = Study.at(args.study)
    row = get_row(study, args.experiment)
    attempt = args.attempt or next_attempt(study, args.experiment)
    try:
        summary = run_experiment(row, study, attempt=attempt, fresh=args.fresh)
    except UserError:
        raise  # e.g. another task holds the experiment's lease: one line, nothing written
    except Exception as exc:
        lost = getattr(exc, "shard_not_written", None)
        where = (f"its failure shard could not be written ({lost.strerror or lost}): nothing was written to "
                 f"{study.shards_dir}; the cause is in {study.progress_file(args.experiment)}" if lost is not None
                 else f"its shard is in {study.shards_dir}")
        print(f"hpc-unet train: {args.experiment} ended as a failure ({type(exc).__name__}: {exc}); {where}")
        return 1
    if summary.get("status") == "completed" and "best_val_jaccard" in summary:
        print(f"{args.experiment}: completed, best val Jaccard {summary['best_val_jaccard']:.4f} at epoch "
              f"{summary['best_epoch']}/{summary['epochs_run']}")
    else:
        print(f"{args.experiment}: {summary.get('status')} {summary.get('note') or summary.get('error_message', '')}")
    return 0
