"""Merge shards into ``results/results.parquet`` (one row per experiment) and ``results/history.parquet``.

Per experiment the row that counts is the latest *completed* attempt; without one, the latest attempt of
any status. Ties between attempts are broken by (attempt, finished_at, attempt_id), so the choice is
deterministic, and every experiment with more than one attempt is reported. Only renamed (complete)
shards are visible, so collecting while tasks still write is safe. Shards are immutable once written,
so their rows are cached between collects and only new shards are read.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from hpc_unet.results.schema import HISTORY_COLUMNS
from hpc_unet.results.shards import history_file_for, parse_summary_name, summary_files
from hpc_unet.study import Study, atomic_write, atomic_write_json

CACHE_NAME = ".summary-cache.parquet"


@dataclass
class CollectReport:
    experiments: int = 0
    completed: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    duplicates: dict[str, list[str]] = field(default_factory=dict)
    chosen: dict[str, str] = field(default_factory=dict)  # for each duplicate: the attempt_id that counts
    unreadable: list[str] = field(default_factory=list)
    shards_read: int = 0

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def _read_one(path: Path) -> pd.DataFrame | None:
    try:
        return pq.read_table(path).to_pandas()
    except Exception:
        return None


def _read_summaries(study: Study, paths: list[Path], report: CollectReport) -> pd.DataFrame:
    cache_file = study.results_dir / CACHE_NAME
    cached = pd.DataFrame()
    if cache_file.exists():
        try:
            cached = pd.read_parquet(cache_file)
        except Exception:
            cached = pd.DataFrame()
    known = set(cached["_file"]) if "_file" in cached else set()
    new = [p for p in paths if p.name not in known]
    with ThreadPoolExecutor(max_workers=8) as pool:
        frames = list(pool.map(_read_one, new))
    report.shards_read = len(new)
    fresh = []
    for path, frame in zip(new, frames, strict=True):
        if not _valid_summary(path, frame):
            report.unreadable.append(path.name)
            continue
        frame["_file"] = path.name
        fresh.append(frame)
    names = {p.name for p in paths}
    if len(cached):
        cached = cached[cached["_file"].isin(names)]
    parts = [f for f in [cached, *fresh] if len(f)]
    allrows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if fresh and len(allrows):
        atomic_write(cache_file, lambda tmp: allrows.to_parquet(tmp, index=False))
    return allrows


def _valid_summary(path: Path, frame: pd.DataFrame | None) -> bool:
    """One row whose exp_id, attempt_id and status agree with the file name (else damaged or foreign)."""
    parsed = parse_summary_name(path.name)
    if frame is None or len(frame) != 1 or parsed is None:
        return False
    if not {"exp_id", "attempt_id", "attempt", "status"} <= set(frame.columns):
        return False
    row = frame.iloc[0]
    exp_id, attempt, attempt_id, status = parsed
    return (row["exp_id"], row["attempt_id"], row["status"]) == (exp_id, attempt_id, status) \
        and row["attempt"] == attempt


def choose(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment: completed beats failed, then newest attempt, then finished_at, attempt_id."""
    ranked = rows.assign(_done=(rows["status"] == "completed").astype(int))
    ranked = ranked.sort_values(["exp_id", "_done", "attempt", "finished_at", "attempt_id"])
    attempts = rows.groupby("exp_id")["attempt"].nunique().rename("attempts")
    chosen = ranked.groupby("exp_id").tail(1).drop(columns=["_done", "attempts"], errors="ignore").set_index("exp_id")
    return chosen.join(attempts).reset_index()


def collect(study: Study) -> CollectReport:
    from hpc_unet.manifest import read_manifest

    frame = read_manifest(study)
    report = CollectReport(experiments=len(frame))
    paths = [p for p in summary_files(study) if parse_summary_name(p.name)]
    rows = _read_summaries(study, paths, report)
    order = {e: i for i, e in enumerate(frame["exp_id"])}
    if len(rows):
        rows = rows[rows["exp_id"].isin(order)]
    if len(rows):
        for exp_id, group in rows.groupby("exp_id"):
            if group["attempt_id"].nunique() > 1:
                report.duplicates[exp_id] = sorted(group["attempt_id"])
        results = choose(rows)
        report.chosen = {e: a for e, a in zip(results["exp_id"], results["attempt_id"], strict=True)
                         if e in report.duplicates}
        results = results.sort_values("exp_id", key=lambda s: s.map(order)).reset_index(drop=True)
        file_of = dict(zip(rows["attempt_id"], rows["_file"], strict=False))
        hist_paths = [history_file_for(study.shards_dir / file_of[a]) for a in results["attempt_id"]]
        with ThreadPoolExecutor(max_workers=8) as pool:
            hist_read = list(pool.map(_read_one, hist_paths))
        report.unreadable += [p.name for p, h in zip(hist_paths, hist_read, strict=True) if h is None]
        hist_frames = [h for h in hist_read if h is not None and len(h)]
        history = pd.concat(hist_frames, ignore_index=True) if hist_frames else pd.DataFrame(columns=list(HISTORY_COLUMNS))
        results = results.drop(columns=["_file"])
    else:
        results = pd.DataFrame(columns=["exp_id", "status", "attempts"])
        history = pd.DataFrame(columns=list(HISTORY_COLUMNS))
    status_of = dict(zip(results["exp_id"], results["status"], strict=True))
    report.completed = sum(1 for s in status_of.values() if s == "completed")
    report.failed = {e: s for e, s in status_of.items() if s != "completed"}
    report.missing = [e for e in frame["exp_id"] if e not in status_of]
    atomic_write(study.results_dir / "results.parquet", lambda tmp: results.to_parquet(tmp, index=False))
    atomic_write(study.results_dir / "history.parquet", lambda tmp: history.to_parquet(tmp, index=False))
    atomic_write_json(study.results_dir / "collect.json", report.as_dict())
    return report
