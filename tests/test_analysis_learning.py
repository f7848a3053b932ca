"""Did a run learn: both metrics must beat their image-blind predictor by 10% of the headroom, a run that
clears only one is "marginal"; status, collect and the analysis show it. The margin is written out here
(never imported from the code under test) and pinned on both sides of 0.10 on each metric."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest
from conftest import cli
from test_reliability_helpers import fake_shard, make_study

from hpc_unet.manifest import get_row
from hpc_unet.study import atomic_write_json
from hpc_unet.train.summary import learning_evidence, learning_of

TRIVIAL = 0.2
# skill = (score - 0.2) / (1 - 0.2): 0.10 at a score of 0.28 exactly
BELOW, ABOVE = 0.2799, 0.2801  # skills 0.099875 and 0.100125


@pytest.mark.parametrize(("jaccard", "iou", "state"), [
    (ABOVE, ABOVE, "learned"),
    (BELOW, ABOVE, "marginal"),      # the soft Jaccard misses the margin by 1e-4
    (ABOVE, BELOW, "marginal"),      # the thresholded IoU misses it
    (BELOW, BELOW, "not learned"),
    (0.1999, 0.35, "marginal"),      # like issue 18's run: soft Jaccard below the trivial score, IoU well above
    (0.19, 0.19, "not learned"),     # below the trivial predictor on both
])
def test_learned_needs_both_metrics_beyond_the_margin(jaccard, iou, state):
    ev = learning_evidence(jaccard, iou, TRIVIAL, TRIVIAL)
    assert ev["learning"] == state
    assert ev["learned"] is (state == "learned")
    assert ev["learned_skill"] == pytest.approx(min(jaccard - TRIVIAL, iou - TRIVIAL) / (1 - TRIVIAL), rel=1e-12)


def test_one_known_metric_decides_alone_and_none_is_unknown():
    assert learning_evidence(ABOVE, math.nan, TRIVIAL, TRIVIAL)["learning"] == "learned"
    assert learning_evidence(BELOW, math.nan, TRIVIAL, TRIVIAL)["learning"] == "not learned"
    assert learning_evidence(math.nan, math.nan, TRIVIAL, TRIVIAL)["learning"] is None
    assert learning_evidence(0.9, 0.9, 1.0, 1.0)["learning"] is None  # no headroom: undefined


def test_old_shards_are_judged_by_todays_rule():
    """A shard written under the either-metric rule recorded learned=True for a marginal run."""
    row = {"best_val_jaccard": 0.1047, "best_val_iou": 0.269, "trivial_val_jaccard": 0.1050,
           "trivial_val_iou": 0.1050, "learned": True}
    assert learning_of(row) == "marginal"
    assert learning_of({"learned": "False"}) == "not learned"  # no trivial scores: the recorded flag
    assert learning_of({"learned": None}) is None


def _shards(tmp_path):
    study = make_study(tmp_path / "s", "grid.batch_size=[8]", "grid.learning_rate=[1e-3]")
    scores = {"unet-lr1e-03-bs8-s0": (ABOVE, ABOVE), "attunet-lr1e-03-bs8-s0": (BELOW, ABOVE),
              "attresunet-lr1e-03-bs8-s0": (BELOW, BELOW)}
    for exp_id, (j, i) in scores.items():
        row = {**get_row(study, exp_id), "best_val_iou": i, "trivial_val_jaccard": TRIVIAL, "trivial_val_iou": TRIVIAL}
        fake_shard(study, exp_id, 1, best=j, row=row)
    return study


def test_collect_lists_not_learned_and_marginal_runs(tmp_path, capsys):
    study = _shards(tmp_path)
    capsys.readouterr()
    assert cli("collect", "--study", study.root, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["not_learned"] == ["attresunet-lr1e-03-bs8-s0"]
    assert report["marginal"] == ["attunet-lr1e-03-bs8-s0"]
    assert cli("collect", "--study", study.root) == 0
    out = capsys.readouterr().out
    assert "did not learn (1): attresunet-lr1e-03-bs8-s0" in out
    assert "marginal (beat the image-blind predictor on one metric only) (1): attunet-lr1e-03-bs8-s0" in out


def test_status_marks_runs_that_did_not_learn_or_are_marginal(tmp_path, capsys):
    study = _shards(tmp_path)
    states = {"unet-lr1e-03-bs8-s0": (True, "learned"), "attunet-lr1e-03-bs8-s0": (False, "marginal"),
              "attresunet-lr1e-03-bs8-s0": (False, None)}  # an older progress file: the flag only
    for exp_id, (flag, state) in states.items():
        atomic_write_json(study.progress_file(exp_id), {
            "exp_id": exp_id, "attempt": 1, "state": "completed", "epoch": 3, "epochs": 3,
            "best_val_jaccard": 0.28, "learned": flag, "learning": state, "updated_at": 0})
    capsys.readouterr()
    assert cli("status", "--study", study.root, "--all") == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if "-lr1e-03-" in line}
    assert "(did not learn)" not in lines["unet-lr1e-03-bs8-s0"] and "(marginal)" not in lines["unet-lr1e-03-bs8-s0"]
    assert "0.280 (marginal)" in lines["attunet-lr1e-03-bs8-s0"]
    assert "0.280 (did not learn)" in lines["attresunet-lr1e-03-bs8-s0"]


def test_analysis_keeps_marginal_runs_out_of_stability_speed_and_recommendations(tmp_path):
    from hpc_unet.analysis.pipeline import analyze
    from hpc_unet.analysis.synthetic import MASK_FRACTION
    from hpc_unet.analysis.synthetic import make_study as synthetic_study

    study = synthetic_study(tmp_path / "m", seed=21)
    path = study.results_dir / "results.parquet"
    frame = pd.read_parquet(path)
    # the best run of the grid becomes marginal: its IoU drops to the trivial score, its soft Jaccard stays
    top = frame["best_val_jaccard"].idxmax()
    frame.loc[top, "best_val_iou"] = MASK_FRACTION
    frame.loc[top, "val_loss_std"] = 1e-6  # would be "most stable" if it counted
    frame.to_parquet(path, index=False)
    exp = frame.loc[top, "exp_id"]
    bundle = analyze(study.root, n_boot=50)
    runs = bundle.tables["runs"].set_index("exp_id")
    assert runs.loc[exp, "learning"] == "marginal" and runs.loc[exp, "learned"] is False
    assert bundle.info["anova"]["stability"]["n"] == len(frame) - 1
    recs = bundle.tables["recommendations"]
    cell = tuple(frame.loc[top, ["architecture", "learning_rate", "batch_size"]])
    assert cell not in set(map(tuple, recs[["architecture", "learning_rate", "batch_size"]].to_numpy()))
    cells = bundle.tables["cells"]
    row = cells[(cells["architecture"] == cell[0]) & (cells["learning_rate"] == cell[1])
                & (cells["batch_size"] == cell[2])].iloc[0]
    assert row["n_marginal"] == 1 and math.isnan(row["val_loss_std"]) and math.isnan(row["jaccard_per_gpu_hour"])
    assert bundle.info["learning"]["marginal"] == 1
    assert "1 marginal" in bundle.info["headline"]


def _svg_text(fig) -> str:
    import io

    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    return buf.getvalue()


def test_heatmaps_name_marginal_cells_marginal_not_did_not_learn():
    """A cell whose only run is marginal cleared the margin on one metric: the figure says 'marginal',
    a cell of runs that cleared neither says 'did not learn', a mixed cell counts each."""
    from hpc_unet.analysis import figures

    base = {"architecture": "UNet", "n_planned": 2, "label": "", "best_val_jaccard": 0.3, "best_val_iou": 0.3,
            "val_loss_std": float("nan"), "val_loss_std_detrended": float("nan"), "best_epoch": float("nan"),
            "overfit_gap_end": float("nan")}
    cells = pd.DataFrame([
        {**base, "learning_rate": 1e-3, "batch_size": 8, "n_completed": 2, "n_not_learned": 2, "n_marginal": 2},
        {**base, "learning_rate": 1e-3, "batch_size": 16, "n_completed": 2, "n_not_learned": 2, "n_marginal": 0},
        {**base, "learning_rate": 1e-2, "batch_size": 8, "n_completed": 2, "n_not_learned": 2, "n_marginal": 1},
        {**base, "learning_rate": 1e-2, "batch_size": 16, "n_completed": 2, "n_not_learned": 1, "n_marginal": 1,
         "val_loss_std": 0.01},
    ])
    svg = _svg_text(figures.heatmap(cells, "val_loss_std"))
    # matplotlib writes each line of a cell's text as its own <!-- comment --> in the SVG
    assert svg.count("<!-- marginal -->") == 1          # the all-marginal cell
    assert svg.count("<!-- did not -->") == 1            # the cell of runs that learned on neither metric
    assert svg.count("<!-- did not learn -->") == 1      # the mixed cell: 'did not learn / or marginal'
    assert "<!-- (1 marginal) -->" in svg               # the cell where one of two runs learned
    assert "undefined: the runs did not learn or are marginal" in svg
    plain = _svg_text(figures.heatmap(cells.assign(n_marginal=0), "val_loss_std"))
    assert "marginal" not in plain and plain.count("<!-- did not -->") == 3 and "<!-- (1 flat) -->" in plain


def test_learning_curves_draw_marginal_runs_apart_from_runs_that_did_not_learn(tmp_path):
    from hpc_unet.analysis import figures
    from hpc_unet.analysis.load import load_study
    from hpc_unet.analysis.site import charts
    from hpc_unet.analysis.site.runs import learning_label
    from hpc_unet.analysis.synthetic import MASK_FRACTION
    from hpc_unet.analysis.synthetic import make_study as synthetic_study

    study = synthetic_study(tmp_path / "m", seed=21, not_learning=[("UNet", 1e-4, 8)])
    path = study.results_dir / "results.parquet"
    frame = pd.read_parquet(path)
    top = frame["best_val_jaccard"].idxmax()
    frame.loc[top, "best_val_iou"] = MASK_FRACTION  # learned on the soft Jaccard only: marginal
    frame.to_parquet(path, index=False)
    data = load_study(study.root)
    fig = figures.learning_curves(data.completed, data.history)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "did not learn" in labels and "marginal" in labels
    grey = [c for ax in fig.axes for c in ax.collections if c.get_linestyle()[0][1] is not None
            and tuple(round(v, 3) for v in c.get_color()[0][:3]) == (0.604, 0.604, 0.604)]
    assert len(grey) == 2  # the marginal run, in both panels (val Jaccard, val loss)
    runs = data.runs
    chart = charts.learning_curves(data.history, runs, "architecture", "best_val_jaccard", learning_label(runs))
    names = {t["name"]: t["line"]["dash"] for t in chart["data"] if "lr schedule" not in t["name"]}
    arch = frame.loc[top, "architecture"]
    assert names[f"{arch} (marginal)"] == "dashdot" and names["UNet (did not learn)"] == "dot"
    assert names[f"{arch}"] == "solid"
