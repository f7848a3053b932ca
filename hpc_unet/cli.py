"""The ``hpc-unet`` command: one verb per pipeline stage.

Each verb lives in ``hpc_unet.commands.<verb>`` with ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules import nothing heavy at module level, so ``--help`` and the login-node verbs start fast
and never load TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from hpc_unet import __version__
from hpc_unet.errors import UserError

VERBS = {
    "manifest": "expand a grid spec into the study's manifest",
    "submit": "run the study's pending experiments (Slurm job array, or locally)",
    "status": "show the study's progress",
    "collect": "merge result shards into results/",
    "analyze": "statistics, figures, verdicts and the report",
    "report": "rebuild the report from an existing analysis",
    "followup": "write the grid for the next study from this one's results",
    "train": "train one experiment of a study (what each array task runs)",
    "data": "synthesize or inspect data",
    "demo": "run the whole pipeline on synthetic data on this machine",
    "bench": "benchmarks: training throughput, per-task overhead, orchestration at scale",
    "doctor": "check a node: versions, GPUs, a speed test, the study's files, Slurm",
    "predict": "segment images with a trained model (sliding window), optionally scored against masks",
    "evaluate": "score a study's best models and a top-K ensemble on a dataset (test set or transfer)",
    "spec": "every grid spec key and environment variable: type, default, meaning, allowed values",
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only`` (the verb being run) just that verb's module is imported: some verbs'
    arguments import heavier modules, and every command pays for them at start-up otherwise."""
    parser = argparse.ArgumentParser(
        prog="hpc-unet",
        description="Systematic U-Net hyperparameter studies on Slurm GPU clusters. "
        "Pipeline: manifest -> submit -> (train) -> status -> collect -> analyze.",
    )
    parser.add_argument("--version", action="version", version=f"hpc-unet {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="COMMAND")
    for verb, help_text in VERBS.items():
        if only is not None and verb != only:
            sub.add_parser(verb, help=help_text)
            continue
        module = importlib.import_module(f"hpc_unet.commands.{verb}")
        p = sub.add_parser(verb, help=help_text, description=(module.__doc__ or help_text).strip())
        module.add_arguments(p)
        p.set_defaults(_module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    verb = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(verb if verb in VERBS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help()
        return 2
    try:
        return int(args._module.run(args) or 0)
    except UserError as exc:
        print(f"hpc-unet {args.verb}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:  # full disk, permissions, vanished files: previous files are intact (atomic writes)
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"hpc-unet {args.verb}: error: {exc.strerror or exc}{where}; free space or fix permissions "
              "and rerun (files written before are intact)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hpc-unet {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
