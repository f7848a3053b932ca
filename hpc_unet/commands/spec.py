"""The grid spec reference: every table and key (type, default, allowed values, meaning) and every
environment variable hpc-unet reads. `hpc-unet spec keys --markdown` writes what docs/spec.md holds.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="spec_command", metavar="WHAT", required=True)
    keys = sub.add_parser("keys", help="every grid spec key and environment variable",
                          description="Every grid spec key (table, type, default, allowed values, meaning) "
                                      "and every environment variable hpc-unet reads.")
    keys.add_argument("--markdown", action="store_true", help="print Markdown (docs/spec.md)")


def run(args: argparse.Namespace) -> int:
    from hpc_unet import spec_reference

    print(spec_reference.markdown() if args.markdown else spec_reference.text(), end="")
    return 0
