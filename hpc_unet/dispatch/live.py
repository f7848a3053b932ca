"""Run planned experiments on this machine with a live status table (`submit --executor local`, `demo`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

    from hpc_unet.dispatch.submit import Planned
    from hpc_unet.study import Study


def run_local_with_progress(study: Study, planned: list[Planned], executor: str, max_parallel: int,
                            console: Console, per_process: int = 1) -> int:
    """Run locally with a live status display; exit 1 if any experiment did not complete."""
    from rich.live import Live

    from hpc_unet.dispatch.submit import run_local
    from hpc_unet.manifest import read_manifest
    from hpc_unet.status.render import status_renderable
    from hpc_unet.status.state import experiment_states, summarize

    frame = read_manifest(study)
    ids = {p.exp_id for p in planned}
    sub = frame[frame["exp_id"].isin(ids)]

    def view():
        rows = experiment_states(study, sub, query_slurm=False)
        return status_renderable(rows, summarize(rows, study), detail=False), rows

    with Live(view()[0], console=console, refresh_per_second=2, transient=False) as live:
        run_local(study, planned, executor=executor, max_parallel=max_parallel, per_process=per_process,
                  on_update=lambda: live.update(view()[0]))
        renderable, rows = view()
        live.update(renderable)
    bad = [r for r in rows if r["state"] != "completed"]
    for r in bad:
        console.print(f"[red]{r['exp_id']}: {r['state']}[/] {r.get('error', '')}")
    return 1 if bad else 0
