"""Mutation testing of the modules whose mistakes would change a user's conclusion or lose work.

``./quickstart.sh mutate [MODULE ...]`` (or ``.venv/bin/python tools/mutate.py``) runs mutmut on each
MODULE against that module's quick tests only, one module at a time, and prints killed / mutants and the
survivors. Without MODULE it lists the configured modules. Each module works in its own scratch copy
``.mutmut/<module>/`` (mutmut reads its settings from setup.cfg in the working directory and writes
``mutants/`` there), so results are cached per module and a rerun only tests what changed. docs/testing.md
has the scores and why each remaining survivor is equivalent.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRATCH = REPO / ".mutmut"

# module (dotted, below hpc_unet) -> the quick tests that defend it (pytest node ids or files)
MODULES: dict[str, list[str]] = {
    "train.metrics": ["tests/test_metrics.py"],
    "train.losses": ["tests/test_losses.py"],
    "predict.scores": ["tests/test_predict_scores.py", "tests/test_properties.py"],
    "predict.tiles": ["tests/test_predict_tiles.py", "tests/test_properties.py"],
    "status.precedence": ["tests/test_slurm_lease.py", "tests/test_properties.py", "-m", "not slurm and not slow"],
    "status.slurm_state": ["tests/test_slurm_parsing.py", "tests/test_slurm_queries.py", "tests/test_properties.py",
                           "tests/test_status_waiting.py"],
    "status.waiting": ["tests/test_status_waiting.py"],
    "lease": ["tests/test_lease.py", "tests/test_slurm_lease.py", "-m", "not slurm and not slow"],
    "results.shards": ["tests/test_results_shards.py", "tests/test_reliability_shards.py", "tests/test_collect_fast.py"],
    # not test_collect_cli's large-study status test: 26 s for each of collect's ~800 mutants
    "results.collect": ["tests/test_collect_fast.py", "tests/test_collect_exact.py", "tests/test_reliability_shards.py",
                        "tests/test_collect_cli.py::test_collect_prunes_checkpoints_of_completed_experiments",
                        "tests/test_collect_cli.py::test_collect_reads_version_1_shards_with_the_old_spelling",
                        "tests/test_analysis_learning.py::test_collect_lists_not_learned_and_marginal_runs"],
    # the pure tests of the learned rule only: the CLI and analysis tests that also reach it take ~30 s a mutant
    "train.summary": ["tests/test_train_summary.py",
                      "tests/test_analysis_conclusions.py::test_trivial_scores_match_the_three_predictors_computed_directly",
                      *(f"tests/test_analysis_learning.py::{t}" for t in (
                          "test_learned_needs_both_metrics_beyond_the_margin",
                          "test_one_known_metric_decides_alone_and_none_is_unknown",
                          "test_old_shards_are_judged_by_todays_rule"))],
    "analysis.stats": ["tests/test_analysis_stats.py", "tests/test_analysis_stats_exact.py",
                       "tests/test_analysis_verdicts.py", "tests/test_analysis_rules.py"],
    # analysis/verdicts/ is a package: one entry per module, each with every verdict test file
    **{f"analysis.verdicts.{m}": ["tests/test_analysis_verdicts.py", "tests/test_analysis_rules.py",
                                  "tests/test_verdicts_hypotheses.py", "tests/test_verdicts_criteria.py",
                                  "tests/test_verdicts_recommend.py"]
       for m in ("hypotheses", "criteria", "recommend", "common")},
}


# Modules whose tests run TensorFlow: TensorFlow is not fork-safe, and mutmut's fork server by default imports the
# tests (so TensorFlow) before forking each mutant's worker, whose TensorFlow then spins until mutmut's CPU limit
# kills it: every such mutant "timed out" and counted as killed (75 of 184 in train.metrics, a message change
# among them). Without the warm-up each worker imports TensorFlow itself (slower, but a kill is a real one).
NO_WARMUP = {"train.metrics", "train.losses"}


def setup_cfg(module: str) -> str:
    selection = "\n    ".join(t for t in MODULES[module] if not t.startswith("tests/") or (REPO / t.split("::")[0]).exists())
    return (f"[mutmut]\nsource_paths = hpc_unet\nonly_mutate = hpc_unet/{module.replace('.', '/')}.py\n"
            f"also_copy = manifests\npytest_add_cli_args = -q\n    -p\n    no:randomly\n    -p\n    no:cacheprovider\n"
            f"pytest_add_cli_args_test_selection = {selection}\nprocess_isolation = forkserver\n"
            + ("forkserver_warmup = none\n" if module in NO_WARMUP else "")
            + "use_git_change_detection = false\n")


def prepare(module: str) -> Path:
    """A scratch copy of the sources and tests (refreshed every run; mutmut's cache survives)."""
    work = SCRATCH / module
    work.mkdir(parents=True, exist_ok=True)
    for name in ("hpc_unet", "tests", "manifests"):
        if (work / name).exists():
            shutil.rmtree(work / name)
        shutil.copytree(REPO / name, work / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", work / "pyproject.toml")
    (work / "setup.cfg").write_text(setup_cfg(module))
    return work


def scores(work: Path, module: str) -> tuple[int, int, list[str]]:
    """(killed, mutants, survivors) from mutmut's per-file results: the tests passed (0), no test ran it
    (5, 33) or it was not checked (None) is a survivor; a failure, error or timeout is a kill."""
    meta = work / "mutants" / "hpc_unet" / (module.replace(".", "/") + ".py.meta")
    codes = json.loads(meta.read_text())["exit_code_by_key"]
    survivors = sorted(k for k, v in codes.items() if v in (0, 5, 33, None))
    return len(codes) - len(survivors), len(codes), survivors


TIMEOUTS = (-24, 24, 36, 152, 255)  # mutmut's exit codes for a worker stopped by its CPU limit


def forget_survivors(work: Path, module: str, timeouts: bool = False) -> None:
    """Mark the last run's survivors (and with ``timeouts`` its timeouts) unchecked, so mutmut tests them again
    against the current tests (mutmut keeps a result until the mutated function's source changes, not when tests
    are added)."""
    meta = work / "mutants" / "hpc_unet" / (module.replace(".", "/") + ".py.meta")
    if not meta.exists():
        return
    again = (0, 5, 33, *(TIMEOUTS if timeouts else ()))
    data = json.loads(meta.read_text())
    data["exit_code_by_key"] = {k: (None if v in again else v) for k, v in data["exit_code_by_key"].items()}
    meta.write_text(json.dumps(data))


def run(module: str, show: bool, retest: bool = True, timeouts: bool = False) -> tuple[int, int, list[str]]:
    work = prepare(module)
    if retest:
        forget_survivors(work, module, timeouts)
    mutmut = str(Path(sys.executable).with_name("mutmut"))
    subprocess.run([mutmut, "run"], cwd=work, check=False)
    killed, total, survivors = scores(work, module)
    print(f"{module}: {killed}/{total} killed ({100 * killed / max(total, 1):.0f} %), {len(survivors)} survived")
    for name in survivors:
        print(f"  survived {name}")
        if show:
            subprocess.run([mutmut, "show", name], cwd=work, check=False)
    return killed, total, survivors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="quickstart.sh mutate", description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", metavar="MODULE", help=f"one of {', '.join(MODULES)}, or all")
    parser.add_argument("--show", action="store_true", help="print each survivor's diff")
    parser.add_argument("--keep-survivors", action="store_true",
                        help="do not test the last run's survivors again (by default they are, against the current tests)")
    parser.add_argument("--retest-timeouts", action="store_true",
                        help="test the last run's timeouts again too (after a change of the timeout or warm-up setup)")
    args = parser.parse_args(argv)
    if not args.modules:
        for module, tests in MODULES.items():
            print(f"{module:20} {' '.join(tests)}")
        return 0
    chosen = list(MODULES) if args.modules == ["all"] else args.modules
    unknown = [m for m in chosen if m not in MODULES]
    if unknown:
        print(f"mutate: unknown module {unknown[0]}; choose from {', '.join(MODULES)}", file=sys.stderr)
        return 2
    for module in chosen:
        run(module, args.show, retest=not args.keep_survivors, timeouts=args.retest_timeouts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
