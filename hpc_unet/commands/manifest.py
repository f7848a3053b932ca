"""Expand a grid spec (TOML) into <study>/manifest.parquet and print it.

Idempotent: the same spec gives the same experiment ids. A different spec for an existing study is
refused unless --force.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--grid", required=True, help="grid spec TOML, e.g. manifests/seed-grid.toml")
    parser.add_argument("--study", required=True, help="study directory to create or update")
    parser.add_argument("--set", action="append", metavar="TABLE.KEY=VALUE",
                        help="override a spec value, e.g. data.images=/data/training.tif (repeatable)")
    parser.add_argument("--force", action="store_true", help="replace the manifest of a study made from another spec")
    parser.add_argument("--quiet", action="store_true", help="do not print the table")


def run(args: argparse.Namespace) -> int:
    from hpc_unet.manifest import create_study
    from hpc_unet.spec import load_spec
    from hpc_unet.study import Study

    spec = load_spec(args.grid, overrides=args.set)
    from hpc_unet.dispatch.jobscript import refuse_control

    refuse_control(args.study, "--study")  # the path goes into job scripts (#SBATCH lines, srun)
    study = Study.at(args.study)
    frame = create_study(study, spec, force=args.force)
    if not args.quiet:
        from hpc_unet.status.render import print_manifest

        print_manifest(frame, title=f"{spec.name}: {len(frame)} experiments -> {study.manifest_file}")
    else:
        print(f"{len(frame)} experiments -> {study.manifest_file}")
    return 0
