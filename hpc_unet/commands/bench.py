"""Benchmarks: training throughput against the original study's loop, per-task overhead, FLOPs and
utilization, orchestration at scale, and the precision / jit options. Each prints rich tables and, with
--out, writes JSON. Timings on a shared machine are noisy: compare the ratios each bench measures in
one run, not absolute seconds across runs (docs/bench.md). On a GPU node run
`python -m hpc_unet.bench.gpu_check --out DIR`.
"""

from __future__ import annotations

import argparse
from typing import Any

SUBCOMMANDS = ("train", "overhead", "flops", "orchestration", "options", "all")


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.replace(",", " ").split()]


def _names(text: str) -> list[str]:
    from hpc_unet.spec import ARCHITECTURES, did_you_mean

    names = [v for v in text.replace(",", " ").split()]
    for name in names:
        if name not in ARCHITECTURES:
            raise argparse.ArgumentTypeError(f"unknown architecture '{name}'{did_you_mean(name, ARCHITECTURES)}")
    return names


def _add_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=64, help="patch size (default 64; the study: 256)")
    p.add_argument("--base", type=int, default=8, help="base filters (default 8; the study: 64)")
    p.add_argument("--depth", type=int, default=4, help="pooling levels (default 4)")
    p.add_argument("--architectures", type=_names, default=None, metavar="A,B", help="default: all three")
    p.add_argument("--batches", type=_ints, default=[8, 16, 32], metavar="8,16,32")
    p.add_argument("--n-train", type=int, default=256, help="training images (default 256)")
    p.add_argument("--n-val", type=int, default=32, help="validation images (default 32)")
    p.add_argument("--warm-epochs", type=int, default=4, help="timed epochs after the first (default 4)")
    p.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"))
    p.add_argument("--jit", action="store_true", help="jit_compile=True on both paths")
    p.add_argument("--diagnose", action="store_true",
                   help="also run the crossed paths (our pipeline + function metric, NumPy fit + stateful metrics)")


def _add_overhead(p: argparse.ArgumentParser) -> None:
    from hpc_unet.bench.overhead import GRAPH_OPTIONS

    p.add_argument("--graph-options", nargs="+", default=list(GRAPH_OPTIONS), choices=GRAPH_OPTIONS,
                   help="startup variants (default: all)")
    p.add_argument("--architectures", type=_names, default=["UNet", "Attention_ResUNet"], metavar="A,B")
    p.add_argument("--repeats", type=int, default=1, help="fresh processes per variant (default 1)")
    p.add_argument("--epochs", type=int, default=3, help="epochs of the tiny study (default 3, at least 2)")
    p.add_argument("--no-tasks", action="store_true", help="skip `hpc-unet train` subprocesses")
    p.add_argument("--demo-study", metavar="DIR", help="aggregate the phases of an existing `hpc-unet demo` study")
    p.add_argument("--no-checkpoint", action="store_true", help="skip timing the epoch-end checkpoint bundle")
    p.add_argument("--checkpoint-only", action="store_true",
                   help="time only the epoch-end checkpoint (no startup runs, no tasks)")
    p.add_argument("--checkpoint-size", type=int, default=256)
    p.add_argument("--checkpoint-base", type=int, default=64)
    p.add_argument("--workdir", help="where to put the tiny study (default: a temporary directory)")


def _add_flops(p: argparse.ArgumentParser) -> None:
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--base", type=int, default=64)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--device", default="A40", help="device of the GPU-hour projection (default A40)")
    p.add_argument("--precision", default="float32", choices=("float32", "mixed_bfloat16"))
    p.add_argument("--measured", metavar="JSON", help="a `bench train` or gpu_check JSON: achieved TFLOPS and "
                   "fraction of peak from its images/s")


def _add_orchestration(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sizes", type=_ints, default=[36, 3600], metavar="36,3600,36000",
                   help="experiments per synthetic study, multiples of 36 (default 36,3600)")
    p.add_argument("--workers", type=int, default=0, help="shard-writing processes (default: CPU count)")
    p.add_argument("--analyze-max", type=int, default=3600, help="analyze only studies up to this size")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples of analyze (default 2000)")
    p.add_argument("--workdir", help="where to build the studies (default: a temporary directory)")
    p.add_argument("--keep", action="store_true", help="keep the synthetic studies")
    p.add_argument("--no-commands", action="store_true",
                   help="skip timing each command as its own process (cold and warm page cache)")


def _add_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--architectures", type=_names, default=None, metavar="A,B", help="default: all three")
    p.add_argument("--lr", type=float, default=5e-3, help="default 5e-3 (all three learn on the smoke data)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--replicates", type=int, default=1, help="seeds per variant (default 1)")
    p.add_argument("--tolerance", type=float, default=0.02, help="accepted |best val Jaccard difference|")
    p.add_argument("--set", action="append", metavar="TABLE.KEY=VALUE", help="override the smoke spec")
    p.add_argument("--threads", type=int, default=0, help="HPC_UNET_THREADS for the trainers")
    p.add_argument("--no-jit", action="store_true", help="leave out the jit_compile variants")
    p.add_argument("--no-nan-check", action="store_true", help="skip the diverging mixed_bfloat16 run")
    p.add_argument("--workdir", help="where to put the study (default: a temporary directory)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCH")
    helps = {
        "train": "training images/s: our pipeline + stateful metrics vs the original NumPy fit + function metric",
        "overhead": "fresh process to first step, `hpc-unet train` phases, demo phases, checkpoint cost",
        "flops": "analytic FLOPs, device peaks, utilization, GPU-hours of the full grid",
        "orchestration": "manifest / status / collect / analyze on synthetic studies of 36 .. 36,000 runs",
        "options": "float32 vs mixed_bfloat16 vs jit_compile: speed-up and accuracy on the smoke data",
        "all": "every bench above (--out DIR gets one JSON per bench)",
    }
    adders = {"train": _add_train, "overhead": _add_overhead, "flops": _add_flops,
              "orchestration": _add_orchestration, "options": _add_options}
    for name in SUBCOMMANDS:
        p = sub.add_parser(name, help=helps[name], description=helps[name])
        if name in adders:
            adders[name](p)
            p.add_argument("--out", metavar="FILE.json", help="write the results as JSON")
        else:
            p.add_argument("--out", metavar="DIR", help="directory for bench-<name>.json files")
            p.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test of the benches)")
            p.add_argument("--skip", nargs="+", default=[], choices=SUBCOMMANDS[:-1], help="benches to leave out")


def _run_train(args: argparse.Namespace) -> dict[str, Any]:
    from hpc_unet.bench.throughput import TrainBenchConfig, bench_train, print_train
    from hpc_unet.spec import ARCHITECTURES

    cfg = TrainBenchConfig(size=args.size, base=args.base, depth=args.depth,
                           architectures=tuple(args.architectures or ARCHITECTURES), batches=tuple(args.batches),
                           n_train=args.n_train, n_val=args.n_val, warm_epochs=args.warm_epochs,
                           precision=args.precision, jit_compile=args.jit, diagnose=args.diagnose)
    payload = bench_train(cfg)
    print_train(payload)
    return payload


def _inside(path: str, folder: str | None) -> bool:
    from pathlib import Path

    return bool(folder) and Path(folder).resolve() in Path(path).resolve().parents


def _run_overhead(args: argparse.Namespace) -> dict[str, Any]:
    from hpc_unet.bench.overhead import bench_overhead, print_overhead

    if args.demo_study and not _inside(args.demo_study, args.workdir):  # the bench's own study comes later
        from hpc_unet.study import Study

        Study.at(args.demo_study).require()  # a mistyped path is an error, not an empty table
    payload = bench_overhead(options=tuple(args.graph_options), architectures=tuple(args.architectures),
                             repeats=args.repeats, tasks=not (args.no_tasks or args.checkpoint_only), demo_study=args.demo_study,
                             checkpoint=not args.no_checkpoint, checkpoint_base=args.checkpoint_base,
                             checkpoint_size=args.checkpoint_size, epochs=args.epochs, workdir=args.workdir,
                             startup_runs=not args.checkpoint_only)
    print_overhead(payload)
    return payload


def _run_flops(args: argparse.Namespace) -> dict[str, Any]:
    from hpc_unet.bench.flops import bench_flops, measurements_from, print_flops
    from hpc_unet.errors import UserError

    kwargs: dict[str, Any] = {}
    if args.measured:
        import json
        from pathlib import Path

        try:
            measured = json.loads(Path(args.measured).read_text())
        except (OSError, ValueError) as exc:
            raise UserError(f"--measured {args.measured}: cannot read it as JSON ({exc})") from exc
        rows, device, precision, size = measurements_from(measured)
        kwargs = {"measurements": rows, "measured_device": device, "measured_precision": precision,
                  "measured_size": size}
    payload = bench_flops(size=args.size, base=args.base, depth=args.depth, device=args.device,
                          precision=args.precision, **kwargs)
    print_flops(payload)
    return payload


def _run_orchestration(args: argparse.Namespace) -> dict[str, Any]:
    from hpc_unet.bench.orchestration import bench_orchestration, print_orchestration
    from hpc_unet.errors import UserError

    bad = [n for n in args.sizes if n <= 0 or n % 36]
    if bad:
        raise UserError(f"--sizes {bad[0]}: each size must be a positive multiple of 36 (the grid x replicates)")
    payload = bench_orchestration(sizes=tuple(args.sizes), workdir=args.workdir, workers=args.workers,
                                  analyze_max=args.analyze_max, n_boot=args.bootstrap, keep=args.keep,
                                  commands=not args.no_commands)
    print_orchestration(payload)
    return payload


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    from hpc_unet.bench.options import bench_options, print_options
    from hpc_unet.spec import ARCHITECTURES

    payload = bench_options(architectures=tuple(args.architectures or ARCHITECTURES), lr=args.lr, batch=args.batch,
                            epochs=args.epochs, replicates=args.replicates, tolerance=args.tolerance,
                            overrides=args.set, nan_check=not args.no_nan_check, workdir=args.workdir,
                            threads=args.threads, jit=not args.no_jit)
    print_options(payload)
    return payload


RUNNERS = {"train": _run_train, "overhead": _run_overhead, "flops": _run_flops,
           "orchestration": _run_orchestration, "options": _run_options}

QUICK = {
    "train": ["--size", "16", "--base", "2", "--depth", "2", "--architectures", "UNet", "--batches", "4",
              "--n-train", "8", "--n-val", "4", "--warm-epochs", "1"],
    "overhead": ["--graph-options", "default", "--architectures", "UNet", "--epochs", "2", "--checkpoint-size", "32",
                 "--checkpoint-base", "4"],
    "flops": ["--size", "32", "--base", "4", "--depth", "2"],
    "orchestration": ["--sizes", "36", "--bootstrap", "50"],
    "options": ["--architectures", "UNet", "--epochs", "2", "--no-jit"],
}


def _parse_sub(name: str, argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=f"hpc-unet bench {name}")
    {"train": _add_train, "overhead": _add_overhead, "flops": _add_flops, "orchestration": _add_orchestration,
     "options": _add_options}[name](parser)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hpc_unet.bench.common import console_print, write_json

    name = getattr(args, "bench", None)
    if not name:
        console_print("usage: hpc-unet bench {" + ",".join(SUBCOMMANDS) + "} [--out FILE] ...; "
                      "see `hpc-unet bench --help`")
        return 2
    if name != "all":
        payload = RUNNERS[name](args)
        out = write_json(args.out, payload)
        if out:
            console_print(f"wrote {out}")
        return 0
    out_dir = Path(args.out) if args.out else None
    for bench in SUBCOMMANDS[:-1]:
        if bench in args.skip:
            continue
        console_print(f"[bold]bench {bench}[/]")
        payload = RUNNERS[bench](_parse_sub(bench, QUICK[bench] if args.quick else []))
        if out_dir is not None:
            console_print(f"wrote {write_json(out_dir / f'bench-{bench}.json', payload)}")
    return 0
