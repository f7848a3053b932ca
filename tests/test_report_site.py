"""The explorable report's parts, checked against hand-worked values and independent computations:
per-patch scores and the worst/best choice, the error-map colours, the interval of partial eta squared,
the learning label, and the rendering defects the written report had (backticks, empty columns,
raw JSON provenance, repeated interval notes, fractional epochs, a legend over the curves)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from conftest import cli

from hpc_unet.analysis import figures
from hpc_unet.analysis.patches import FN_RGB, FP_RGB, TP_RGB, error_map
from hpc_unet.analysis.site.charts import epoch_axis, eta_interval
from hpc_unet.analysis.site.page import table
from hpc_unet.analysis.site.runs import learning_label
from hpc_unet.analysis.synthetic import make_study
from hpc_unet.train.val_patches import rank_patches, read_val_patches, save_val_patches


def test_patch_scores_worst_and_best_by_hand(tmp_path):
    truth = np.array([[[1, 1], [0, 0]],      # 0: tp 1 (0.9), fp 1 (0.6), fn 1 (0.4) -> IoU 1/3
                      [[0, 0], [0, 0]],      # 1: nothing true, nothing predicted -> not scored
                      [[1, 0], [0, 0]],      # 2: 0.51 is above the threshold -> IoU 1
                      [[1, 1], [1, 1]],      # 3: exactly 0.5 is not -> IoU 0
                      [[0, 0], [0, 0]]], float)[..., None]  # 4: background, one false positive -> IoU 0
    probs = np.array([[[0.9, 0.4], [0.6, 0.1]], [[0.2, 0.2], [0.2, 0.2]], [[0.51, 0], [0, 0]],
                      [[0.5, 0.5], [0.5, 0.5]], [[0.9, 0], [0, 0]]], float)[..., None]
    images = np.linspace(0, 1, 20).reshape(5, 2, 2, 1)
    save_val_patches(tmp_path / "v.npz", images, truth, probs, k=2)
    s = read_val_patches(tmp_path / "v.npz")
    assert s["tp"].tolist() == [1, 0, 1, 0, 0] and s["fp"].tolist() == [1, 0, 0, 0, 1]
    assert s["fn"].tolist() == [1, 0, 0, 4, 0]
    assert s["iou"][0] == pytest.approx(1 / 3) and np.isnan(s["iou"][1]) and s["iou"][2] == 1 and s["iou"][3] == 0
    assert s["iou"][4] == 0
    # patch 1 has nothing to score; patch 4 (no truth) is not a "worst" while 2 patches with truth exist
    assert s["worst"].tolist() == [3, 0] and s["best"].tolist() == [2, 0]
    assert s["index"].tolist() == [0, 2, 3]
    assert s["predicted"][0].tolist() == [[1, 0], [1, 0]] and s["predicted"][2].sum() == 0  # patch 3 stored third
    assert s["mask"][2].tolist() == [[255, 255], [255, 255]] and s["image"].dtype == np.uint8
    assert read_val_patches(tmp_path / "absent.npz") is None
    iou = np.array([0.0, 0.5, np.nan, 0.9])
    assert rank_patches(iou, 2, has_truth=np.array([False, True, False, True]))[0].tolist() == [1, 3]
    assert rank_patches(iou, 3, has_truth=np.array([False, True, False, True]))[0].tolist() == [0, 1, 3]


def test_error_map_paints_each_error_kind_in_its_colour():
    image = np.full((1, 4), 100, np.uint8)
    mask = np.array([[1, 1, 0, 0]], bool)
    pred = np.array([[1, 0, 1, 0]], bool)
    rgb = error_map(image, mask, pred).astype(int)
    base = 100 * 0.55  # the image dimmed
    assert rgb[0, 3].tolist() == [int(base)] * 3  # true negative: only dimmed
    assert rgb[0, 0].tolist() == [int(0.25 * base + 0.75 * c) for c in TP_RGB]
    assert rgb[0, 2].tolist() == [int(0.1 * base + 0.9 * c) for c in FP_RGB]
    assert rgb[0, 1].tolist() == [int(0.1 * base + 0.9 * c) for c in FN_RGB]


@pytest.mark.parametrize(("F", "df1", "df2"), [(6.0, 2, 12), (25.0, 3, 20)])
def test_eta_interval_inverts_the_noncentral_F_by_simulation(F, df1, df2):
    """At the interval's ends the observed F is the 97.5% / 2.5% quantile of the noncentral F: checked by
    sampling noncentral chi-squares with NumPy (independent of scipy's ncf used by the code)."""
    lo, hi = eta_interval(F, df1, df2)
    rng = np.random.default_rng(0)
    n = 400_000
    for eta, share in ((lo, 0.975), (hi, 0.025)):
        lam = eta * (df1 + df2 + 1) / (1 - eta)  # eta = lambda / (lambda + df1 + df2 + 1)
        sample = (rng.noncentral_chisquare(df1, lam, n) / df1) / (rng.chisquare(df2, n) / df2)
        assert np.mean(sample <= F) == pytest.approx(share, abs=0.003)
    point = F * df1 / (F * df1 + df2)  # the sample partial eta squared lies inside
    assert 0 < lo < point < hi < 1


def test_eta_interval_starts_at_zero_when_the_effect_is_within_noise():
    lo, hi = eta_interval(0.3, 2, 12)
    assert lo == 0 and 0 < hi < 0.5


def test_learning_label_reads_booleans_marginal_flags_and_text_labels():
    runs = pd.DataFrame({"status": ["completed"] * 3 + ["oom"], "learned": [True, False, np.nan, np.nan]})
    assert learning_label(runs).tolist() == ["learned", "not learned", "unknown", ""]
    runs["marginal"] = [False, True, False, False]
    assert learning_label(runs).tolist() == ["learned", "marginal", "unknown", ""]
    text = pd.DataFrame({"status": ["completed"] * 3, "learned": [True, False, False],
                         "learned_status": ["learned", "marginal", "not_learned"]})
    assert learning_label(text).tolist() == ["learned", "marginal", "not learned"]


def test_static_table_drops_empty_columns_and_notes_a_repeated_method_once():
    frame = pd.DataFrame({"cell": ["a", "b", "c"], "statuses": ["", "", ""], "std ci low": ["nan", "", ""],
                          "CI": ["[0.1, 0.2]", "[0.3, 0.4]", ""],
                          "method": ["percentile bootstrap over 60 validation patches"] * 2 + ["t over 3 seeds"],
                          "source": ["recorded in the shard by training"] * 3})
    out = table(frame)
    assert "statuses" not in out and "std ci low" not in out
    assert out.count("percentile bootstrap over 60 validation patches") == 1 and out.count("<sup>[1]</sup>") == 2
    assert "<td>t over 3 seeds</td>" in out and "<th>source</th>" not in out
    assert out.count("source, every row: recorded in the shard by training") == 1
    assert "<td class='num'>[0.1, 0.2]</td>" in out  # an interval stays on one line


def test_epochs_are_whole_numbers_on_every_axis():
    assert figures.cell_text("best_epoch", 12.0) == "12" and figures.cell_text("best_epoch", 4.0, 14.0) == "4 of 14"
    assert figures.cell_text("best_epoch", 7.5, 12.0) == "7.5 of 12"
    for n, step in ((5, 1), (12, 1), (15, 1), (16, 2), (30, 2), (31, 5), (100, 10)):
        axis = epoch_axis(n)
        assert axis["dtick"] == step and axis["tickformat"] == "d", n


@pytest.fixture(scope="module")
def analyzed(tmp_path_factory):
    study = make_study(tmp_path_factory.mktemp("site") / "grid", not_learning=[("UNet", 1e-4, 8)], examples=True,
                       seed=3)
    assert cli("analyze", "--study", study.root, "--bootstrap", "50", "--quiet") == 0
    return study


def test_written_report_renders_code_tables_and_provenance(analyzed):
    page = (analyzed.analysis_dir / "report.html").read_text()
    text = re.sub(r"<script.*?</script>|src='data:[^']*'", "", page, flags=re.S)
    assert "`" not in text and "<code>hpc-unet followup</code>" in page
    assert '{"' not in text and "data_provenance" not in text
    assert re.search(r"Data provenance:<div class='scroll'><table class='t kv'>", page)
    for body in re.findall(r"<table class='t [^']*'>(.*?)</table>", page, re.S):
        head = re.findall(r"<th>(.*?)</th>", body.split("</thead>")[0]) if "</thead>" in body else []
        rows = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in re.findall(r"<tr>(.*?)</tr>", body.split("<tbody>")[-1])]
        for k, name in enumerate(head):
            assert any(len(r) > k and r[k].strip() for r in rows), f"empty column {name}"


def test_explore_pages_cover_every_run_with_its_patches(analyzed):
    explore = analyzed.analysis_dir / "explore"
    runs = pd.read_parquet(analyzed.results_dir / "results.parquet")
    assert {p.stem for p in (explore / "runs").glob("*.html")} == set(runs["exp_id"])
    assert (explore / "plotly.min.js").stat().st_size > 1_000_000
    assert not list(explore.rglob("*.min.js"))[1:]  # the library is stored once
    one = (explore / "runs" / "attresunet-lr1e-03-bs16-s0.html").read_text()
    assert "../plotly.min.js" in one and "http" not in re.sub(r"xmlns=\"http[^\"]*\"", "", one)
    assert one.count("class='patch'") == 8 and "worst: validation patch" in one  # 4 worst + 4 best
    gallery = (explore / "gallery.html").read_text()
    assert gallery.count("class='patch'") >= 4 and "lr1e-04-bs8" not in gallery  # a run that did not learn
    assert all((explore / src).is_file() for src in re.findall(r"src='(img/[^']+)'", gallery))


def test_learning_curve_legend_sits_below_the_panels(analyzed):
    from hpc_unet.analysis.load import load_study

    data = load_study(analyzed.root)
    fig = figures.learning_curves(data.completed, data.history)
    fig.canvas.draw() if hasattr(fig, "canvas") else None
    assert all(ax.get_legend() is None for ax in fig.axes) and len(fig.legends) == 1
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "did not learn" in labels
    for ax in fig.axes:
        assert all(float(t).is_integer() for t in ax.get_xticks())


def test_building_the_pages_imports_no_tensorflow(analyzed):
    """`hpc-unet report` (the pages, the patch files, plotly, itables) is a login-node command."""
    import subprocess
    import sys

    code = ("import sys\nfrom hpc_unet.cli import main\n"
            f"rc = main(['report', '--study', {str(analyzed.root)!r}])\n"
            "print('TF', [m for m in ('tensorflow', 'keras') if m in sys.modules])\nsys.exit(rc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "TF []" in proc.stdout and (analyzed.analysis_dir / "explore" / "runs.html").exists()


def test_logs_are_found_by_job_id_and_only_their_end_is_shown(tmp_path):
    from hpc_unet.analysis.site.run_page import log_index, tail

    (tmp_path / "local").mkdir()
    (tmp_path / "slurm").mkdir()
    (tmp_path / "local" / "123_0_log.out").write_text("start\n" + "x" * 10 + "\nlast line\n")
    (tmp_path / "slurm" / "1000_5_0_log.err").write_text("err\n")
    (tmp_path / "slurm" / "1000_5_submitted.pkl").write_text("")
    index = log_index(tmp_path)
    assert set(index) == {"123", "1000_5"} and set(index["1000_5"]) == {"err"}
    assert tail(index["123"]["out"], limit=15) == "...\nlast line\n"  # cut at a line start
    assert tail(index["1000_5"]["err"]) == "err\n"
