"""Rich tables for the terminal."""

from __future__ import annotations

import pandas as pd


def print_manifest(frame: pd.DataFrame, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    cols = ["index", "exp_id", "architecture", "learning_rate", "batch_size", "epochs", "seed", "loss"]
    for col in cols:
        table.add_column(col, justify="right" if col in ("index", "batch_size", "epochs", "seed") else "left")
    for row in frame[cols].itertuples(index=False):
        table.add_row(*(f"{v:g}" if isinstance(v, float) else str(v) for v in row))
    Console().print(table)
