"""Which models of a study to use: completed runs with a saved model, ranked by validation Jaccard.

Reads the completed summary shards directly (no ``collect`` needed). No TensorFlow.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from hpc_unet.errors import UserError
from hpc_unet.results.shards import parse_summary_name, shard_index, summary_files
from hpc_unet.spec import ARCHITECTURES, did_you_mean
from hpc_unet.study import Study

RANK = "best_val_jaccard"  # the study's performance metric (the analysis ranks by it too)
COLUMNS = ["exp_id", "architecture", "seed", "learning_rate", "batch_size", RANK, "best_val_iou"]


def model_path(study: Study, exp_id: str) -> Path:
    return study.run_dir(exp_id) / "model" / "best.keras"


def completed_runs(study: Study) -> pd.DataFrame:
    """One row per completed experiment whose model file exists, best first (ties: exp_id)."""
    study.require()
    wanted = {exp for exp, items in shard_index(study).items() if any(s == "completed" for _, _, s in items)}
    rows = []
    for path in summary_files(study):
        parsed = parse_summary_name(path.name)
        if parsed is None or parsed[3] != "completed" or parsed[0] not in wanted:
            continue
        table = pq.ParquetFile(path).read()
        cols = [c for c in COLUMNS if c in table.column_names]
        rows.append(table.select(cols).to_pandas().iloc[0].to_dict())
        wanted.discard(parsed[0])
    frame = pd.DataFrame(rows, columns=COLUMNS)
    if frame.empty:
        return frame
    frame["model"] = [str(model_path(study, e)) for e in frame["exp_id"]]
    frame = frame[[Path(m).exists() for m in frame["model"]]]
    return frame.sort_values([RANK, "exp_id"], ascending=[False, True], kind="stable").reset_index(drop=True)


def choose(study: Study, experiment: str | None = None, architecture: str | None = None) -> pd.Series:
    """The run of ``experiment``, or the best completed run (of ``architecture``)."""
    runs = completed_runs(study)
    if runs.empty:
        raise UserError(f"{study.root} has no completed experiment with a saved model yet; run "
                        f"`hpc-unet submit --study {study.root}` (or check `hpc-unet status`)")
    if experiment:
        hit = runs[runs["exp_id"] == experiment]
        if hit.empty:
            raise UserError(f"--experiment {experiment} is not a completed experiment with a model in {study.root}"
                            f"{did_you_mean(experiment, runs['exp_id'])}; see `hpc-unet status --study {study.root}`")
        return hit.iloc[0]
    if architecture:
        if architecture not in ARCHITECTURES:
            raise UserError(f"--architecture {architecture!r} is not one of {', '.join(ARCHITECTURES)}"
                            f"{did_you_mean(architecture, ARCHITECTURES)}")
        runs = runs[runs["architecture"] == architecture]
        if runs.empty:
            raise UserError(f"{study.root} has no completed {architecture} experiment with a model; "
                            "drop --architecture or wait for one")
    return runs.iloc[0]
