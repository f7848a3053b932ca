"""`hpc-unet analyze / report / followup` end to end on constructed study directories."""

from __future__ import annotations

import base64
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest

from hpc_unet.analysis.synthetic import make_study, spec_text
from hpc_unet.cli import main

FAILED = {("UNet", 5e-3, 32): "oom", ("Attention_ResUNet", 1e-4, 16): "failed",
          ("Attention_UNet", 5e-3, 8): "diverged"}
MISSING = [("Attention_UNet", 1e-4, 8)]
FIGURES = ["heatmap_jaccard", "heatmap_iou", "heatmap_stability", "heatmap_oscillation", "heatmap_convergence",
           "heatmap_overfitting", "comparison_lr", "stability_vs_batch", "learning_curves", "stability_vs_performance"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    """One study with failed and missing cells and a baseline, analyzed once in a fresh interpreter."""
    root = tmp_path_factory.mktemp("analysis")
    study = make_study(root / "grid", statuses=FAILED, missing=MISSING, seed=3)
    base_spec = spec_text(name="baseline", learning_rates=(1e-2,), batch_sizes=(8,))
    baseline = make_study(root / "baseline", spec=base_spec, jaccard=lambda a, lr, bs: 0.6,
                          stability=lambda a, lr, bs: 0.15, seed=4)
    code = (
        "import sys\n"
        "from hpc_unet.cli import main\n"
        f"rc = main(['analyze', '--study', {str(study.root)!r}, '--baseline', {str(baseline.root)!r}, "
        "'--bootstrap', '200'])\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "print('TF-MODULES', loaded)\n"
        "sys.exit(rc if rc else (3 if loaded else 0))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    return {"study": study, "baseline": baseline, "proc": proc, "dir": study.root / "analysis"}


def test_analyze_runs_end_to_end_without_tensorflow(analyzed):
    proc = analyzed["proc"]
    assert proc.returncode == 0, proc.stderr
    assert "TF-MODULES []" in proc.stdout
    assert "Verdicts" in proc.stdout and "report.html" in proc.stdout


def test_analysis_files(analyzed):
    d = analyzed["dir"]
    for name in FIGURES:
        assert (d / "figures" / f"{name}.png").read_bytes().startswith(PNG_MAGIC)
        assert b"<svg" in (d / "figures" / f"{name}.svg").read_bytes()[:2000]
    for name in ("verdicts", "recommendations", "anova_jaccard", "anova_stability", "cells", "marginal_means",
                 "correlation", "pairwise_architectures", "runs", "failures", "baseline"):
        assert (d / "tables" / f"{name}.csv").exists(), name
    table = pd.read_csv(d / "tables" / "verdicts.csv").set_index("id")
    assert set(table["verdict"]) <= {"supported", "not supported", "inconclusive"}
    assert {"H1", "H2", "H3-sensitive", "S1", "S2", "S3", "S4", "S5", "S6"} <= set(table.index)
    # one run per side: a std has no interval, so the >50% reduction (grid ~0.03 vs 0.15) is not judged
    assert table.loc["S1", "verdict"] == "inconclusive" and "no interval" in table.loc["S1", "evidence"]
    # the reduction each architecture reports is 1 - grid std / baseline std, recomputed from the tables
    recs = pd.read_csv(d / "tables" / "recommendations.csv")
    base = pd.read_csv(d / "tables" / "baseline.csv").groupby("architecture")["val_loss_std"].mean()
    for r in recs[recs["kind"].str.contains("best")].to_dict("records"):
        grid_std, base_std = r["val_loss_std"], base[r["architecture"]]
        assert (f"{r['architecture']}: std {grid_std:.4f} vs baseline {base_std:.4f} "
                f"({1 - grid_std / base_std:.0%} lower)") in table.loc["S1", "evidence"]
    # the Jaccard difference gets a paired bootstrap over the shared validation patches: grid ~0.77 vs 0.6
    assert table.loc["S2", "verdict"] == "supported" and "paired bootstrap" in table.loc["S2", "evidence"]
    md = (d / "report.md").read_text()
    assert "## Verdicts" in md and "Type II ANOVA" in md and "TensorFlow: 2.21.0" in md
    assert "bootstrap over 60 val patches" in md  # the CI method is named


def test_html_report_embeds_its_figures_as_png_data_uris(analyzed):
    page = (analyzed["dir"] / "report.html").read_text()
    sources = re.findall(r"<img [^>]*src='([^']+)'", page)
    assert len(sources) == len(FIGURES)
    for src in sources:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
    assert "figures/" not in page.replace("tables/*.csv", "")


def test_failed_and_missing_cells_appear_as_such(analyzed):
    d = analyzed["dir"]
    cells = pd.read_csv(d / "tables" / "cells.csv")
    for (arch, lr, bs), status in [*FAILED.items(), *((c, "missing") for c in MISSING)]:
        row = cells[(cells["architecture"] == arch) & (cells["learning_rate"] == lr) & (cells["batch_size"] == bs)]
        assert len(row) == 1 and row["n_completed"].iloc[0] == 0
        assert pd.isna(row["jaccard"].iloc[0])  # never a zero
        assert status in row["statuses"].iloc[0]
    svg = (d / "figures" / "heatmap_jaccard.svg").read_text()
    for status in ("oom", "failed", "diverged", "missing"):
        assert f">{status}<" in svg
    failures = pd.read_csv(d / "tables" / "failures.csv")
    assert set(failures["status"]) == {"oom", "failed", "diverged", "missing"}
    md = (d / "report.md").read_text()
    assert "ResourceExhaustedError" in md and "OOM when allocating" in md


def test_report_rebuilds_from_the_bundle(analyzed, capsys):
    d = analyzed["dir"]
    before = (d / "report.md").read_text()
    (d / "report.md").unlink()
    (d / "report.html").unlink()
    assert main(["report", "--study", str(analyzed["study"].root)]) == 0
    assert (d / "report.md").read_text() == before
    assert (d / "report.html").exists()


def test_report_runs_the_analysis_when_there_is_none(tmp_path, monkeypatch):
    study = make_study(tmp_path / "s", seed=5)
    calls = []
    monkeypatch.setattr("hpc_unet.analysis.pipeline.run_analysis", lambda *a, **k: calls.append(a))
    assert main(["report", "--study", str(study.root)]) == 0
    assert calls and Path(calls[0][0]) == study.root


def test_failed_analysis_leaves_the_previous_one_intact(analyzed, monkeypatch):
    d = analyzed["dir"]
    files = sorted(p for p in d.rglob("*") if p.is_file())
    before = {p: p.read_bytes() for p in files}
    calls = []

    def broken(fig, fmt):
        calls.append(fmt)
        if len(calls) > 2:
            raise RuntimeError("disk on fire")
        return b"x"

    monkeypatch.setattr("hpc_unet.analysis.figures.render", broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["analyze", "--study", str(analyzed["study"].root), "--bootstrap", "50"])
    assert sorted(p for p in d.rglob("*") if p.is_file()) == files
    assert all(p.read_bytes() == data for p, data in before.items())


def test_analyze_without_results_says_to_collect(tmp_path, capsys):
    study = make_study(tmp_path / "empty", results=False)
    assert main(["analyze", "--study", str(study.root)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "hpc-unet collect" in err and err.startswith("hpc-unet analyze: error:")


def test_followup_specs_load_and_expand(analyzed, tmp_path, capsys):
    from hpc_unet.manifest import build_rows
    from hpc_unet.spec import load_spec

    study = analyzed["study"].root
    out = tmp_path / "next.toml"
    assert main(["followup", "--study", str(study), "--top", "2", "--epochs", "100", "--replicates", "3",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    files = sorted(tmp_path.glob("next-*.toml"))
    assert files and all(str(f) in printed for f in files)
    original = tomllib.loads((study / "spec.toml").read_text())
    cells = pd.read_csv(analyzed["dir"] / "tables" / "cells.csv").dropna(subset=["jaccard"])
    top2 = cells.sort_values("jaccard", ascending=False).head(2)
    best = cells.sort_values("jaccard", ascending=False).drop_duplicates("architecture")
    extended, comparison = set(), set()
    for path in files:
        raw = tomllib.loads(path.read_text())
        assert raw["data"] == original["data"] and raw["slurm"] == original["slurm"]
        rows = build_rows(load_spec(path))
        assert sorted(rows["seed"].unique()) == [0, 1, 2]
        configs = {(a, lr, bs) for a, lr, bs in rows[["architecture", "learning_rate", "batch_size"]].itertuples(index=False)}
        assert len(rows) == 3 * len(configs)
        if "-extended-" in path.name:
            assert (rows["epochs"] == 100).all()
            extended |= configs
        else:
            assert (rows["epochs"] == 30).all()
            assert {a for a, _, _ in configs} == {"UNet", "Attention_UNet", "Attention_ResUNet"}
            comparison |= {(lr, bs) for _, lr, bs in configs}
    assert extended == {(a, lr, bs) for a, lr, bs in top2[["architecture", "learning_rate", "batch_size"]].itertuples(index=False)}
    assert comparison == {(lr, bs) for lr, bs in best[["learning_rate", "batch_size"]].itertuples(index=False)}
    # no silent overwrite
    assert main(["followup", "--study", str(study), "--out", str(out)]) == 2


def test_followup_keeps_environment_variables_in_data_paths(tmp_path, monkeypatch):
    from hpc_unet.manifest import build_rows
    from hpc_unet.spec import load_spec

    monkeypatch.setenv("HPC_UNET_DATA", str(tmp_path))
    spec = spec_text(learning_rates=(1e-3, 5e-4), batch_sizes=(8,)).replace(
        'kind = "synthetic"', 'kind = "tiff"\nimages = "${HPC_UNET_DATA}/training.tif"\n'
        'masks = "${HPC_UNET_DATA}/training_groundtruth.tif"')
    study = make_study(tmp_path / "tiff", spec=spec, history=False)
    assert main(["followup", "--study", str(study.root), "--top", "1", "--out", str(tmp_path / "f.toml")]) == 0
    for path in tmp_path.glob("f-*.toml"):
        assert "${HPC_UNET_DATA}/training.tif" in path.read_text()
        rows = build_rows(load_spec(path))
        assert rows["data_images"].iloc[0] == str(tmp_path / "training.tif")
