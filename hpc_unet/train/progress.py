"""The per-experiment progress file that `status` reads (atomic replace, small JSON)."""

from __future__ import annotations

import json
import os
import time
from typing import Any

from hpc_unet import runinfo
from hpc_unet.study import Study, atomic_write_json


class Progress:
    def __init__(self, study: Study, exp_id: str, **fields: Any) -> None:
        self.path = study.progress_file(exp_id)
        self.data: dict[str, Any] = {"exp_id": exp_id, "host": runinfo.host(), "pid": os.getpid(),
                                     "job_id": runinfo.job_id(), **fields}

    def update(self, **fields: Any) -> None:
        self.data.update(fields, updated_at=time.time())
        atomic_write_json(self.path, self.data)

    def update_in_place(self, **fields: Any) -> None:
        """Overwrite the file in place (truncate, then write into the blocks just freed): for a full disk,
        where the temporary copy of an atomic write does not fit. Not atomic: only for the last update."""
        self.data.update(fields, updated_at=time.time())
        with open(self.path, "r+" if self.path.exists() else "w") as fh:
            fh.truncate(0)
            fh.write(json.dumps(self.data, indent=2, sort_keys=True, default=str) + "\n")
