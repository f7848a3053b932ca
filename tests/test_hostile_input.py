"""Hostile or careless input (issue 20): each case a user really typed, refused with one line and exit 2,
or handled quietly, and nothing written where it must not be. No TensorFlow unless a test says so."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, cli
from test_reliability_helpers import SMALL, make_study, one_error_line, snapshot


def test_empty_study_path_is_refused_and_nothing_lands_in_the_current_directory(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", "", "--quiet") == 2
    one_error_line(capsys, "--study", "empty")
    assert list(tmp_path.iterdir()) == []
    assert cli("status", "--study", "  ") == 2
    one_error_line(capsys, "--study", "empty")


@pytest.mark.parametrize("attempt", ["-1", "0"])
def test_attempt_below_one_is_refused_before_anything_is_written(tmp_path, capsys, attempt):
    study = make_study(tmp_path / "s", *SMALL)
    from hpc_unet.manifest import read_manifest

    exp = read_manifest(study)["exp_id"][0]
    before = snapshot(study.root)
    assert cli("train", "--study", study.root, "--experiment", exp, "--attempt", attempt) == 2
    one_error_line(capsys, "--attempt", ">= 1")
    assert snapshot(study.root) == before


def test_a_study_path_that_is_a_file_is_a_user_error(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine\n")
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", target, "--quiet") == 2
    line = one_error_line(capsys, str(target))
    assert "free space" not in line
    assert target.read_text() == "mine\n"


@pytest.mark.parametrize("errno_name", ["EEXIST", "ENOTDIR", "EISDIR"])
def test_path_kind_errors_from_a_command_are_user_errors(monkeypatch, capsys, errno_name):
    """The one classification point in cli.py: a file where a folder is needed (or the reverse) is the
    user's path, not a full disk. The command module is replaced by one raising the real OSError."""
    import errno

    import hpc_unet.commands.status as status_cmd

    def boom(args):
        code = getattr(errno, errno_name)
        raise OSError(code, os.strerror(code), "/some/user/path")

    monkeypatch.setattr(status_cmd, "run", boom)
    assert cli("status", "--study", "x") == 2
    line = one_error_line(capsys, "/some/user/path", os.strerror(getattr(errno, errno_name)))
    assert "free space" not in line


def test_a_full_disk_stays_exit_1_with_its_advice(monkeypatch, capsys):
    import errno

    import hpc_unet.commands.status as status_cmd

    def boom(args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/study/results")

    monkeypatch.setattr(status_cmd, "run", boom)
    assert cli("status", "--study", "x") == 1
    one_error_line(capsys, "free space")


def _collected_study(root: Path):
    from test_reliability_helpers import fake_shard

    from hpc_unet.manifest import read_manifest

    study = make_study(root, "grid.learning_rate=[1e-4,5e-4,1e-3]", "grid.batch_size=[8,16]",
                       "grid.architecture=['UNet']", "train.epochs=2")
    ids = list(read_manifest(study)["exp_id"])
    for i, exp in enumerate(ids[:-1]):
        fake_shard(study, exp, 1, status="completed" if i % 2 else "failed")
    return study


def test_collect_into_a_pipe_closed_early_is_quiet(tmp_path):
    """A real pipe: `collect | head -1` through the shell, and a reader that closes before the first
    write (the case that raced in 3 of 6 runs). Either way: no message, exit 0 or 141 (SIGPIPE style)."""
    study = _collected_study(tmp_path / "s")
    exe = str(Path(sys.executable).with_name("hpc-unet"))
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout flushed at exit
    for env in (buffered, {**buffered, "PYTHONUNBUFFERED": "1"}):  # every print written at once
        for _ in range(3):
            proc = subprocess.run(["bash", "-c", f'"{exe}" collect --study "{study.root}" | head -1; '
                                   'echo "rc=${PIPESTATUS[0]}" >&2'], capture_output=True, text=True, timeout=120,
                                  env=env)
            assert proc.stdout.startswith("collected"), proc
            assert proc.stderr.strip() in ("rc=0", "rc=141"), proc.stderr
        for _ in range(3):
            proc = subprocess.Popen([exe, "collect", "--study", str(study.root)], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env=env)
            proc.stdout.close()  # the reader is gone before the command writes anything
            err = proc.stderr.read().decode()
            assert proc.wait(timeout=120) in (0, 141), err
            assert err == "", err


# ------------------------------------------------------------------------- outputs never overwrite inputs


@pytest.fixture
def predict_inputs(tmp_path):
    """Images and ground-truth folders (real PNGs) and a model path. The path guard runs before the model
    loads, so a placeholder file stands in for the .keras model: every case here is refused first."""
    import numpy as np
    from PIL import Image

    images, gt = tmp_path / "images", tmp_path / "gt"
    images.mkdir()
    gt.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 255, (32, 32), dtype=np.uint8)).save(images / f"{name}.png")
        Image.fromarray((rng.random((32, 32)) > 0.5).astype(np.uint8) * 255).save(gt / f"{name}.png")
    model = tmp_path / "model.keras"
    model.write_bytes(b"placeholder")
    return tmp_path, images, gt, model


@pytest.mark.parametrize("case,needle", [
    (lambda t, i, g, m: ["--images", i, "--masks", g, "--out", g], "--out"),            # replaced the GT masks
    (lambda t, i, g, m: ["--images", i, "--out", t / "o", "--overlay", i], "--overlay"),  # overwrote images
    (lambda t, i, g, m: ["--images", i, "--out", i / "pred"], "lies inside --images"),
    (lambda t, i, g, m: ["--images", i, "--masks", g, "--out", t / "o", "--overlay", g / "ov"], "lies inside --masks"),
    (lambda t, i, g, m: ["--images", i / "a.png", "--out", t / "o", "--overlay", i], "would overwrite the input"),
    (lambda t, i, g, m: ["--images", i / "a.png", "--masks", g / "a.png", "--out", g], "would overwrite"),
    (lambda t, i, g, m: ["--images", i, "--out", m], "is a file"),
    (lambda t, i, g, m: ["--images", i, "--out", t / "o", "--overlay", m], "is a file"),
])
def test_predict_outputs_that_hit_an_input_are_refused(predict_inputs, capsys, case, needle):
    tmp, images, gt, model = predict_inputs
    before = snapshot(tmp)
    assert cli("predict", "--model", model, *case(tmp, images, gt, model), "--quiet") == 2
    one_error_line(capsys, needle)
    assert snapshot(tmp) == before


def test_predict_out_that_is_a_file_is_one_line_exit_2(predict_inputs, capsys):
    tmp, images, _, model = predict_inputs
    existing = tmp / "notes.txt"
    existing.write_text("x")
    assert cli("predict", "--model", model, "--images", images, "--out", existing) == 2
    line = one_error_line(capsys, "is a file")
    assert "free space" not in line


def test_evaluate_and_followup_outputs_inside_the_study_files_are_refused(tmp_path, capsys):
    study = make_study(tmp_path / "s", *SMALL)
    before = snapshot(study.root)
    assert cli("evaluate", "--study", study.root, "--out", study.root / "results") == 2
    one_error_line(capsys, "--out", "results")
    assert cli("evaluate", "--study", study.root, "--out", study.root) == 2
    one_error_line(capsys, "--out")
    assert cli("followup", "--study", study.root, "--out", study.root / "spec.toml", "--force") == 2
    one_error_line(capsys, "--out", "spec.toml")
    assert snapshot(study.root) == before


# ------------------------------------------------------------------------------ numeric keys have bounds

BASE = '[data]\nkind = "synthetic"\npatch_size = 32\n'


def _spec_error(tmp_path, capsys, text: str) -> str:
    spec = tmp_path / "g.toml"
    spec.write_text(BASE + text + "\n")
    assert cli("manifest", "--grid", spec, "--study", tmp_path / "s", "--quiet") == 2
    assert not (tmp_path / "s").exists()
    return one_error_line(capsys)


@pytest.mark.parametrize("text,needle", [
    ("[grid]\nlearning_rate = [inf]", "at most 10"),
    ("[grid]\nlearning_rate = [nan]", "at most 10"),
    ("[train]\nlearning_rate = 10.5", "at most 10"),
    ("[train]\nepochs = 1000000000", "at most 10000"),
    ("[train]\nepochs = 10001", "at most 10000"),
    ("[grid]\nbatch_size = [100000000000]", "at most 4096"),
    ("[grid]\nbatch_size = [4097]", "at most 4096"),
    ("[train]\nseed = 4294967296", "below 2**32"),
    ("[train]\nfocal_gamma = inf", "at most 10"),
    ("[train]\nclipnorm = inf", "at most 1000"),
    ("[train]\nmin_lr = inf", "at most 1"),
    ("[train]\nbase_filters = 100000", "at most 1024"),
    ("[train]\nearly_stopping_patience = 100000", "at most 10000"),
    ("[train]\nreduce_lr_patience = 100000", "at most 10000"),
    ("[grid]\nreplicates = 10001", "at most 10000"),
])
def test_absurd_numbers_are_refused_with_their_bound(tmp_path, capsys, text, needle):
    assert needle in _spec_error(tmp_path, capsys, text)


@pytest.mark.parametrize("text", [
    "[train]\nlearning_rate = 10.0", "[train]\nepochs = 10000", "[grid]\nbatch_size = [4096]",
    "[train]\nseed = 4294967295", "[train]\nfocal_gamma = 10.0", "[train]\nclipnorm = 1000.0",
    "[train]\nbase_filters = 1024", "[grid]\nreplicates = 10000", "[train]\nmin_lr = 1.0",
])
def test_numbers_at_their_bound_are_accepted(tmp_path, text):
    from hpc_unet.spec import load_spec

    spec = tmp_path / "g.toml"
    spec.write_text(BASE + text + "\n")
    load_spec(spec)


@pytest.mark.parametrize("depth,patch,multiple", [(5, 48, 32), (4, 40, 16), (3, 20, 8), (6, 96, 64)])
def test_patch_size_error_states_the_multiple_for_the_depth(tmp_path, capsys, depth, patch, multiple):
    spec = tmp_path / "g.toml"
    spec.write_text(f'[data]\nkind = "synthetic"\npatch_size = {patch}\n[train]\ndepth = {depth}\n')
    assert cli("manifest", "--grid", spec, "--study", tmp_path / "s2", "--quiet") == 2
    one_error_line(capsys, f"multiple of {multiple} (depth {depth})")


# ------------------------------------------------------------------- collect and status on damaged shards


def _truncate(path: Path, keep: int = 40) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def _status_and_collect(study) -> tuple[dict, dict]:
    import json

    exe = str(Path(sys.executable).with_name("hpc-unet"))
    st = subprocess.run([exe, "status", "--study", str(study.root), "--json"], capture_output=True, text=True,
                        check=True, timeout=120)
    co = subprocess.run([exe, "collect", "--study", str(study.root), "--json"], capture_output=True, text=True,
                        check=True, timeout=120)
    return json.loads(st.stdout), json.loads(co.stdout)


def test_status_and_collect_agree_on_damaged_shards_after_a_collect(tmp_path):
    """The first collect caches every shard's rows; then one completed summary shard is truncated, one
    chosen history shard is truncated, and (a copy left intact would hide it) their Arrow copies stay.
    status --json and collect --json must list the same damaged files and count the same completions."""
    from test_reliability_helpers import fake_shard

    from hpc_unet.manifest import read_manifest
    from hpc_unet.results.shards import HISTORY_SUFFIX

    study = make_study(tmp_path / "s", "grid.learning_rate=[1e-4,5e-4,1e-3]", "grid.batch_size=[8,16]",
                       "grid.architecture=['UNet']", "train.epochs=2")
    ids = list(read_manifest(study)["exp_id"])
    for exp in ids[:4]:
        fake_shard(study, exp, 1)
    status0, collect0 = _status_and_collect(study)
    assert collect0["completed"] == 4 and status0["summary"]["done"] == 4
    summary = next(study.shards_dir.glob(f"{ids[0]}.*.completed.summary.parquet"))
    history = next(study.shards_dir.glob(f"{ids[1]}.*{HISTORY_SUFFIX}"))
    _truncate(summary)
    _truncate(history)
    for _ in range(2):  # the second collect is the "unchanged" fast path: it must not hide the damage
        status, report = _status_and_collect(study)
        assert sorted(report["unreadable"]) == sorted([summary.name, history.name])
        assert sorted(status["summary"]["unreadable"]) == sorted(report["unreadable"])
        assert report["completed"] == status["summary"]["done"] == 3
        assert ids[0] in report["missing"]
        row = next(r for r in status["experiments"] if r["exp_id"] == ids[0])
        assert row["state"] != "completed" and summary.name in row["error"]


# --------------------------------------------------------------------------- bad data found early and first


def _tiff_study(root: Path, truncate: bool) -> tuple:
    """A study on a real TIFF stack pair; with ``truncate`` the image stack is cut to half its bytes (as
    a copy interrupted by a full quota leaves it)."""
    import numpy as np
    import tifffile

    root.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images, masks = root / "img.tif", root / "gt.tif"
    tifffile.imwrite(images, rng.integers(0, 255, (4, 64, 64), dtype=np.uint8), photometric="minisblack")
    tifffile.imwrite(masks, (rng.random((4, 64, 64)) > 0.7).astype(np.uint8) * 255, photometric="minisblack")
    if truncate:
        data = images.read_bytes()
        images.write_bytes(data[: len(data) // 2])
    study = make_study(root / "s", *SMALL, "data.kind='tiff'", f"data.images='{images}'",
                       f"data.masks='{masks}'", "train.device='cpu'")
    return study, images


def test_submit_dry_run_refuses_the_data_a_real_submit_refuses(tmp_path, capsys):
    study, images = _tiff_study(tmp_path / "d", truncate=True)
    before = snapshot(study.root)
    capsys.readouterr()
    assert cli("submit", "--study", study.root, "--dry-run") == 2
    one_error_line(capsys, str(images))
    assert snapshot(study.root) == before  # nothing cached, nothing recorded


def test_submit_dry_run_passes_good_data_and_writes_nothing(tmp_path, capsys):
    study, _ = _tiff_study(tmp_path / "d", truncate=False)
    before = snapshot(study.root)
    assert cli("submit", "--study", study.root, "--dry-run", "--executor", "local") == 0
    assert snapshot(study.root) == before


def test_train_on_a_truncated_tiff_says_so_on_the_first_stderr_line(tmp_path):
    study, images = _tiff_study(tmp_path / "d", truncate=True)
    from hpc_unet.manifest import read_manifest

    exp = read_manifest(study)["exp_id"][0]
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # TensorFlow's noise as a user sees it
    proc = subprocess.run([sys.executable, "-m", "hpc_unet.cli", "train", "--study", str(study.root),
                           "--experiment", exp], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    first = proc.stderr.splitlines()[0]
    assert first.startswith("hpc-unet train: error:") and str(images) in first, proc.stderr


def test_status_table_names_the_damaged_shards(tmp_path):
    from test_reliability_helpers import fake_shard

    from hpc_unet.manifest import read_manifest

    study = make_study(tmp_path / "s", *SMALL)
    exp = read_manifest(study)["exp_id"][0]
    fake_shard(study, exp, 1)
    summary = next(study.shards_dir.glob("*.summary.parquet"))
    _truncate(summary)
    exe = str(Path(sys.executable).with_name("hpc-unet"))
    out = subprocess.run([exe, "status", "--study", str(study.root)], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "400"})
    assert out.returncode == 0 and "damaged shards (1" in out.stdout and summary.name in out.stdout, out.stdout


@pytest.mark.parametrize("sub", ["", "inner"])
def test_data_synth_out_through_a_file_is_a_user_error(tmp_path, capsys, sub):
    target = tmp_path / "taken"
    target.write_text("x")
    out = target / sub if sub else target
    assert cli("data", "synth", "--out", out, "--slices", "1", "--height", "8", "--width", "8") == 2
    line = one_error_line(capsys, str(out))
    assert "free space" not in line and target.read_text() == "x"
