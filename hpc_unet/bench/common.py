"""Shared helpers for the benchmarks: machine facts, timers, JSON output and rich tables (no TensorFlow)."""

from __future__ import annotations

import json
import os
import platform
import socket
import statistics
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from hpc_unet import __version__


def machine() -> dict[str, Any]:
    """Where and under what load a benchmark ran: timings on a shared machine need this next to them."""
    try:
        load = list(os.getloadavg())
    except OSError:
        load = []
    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": socket.gethostname(), "cpus": os.cpu_count(), "cpu_model": cpu_model,
            "loadavg_1_5_15": [round(x, 2) for x in load], "python": platform.python_version(),
            "hpc_unet": __version__, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "threads_env": os.environ.get("HPC_UNET_THREADS", "")}


def median(values: Iterable[float]) -> float:
    vals = [float(v) for v in values]
    return statistics.median(vals) if vals else float("nan")


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, Any]:
    """(wall seconds, result) of one call."""
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def write_json(path: str | os.PathLike | None, payload: dict[str, Any]) -> Path | None:
    """Write ``payload`` as indented JSON (atomically); None path writes nothing."""
    if not path:
        return None
    from hpc_unet.study import atomic_write_json

    out = Path(path)
    atomic_write_json(out, payload)
    return out


def fmt(value: Any, digits: int = 3) -> str:
    """Compact cell text: floats to ``digits`` significant figures, None/NaN as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:
            return "-"
        if value == 0:
            return "0"
        if abs(value) >= 10 ** digits:
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def console() -> Any:
    """A rich console; wide when the output is not a terminal (logs, CI), so tables are not squeezed."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def print_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> None:
    """One rich table; numeric-looking columns right-aligned."""
    from rich.table import Table

    table = Table(title=title, caption=caption or None, title_justify="left")
    rows = [list(r) for r in rows]
    for i, col in enumerate(columns):
        numeric = bool(rows) and all(isinstance(r[i], int | float) or r[i] is None for r in rows)
        table.add_column(col, justify="right" if numeric else "left")
    for r in rows:
        table.add_row(*(fmt(v) for v in r))
    console().print(table)


def console_print(text: str) -> None:
    console().print(text)


def quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ start-up lines; call before importing it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def dumps(payload: dict[str, Any]) -> str:
    return json.dumps(payload, indent=2, sort_keys=True, default=str)
