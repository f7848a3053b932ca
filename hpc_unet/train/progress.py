"""The per-experiment progress file that `status` reads (atomic replace, small JSON)."""

from __future__ import annotations

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
