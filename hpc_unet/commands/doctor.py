"""Check this node before training on it: versions, GPUs, a convolution speed test, the study's files, Slurm.

Prints Python / TensorFlow / CUDA / cuDNN versions (TensorFlow's build info), the GPUs TensorFlow sees
with their memory, a short convolution micro-benchmark (achieved TFLOPS in float32 and bfloat16), whether
a study's data files are readable and its directory writable (--study), and whether Slurm answers
(sinfo). Exits 1 when something would make a training task fail or crawl: a GPU was allocated
(SLURM_JOB_GPUS / CUDA_VISIBLE_DEVICES) or required by the study's device setting but TensorFlow sees
none, the benchmark fails, a data file is unreadable, the study is not writable, or Slurm is installed
but does not answer. TensorFlow is imported only when the command runs (it is a node check).
`hpc-unet submit --preflight` runs the same checks as a one-task job on the target partition.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", help="also check this study's data files (readable) and directory (writable)")
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")
    parser.add_argument("--bench-seconds", type=float, default=10.0,
                        help="length of the convolution micro-benchmark (default 10; 0 skips it)")
    parser.add_argument("--no-slurm", action="store_true", help="skip the Slurm check")


def run(args: argparse.Namespace) -> int:
    import json

    from hpc_unet.errors import UserError
    from hpc_unet.node_checks import collect_report, format_report

    if args.bench_seconds < 0:
        raise UserError("--bench-seconds must be 0 (skip) or positive")
    report = collect_report(args.study, args.bench_seconds, slurm=not args.no_slurm)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        print(format_report(report))
    sys.stdout.flush()
    return 1 if report["problems"] else 0
