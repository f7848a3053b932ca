"""Submission records: which job ran which experiment, so any later command can find the jobs."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hpc_unet.study import Study, atomic_write_json, read_json


@dataclass
class SubmissionRecord:
    executor: str
    options: dict[str, Any] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    name: str = ""
    analyze_job: dict[str, Any] | None = None  # submit --then-analyze: {"job_id", "after", "script"}

    def save(self, study: Study) -> Path:
        if not self.name:
            self.name = f"{time.strftime('%Y%m%d-%H%M%S')}-{self.executor}-{secrets.token_hex(3)}"
        path = study.submissions_dir / f"{self.name}.json"
        atomic_write_json(path, {"executor": self.executor, "options": self.options, "tasks": self.tasks,
                                 "created": self.created, "name": self.name,
                                 **({"analyze_job": self.analyze_job} if self.analyze_job else {})})
        return path


def load_records(study: Study) -> list[dict[str, Any]]:
    """All submission records, oldest first."""
    if not study.submissions_dir.exists():
        return []
    out = []
    for path in sorted(study.submissions_dir.glob("*.json")):
        try:
            out.append(read_json(path))
        except (OSError, ValueError):
            continue
    return out


def latest_tasks(study: Study) -> dict[str, dict[str, Any]]:
    """exp_id -> its most recent task entry (job_id, attempt, executor, submitted)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in load_records(study):
        for task in record.get("tasks", []):
            latest[task["exp_id"]] = {**task, "executor": record["executor"], "submitted": record["created"]}
    return latest


def next_attempt(study: Study, exp_id: str, records: list[dict[str, Any]] | None = None) -> int:
    seen = [t.get("attempt", 0) for r in (records if records is not None else load_records(study))
            for t in r.get("tasks", []) if t["exp_id"] == exp_id]
    return max(seen, default=0) + 1
