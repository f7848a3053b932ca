"""What `status` (and the manifest listing) print: one vocabulary everywhere.

Words: a row's state is one of STATE_LABEL's values (the machine names, e.g. ``pending`` in --json,
become "not submitted" here); learning rates print like ids (1e-04); durations as 1m05s / 2h10m; a
completed run whose early stopping ended it before its epochs says "stopped early". The summary line is
printed above the table and again below it, so it stays on screen however long the table is. The table
is one per study, grouped by architecture, one line per experiment: a 36-experiment study fits a
120x50 terminal. The table is laid out at the terminal's width: when Slurm's job, state and node columns
make it wider, the least needed columns are left out and named below it, never cut mid-value.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hpc_unet.status.waiting import waiting_lines

if TYPE_CHECKING:
    import pandas as pd

STATE_LABEL = {"completed": "completed", "skipped": "skipped", "running": "running", "queued": "queued",
               "pending": "not submitted", "failed": "failed", "oom": "out of memory", "diverged": "diverged",
               "lost": "lost", "unknown": "unknown"}
STATE_STYLE = {"completed": "green", "stopped early": "green", "skipped": "yellow", "running": "cyan",
               "queued": "blue", "not submitted": "dim", "failed": "red", "out of memory": "magenta",
               "diverged": "red", "lost": "bold red", "unknown": "yellow"}
LARGE_STUDY = 200


def format_rate(value: Any) -> str:
    """A learning rate as ids write it (1e-04, 2.5e-04)."""
    from hpc_unet.manifest import format_number

    return format_number(value) if isinstance(value, float) else str(value)


def format_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    value = int(round(value))
    if value >= 3600:
        return f"{value // 3600}h{value % 3600 // 60:02d}m"
    return f"{value // 60}m{value % 60:02d}s" if value >= 60 else f"{value}s"


def stopped_early(row: dict[str, Any]) -> bool:
    return row["state"] == "completed" and 0 < int(row.get("epoch") or 0) < int(row["epochs"])


def state_label(row: dict[str, Any]) -> str:
    if (row.get("eta") or {}).get("local"):
        return "queued"  # not yet started by a live local submit, which will start it
    return "stopped early" if stopped_early(row) else STATE_LABEL.get(row["state"], row["state"])


def summary_line(summary: dict[str, Any], rows: list[dict[str, Any]] | None = None) -> list[tuple[str, str]]:
    """The counts as (text, style) pieces: done, running, queued, not submitted, did not complete."""
    counts = summary.get("counts", {})
    early = sum(1 for r in rows if stopped_early(r)) if rows else 0
    done = f"{summary['done']}/{summary['total']} done" + (f" ({early} stopped early)" if early else "")
    parts = [(done, "green"), (f"{summary['running']} running", "cyan"), (f"{summary['queued']} queued", "blue"),
             (f"{summary['pending']} not submitted", "dim")]
    if summary["failed"]:
        kinds = [f"{counts[s]} {STATE_LABEL[s]}" for s in ("failed", "oom", "diverged", "lost") if counts.get(s)]
        parts.append((f"{summary['failed']} not completed ({', '.join(kinds)})", "red"))
    if summary.get("unknown"):
        parts.append((f"{summary['unknown']} unknown", "yellow"))
    if summary.get("restarts"):
        parts.append((f"{summary['restarts']} restarts", ""))
    return parts


def eta_line(summary: dict[str, Any]) -> tuple[str, str] | None:
    """When the submitted experiments should be done, and on what that rests; None when none is left."""
    left = summary["running"] + summary["queued"] + summary.get("unknown", 0)
    if summary.get("eta_seconds") is not None:
        return (f"ETA {format_seconds(summary['eta_seconds'])}: {left} submitted left, {summary.get('parallel', 0)} "
                f"in parallel (start-up and first epoch counted; from {summary.get('eta_basis', '')})", "bold")
    if left:
        return ("ETA unknown: " + summary.get("eta_basis", ""), "dim")
    return None


def summary_text(summary: dict[str, Any], rows: list[dict[str, Any]] | None = None) -> str:
    """The summary as plain text (``status --summary`` prints it without loading rich)."""
    eta = eta_line(summary)
    lines = ["  ".join(text for text, _ in summary_line(summary, rows)), *([eta[0]] if eta else []),
             *waiting_lines(summary.get("waiting") or [])]
    return "\n".join(lines)


def _learning_marker(r: dict) -> str:
    """' (marginal)' or ' (did not learn)' after a finished run's score (docs/analysis.md: Did it learn?)."""
    if r.get("learning") == "marginal":
        return " (marginal)"
    return " (did not learn)" if r.get("learning") == "not learned" or r.get("learned") is False else ""


def _time_left(row: dict[str, Any]) -> str:
    eta = row.get("eta")
    if not eta:
        return ""
    if "queue" in eta:
        start = eta.get("starts_in")
        return f"#{eta['queue']} in queue" + (f", starts ~{format_seconds(start)}" if start is not None else "")
    return f"~{format_seconds(eta['left'])}"


def _epochs(row: dict[str, Any]) -> str:
    done = int(row.get("epoch") or 0)
    return f"{done}/{row['epochs']}" if done or row["state"] in ("running", "completed") else f"-/{row['epochs']}"


def status_renderable(rows: list[dict], summary: dict, detail: bool = True, show_all: bool = False):
    """A rich group: the summary, the table (grouped by architecture), problems, the summary again.

    Above LARGE_STUDY experiments (unless ``show_all``) completed rows are counted, not listed: rendering
    thousands of rows costs seconds and hides the ones that need attention.
    """
    from rich.console import Group
    from rich.text import Text

    def line() -> Text:
        text = Text()
        for i, (piece, style) in enumerate(summary_line(summary, rows)):
            text.append(("  " if i else "") + piece, style=style)
        eta = eta_line(summary)
        if eta:
            text.append("\n" + eta[0], style=eta[1])
        return text

    parts: list = [Text(summary["study"], style="bold"), line()]
    if summary.get("note"):
        parts.append(Text(summary["note"], style="yellow"))
    parts += [Text(text, style="bold yellow") for text in waiting_lines(summary.get("waiting") or [])]
    if not detail:
        return Group(*parts)
    hidden: dict[str, int] = {}
    shown: dict[str, list[dict]] = {}
    for r in rows:
        if len(rows) > LARGE_STUDY and not show_all and r["state"] == "completed":
            hidden[r["architecture"]] = hidden.get(r["architecture"], 0) + 1
            continue
        shown.setdefault(r["architecture"], []).append(r)
    if hidden:
        parts.append(Text("completed, not listed (--all lists them): "
                          + ", ".join(f"{arch} {n}" for arch, n in hidden.items()), style="green"))
    if shown:
        parts.append(_table(shown))
    lost = [r["exp_id"] for r in rows if r["state"] == "lost"]
    if lost:
        parts.append(Text(f"lost (the job ended, no result): {', '.join(lost[:4])}{' ...' if len(lost) > 4 else ''}"
                          " -- `hpc-unet submit` reruns them from their checkpoints", style="bold red"))
    damaged = summary.get("unreadable") or []
    if damaged:  # the files collect reports unreadable, named the same way here
        parts.append(Text(f"damaged shards ({len(damaged)}, collect skips them): {', '.join(damaged[:4])}"
                          f"{' ...' if len(damaged) > 4 else ''} -- remove them; `hpc-unet submit` reruns "
                          "experiments left without a result", style="bold red"))
    causes = [r for r in rows if r["state"] in ("failed", "oom", "diverged") and r.get("error")]
    for r in causes[:8]:  # the cause each task recorded (e.g. an allocated GPU TensorFlow cannot use)
        parts.append(Text(f"{r['exp_id']}: {r['error']}", style="red"))
    if shown:
        parts.append(line())
    return Group(*parts)


# Optional columns dropped, in this order, when the table is wider than the terminal: the least needed
# first. A dropped column is named below the table, never cut off mid-value.
DROP_ORDER = ("node", "Slurm state", "job", "epoch time", "restarts")


def _table(groups: dict[str, list[dict]]) -> Any:
    """One compact table as aligned text lines: a bold architecture line opens each group; optional
    columns only when some row uses them. Plain lines, not a rich Table: laying out a Table costs about a
    millisecond per row, which a study with hundreds of rows to show pays on every refresh. Laid out when
    printed, at the console's width: columns that do not fit are left out (DROP_ORDER) and named."""
    listed = [r for items in groups.values() for r in items]
    optional = {"restarts": any(r.get("restarts") for r in listed), "time left": any(r.get("eta") for r in listed),
                "job": any(r.get("job_id") for r in listed), "Slurm state": any(r.get("slurm_state") for r in listed)}
    columns = ["experiment", "state", "epochs", "best val Jaccard", "epoch time"]
    columns += [c for c in ("restarts", "time left", "job") if optional[c]]
    columns += ["Slurm state", "node"] if optional["Slurm state"] else []
    body: list[tuple[str, dict[str, str]] | str] = []
    for arch, items in groups.items():
        body.append(f"{arch} ({len(items)})")
        for r in items:
            best = r.get("best_val_jaccard")
            cells = {"experiment": r["exp_id"], "state": state_label(r), "epochs": _epochs(r),
                     "best val Jaccard": (f"{best:.3f}" if isinstance(best, float) else "-")
                     + _learning_marker(r),
                     "epoch time": f"{r['last_epoch_seconds']:.1f}s" if r.get("last_epoch_seconds") else "-",
                     "restarts": str(r.get("restarts") or 0), "time left": _time_left(r),
                     "job": r.get("job_id") or "-", "Slurm state": r.get("slurm_state") or "-",
                     "node": r.get("node") or "-"}
            body.append((cells["state"], cells))
    return StatusTable(columns, body)


class StatusTable:
    """The status table, laid out at the width rich renders it at (``__rich_console__``)."""

    right = {"epochs", "best val Jaccard", "epoch time", "restarts"}

    def __init__(self, columns: list[str], body: list[tuple[str, dict[str, str]] | str]) -> None:
        self.columns = columns
        self.body = body

    def widths(self, columns: list[str]) -> list[int]:
        return [max([len(c), *(len(b[1][c]) for b in self.body if isinstance(b, tuple))]) for c in columns]

    def fit(self, width: int) -> tuple[list[str], list[str]]:
        """(columns shown, columns left out) so that every line is at most ``width`` characters."""
        shown = list(self.columns)
        for name in DROP_ORDER:
            if sum(self.widths(shown)) + 2 * (len(shown) - 1) <= width:
                break
            if name in shown:
                shown.remove(name)
        return shown, [c for c in self.columns if c not in shown]

    def text(self, width: int) -> Any:
        from rich.text import Text

        columns, dropped = self.fit(width)
        widths = self.widths(columns)

        def fmt(cells: list[str]) -> str:
            return "  ".join(v.rjust(w) if c in self.right else v.ljust(w)
                             for c, v, w in zip(columns, cells, widths, strict=True)).rstrip()

        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(fmt(columns) + "\n", style="bold")
        state_at = widths[0] + 2
        for item in self.body:
            if isinstance(item, str):
                text.append(item + "\n", style="bold underline")
                continue
            label, cells = item
            line = fmt([cells[c] for c in columns])
            text.append(line[:state_at])
            text.append(line[state_at:state_at + widths[1]], style=STATE_STYLE.get(label, ""))
            text.append(line[state_at + widths[1]:] + "\n")
        if dropped:
            text.append(f"not shown at {width} columns: {', '.join(dropped)} (a wider terminal or "
                        "`status --json` shows them)\n", style="dim")
        text.rstrip()
        return text

    def __rich_console__(self, console: Any, options: Any) -> Any:
        yield self.text(options.max_width)


def print_manifest(frame: pd.DataFrame, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    cols = ["index", "exp_id", "architecture", "learning_rate", "batch_size", "epochs", "seed", "loss"]
    names = {"exp_id": "experiment", "learning_rate": "learning rate", "batch_size": "batch"}
    for col in cols:
        table.add_column(names.get(col, col), justify="right" if col in ("index", "batch_size", "epochs", "seed")
                         else "left")
    for row in frame[cols].itertuples(index=False):
        table.add_row(*(format_rate(v) if isinstance(v, float) else str(v) for v in row))
    console().print(table)


def console():
    """A rich console; when output is piped, wide enough that tables are not cut (rich assumes 80)."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 160)
