"""Merge shards into ``results/results.parquet`` (one row per experiment) and ``results/history.parquet``.

Per experiment the row that counts is the latest *completed* attempt; without one, the latest attempt of
any status. Ties between attempts are broken by (attempt, finished_at, attempt_id), so the choice is
deterministic, and every experiment with more than one attempt is reported. Only renamed (complete)
shards are visible, so collecting while tasks still write is safe. Shards are immutable once written,
so their rows are cached between collects (summaries in results/.summary-cache.parquet, the chosen
attempts' histories in results/.history-cache.parquet) and only new shards are read; a cached row is used
only while its shard keeps the size and mtime it had when read (a shard damaged in place is read again and
reported unreadable, as status reports it). Shards are read as
Arrow tables in threads and converted to pandas once (measured at 3,600 experiments: see docs/bench.md).
A new shard is read from its Arrow copy when that is current (shards.read_copy: ~10x cheaper than the
Parquet file), else from the Parquet file.

An unchanged collect (same shard files with the same sizes and mtimes, same manifest, results as this collect wrote them, same hpc-unet)
returns the previous report without reading or writing anything, and without importing pandas or
pyarrow: ``status --watch`` users run it in loops on a shared login node. What "same" means is recorded
in results/.collect-state.json by every full collect.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpc_unet.results.schema import HISTORY_COLUMNS, RENAMED_COLUMNS_V1, SHARD_SCHEMA_VERSION, migrate_summary
from hpc_unet.results.shards import (
    SUMMARY_SUFFIX,
    copy_name,
    history_file_for,
    parse_summary_name,
    read_copy,
    summary_files,
)
from hpc_unet.study import Study, atomic_write, atomic_write_json
from hpc_unet.tempfiles import sweep
from hpc_unet.train.summary import MARGINAL, NOT_LEARNED, learning_of

if TYPE_CHECKING:  # imported where used: an unchanged collect needs neither
    import pandas as pd
    import pyarrow as pa

COLLECT_KEY = b"hpc_unet_collect"


def _write_tagged(frame: pd.DataFrame, path: Path, token: str) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), COLLECT_KEY: token.encode()})
    pq.write_table(table, path)


def read_collected(study: Study, attempts: int = 50) -> tuple[pd.DataFrame, pd.DataFrame]:
    """results.parquet and history.parquet of the same collect (another collect may replace them
    between the two reads: then read again)."""
    import time

    import pyarrow.parquet as pq

    for _ in range(attempts):
        results = pq.read_table(study.results_dir / "results.parquet")
        history = pq.read_table(study.results_dir / "history.parquet")
        tag = (results.schema.metadata or {}).get(COLLECT_KEY)
        if tag == (history.schema.metadata or {}).get(COLLECT_KEY):
            return results.to_pandas(), history.to_pandas()
        time.sleep(0.05)
    raise RuntimeError(f"{study.results_dir}: results and history kept changing; is collect running in a loop?")

CACHE_NAME = ".summary-cache.parquet"
HISTORY_CACHE_NAME = ".history-cache.parquet"
STATE_NAME = ".collect-state.json"
_WORKERS = max(2, min(8, 2 * (os.cpu_count() or 1)))


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
    not_learned: list[str] = field(default_factory=list)  # completed, but no better than a trivial predictor
    marginal: list[str] = field(default_factory=list)  # completed, beat the trivial predictor on one metric only

    def as_dict(self) -> dict:
        return self.__dict__.copy()


def _read_table(path: Path) -> pa.Table | None:
    """One shard as an Arrow table (``ParquetFile.read`` skips read_table's dataset set-up: ~2x faster)."""
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path).read()
    except Exception:
        return None


def _read_tables(paths: list[Path]) -> list[pa.Table | None]:
    if len(paths) < 2:
        return [_read_table(p) for p in paths]
    with ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        return list(pool.map(_read_table, paths))


def _concat(tables: list[pa.Table]) -> pa.Table:
    """One table from many: one Arrow concat (and later one pandas conversion) instead of one per shard.

    Types are unified as pandas would (an all-null column in a failed shard takes the type the others
    have; int and float become float); if Arrow cannot unify them, fall back to pandas' concat.
    """
    import pandas as pd
    import pyarrow as pa
    tables = [t.replace_schema_metadata(None) for t in tables]
    try:  # one chunk per column: thousands of one-row chunks make writing the cache 10x slower
        return pa.concat_tables(tables, promote_options="permissive").combine_chunks()
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        frame = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
        return pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata(None)


def _read_cache(path: Path) -> pa.Table | None:
    import pyarrow.parquet as pq

    if not path.exists():
        return None
    try:
        return pq.ParquetFile(path).read()
    except Exception:
        return None


def _write_cache(path: Path, table: pa.Table) -> None:
    import pyarrow.parquet as pq

    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _read_summaries(study: Study, paths: list[Path], report: CollectReport,
                    caches: dict[Path, pa.Table]) -> pd.DataFrame:
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    cache_file = study.results_dir / CACHE_NAME
    cached = _read_cache(cache_file)
    if cached is not None and "_file" not in cached.column_names:
        cached = None
    if cached is not None:
        cached = migrate_summary(cached)
    stamps = _shard_stamps(study)
    if cached is not None and "_stamp" in cached.column_names:  # rows whose shard is as it was when read
        current = pa.array([stamps.get(f) for f in cached.column("_file").to_pylist()], pa.string())
        cached = cached.filter(pc.equal(pc.cast(cached.column("_stamp"), pa.string()), current))  # null (file gone): dropped
    elif cached is not None:
        cached = None  # a cache from before stamps: read every shard once
    known = set(cached.column("_file").to_pylist()) if cached is not None else set()
    new = [p for p in paths if p.name not in known]
    report.shards_read = len(new)
    fresh = []
    for path, table in zip(new, _read_copies_or_shards(study, new), strict=True):
        if table is None or table.num_rows != 1 or min(table.schema.get_field_index(k) for k in _SUMMARY_KEYS) < 0:
            report.unreadable.append(path.name)
            continue
        if max(table.schema.get_field_index(old) for old in RENAMED_COLUMNS_V1) >= 0:
            table = migrate_summary(table)  # an older schema's names (cheap test first: thousands of tables)
        fresh.append(table.append_column("_file", pa.array([path.name], pa.string()))
                     .append_column("_stamp", pa.array([str(stamps.get(path.name))], pa.string())))
    if fresh:
        fresh = [_drop_foreign(_concat(fresh), report)]
    names = {p.name for p in paths}
    if cached is not None and cached.num_rows:
        keep = pc.is_in(cached.column("_file"), value_set=pa.array(sorted(names), pa.string()))
        cached = cached.filter(keep)
    parts = [t for t in [cached, *fresh] if t is not None and t.num_rows]
    if not parts:
        return pd.DataFrame()
    allrows = _concat(parts)
    if fresh:
        caches[cache_file] = allrows
    return allrows.to_pandas()


_SUMMARY_KEYS = {"exp_id", "attempt_id", "attempt", "status"}


def _drop_foreign(table: pa.Table, report: CollectReport) -> pa.Table:
    """Rows whose exp_id, attempt_id, attempt and status agree with their file's name; the others
    (damaged, or another attempt's row under this name) are reported unreadable and dropped."""
    import pyarrow as pa

    columns = {k: table.column(k).to_pylist() for k in ("_file", "exp_id", "attempt", "attempt_id", "status")}
    keep = []
    for file, *row in zip(*columns.values(), strict=True):
        ok = parse_summary_name(file) == tuple(row)
        keep.append(ok)
        if not ok:
            report.unreadable.append(file)
    return table if all(keep) else table.filter(pa.array(keep))


def _read_copies_or_shards(study: Study, paths: list[Path]) -> list[pa.Table | None]:
    """Each shard from its current Arrow copy, else (no copy, stale, damaged) from the Parquet file."""
    listed = set(os.listdir(study.shards_dir)) if paths else set()
    tables = [read_copy(p) if copy_name(p.name) in listed else None for p in paths]
    slow = [i for i, t in enumerate(tables) if t is None]
    for i, table in zip(slow, _read_tables([paths[i] for i in slow]), strict=True):
        tables[i] = table
    return tables


def _read_histories(study: Study, results: pd.DataFrame, file_of: dict[str, str],
                    report: CollectReport, caches: dict[Path, pa.Table]) -> pd.DataFrame:
    """History rows of the chosen attempts, in results order; cached by attempt_id between collects.

    A history shard is final once its summary exists (it is written first), so cached rows stay valid;
    one whose file has gone is read again (and reported unreadable), as without the cache.
    """
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc

    cache_file = study.results_dir / HISTORY_CACHE_NAME
    wanted = list(results["attempt_id"])
    on_disk = set(os.listdir(study.shards_dir)) if study.shards_dir.exists() else set()
    hist_name = {a: history_file_for(study.shards_dir / file_of[a]).name for a in wanted}
    cached = _read_cache(cache_file)
    if cached is not None and ("attempt_id" not in cached.column_names or "_stamp" not in cached.column_names):
        cached = None  # (a cache from before stamps: read the histories once)
    stamps = _shard_stamps(study)
    have: set[str] = set()
    pruned = False
    if cached is not None and cached.num_rows:
        valid = sorted(f"{a}|{stamps[hist_name[a]]}" for a in wanted if hist_name[a] in on_disk)
        keys = pc.binary_join_element_wise(pc.cast(cached.column("attempt_id"), pa.string()),
                                           pc.cast(cached.column("_stamp"), pa.string()), "|")
        keep = pc.is_in(keys, value_set=pa.array(valid, pa.string()))  # only histories unchanged since read
        filtered = cached.filter(keep)
        pruned = filtered.num_rows != cached.num_rows
        cached = filtered
        have = set(pc.unique(cached.column("attempt_id")).to_pylist())
    missing = [a for a in wanted if a not in have]
    paths = [study.shards_dir / hist_name[a] for a in missing]
    fresh = []
    for path, table in zip(paths, _read_copies_or_shards(study, paths), strict=True):
        if table is None:
            report.unreadable.append(path.name)
        elif table.num_rows:
            fresh.append(table.append_column("_stamp", pa.array([str(stamps.get(path.name))] * table.num_rows,
                                                                  pa.string())))
    parts = [t for t in [cached, *fresh] if t is not None and t.num_rows]
    if not parts:
        return pd.DataFrame(columns=list(HISTORY_COLUMNS))
    table = _concat(parts)
    if fresh or pruned:
        caches[cache_file] = table
    order = pc.index_in(table.column("attempt_id"), value_set=pa.array(wanted, pa.string())).to_numpy(False)
    table = table.take(pa.array(np.argsort(order, kind="stable")))
    return table.drop_columns(["_stamp"]).to_pandas()


def choose(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment: completed beats failed, then newest attempt, then finished_at, attempt_id."""
    ranked = rows.assign(_done=(rows["status"] == "completed").astype(int))
    ranked = ranked.sort_values(["exp_id", "_done", "attempt", "finished_at", "attempt_id"])
    attempts = rows.groupby("exp_id")["attempt"].nunique().rename("attempts")
    chosen = ranked.groupby("exp_id").tail(1).drop(columns=["_done", "attempts"], errors="ignore").set_index("exp_id")
    return chosen.join(attempts).reset_index()


def collect(study: Study) -> CollectReport:
    """Merge the shards; concurrent collects of one study take turns (an fcntl lock)."""
    from hpc_unet.status.manifest_table import read_manifest_rows

    study.require()
    if (study.results_dir / STATE_NAME).exists():
        with open(study.results_dir / ".collect.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                sweep(study.results_dir)  # collects take turns on this lock: temporaries here are dead ones'
                previous = _unchanged(study)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        if previous is not None:
            return previous
    read_manifest_rows(study, ("exp_id",))  # a bad manifest fails here, before anything is created
    study.results_dir.mkdir(parents=True, exist_ok=True)
    with open(study.results_dir / ".collect.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            sweep(study.results_dir)
            return _collect(study)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _file_stamp(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def _shard_stamps(study: Study) -> dict[str, str]:
    """Shard file name -> "size:mtime_ns" (temporary files excluded): a cached row or report is reused only
    while its shard still has the stamp it had when it was read."""
    out: dict[str, str] = {}
    try:
        entries = list(os.scandir(study.shards_dir))
    except FileNotFoundError:
        return out
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            st = entry.stat()
        except OSError:
            continue
        out[entry.name] = f"{st.st_size}:{st.st_mtime_ns}"
    return out


def _fingerprint(study: Study) -> dict[str, Any]:
    """What a collect's output depends on: the shard files (summaries in the order collect reads them,
    every other shard file by name; temporary files excluded), the manifest file, hpc-unet's version."""
    from hpc_unet import __version__

    stamps = _shard_stamps(study)  # size and mtime too: a shard damaged in place is a change
    names = [f"{p.name}:{stamps.get(p.name)}" for p in summary_files(study)]
    others = sorted(f"{n}:{stamp}" for n, stamp in stamps.items() if not n.endswith(SUMMARY_SUFFIX))
    digest = hashlib.sha256("\n".join([*names, "", *others]).encode()).hexdigest()
    return {"shards": digest, "manifest": _file_stamp(study.manifest_file), "version": __version__,
            "shard_schema": SHARD_SCHEMA_VERSION}


def _unchanged(study: Study) -> CollectReport | None:
    """The previous collect's report when nothing it depends on has changed since; else None."""
    try:
        state = json.loads((study.results_dir / STATE_NAME).read_text())
        outputs = {name: _file_stamp(study.results_dir / name) for name in state["outputs"]}
        if state["inputs"] != _fingerprint(study) or outputs != state["outputs"] or None in outputs.values():
            return None
        return CollectReport(**{**state["report"], "shards_read": 0})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _collect(study: Study) -> CollectReport:
    import pandas as pd

    from hpc_unet.status.manifest_table import read_manifest_rows

    inputs = _fingerprint(study)  # before reading: shards that land during this collect change it
    exp_ids = [r["exp_id"] for r in read_manifest_rows(study, ("exp_id",))]
    report = CollectReport(experiments=len(exp_ids))
    paths = [p for p in summary_files(study) if parse_summary_name(p.name)]
    caches: dict[Path, pa.Table] = {}  # written after the results: a failed collect changes nothing
    rows = _read_summaries(study, paths, report, caches)
    order = {e: i for i, e in enumerate(exp_ids)}
    if len(rows):
        rows = rows[rows["exp_id"].isin(order)]
    if len(rows):
        n_attempts = rows.groupby("exp_id")["attempt_id"].nunique()
        dup_rows = rows[rows["exp_id"].isin(n_attempts.index[n_attempts > 1])]
        for exp_id, group in dup_rows.groupby("exp_id"):
            report.duplicates[exp_id] = sorted(group["attempt_id"])
        results = choose(rows)
        report.chosen = {e: a for e, a in zip(results["exp_id"], results["attempt_id"], strict=True)
                         if e in report.duplicates}
        results = results.sort_values("exp_id", key=lambda s: s.map(order)).reset_index(drop=True)
        file_of = dict(zip(rows["attempt_id"], rows["_file"], strict=False))
        history = _read_histories(study, results, file_of, report, caches)
        results = results.drop(columns=["_file", "_stamp"], errors="ignore")
    else:
        results = pd.DataFrame(columns=["exp_id", "attempt_id", "status", "attempts"])
        history = pd.DataFrame(columns=list(HISTORY_COLUMNS))
    status_of = dict(zip(results["exp_id"], results["status"], strict=True))
    report.completed = sum(1 for s in status_of.values() if s == "completed")
    report.failed = {e: s for e, s in status_of.items() if s != "completed"}
    report.missing = [e for e in exp_ids if e not in status_of]
    learning = {r["exp_id"]: learning_of(r) for r in results.to_dict("records") if r["status"] == "completed"}
    report.not_learned = [e for e, s in learning.items() if s == NOT_LEARNED]
    report.marginal = [e for e, s in learning.items() if s == MARGINAL]
    token = secrets.token_hex(8)  # ties the pair together: readers check it (read_collected)
    atomic_write(study.results_dir / "history.parquet", lambda tmp: _write_tagged(history, tmp, token))
    atomic_write(study.results_dir / "results.parquet", lambda tmp: _write_tagged(results, tmp, token))
    atomic_write_json(study.results_dir / "collect.json", report.as_dict())
    for cache_file, table in caches.items():
        _write_cache(cache_file, table)
    outputs = {name: _file_stamp(study.results_dir / name) for name in ("results.parquet", "history.parquet",
                                                                        "collect.json")}
    atomic_write_json(study.results_dir / STATE_NAME, {"inputs": inputs, "outputs": outputs,
                                                       "report": report.as_dict()})
    return report
