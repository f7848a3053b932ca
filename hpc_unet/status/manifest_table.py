"""The manifest as plain Python rows, read with pyarrow alone (no pandas).

`status` and an unchanged `collect` run on the login node every few seconds under `status --watch`;
importing pandas costs about as much as everything else they do at 3,600 experiments (docs/bench.md).
The checks are those of ``manifest.validate_manifest``, with the same messages, so a hand-edited manifest
fails the same way whichever reader meets it first. Setting checks run once per distinct value of a
column (they are pure functions of the value), not once per cell.
"""

from __future__ import annotations

from typing import Any

from hpc_unet.errors import UserError
from hpc_unet.manifest import COLUMNS
from hpc_unet.spec import TRAIN_PARAMS, check_value
from hpc_unet.study import Study

STATUS_COLUMNS = ("exp_id", "architecture", "learning_rate", "batch_size", "seed", "epochs")


def read_manifest_rows(study: Study, columns: tuple[str, ...] = STATUS_COLUMNS) -> list[dict[str, Any]]:
    """The manifest's ``columns`` as one dict per experiment, in task-index order, after the full check."""
    import pyarrow.parquet as pq

    study.require()
    path = study.manifest_file
    if not path.exists():
        raise UserError(f"{study.root} has no manifest.parquet; run `hpc-unet manifest --grid SPEC --study {study.root}`")
    try:
        table = pq.ParquetFile(path).read()
    except Exception as exc:
        raise UserError(f"{path} is unreadable ({exc}); regenerate it with `hpc-unet manifest --force`") from exc
    data = _Columns(table)
    check_manifest_columns(data, str(path))
    return [dict(zip(columns, values, strict=True)) for values in zip(*(data[c] for c in columns), strict=True)]


def check_manifest_columns(data: dict[str, list[Any]], source: str) -> None:
    """``validate_manifest`` on columns (name -> values): columns present, unique ids, indices in order,
    every train setting valid (the first bad row is named, as the row-by-row check would).
    Settings added to the spec after the manifest was written are filled in, as ``validate_manifest`` does."""
    from hpc_unet.manifest import added_setting_values

    n = len(data.get("exp_id", []))
    data.update({k: [v] * n for k, v in added_setting_values(data).items()})
    missing = [c for c in COLUMNS if c not in data]
    if missing:
        raise UserError(f"{source} lacks columns {missing}; regenerate it with `hpc-unet manifest --force`")
    ids = data["exp_id"]
    seen: set[Any] = set()
    for exp_id in ids:
        if exp_id in seen:
            raise UserError(f"{source} has experiment '{exp_id}' twice; remove the duplicate row")
        seen.add(exp_id)
    if data["index"] != list(range(len(ids))):
        raise UserError(f"{source} has task indices that are not 0..{len(ids) - 1} in order; "
                        "regenerate it with `hpc-unet manifest --force`")
    first_bad = None
    for key in TRAIN_PARAMS:
        distinct = data.distinct(key) if isinstance(data, _Columns) else _distinct(data[key])
        bad = [v for v in distinct if not _valid(key, v)]
        if bad:
            marks = {repr(v) for v in bad}
            row = next(i for i, v in enumerate(data[key]) if repr(v) in marks)
            first_bad = row if first_bad is None else min(first_bad, row)
    if first_bad is None:
        return
    for key in TRAIN_PARAMS:
        try:
            check_value("train", TRAIN_PARAMS, key, data[key][first_bad])
        except UserError as exc:
            raise UserError(f"{source} row {first_bad} ({ids[first_bad]}): {exc}") from None


class _Columns(dict):
    """Column name -> values, turned into Python objects only when asked for: at 36,000 rows the ~50
    columns as Python objects cost more than the rest of `status`; the checks need most columns only as
    their distinct values, which Arrow computes."""

    def __init__(self, table: Any) -> None:
        super().__init__()
        self._table = table
        self._names = set(table.column_names)

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, key) or key in self._names

    def __missing__(self, key: str) -> list[Any]:
        if key not in self._names:
            raise KeyError(key)
        values = self._table.column(key).to_pylist()
        self[key] = values
        return values

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def distinct(self, key: str) -> list[Any]:
        if dict.__contains__(self, key) or key not in self._names:
            return _distinct(self[key])
        import pyarrow.compute as pc

        return pc.unique(self._table.column(key)).to_pylist()


def _distinct(values: list[Any]) -> list[Any]:
    """One of each value (a Parquet column holds one type, so set() does not merge 1 with True)."""
    try:
        return list(set(values))
    except TypeError:  # unhashable cells (a hand-written list): compare by repr
        return list({repr(v): v for v in values}.values())


def _valid(key: str, value: Any) -> bool:
    try:
        check_value("train", TRAIN_PARAMS, key, value)
    except UserError:
        return False
    return True
