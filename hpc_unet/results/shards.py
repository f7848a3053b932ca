"""Write and read result shards (see schema.py for the contract).

After the summary shard, ``write_shard`` writes an Arrow IPC copy of both shards beside them
(``<attempt_id>.<status>.summary.arrow``, ``<attempt_id>.history.arrow``): reading one costs about a tenth
of decoding the ~100-column Parquet footer and column chunks, which was most of a first collect at
thousands of experiments (docs/bench.md). A copy is only an accelerator: it records its Parquet file's
size and mtime, and a reader uses it only while they still match (``read_copy``); the Parquet files stay
the result and the summary the commit point.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpc_unet.results.schema import HISTORY_COLUMNS, SHARD_SCHEMA_VERSION, SUMMARY_COLUMNS
from hpc_unet.study import Study, atomic_write, fault_point

if TYPE_CHECKING:  # pandas only where shards are written: status lists them without it
    import pandas as pd

SUMMARY_SUFFIX = ".summary.parquet"
COPY_SUFFIX = ".arrow"
_COPY_KEY = b"hpc_unet_copy_of"
HISTORY_SUFFIX = ".history.parquet"
_ATTEMPT_RE = re.compile(r"^(?P<exp>.+)\.a(?P<attempt>\d{3,})\.(?P<tag>[0-9a-f]{8})$")
_SUMMARY_RE = re.compile(r"^(?P<attempt_id>.+\.a\d{3,}\.[0-9a-f]{8})\.(?P<status>[a-z]+)\.summary\.parquet$")


def new_attempt_id(exp_id: str, attempt: int) -> str:
    return f"{exp_id}.a{attempt:03d}.{secrets.token_hex(4)}"


def parse_attempt_id(attempt_id: str) -> tuple[str, int]:
    match = _ATTEMPT_RE.match(attempt_id)
    if not match:
        raise ValueError(f"not an attempt id: {attempt_id}")
    return match["exp"], int(match["attempt"])


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _summary_frame(summary: dict[str, Any]) -> pd.DataFrame:
    import pandas as pd

    row = dict(summary)
    row["schema_version"] = SHARD_SCHEMA_VERSION
    for key in SUMMARY_COLUMNS:
        row.setdefault(key, None)
    for key in ("val_patch_intersection", "val_patch_union", "test_patch_intersection", "test_patch_union"):
        value = row.get(key)
        row[key] = [float(v) for v in value] if value is not None else []
    for key in ("data_provenance", "phase_seconds", "init_source"):
        if isinstance(row.get(key), dict):
            row[key] = json.dumps(row[key], sort_keys=True, default=str)
    return pd.DataFrame([row])


def write_shard(study: Study, summary: dict[str, Any], history: list[dict[str, Any]]) -> Path:
    """Write one attempt's history then summary, each atomically. Returns the summary path."""
    import pandas as pd

    attempt_id = summary["attempt_id"]
    hist = pd.DataFrame(history, columns=list(HISTORY_COLUMNS))
    hist["exp_id"] = summary["exp_id"]
    hist["attempt_id"] = attempt_id
    hist = hist.astype({"epoch": "int64"})
    study.shards_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(study.shards_dir / f"{attempt_id}{HISTORY_SUFFIX}", lambda tmp: hist.to_parquet(tmp, index=False))
    fault_point("shard-between")
    path = study.shards_dir / f"{attempt_id}.{summary['status']}{SUMMARY_SUFFIX}"
    frame = _summary_frame(summary)
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    _write_copy(path, frame)
    _write_copy(study.shards_dir / f"{attempt_id}{HISTORY_SUFFIX}", hist)
    return path


def copy_name(shard_name: str) -> str:
    """The Arrow copy's file name for a shard's file name (``X.parquet`` -> ``X.arrow``)."""
    return shard_name[: -len(".parquet")] + COPY_SUFFIX


def _stamp(path: Path) -> bytes:
    st = os.stat(path)
    return f"{st.st_size}:{st.st_mtime_ns}".encode()


def _write_copy(path: Path, frame: pd.DataFrame) -> None:
    """The shard's rows as Arrow IPC, stamped with the Parquet file's size and mtime. A failure here loses
    only speed (collect reads the Parquet file), so it never fails the task."""
    import pyarrow as pa

    try:
        table = pa.Table.from_pandas(frame, preserve_index=False).replace_schema_metadata({_COPY_KEY: _stamp(path)})

        def write(tmp: Path) -> None:
            with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as out:
                out.write_table(table)

        atomic_write(path.with_name(copy_name(path.name)), write)
    except Exception:  # noqa: BLE001 (best effort by design, see the docstring)
        return


def read_copy(path: Path) -> Any:
    """The Arrow copy of shard ``path`` as a table (no metadata), or None when it is absent,
    unreadable or stale (the Parquet file was replaced or changed after the copy was written)."""
    import pyarrow as pa

    try:
        with open(path.with_name(copy_name(path.name)), "rb") as fh:
            table = pa.ipc.open_file(pa.py_buffer(fh.read())).read_all()
        stamp = (table.schema.metadata or {}).get(_COPY_KEY)
        if stamp is None or stamp != _stamp(path):
            return None
    except Exception:  # noqa: BLE001 (any damage means: read the Parquet file instead)
        return None
    return table.replace_schema_metadata(None)


def summary_files(study: Study) -> list[Path]:
    """Summary shards in name order (names sorted as strings: sorting Paths costs ~10x more)."""
    shards = study.shards_dir  # a property: one Path join, not one per file
    try:
        names = os.listdir(shards)
    except FileNotFoundError:
        return []
    return [shards / n for n in sorted(names) if n.endswith(SUMMARY_SUFFIX)]


def parse_summary_name(name: str) -> tuple[str, int, str, str] | None:
    """(exp_id, attempt, attempt_id, status) from a summary file name; None for other files."""
    match = _SUMMARY_RE.match(name)
    if not match:
        return None
    exp_id, attempt = parse_attempt_id(match["attempt_id"])
    return exp_id, attempt, match["attempt_id"], match["status"]


def history_file_for(summary_path: Path) -> Path:
    parsed = parse_summary_name(summary_path.name)
    if parsed is None:
        raise ValueError(f"not a summary shard: {summary_path}")
    return summary_path.with_name(parsed[2] + HISTORY_SUFFIX)


def is_whole_parquet(path: Path | str) -> bool:
    """Cheap completeness check (two small reads): Parquet magic at both ends and a footer that fits.

    Catches a truncated, empty or garbage file under a valid shard name (copied in part, damaged), so
    status and submit never count it as a result; collect then reports it as unreadable.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            size = fh.seek(0, 2)
            if size < 12 or head != b"PAR1":
                return False
            fh.seek(size - 8)
            tail = fh.read(8)
    except OSError:
        return False
    return tail[4:] == b"PAR1" and int.from_bytes(tail[:4], "little") <= size - 12


def shard_index(study: Study) -> dict[str, list[tuple[int, str, str]]]:
    """exp_id -> [(attempt, attempt_id, status)] from file names plus a footer check (no Parquet decoding)."""
    return shard_scan(study)[0]


def shard_scan(study: Study) -> tuple[dict[str, list[tuple[int, str, str]]], list[str]]:
    """:func:`shard_index` and the summary shards under a valid name that fail the footer check (damaged):
    status lists those as collect does (collect reports them unreadable)."""
    out: dict[str, list[tuple[int, str, str]]] = {}
    damaged: list[str] = []
    shards = str(study.shards_dir)
    try:
        names = sorted(os.listdir(shards))
    except FileNotFoundError:
        return out, damaged
    for name in names:  # plain strings: at 36,000 shards Path objects cost more than the footer checks
        parsed = parse_summary_name(name) if name.endswith(SUMMARY_SUFFIX) else None
        if parsed is None:
            continue
        if is_whole_parquet(os.path.join(shards, name)):
            exp_id, attempt, attempt_id, status = parsed
            out.setdefault(exp_id, []).append((attempt, attempt_id, status))
        else:
            damaged.append(name)
    return out, damaged


def completed_experiments(study: Study) -> dict[str, str]:
    """exp_id -> the status that counts: any completed attempt wins, else the newest attempt's status."""
    return {exp: max(items, key=attempt_rank)[2] for exp, items in shard_index(study).items()}


def attempt_rank(item: tuple[int, str, str]) -> tuple[int, int, str]:
    """Sort key of a shard_index item: the attempt that counts has the largest key (any completed
    attempt, then the newest); status and collect use it so they agree on the choice."""
    attempt, attempt_id, status = item
    return (1 if status == "completed" else 0, attempt, attempt_id)
