"""The ``hpc-unet`` command: one verb per pipeline stage.

Each verb lives in ``hpc_unet.commands.<verb>`` with ``add_arguments(parser)`` and ``run(args) -> int``.
Command modules import nothing heavy at module level, so ``--help`` and the login-node verbs start fast
and never load TensorFlow.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
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


# OSError kinds that come from a path the user gave, not from the disk or permissions.
PATH_KIND_ERRORS = (errno.EEXIST, errno.ENOTDIR, errno.EISDIR)


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
        code = int(args._module.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not as Python's "Exception ignored" at exit
        return code
    except UserError as exc:
        print(f"hpc-unet {args.verb}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `hpc-unet collect | head -1`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # what a shell reports for a command ended by SIGPIPE
    except OSError as exc:  # full disk, permissions, vanished files: previous files are intact (atomic writes)
        where = f" ({exc.filename})" if exc.filename else ""
        if exc.errno in PATH_KIND_ERRORS:  # a file where a folder is needed, or the reverse: the user's path
            print(f"hpc-unet {args.verb}: error: {exc.strerror or exc}{where}; pass a path that is not taken by "
                  "a file (or a folder where a file is expected)", file=sys.stderr)
            return UserError.exit_code
        print(f"hpc-unet {args.verb}: error: {exc.strerror or exc}{where}; free space or fix permissions "
              "and rerun (files written before are intact)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"hpc-unet {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
