"""One rule for every command that writes: an output never equals, or lies inside, one of its inputs.

``predict --masks GT --out GT`` would replace the ground truth, ``--overlay`` pointed at the
``--images`` folder would overwrite the images; a study's own files (manifest, runs, shards, results,
...) are inputs too. Checked before anything loads or is written, so a refusal leaves no trace.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from hpc_unet.errors import UserError

# What a study directory holds that later commands read (the analysis folder is derived output).
STUDY_INPUTS = ("study.json", "spec.toml", "manifest.parquet", "runs", "shards", "results", "cache", "data",
                "jobs", "submissions")


def _real(path: str | os.PathLike) -> Path:
    return Path(path).expanduser().resolve()


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


class _Exactly(type(Path())):  # type: ignore[misc]
    """An input only the output's being equal to hits (a study root: its analysis/ folder takes outputs)."""


def study_inputs(root: str | os.PathLike) -> dict[str, Path]:
    """The study directory itself (only an output equal to it is refused) and the files and folders in it
    that other commands read (an output inside them is refused too), labelled for the error message."""
    base = _real(root)
    return {"--study": _Exactly(base), **{f"the study's {name}": base / name for name in STUDY_INPUTS}}


def check_outputs(outputs: Mapping[str, str | os.PathLike | None], inputs: Mapping[str, str | os.PathLike | None],
                  *, folders: Iterable[str] = ()) -> None:
    """Refuse (one line) any output that equals or lies inside an input; ``folders`` names the outputs
    that must be folders (an existing file there is refused instead of failing halfway with EEXIST).

    ``outputs`` and ``inputs`` map a flag (``--out``) or label to a path; ``None`` entries are skipped.
    For a study pass :func:`study_inputs`: writing into it is allowed only outside :data:`STUDY_INPUTS`.
    """
    folders = set(folders)
    real_inputs = {flag: p if isinstance(p, _Exactly) else _real(p) for flag, p in inputs.items()
                   if p not in (None, "")}
    for flag, raw in outputs.items():
        if raw in (None, ""):
            continue
        out = _real(raw)
        if flag in folders and out.exists() and not out.is_dir():
            raise UserError(f"{flag} {raw} is a file; pass a folder (it is created if missing)")
        for in_flag, path in real_inputs.items():
            inside = not path.is_file() and not isinstance(path, _Exactly) and _within(out, path)
            if out == path or inside:  # a file input: only the file itself
                where = "is" if out == path else "lies inside"
                raise UserError(f"{flag} {raw} {where} {in_flag} {path}: writing there would overwrite the "
                                f"input; choose a folder outside it")


def check_files(flag: str, files: Iterable[Path], inputs: Iterable[Path]) -> None:
    """Refuse when a file an output would write is one of the input files (same name in the same folder)."""
    taken = {_real(p) for p in inputs}
    for path in files:
        if _real(path) in taken:
            raise UserError(f"{flag} would overwrite the input {path}; write to another folder")
