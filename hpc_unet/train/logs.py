"""Logs people look at while a run goes: ``runs/<exp_id>/history.csv`` (one line per epoch, rewritten
atomically at every epoch end, next to the checkpoints) and, with the train setting ``tensorboard = true``,
Keras' TensorBoard log in ``runs/<exp_id>/tensorboard`` (`hpc-unet status --tensorboard` opens them all).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from hpc_unet.errors import UserError
from hpc_unet.results.schema import HISTORY_COLUMNS
from hpc_unet.study import atomic_write_text

HISTORY_CSV = "history.csv"
TENSORBOARD_DIR = "tensorboard"
CSV_COLUMNS = [c for c in HISTORY_COLUMNS if c not in ("exp_id", "attempt_id")]


def write_history_csv(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """The epochs so far as CSV (the history shard's columns, in its order); a reader never sees a part."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(Path(run_dir) / HISTORY_CSV, out.getvalue())


def tensorboard_callback(run_dir: Path) -> Any:
    """Keras' TensorBoard callback writing per-epoch scalars (no graph, no profiler: they cost start-up)."""
    try:
        import tensorboard  # noqa: F401  (tf.summary needs it to write anything)
    except ImportError:
        raise UserError("train setting tensorboard = true needs the tensorboard package on the training nodes: "
                        "pip install 'hpc-unet[tensorboard]' (or tensorboard), or set tensorboard = false") from None
    import keras

    return keras.callbacks.TensorBoard(log_dir=str(Path(run_dir) / TENSORBOARD_DIR), write_graph=False,
                                       profile_batch=0, update_freq="epoch")
