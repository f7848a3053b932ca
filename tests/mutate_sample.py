"""A seeded sample of simple mutations of one module, each run against that module's quick tests.

    .venv/bin/python tests/mutate_sample.py hpc_unet/analysis/stats.py --tests tests/test_analysis_stats.py \\
        --sample 40 --seed 0

Mutations (issue 21's kinds): a comparison flipped (< <= > >= == != and their mirror), + and - swapped,
* and / swapped, a numeric constant changed (n -> n + 1, x -> 2x for floats), and/or swapped. One at a
time: the module is rewritten with the mutant (ast.unparse), the tests run with -x, the file is restored
(always, also on Ctrl-C). Prints each mutant with killed/survived and the score; the score counts a
mutant as killed when the tests fail or time out. A stand-in until the project's mutmut command lands.
"""

from __future__ import annotations

import argparse
import ast
import random
import subprocess
import sys
from pathlib import Path

FLIP = {ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}
SWAP = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult}


def sites(tree: ast.AST) -> list[tuple[str, ast.AST, int]]:
    """(kind, node, index) of every mutable place; docstrings and string constants are left alone."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            out += [("compare", node, i) for i, op in enumerate(node.ops) if type(op) in FLIP]
        elif isinstance(node, ast.BinOp) and type(node.op) in SWAP:
            out.append(("binop", node, 0))
        elif isinstance(node, ast.BoolOp):
            out.append(("boolop", node, 0))
        elif isinstance(node, ast.Constant) and type(node.value) in (int, float):
            out.append(("constant", node, 0))
    return out


def apply(kind: str, node: ast.AST, i: int) -> str:
    if kind == "compare":
        old = node.ops[i]
        node.ops[i] = FLIP[type(old)]()
        return f"{type(old).__name__} -> {type(node.ops[i]).__name__}"
    if kind == "binop":
        old = node.op
        node.op = SWAP[type(old)]()
        return f"{type(old).__name__} -> {type(node.op).__name__}"
    if kind == "boolop":
        old = node.op
        node.op = ast.Or() if isinstance(old, ast.And) else ast.And()
        return f"{type(old).__name__} -> {type(node.op).__name__}"
    old = node.value
    node.value = old + 1 if isinstance(old, int) else (old * 2 if old else 1.0)
    return f"{old!r} -> {node.value!r}"


def _describe(source: str, k: int, module: Path) -> str:
    tree = ast.parse(source)
    kind, node, i = sites(tree)[k]
    return f"{module}:{getattr(node, 'lineno', 0)} {kind} {apply(kind, node, i)}"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("module", type=Path)
    parser.add_argument("--tests", nargs="+", required=True)
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=300)
    parser.add_argument("--survivors", type=Path, help="a previous run's output: rerun only its SURVIVED mutants")
    args = parser.parse_args()
    source = args.module.read_text()
    n_sites = len(sites(ast.parse(source)))
    chosen = sorted(random.Random(args.seed).sample(range(n_sites), min(args.sample, n_sites)))
    if args.survivors:
        wanted = {line.split(None, 1)[1].strip() for line in args.survivors.read_text().splitlines()
                  if line.startswith("SURVIVED") and f" {args.module}:" in line}
        chosen = [k for k in chosen if _describe(source, k, args.module) in wanted]
    killed = 0
    try:
        for k in chosen:
            tree = ast.parse(source)
            kind, node, i = sites(tree)[k]
            line = getattr(node, "lineno", 0)
            what = apply(kind, node, i)
            args.module.write_text(ast.unparse(tree))
            try:
                rc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "-p",
                                     "no:cacheprovider", *args.tests], capture_output=True,
                                    timeout=args.timeout).returncode
            except subprocess.TimeoutExpired:
                rc = -1
            dead = rc != 0
            killed += dead
            print(f"{'killed  ' if dead else 'SURVIVED'} {args.module}:{line} {kind} {what}", flush=True)
    finally:
        args.module.write_text(source)
    print(f"{args.module}: {killed}/{len(chosen)} killed ({killed / max(1, len(chosen)):.0%}) "
          f"of {n_sites} mutation sites, sample seed {args.seed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
