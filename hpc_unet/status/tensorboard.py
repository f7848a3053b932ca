"""`status --tensorboard`: the command that opens every run's TensorBoard log of a study side by side.

Runs trained with the train setting ``tensorboard = true`` write Keras' TensorBoard callback log to
``runs/<exp_id>/tensorboard`` (train/ and validation/ inside). TensorBoard finds logs in every
subdirectory of ``--logdir`` and names each run by its path, so pointing it at ``runs/`` shows them all.
"""

from __future__ import annotations

import os
import shlex

from hpc_unet.errors import UserError
from hpc_unet.study import Study

LOG_DIR = "tensorboard"


def logged_runs(study: Study) -> list[str]:
    """Experiment ids with a TensorBoard log."""
    if not study.runs_dir.is_dir():
        return []
    return sorted(e.name for e in os.scandir(study.runs_dir) if os.path.isdir(os.path.join(e.path, LOG_DIR)))


def tensorboard_command(study: Study) -> str:
    """The shell command; a UserError naming the setting when no run has a log yet."""
    runs = logged_runs(study)
    if not runs:
        raise UserError(f"no run of {study.root} has a TensorBoard log; set `tensorboard = true` in the spec's "
                        "[train] table (or --set train.tensorboard=true) for the runs you submit next")
    return f"tensorboard --logdir {shlex.quote(str(study.runs_dir))}  # {len(runs)} runs with logs"
