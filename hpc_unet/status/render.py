"""Rich tables for the terminal."""

from __future__ import annotations

import pandas as pd


def print_manifest(frame: pd.DataFrame, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    cols = ["index", "exp_id", "architecture", "learning_rate", "batch_size", "epochs", "seed", "loss"]
    for col in cols:
        table.add_column(col, justify="right" if col in ("index", "batch_size", "epochs", "seed") else "left")
    for row in frame[cols].itertuples(index=False):
        table.add_row(*(f"{v:g}" if isinstance(v, float) else str(v) for v in row))
    console().print(table)


STATE_STYLE = {"unknown": "yellow", "completed": "green", "running": "cyan", "queued": "blue", "pending": "dim", "failed": "red",
               "oom": "magenta", "diverged": "red", "lost": "bold red", "skipped": "yellow"}


def _fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    value = int(value)
    return f"{value // 3600}h{value % 3600 // 60:02d}m" if value >= 3600 else f"{value // 60}m{value % 60:02d}s"


LARGE_STUDY = 200


def status_renderable(rows: list[dict], summary: dict, detail: bool = True, show_all: bool = False):
    """A rich group: the summary line, then one table per architecture.

    Above LARGE_STUDY experiments (unless ``show_all``) completed rows are counted, not listed: rendering
    thousands of rows costs seconds and hides the ones that need attention.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    head = Text.assemble(
        (f"{summary['done']}/{summary['total']} done", "green"), "  ",
        (f"{summary['running']} running", "cyan"), "  ", (f"{summary['queued']} queued", "blue"), "  ",
        (f"{summary['pending']} not submitted", "dim"), "  ", (f"{summary['failed']} failed/lost", "red"),
        f"  ETA {_fmt_seconds(summary['eta_seconds'])}" if summary.get("eta_seconds") else "",
    )
    if summary.get("unknown"):
        head.append(f"  {summary['unknown']} unknown", style="yellow")
    if summary.get("restarts"):
        head.append(f"  {summary['restarts']} restarts")
    parts: list = [Text(summary["study"], style="bold"), head]
    if summary.get("note"):
        parts.append(Text(summary["note"], style="yellow"))
    if not detail:
        return Group(*parts)
    by_arch: dict[str, list[dict]] = {}
    hidden: dict[str, int] = {}
    for r in rows:
        if len(rows) > LARGE_STUDY and not show_all and r["state"] == "completed":
            hidden[r["architecture"]] = hidden.get(r["architecture"], 0) + 1
            continue
        by_arch.setdefault(r["architecture"], []).append(r)
    if hidden:
        parts.append(Text("completed, not listed (--all lists them): "
                          + ", ".join(f"{arch} {n}" for arch, n in hidden.items()), style="green"))
    slurm_cols = any(r.get("slurm_state") for r in rows)
    for arch, items in by_arch.items():
        table = Table(title=arch, title_justify="left", expand=False, padding=(0, 1))
        table.add_column("experiment", no_wrap=True)
        for col in ("lr", "bs", "seed", "state", "epoch", "best J", "s/ep", "rst", "job"):
            table.add_column(col, no_wrap=True, justify="left" if col in ("state", "job") else "right")
        if slurm_cols:
            table.add_column("slurm", no_wrap=True)
            table.add_column("node", no_wrap=True)
        for r in items:
            style = STATE_STYLE.get(r["state"], "")
            best = r.get("best_val_jaccard")
            cells = [
                r["exp_id"], f"{r['learning_rate']:g}", str(r["batch_size"]), str(r["seed"]),
                f"[{style}]{r['state']}[/]", f"{r['epoch'] or 0}/{r['epochs']}",
                f"{best:.3f}" if isinstance(best, float) else "-",
                f"{r['last_epoch_seconds']:.1f}" if r.get("last_epoch_seconds") else "-",
                str(r.get("restarts") or 0), r.get("job_id") or "-",
            ]
            if slurm_cols:
                cells += [r.get("slurm_state") or "-", r.get("node") or "-"]
            table.add_row(*cells)
        parts.append(table)
    lost = [r["exp_id"] for r in rows if r["state"] == "lost"]
    if lost:
        parts.append(Text(f"{len(lost)} experiment(s) whose job ended without a result: {', '.join(lost[:8])}"
                          " -- `hpc-unet submit` reruns them from their checkpoints", style="bold red"))
    return Group(*parts)


def console():
    """A rich console; when output is piped, wide enough that tables are not cut (rich assumes 80)."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)
