"""Build the offline file set: report.html and explore/ (run table, curves, importance, gallery, a page per
run), from the analysis bundle and the study's collected results.

Everything is rendered in memory first; then the files are written atomically and pages or images that
the new analysis no longer has are removed. Patch images have a byte budget (``IMAGE_BUDGET``): the
recommended runs get theirs first, then the others from both ends of the ranking, so a study of
thousands of runs stays a report of tens of megabytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpc_unet.analysis.load import FACTORS, METRICS, StudyData, load_study
from hpc_unet.analysis.patches import load_patches
from hpc_unet.analysis.site import charts, narrative, run_page, runs_page
from hpc_unet.analysis.site.assets import write_assets
from hpc_unet.analysis.site.page import EXPLORE, esc, inline, page, plot, table
from hpc_unet.analysis.site.runs import PRIMARY, learning_label, run_frame, settings
from hpc_unet.errors import UserError
from hpc_unet.study import atomic_write_text

IMAGE_BUDGET = 40 * 2**20  # bytes of patch PNGs in one report
GALLERY_PATCHES = 4
SHARED_SETTINGS_PAGES = 1000  # up to this many runs, each run page also lists the settings every run shares
RESPONSES = {"anova_jaccard": "Jaccard", "anova_stability": "stability", "anova_oscillation": "oscillation"}


def write_site(directory: Path, bundle: Any, blocks: list[tuple], png: dict[str, bytes]) -> Path:
    """Write report.html (from ``blocks``) and, when the study's results are readable, explore/."""
    title = str(blocks[0][1]) if blocks else "Analysis"
    root = Path(bundle.info.get("study", {}).get("root", directory.parent))
    try:
        data = load_study(root)
    except UserError:
        data = None
    files: dict[str, bytes | str] = {}
    if data is not None:
        files = render_explore(data, bundle, title, directory / EXPLORE)
    report = narrative.render(blocks, png, title, explore_links=data is not None)
    if files:
        write_tree(directory / EXPLORE, files)
    atomic_write_text(directory / "report.html", report)
    return directory / "report.html"


def write_tree(explore: Path, files: dict[str, bytes | str]) -> None:
    """Replace ``explore`` by a folder holding exactly ``files`` (and the assets): written beside it, then
    swapped in by two renames, so pages and images a new analysis no longer has are gone, and a reader
    sees the old set or the new one. The pages are derived (``hpc-unet report`` rebuilds them), so the
    thousands of small files are not fsynced one by one."""
    import os
    import shutil
    import tempfile

    explore.parent.mkdir(parents=True, exist_ok=True)
    new = Path(tempfile.mkdtemp(prefix=".explore-new-", dir=explore.parent))
    try:
        write_assets(new)
        for rel, content in files.items():
            path = new / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, bytes):
                path.write_bytes(content)
            else:
                path.write_text(content, encoding="utf-8")
        os.chmod(new, 0o755)
        old = explore.parent / f".explore-old-{os.getpid()}"
        if explore.exists():
            os.replace(explore, old)
        os.replace(new, explore)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _recommended_ids(recs: pd.DataFrame | None, runs: pd.DataFrame, labels: pd.Series) -> dict[str, list[str]]:
    """exp_id -> the recommendation kinds it stands for ('best', 'most robust', ...) with architecture."""
    out: dict[str, list[str]] = {}
    if recs is None or recs.empty:
        return out
    ok = (runs["status"] == "completed") & ~labels.isin(charts.NOT_LEARNED)
    for r in recs.to_dict("records"):
        try:
            lr, bs = float(r["learning_rate"]), int(r["batch_size"])
        except (TypeError, ValueError, KeyError):
            continue
        cell = ok & (runs["architecture"] == r.get("architecture")) & np.isclose(runs["learning_rate"].astype(float), lr) \
            & (runs["batch_size"].astype(int) == bs)
        for exp_id in runs.loc[cell, "exp_id"]:
            out.setdefault(str(exp_id), []).append(f"{r.get('kind', '')} {r.get('architecture', '')}".strip())
    return out


def _image_order(runs: pd.DataFrame, primary: str, first: list[str]) -> list[str]:
    done = runs[runs["status"] == "completed"]
    ranked = list(done.sort_values(primary, ascending=False, na_position="last")["exp_id"].astype(str))
    both_ends = [x for pair in zip(ranked, reversed(ranked), strict=True) for x in pair][:len(ranked)]
    seen: dict[str, None] = dict.fromkeys(first)
    for exp_id in both_ends:
        seen.setdefault(exp_id, None)
    return list(seen)


def render_explore(data: StudyData, bundle: Any, title: str, explore: Path) -> dict[str, bytes | str]:
    """{path relative to explore/: content} of every page and image."""
    runs = data.runs.reset_index(drop=True)
    info = bundle.info
    primary = str(info.get("primary_metric") or PRIMARY)
    if primary not in runs.columns:
        primary = PRIMARY
    labels = learning_label(runs)
    varying, constant = settings(runs)
    all_settings = (varying, list(constant))
    files: dict[str, bytes | str] = {}

    recommended = _recommended_ids(bundle.tables.get("recommendations"), runs, labels)
    images: dict[str, list[tuple[str, str]]] = {}
    notes: dict[str, str] = {}
    used = 0
    records = {str(r["exp_id"]): r for r in runs.to_dict("records")}
    for exp_id in _image_order(runs, primary, list(recommended)):
        patches = load_patches(data.study.root, exp_id, records[exp_id].get("examples", ""))
        if patches is None:
            continue
        made, note = run_page.patch_images(patches, exp_id, explore / "img")
        size = sum(len(b) for _, _, b in made)
        if used + size > IMAGE_BUDGET:
            notes[exp_id] = (f"Patch images are drawn for {len(images)} runs only (the recommended runs first, then "
                             f"from both ends of the ranking) to keep the report under {IMAGE_BUDGET >> 20} MB; "
                             f"this run's are in runs/{exp_id}/val_patches.npz.")
            continue
        used += size
        for name, _, content in made:
            files[f"img/{name}"] = content
        images[exp_id] = [(f"../img/{name}", cap) for name, cap, _ in made]
        notes[exp_id] = note

    history = data.history
    by_run: dict[str, pd.DataFrame] = {}
    if history is not None and not history.empty:
        by_run = {str(k): g for k, g in history.sort_values(["exp_id", "epoch"], kind="stable").groupby("exp_id")}
    logs = run_page.log_index(data.study.jobs_dir)
    from hpc_unet.dispatch.records import latest_tasks

    tasks = latest_tasks(data.study)  # the job of each run when its result has none (local tasks)
    for k, row in enumerate(records.values()):
        exp_id = str(row["exp_id"])
        note = notes.get(exp_id, "No scored patches stored for this run (it did not complete, or it was trained "
                                 "by a version that stored none).")
        files[f"runs/{exp_id}.html"] = run_page.render(
            row, by_run.get(exp_id), all_settings, labels.iloc[k], images.get(exp_id), note,
            logs.get(str(row.get("job_id") or tasks.get(exp_id, {}).get("job_id", "")), {}), data.study.root, explore,
            inline_shared=len(runs) <= SHARED_SETTINGS_PAGES)

    frame = run_frame(runs, varying)
    files["runs.html"] = runs_page.render(runs, frame, varying, constant, primary, set(runs["exp_id"].astype(str)),
                                          title)
    files.update(_curve_pages(history, runs, varying, primary, labels, title))
    files["importance.html"] = _importance_page(bundle, runs, varying, primary, labels, title)
    files["gallery.html"] = _gallery(recommended, images, records, primary, title)
    return files


def _curve_pages(history: pd.DataFrame | None, runs: pd.DataFrame, varying: list[str], primary: str,
                 labels: pd.Series, title: str) -> dict[str, str]:
    few = [f for f in varying if f != "architecture" and runs[f].nunique() <= charts.MAX_LEVELS]
    factors = ["architecture", *few[:5], "learning"]
    links = " | ".join(f"<a href='curves-{f}.html'>{esc(f.replace('_', ' '))}</a>" for f in factors)
    out = {}
    for factor in factors:
        fig = (charts.learning_curves(history, runs, factor, primary, labels)
               if history is not None and not history.empty and (factor in runs.columns or factor == "learning")
               else None)
        body = [f"<h1>{esc(title)}: learning curves by {esc(factor.replace('_', ' '))}</h1>",
                f"<p>Group by: {links}. Hover a curve for its run; click a legend entry to hide it, double-click "
                "to show only it. Runs that did not learn are dotted, marginal runs dash-dotted. The learning "
                "rate per epoch (lowered by ReduceLROnPlateau) is on the right axis: switch it on in the legend ('lr schedule').</p>"]
        if fig and fig.get("sampled"):
            body.append(f"<p>{fig['sampled']}</p>")
        body.append(plot(fig, "curves", 640) if fig else "<p>No learning curves (no history collected).</p>")
        out[f"curves-{factor}.html"] = page(f"{title}: learning curves", "\n".join(body), here="curves-architecture",
                                            plotly=fig is not None)
    return out


def _importance_page(bundle: Any, runs: pd.DataFrame, varying: list[str], primary: str, labels: pd.Series,
                     title: str) -> str:
    anova_meta = bundle.info.get("anova", {})
    tables = {}
    for name, response in RESPONSES.items():
        frame = bundle.tables.get(name)
        key = name.split("_", 1)[1]
        if frame is None or frame.empty:
            continue
        resid = frame.loc[frame["term"].astype(str).str.lower() == "residual", "df"]
        df_resid = float(resid.iloc[0]) if len(resid) else float(anova_meta.get(key, {}).get("df_resid") or np.nan)
        tables[response] = charts.importance(frame, df_resid)
    body = [f"<h1>{esc(title)}: what matters</h1>",
            "<p>Importance: partial eta squared of each ANOVA term (the share of variation it explains beside the "
            "residual) with its 95% interval from the noncentral F distribution (Steiger 2004). Terms and p-values "
            "as in the report's ANOVA tables.</p>"]
    fig = charts.importance_figure(tables)
    if fig:
        body.append(plot(fig, "importance", 120 + 28 * max(len(t) for t in tables.values())))
        for response, t in tables.items():
            shown = pd.DataFrame({"term": t["term"], "partial eta²": t["partial_eta_sq"].map(lambda v: f"{v:.3f}"),
                                  "95% interval": [f"[{a:.3f}, {b:.3f}]" for a, b in zip(t["low"], t["high"],
                                                                                         strict=True)],
                                  "p": t["p"].map(charts._p)}).iloc[::-1]
            body.append(f"<h3>{esc(response)}</h3>" + table(shown))
    else:
        body.append("<p>No ANOVA was possible (see the report's notes).</p>")
    label = METRICS.get(primary, (primary, True))[0]
    sl = charts.slices(runs, [f for f in varying if f in FACTORS or runs[f].nunique() <= 12], primary, label, labels)
    body.append(f"<h2>Slices: {esc(label)} per level of each setting</h2><p>Every completed run is a point; hover for "
                "its id and whether it learned.</p>")
    body.append(plot(sl, "slices", 380 * max(1, -(-len(sl["data"]) // 3))) if sl else "<p>No completed runs.</p>")
    return page(f"{title}: importance", "\n".join(body), here="importance", plotly=True)


def _gallery(recommended: dict[str, list[str]], images: dict[str, list[tuple[str, str]]],
             records: dict[str, dict[str, Any]], primary: str, title: str) -> str:
    body = [f"<h1>{esc(title)}: worst patches of the recommended runs</h1>",
            "<p>The validation patches on which each recommended run scores lowest (IoU at threshold 0.5): where "
            "to look before trusting it. Image, truth (tinted), prediction, errors (green true positive, orange "
            "false positive, blue false negative).</p>"]
    shown = 0
    for exp_id, kinds in recommended.items():
        worst = [(src, cap) for src, cap in images.get(exp_id, []) if cap.startswith("worst")][:GALLERY_PATCHES]
        score = records[exp_id].get(primary)
        head = (f"<h2><a href='runs/{esc(exp_id)}.html'>{esc(exp_id)}</a></h2><p>{inline(', '.join(kinds))}"
                + (f"; {esc(METRICS.get(primary, (primary, True))[0])} {float(score):.4f}" if pd.notna(score) else "")
                + "</p>")
        if not worst:
            body.append(head + "<p>No scored patches stored for this run.</p>")
            continue
        shown += 1
        body.append(head + "<div class='grid'>" + "".join(
            f"<div class='card'><img class='patch' src='{esc(src[3:])}' alt='{esc(cap)}'><div class='cap'>{esc(cap)}"
            "</div></div>" for src, cap in worst) + "</div>")
    if not recommended:
        body.append("<p>No recommended runs (no run learned).</p>")
    return page(f"{title}: worst patches", "\n".join(body), here="gallery")
