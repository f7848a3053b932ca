"""Run the whole pipeline on this machine: synthetic EM-like data -> the smoke study (all 36 cells of the
grid on tiny settings) -> local job array -> collect -> analyze, then print where everything is.

Rerunning it continues where it stopped: experiments with a result are not trained again.
"""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", default="hpc-unet-demo", help="study directory (default ./hpc-unet-demo)")
    parser.add_argument("--max-parallel", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="experiments trained at once (default: CPU cores, at most 4)")
    parser.add_argument("--per-process", type=int, default=0, metavar="K",
                        help="experiments per task process (default: the study split evenly over the parallel "
                             "slots, one TensorFlow start each)")
    parser.add_argument("--executor", default="local", choices=("local", "debug"),
                        help="local: a subprocess per experiment (default); debug: all in this process")
    parser.add_argument("--grid", help="grid spec (default: the packaged manifests/smoke.toml)")
    parser.add_argument("--set", action="append", metavar="TABLE.KEY=VALUE", help="override a spec value")


def run(args: argparse.Namespace) -> int:
    import json
    import math
    import time
    from pathlib import Path

    from hpc_unet.data.prepare import prepare_study
    from hpc_unet.dispatch.live import run_local_with_progress
    from hpc_unet.dispatch.submit import plan
    from hpc_unet.manifest import create_study
    from hpc_unet.results.collect import collect
    from hpc_unet.spec import load_spec
    from hpc_unet.status.render import console as make_console
    from hpc_unet.study import Study, atomic_write_json

    console = make_console()
    phases: dict[str, float] = {}
    t = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        phases[name] = round(now - t, 2)
        t = now

    grid = Path(args.grid) if args.grid else Path(__file__).resolve().parents[1] / "manifests" / "smoke.toml"
    spec = load_spec(grid, overrides=args.set)
    study = Study.at(args.study)
    frame = create_study(study, spec)
    console.print(f"[bold]hpc-unet demo[/]: {len(frame)} experiments of '{spec.name}' in {study.root}")
    data = prepare_study(study)[0]
    console.print(f"data: {len(data.train_x)} train / {len(data.val_x)} val patches of "
                  f"{data.train_x.shape[1]}x{data.train_x.shape[2]} from {data.provenance.get('images')}")
    mark("data")
    planned = plan(study)
    if planned:
        # one process per slot: a TensorFlow start costs ~3 CPU-s, and the interleaved packing gives every
        # process the same mix of architectures and batch sizes, so the slots finish together
        per_process = args.per_process or max(1, math.ceil(len(planned) / args.max_parallel))
        console.print(f"training {len(planned)} experiments, {args.max_parallel} at a time, {per_process} per "
                      f"process ({args.executor} executor)")
        run_local_with_progress(study, planned, args.executor, args.max_parallel, console, per_process)
    mark("train")
    report = collect(study)
    console.print(f"collected {report.completed}/{report.experiments} completed -> {study.results_dir}")
    mark("collect")
    analysis = None
    if report.completed:
        from hpc_unet.analysis.console import print_summary
        from hpc_unet.analysis.pipeline import run_analysis

        bundle = run_analysis(study.root)
        analysis = study.analysis_dir / "report.html"
        print_summary(bundle, str(analysis))
    mark("analyze")
    phases["total"] = round(sum(phases.values()), 2)
    atomic_write_json(study.root / "demo-timing.json", phases)
    console.print("time by phase (s): " + json.dumps(phases))
    console.print(f"next: `hpc-unet status --study {study.root}`"
                  + (f", open {analysis}" if analysis else ""))
    return 0 if report.completed == report.experiments else 1
