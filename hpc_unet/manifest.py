"""Spec -> manifest rows with stable ids; read and write ``manifest.parquet``.

One row is one fully specified experiment: every setting training uses is a column, so a task reads its
row and nothing else. Row order (and so the array task index) follows the axes in the order written.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from hpc_unet.errors import UserError
from hpc_unet.spec import ARCH_SHORT, DATA_PARAMS, TRAIN_PARAMS, GridSpec, check_value
from hpc_unet.study import SCHEMA_VERSION, Study, atomic_write

ID_KEYS = ("architecture", "learning_rate", "batch_size")
DATA_COLUMNS = tuple(f"data_{k}" for k in DATA_PARAMS)
# init_path / init_sha256: the .keras file an init_from resolved to at manifest time, and its hash
COLUMNS = ("index", "exp_id", "replicate", *TRAIN_PARAMS, *DATA_COLUMNS, "study_name", "init_path", "init_sha256")

if TYPE_CHECKING:  # pandas is imported where it is used: status and collect read the manifest without it
    import pandas as pd


def format_number(value: float) -> str:
    """Shortest exponent form that round-trips: 5e-04, 2.5e-04, 1e-02."""
    for digits in range(0, 10):
        text = f"{value:.{digits}e}"
        if float(text) == float(value):
            return text
    return repr(value)


def experiment_id(params: dict[str, Any], extra_axes: list[str]) -> str:
    parts = [
        ARCH_SHORT[params["architecture"]],
        f"lr{format_number(params['learning_rate'])}",
        f"bs{params['batch_size']}",
    ]
    for key in extra_axes:
        value = params[key]
        if key == "init_from":
            from hpc_unet.transfer.source import label

            parts.append(f"init{label(value)}")
            continue
        text = format_number(value) if isinstance(value, float) else str(value).lower()
        parts.append(f"{key.replace('_', '')}{text}")
    parts.append(f"s{params['seed']}")
    return "-".join(parts)


def build_rows(spec: GridSpec, resolve: bool = True) -> pd.DataFrame:
    """Expand the spec's axes (and replicates) into manifest rows.

    ``resolve``: find and check every ``init_from`` source model now (a zip read per file, no TensorFlow),
    recording its path and SHA-256 in the row; a source that does not fit the row is refused here."""
    import pandas as pd

    axes = dict(spec.axes)
    order = [k for k in ID_KEYS if k in axes] + [k for k in axes if k not in ID_KEYS]
    extra = [k for k in order if k not in ID_KEYS and k != "seed"]
    rows = []
    for combo in itertools.product(*(axes[k] for k in order)):
        for rep in range(spec.replicates):
            params = dict(spec.train)
            params.update(zip(order, combo, strict=True))
            replicate = rep
            if "seed" not in axes:
                params["seed"] = spec.train["seed"] + rep
            else:
                replicate = axes["seed"].index(params["seed"])
            row = {"replicate": replicate, **params}
            row.update({f"data_{k}": v for k, v in spec.data.items()})
            row["study_name"] = spec.name
            row["exp_id"] = experiment_id(params, extra)
            row["init_path"], row["init_sha256"] = "", ""
            rows.append(row)
    if resolve and any(r["init_from"] != "none" for r in rows):
        from hpc_unet.transfer.source import data_channels, resolve_rows

        for row, (path, digest) in zip(rows, resolve_rows(rows, data_channels(spec.data)), strict=True):
            row["init_path"], row["init_sha256"] = path, digest
    frame = pd.DataFrame(rows)
    frame.insert(0, "index", range(len(frame)))
    dup = frame["exp_id"][frame["exp_id"].duplicated()]
    if len(dup):
        raise UserError(f"the grid produces duplicate experiments ({dup.iloc[0]}); remove repeated axis values")
    return frame[list(COLUMNS)]


def write_manifest(study: Study, frame: pd.DataFrame) -> None:
    atomic_write(study.manifest_file, lambda tmp: frame.to_parquet(tmp, index=False))


# Settings added after a study's manifest was written take the value that reproduces what the study did
# before the setting existed: the spec default, except where the default changed behaviour (a manifest
# without `data_normalize` was scaled by its dtype's range).
# Only these columns are filled in: a manifest lacking any other column was damaged or edited by hand.
LEGACY_VALUES: dict[str, Any] = {"data_normalize": "dtype"}
ADDED_TRAIN = ("device", "augment", "tensorboard", "init_from", "freeze", "unfreeze_epoch", "train_fraction")
ADDED_OTHER = {"init_path": "", "init_sha256": ""}
ADDED_DATA = ("normalize", "percentile_low", "percentile_high", "normalize_per", "mask", "split")


def added_setting_values(present: Any) -> dict[str, Any]:
    """Values for the setting columns a manifest lacks because they were added to the spec later."""
    wanted = {k: TRAIN_PARAMS[k][0] for k in ADDED_TRAIN if k in TRAIN_PARAMS}
    wanted.update({f"data_{k}": DATA_PARAMS[k][0] for k in ADDED_DATA if k in DATA_PARAMS})
    wanted.update(ADDED_OTHER)
    return {k: LEGACY_VALUES.get(k, v) for k, v in wanted.items() if k not in present}


def validate_manifest(frame: pd.DataFrame, source: str = "manifest") -> pd.DataFrame:
    """Check a manifest read from disk (it may have been edited by hand, or predate a setting)."""
    added = added_setting_values(frame.columns)
    if added:
        frame = frame.assign(**{k: [v] * len(frame) for k, v in added.items()})
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"{source} lacks columns {missing}; regenerate it with `hpc-unet manifest --force`")
    if frame["exp_id"].duplicated().any():
        dup = frame["exp_id"][frame["exp_id"].duplicated()].iloc[0]
        raise UserError(f"{source} has experiment '{dup}' twice; remove the duplicate row")
    if list(frame["index"]) != list(range(len(frame))):
        raise UserError(f"{source} has task indices that are not 0..{len(frame) - 1} in order; "
                        "regenerate it with `hpc-unet manifest --force`")
    for i, row in enumerate(frame.to_dict("records")):
        for key in TRAIN_PARAMS:
            try:
                check_value("train", TRAIN_PARAMS, key, _py(row[key]))
            except UserError as exc:
                raise UserError(f"{source} row {i} ({row['exp_id']}): {exc}") from None
    return frame


def _py(value: Any) -> Any:
    """numpy scalars -> Python scalars, so validators and JSON see plain types."""
    return value.item() if hasattr(value, "item") else value


def row_dict(row: Any) -> dict[str, Any]:
    return {k: _py(v) for k, v in dict(row).items()}


def read_manifest(study: Study) -> pd.DataFrame:
    import pandas as pd

    study.require()
    if not study.manifest_file.exists():
        raise UserError(f"{study.root} has no manifest.parquet; run `hpc-unet manifest --grid SPEC --study {study.root}`")
    try:
        frame = pd.read_parquet(study.manifest_file)
    except Exception as exc:
        raise UserError(f"{study.manifest_file} is unreadable ({exc}); regenerate it with `hpc-unet manifest --force`") from exc
    return validate_manifest(frame, str(study.manifest_file))


def get_row(study: Study, exp_id: str) -> dict[str, Any]:
    frame = read_manifest(study)
    hit = frame[frame["exp_id"] == exp_id]
    if hit.empty:
        from hpc_unet.spec import did_you_mean

        raise UserError(f"no experiment '{exp_id}' in {study.manifest_file}{did_you_mean(exp_id, frame['exp_id'])}")
    return row_dict(hit.iloc[0])


def create_study(study: Study, spec: GridSpec, force: bool = False) -> pd.DataFrame:
    """Write the study's spec copy, manifest and metadata; idempotent for the same spec."""
    frame = build_rows(spec)
    fingerprint = spec.fingerprint()
    if study.exists():
        from hpc_unet.study import read_json

        study.require()
        old = read_json(study.meta_file).get("spec_fingerprint")
        if old != fingerprint and not force:
            raise UserError(
                f"{study.root} already holds a study from a different spec; use a new --study directory, "
                "or pass --force to replace its manifest (results of experiments whose ids remain are kept)"
            )
    study.root.mkdir(parents=True, exist_ok=True)
    write_manifest(study, frame)
    from hpc_unet.study import atomic_write_text

    atomic_write_text(study.spec_file, spec.source)
    study.write_meta(name=spec.name, spec_fingerprint=fingerprint, experiments=len(frame),
                     slurm=spec.slurm, policy=spec.policy, manifest_schema=SCHEMA_VERSION)
    return frame
