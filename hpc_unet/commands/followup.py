"""Write grid specs for the next study from this one's results.

Writes several specs because the grid format is a cartesian product: <stem>-extended-lr*-bs*.toml
(extended training of the top-K configurations, grouped by lr and batch) and
<stem>-comparison-lr*-bs*.toml (every architecture at each architecture's optimal lr and batch, with
repeated seeds, so the comparison is paired). [data], [slurm] and [policy] come from <study>/spec.toml.
Start each with `hpc-unet manifest --grid FILE --study NEW_DIR`.

--transfer TARGET.toml writes <stem>-transfer-<architecture>.toml instead (scratch vs fine-tuned from the
best configuration's run, by data budget, on the target's data); --ensemble K writes <stem>-ensemble-*.toml
(the K best configurations x seeds) and prints the `evaluate` command that scores their ensemble
(docs/transfer.md).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study directory with collected results")
    parser.add_argument("--top", type=int, default=3, metavar="K", help="configurations to train longer (default 3)")
    parser.add_argument("--epochs", type=int, default=100, help="epochs of the extended training (default 100)")
    parser.add_argument("--replicates", type=int, default=3, help="seeds per configuration (default 3)")
    parser.add_argument("--comparison-epochs", type=int, metavar="N",
                        help="epochs of the comparison rerun (default: the study's)")
    parser.add_argument("--out", required=True, metavar="NEW.toml",
                        help="name stem of the specs to write, e.g. manifests/next.toml -> manifests/next-*.toml")
    parser.add_argument("--force", action="store_true", help="overwrite existing files")
    parser.add_argument("--transfer", metavar="TARGET.toml", help="write transfer-study specs onto the [data] of "
                        "this grid spec instead (budgets 0.05, 0.1, 0.25, 1 x scratch/fine-tuned x --replicates)")
    parser.add_argument("--ensemble", type=int, metavar="K", help="write the specs of the K best configurations x "
                        "--replicates seeds instead, for an ensemble scored by `evaluate`")


def run(args: argparse.Namespace) -> int:
    from hpc_unet.analysis.followup import plan_followups, write_followups
    from hpc_unet.pathguard import check_outputs, study_inputs

    check_outputs({"--out": args.out}, study_inputs(args.study))
    if args.transfer or args.ensemble is not None:
        return _transfer_or_ensemble(args)

    specs, notes = plan_followups(args.study, args.out, top=args.top, epochs=args.epochs,
                                  replicates=args.replicates, comparison_epochs=args.comparison_epochs)
    write_followups(specs, force=args.force)
    for note in notes:
        print(f"note: {note}")
    total = sum(s.experiments for s in specs)
    print(f"{len(specs)} grid specs, {total} experiments in all (one spec per lr/batch setting, because a "
          "grid is a cartesian product):")
    for spec in specs:
        print(f"  {spec.path}  {spec.experiments} experiments: {spec.purpose}")
        print(f"      {'; '.join(spec.configurations)}")
    print("start one with: hpc-unet manifest --grid FILE --study NEW_STUDY_DIR")
    return 0


def _transfer_or_ensemble(args: argparse.Namespace) -> int:
    from hpc_unet.analysis.followup import write_followups
    from hpc_unet.analysis.followup_transfer import plan_ensemble, plan_transfer
    from hpc_unet.errors import UserError

    if args.transfer and args.ensemble is not None:
        raise UserError("give --transfer or --ensemble, not both (run followup twice)")
    command = ""
    if args.transfer:
        specs = plan_transfer(args.study, args.transfer, args.out, replicates=args.replicates)
    else:
        specs, command = plan_ensemble(args.study, args.out, args.ensemble, replicates=args.replicates)
    write_followups(specs, force=args.force)
    for spec in specs:
        print(f"  {spec.path}  {spec.experiments} experiments: {spec.purpose}")
    if command:
        print(f"then score the ensemble: {command}")
    print("start one with: hpc-unet manifest --grid FILE --study NEW_STUDY_DIR")
    return 0
