"""Run the study's pending experiments: one Slurm job array (default), or on this machine.

Only pending and lost experiments are submitted (add --retry-failed for failed/oom/diverged ones);
experiments with a live job or lease, or whose job state Slurm could not tell, are left alone
(status/precedence.py). Everything that can fail without side effects is checked before the data cache is
built or a file is written; an sbatch failure is one line with Slurm's message. Slurm settings default to the grid
spec's [slurm] table; flags override them. --executor local runs tasks as local subprocesses through
submitit (at most --max-parallel at once) and waits; --executor debug runs them in this process.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--study", required=True, help="study directory")
    parser.add_argument("--executor", default="slurm", help="slurm (default), local or debug")
    parser.add_argument("--max-parallel", type=int, default=1, help="local: tasks at once (default 1)")
    parser.add_argument("--per-process", type=int, default=1, metavar="K",
                        help="local: train K experiments one after another in each task process, saving a "
                        "TensorFlow start per experiment (default 1)")
    parser.add_argument("--retry-failed", action="store_true", help="also rerun failed, oom and diverged experiments")
    parser.add_argument("--only", action="append", metavar="EXP_ID", help="submit only these experiments (repeatable)")
    parser.add_argument("--dry-run", action="store_true", help="print the sbatch script and task map; submit nothing")
    parser.add_argument("--then-analyze", action="store_true",
                        help="Slurm: also submit a small CPU job that runs collect and analyze after every array "
                        "ends (--dependency=afterany), so the report is ready ([slurm] then_analyze = true)")
    parser.add_argument("--preflight", action="store_true",
                        help="first run `hpc-unet doctor`'s checks as a one-task job on the target partition; "
                        "submit the array only if it finds no problem")
    try:
        from hpc_unet.dispatch.slurm import add_slurm_arguments
    except ImportError:
        return
    add_slurm_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Checks first, side effects last: options, Slurm reachable, the plan, ``sbatch --test-only`` on the
    real script; only then the data cache and the submission (see dispatch/slurm.py, preflight)."""
    from hpc_unet.dispatch.jobscript import refuse_control
    from hpc_unet.dispatch.submit import check_executor, left_alone, plan, submit_slurm
    from hpc_unet.errors import UserError
    from hpc_unet.status.state import experiment_states
    from hpc_unet.study import Study, read_json

    refuse_control(args.study, "--study")  # the path goes into job scripts (#SBATCH lines, srun)
    study = Study.at(args.study).require()
    executor = check_executor(args.executor)
    if args.max_parallel < 1 or args.per_process < 1:
        raise UserError("--max-parallel and --per-process must be at least 1")
    options = None
    if executor != "slurm" and (getattr(args, "setup", None) or args.then_analyze):
        flag = "--setup" if getattr(args, "setup", None) else "--then-analyze"
        raise UserError(f"{flag} applies to Slurm jobs; with --executor {executor} the tasks inherit this shell's "
                        f"environment: run the setup here first (or drop {flag}; analyze with `hpc-unet collect` "
                        "and `hpc-unet analyze`)")
    if executor == "slurm":
        from hpc_unet.dispatch import slurm

        refuse_control(study.root, "the study path")  # a symlink's target counts too
        options, sources = slurm.options_with_sources(args, read_json(study.meta_file).get("slurm", {}))
        if not args.dry_run:
            slurm.check_reachable()
    states = None if args.dry_run else experiment_states(study)
    planned = plan(study, retry_failed=args.retry_failed, only=args.only, states=states)
    from hpc_unet.status.render import console as make_console

    console = make_console()
    untouched = left_alone(states or [])
    note = ", ".join(f"{n} {s}" for s, n in untouched.items())
    if not planned:
        console.print("nothing to submit: every experiment has a result or a live job or lease"
                      + (f" ({note})" if note else "") + " (--retry-failed reruns failed ones)", highlight=False)
        return 0
    if executor == "slurm" and not args.dry_run:
        waits = slurm.preflight(options, slurm.render_sbatch(study.jobs_dir / "slurm", options, len(planned)))
        if waits:
            console.print(waits, style="yellow", highlight=False)
    if args.dry_run:  # the data a real submit would refuse, refused now (read in memory, nothing written)
        from hpc_unet.data.prepare import check_study_data

        check_study_data(study)
    if getattr(args, "preflight", False) and not args.dry_run:
        from hpc_unet.dispatch.preflight import preflight_line, run_preflight

        console.print(preflight_line(run_preflight(study, executor, options)), highlight=False)
    if not args.dry_run:
        from hpc_unet.data.prepare import prepare_study

        for prep in prepare_study(study):  # once here, so the array tasks only load the cache
            console.print(f"data: {'cache ready' if prep.from_cache else 'cache built'} at {prep.entry}", highlight=False)
    if executor == "slurm":
        record, script = submit_slurm(study, planned, options, dry_run=args.dry_run)
        if args.dry_run:
            print(script)
            print("# where each setting came from (flags over the spec's [slurm] over the site profile):")
            print("\n".join(slurm.describe_sources(options, sources)))
            if options.get("then_analyze"):
                print("# then: an analysis job (collect + analyze; 1 CPU, no GPU) with "
                      "--dependency=afterany:<every array's job id>")
            print("# array task -> experiment")
            for i, p in enumerate(planned):
                print(f"# {i}\t{p.exp_id}\tattempt {p.attempt}\t({p.reason})")
            return 0
        first = record.tasks[0]["job_id"].split("_")[0] if record.tasks else "?"
        console.print(f"submitted {len(planned)} experiments as Slurm array {first} "
                      f"(partition {options.get('partition')})" + (f"; left alone: {note}" if note else "")
                      + f"; follow with `hpc-unet status --study {study.root}`", highlight=False)
        if record.analyze_job:
            console.print(f"analysis job {record.analyze_job['job_id']} runs collect + analyze after array(s) "
                          f"{', '.join(record.analyze_job['after'])}", highlight=False)
        return 0
    if args.dry_run:
        for i, p in enumerate(planned):
            print(f"{i}\t{p.exp_id}\tattempt {p.attempt}\t({p.reason})")
        return 0
    from hpc_unet.dispatch.live import run_local_with_progress

    return run_local_with_progress(study, planned, executor, args.max_parallel, console, args.per_process)
