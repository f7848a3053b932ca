"""`hpc-unet bench`: every bench runs at tiny size through the CLI and writes JSON with the expected keys;
FLOP counting against hand-computed layers; the synthetic study, status and the cached collect at small size.
Benchmarks print ratios measured in one run: nothing here asserts a wall-clock limit."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, cli


def read(path: Path) -> dict:
    assert path.exists(), f"{path} was not written"
    return json.loads(path.read_text())


def test_login_node_import_does_not_load_tensorflow():
    code = ("import sys, hpc_unet.cli as c; c.build_parser(); import hpc_unet.bench.common, "
            "hpc_unet.bench.orchestration; bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------------------------- flops
def test_flop_count_of_hand_computed_layers():
    import keras
    from keras import layers

    from hpc_unet.bench.flops import layer_macs, model_macs

    inp = keras.Input((8, 8, 3))
    a = layers.Conv2D(5, 3, padding="same", name="conv")(inp)                        # 8*8 * 3*3*3 * 5
    b = layers.Conv2D(4, 2, strides=2, padding="same", name="strided")(inp)           # 4*4 * 2*2*3 * 4
    c = layers.Conv2DTranspose(6, 3, strides=2, padding="same", name="up")(b)         # 4*4 (input) * 3*3*4 * 6
    d = layers.Conv2D(4, 3, padding="same", groups=2, name="grouped")(layers.Concatenate()([a[..., :4], c[..., :4]]))
    e = layers.Dense(7, name="dense")(layers.GlobalAveragePooling2D()(d))            # 4 * 7
    model = keras.Model(inp, [d, e])
    got = {item["layer"]: item["macs"] for item in layer_macs(model)}
    assert got == {"conv": 8 * 8 * 3 * 3 * 3 * 5, "strided": 4 * 4 * 2 * 2 * 3 * 4, "up": 4 * 4 * 3 * 3 * 4 * 6,
                   "grouped": 8 * 8 * 3 * 3 * (8 // 2) * 4, "dense": 4 * 7}
    assert model_macs(model) == sum(got.values())

    single = keras.Sequential([keras.Input((16, 16, 2)), layers.Conv2D(3, 5, padding="same")])
    assert model_macs(single) == 16 * 16 * 5 * 5 * 2 * 3  # H*W*k*k*Cin*Cout


def unet_forward_macs(size: int, base: int, depth: int) -> int:
    """Conv MACs of the U-Net in docs/models.md, from its layer shapes: two 3x3 convs per encoder level,
    bottleneck and decoder level (decoder input = upsampled coarser level + skip), 1x1 head to one channel."""
    filters = [base * 2**level for level in range(depth + 1)]
    pixels = [(size // 2**level) ** 2 for level in range(depth + 1)]

    def block(level: int, cin: int) -> int:
        return pixels[level] * 9 * (cin * filters[level] + filters[level] ** 2)

    encoder = sum(block(level, 1 if level == 0 else filters[level - 1]) for level in range(depth + 1))
    decoder = sum(block(level, filters[level + 1] + filters[level]) for level in range(depth))
    return encoder + decoder + pixels[0] * filters[0]


@pytest.mark.parametrize("size,base,depth", [(32, 4, 2), (64, 8, 3)])
def test_unet_forward_macs_follow_from_its_layer_shapes(size, base, depth):
    from hpc_unet.bench.flops import arch_costs

    (unet,) = arch_costs(size, base, depth, architectures=("UNet",))
    assert unet.forward_macs == unet_forward_macs(size, base, depth)


def test_bench_flops_cli_projection_and_measured_utilization(tmp_path):
    measured = tmp_path / "measured.json"
    measured.write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "config": {"size": 32, "base": 4, "depth": 2},
                                    "rows": [{"path": "ours", "architecture": "UNet", "batch": 8,
                                              "train_images_per_s": 1000.0, "precision": "float32"}]}))
    out = tmp_path / "flops.json"
    assert cli("bench", "flops", "--out", out, "--measured", measured) == 0
    payload = read(out)
    assert {"architectures", "device_peaks_tflops_dense", "projection", "achieved", "machine"} <= set(payload)
    gmacs = {a["architecture"]: a["forward_gmacs"] for a in payload["architectures"]}
    assert gmacs["UNet"] < gmacs["Attention_UNet"] < gmacs["Attention_ResUNet"]
    proj = payload["projection"]
    assert 0.6 < proj["grid_eflop"] < 0.8 and 2.0 < proj["gpu_hours_by_utilization"]["1"] < 3.5
    assert set(payload["device_peaks_tflops_dense"]) >= {"A40", "H100 SXM", "H200"}
    (achieved,) = payload["achieved"]
    tflops = 1000.0 * 3 * 2 * unet_forward_macs(32, 4, 2) / 1e12  # images/s x (train step = 3 x forward) FLOPs
    assert achieved["achieved_tflops"] == pytest.approx(tflops)
    assert achieved["fraction_of_peak"] == pytest.approx(tflops / achieved["peak_tflops"])


def test_peaks_follow_the_device_and_the_math():
    from hpc_unet.bench.flops import peak_tflops

    sxm, pcie = peak_tflops("NVIDIA H100 80GB HBM3", "float32"), peak_tflops("NVIDIA H100 PCIe", "float32")
    assert pcie < sxm and peak_tflops("NVIDIA H200", "float32") == sxm
    for device in ("NVIDIA A40", "NVIDIA H100 80GB HBM3", "NVIDIA H100 PCIe"):
        assert peak_tflops(device, "mixed_bfloat16") == pytest.approx(2 * peak_tflops(device, "float32"), rel=1e-3)
    assert peak_tflops("Tesla T4", "float32") is None


# --------------------------------------------------------------------------------------------- train
def test_bench_train_cli_tiny(tmp_path):
    out = tmp_path / "train.json"
    assert cli("bench", "train", "--size", "16", "--base", "2", "--depth", "2", "--architectures", "UNet",
               "--batches", "4", "--n-train", "8", "--n-val", "4", "--warm-epochs", "1", "--out", out) == 0
    payload = read(out)
    assert {r["path"] for r in payload["rows"]} == {"ours", "reference"}
    for row in payload["rows"]:
        assert row["train_images_per_s"] > 0 and row["protocol_epoch_s"] > 0 and len(row["warm_epochs"]) == 1
        assert math.isfinite(row["final_loss"])
    (ratio,) = payload["ratios"]
    assert {"ratio_epoch", "ratio_paired", "ratio_train", "ours_protocol_epoch_s"} <= set(ratio)
    assert payload["config"]["size"] == 16 and payload["device"] == "CPU"


def test_reference_metric_is_the_original_per_batch_jaccard():
    import numpy as np

    from hpc_unet.bench.throughput import jacard_coef

    t = np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)
    p = np.array([[0.5, 0.5], [1.0, 0.0]], np.float32)
    inter = 1.5
    assert float(jacard_coef(t, p)) == pytest.approx((inter + 1) / (3 + 2 - inter + 1))


# ------------------------------------------------------------------------------------- orchestration
def test_synthetic_study_status_counts_follow_the_mix(tmp_path):
    from hpc_unet.bench.orchestration import make_synthetic_study, plan_kind
    from hpc_unet.status.state import experiment_states
    from hpc_unet.study import Study

    made = make_synthetic_study(tmp_path / "s", 72, workers=2)
    kinds = [plan_kind(i) for i in range(72)]
    rows = experiment_states(Study.at(tmp_path / "s"), query_slurm=False)
    got = pd.Series([r["state"] for r in rows]).value_counts().to_dict()
    want = pd.Series(["completed" if k == "retried" else k for k in kinds]).value_counts().to_dict()
    assert got == want
    assert made["shards"] == sum(2 if k == "retried" else 0 if k in ("running", "pending") else 1 for k in kinds)


def test_incremental_collect_with_caches_equals_a_fresh_collect(tmp_path):
    from hpc_unet.bench.orchestration import _pool_write, make_synthetic_study
    from hpc_unet.results.collect import CACHE_NAME, HISTORY_CACHE_NAME, collect
    from hpc_unet.study import Study

    study = Study.at(tmp_path / "s")
    make_synthetic_study(study.root, 72, workers=1)
    first = collect(study)
    assert (study.results_dir / HISTORY_CACHE_NAME).exists()
    assert _pool_write(study.root, 72, ("running",), workers=1, seed=1, finish=True) > 0
    again = collect(study)
    assert again.shards_read == again.completed - first.completed
    results = pd.read_parquet(study.results_dir / "results.parquet")
    history = pd.read_parquet(study.results_dir / "history.parquet")
    for name in (CACHE_NAME, HISTORY_CACHE_NAME):
        (study.results_dir / name).unlink()
    fresh = collect(study)
    pd.testing.assert_frame_equal(pd.read_parquet(study.results_dir / "results.parquet"), results)
    pd.testing.assert_frame_equal(pd.read_parquet(study.results_dir / "history.parquet"), history)
    assert {k: v for k, v in fresh.as_dict().items() if k != "shards_read"} == \
        {k: v for k, v in again.as_dict().items() if k != "shards_read"}
    # history follows the results' order, one attempt per experiment
    order = list(dict.fromkeys(history["exp_id"]))
    assert order == [e for e in results["exp_id"] if e in set(order)]
    assert set(history["attempt_id"]) <= set(results["attempt_id"])


def test_bench_orchestration_cli_small(tmp_path):
    out = tmp_path / "orch.json"
    assert cli("bench", "orchestration", "--sizes", "36,72", "--bootstrap", "50", "--analyze-max", "36",
               "--workers", "2", "--out", out) == 0
    payload = read(out)
    small, large = payload["rows"]
    for key in ("manifest_s", "status_summary_s", "status_table_s", "collect_first_s", "collect_unchanged_s",
                "collect_incremental_s", "generate_s"):
        assert small[key] > 0 and large[key] > 0
    assert small["analyze_s"] > 0 and large["analyze_s"] is None
    assert large["incremental_new_shards"] > 0 and large["incremental_shards_read"] == large["incremental_new_shards"]
    assert payload["growth"][0]["size_factor"] == 2
    assert cli("bench", "orchestration", "--sizes", "40") == 2  # not a multiple of the 36-cell grid


# ------------------------------------------------------------------------------------------ gpu check
def test_gpu_check_without_a_gpu_says_so(tmp_path, capsys):
    import tensorflow as tf

    from hpc_unet.bench import gpu_check

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible")
    assert gpu_check.main(["--out", str(tmp_path)]) == gpu_check.EXIT_NO_GPU
    payload = read(tmp_path / "gpu_check.json")
    assert payload["status"] == "no-gpu" and "GPU" in capsys.readouterr().err


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_at_tiny_size(tmp_path):
    from hpc_unet.bench import gpu_check

    assert gpu_check.main(["--out", str(tmp_path), "--allow-cpu", "--size", "16", "--base", "2", "--depth", "2",
                           "--n-train", "8", "--n-val", "4", "--batches", "4", "--architectures", "UNet",
                           "--epochs", "2", "--compare-epochs", "2", "--compare-batch", "4", "--no-jit"]) == 0
    payload = read(tmp_path / "gpu_check.json")
    assert payload["status"] == "ok" and payload["device"] == "CPU"
    timing = [r for r in payload["rows"] if r["kind"] == "timing"]
    assert len(timing) == 1 and timing[0]["train_images_per_s"] > 0 and timing[0]["memory_peak_bytes"] is None
    (comparison,) = payload["comparison"]
    assert comparison["variant"] == "mixed_bfloat16" and "within_tolerance" in comparison


# --------------------------------------------------------------------------------- overhead / options
@pytest.mark.slow
def test_bench_overhead_cli_tiny(tmp_path):
    out = tmp_path / "overhead.json"
    work = tmp_path / "work"
    assert cli("bench", "overhead", "--graph-options", "default", "no-meta-optimizer", "--architectures", "UNet",
               "--epochs", "2", "--checkpoint-size", "32", "--checkpoint-base", "4", "--workdir", work,
               "--demo-study", work / "study", "--out", out) == 0
    payload = read(out)
    startup = {s["option"]: s for s in payload["startup"]}
    assert set(startup) == {"default", "no-meta-optimizer"}
    for s in startup.values():
        assert s["to_first_step_s"] > s["imports"] > 0 and s["to_first_epoch_end_s"] >= s["to_first_step_s"]
    assert startup["no-meta-optimizer"]["first_epoch_end_ratio_vs_default"] > 0
    (task,) = payload["tasks"]
    assert {"import", "data", "build", "first_epoch", "train", "finalize"} <= set(task["phases"])
    assert payload["demo"]["experiments"] == 1 and payload["demo"]["phase_sum_s"]["train"] > 0
    assert {c["architecture"] for c in payload["checkpoint"]} == {"UNet", "Attention_ResUNet"}


@pytest.mark.slow
def test_bench_options_cli_tiny_with_nan_guard(tmp_path):
    out = tmp_path / "options.json"
    assert cli("bench", "options", "--architectures", "UNet", "--epochs", "2", "--no-jit", "--threads", "1",
               "--workdir", tmp_path / "work", "--out", out) == 0
    payload = read(out)
    assert {(r["precision"], r["jit_compile"]) for r in payload["runs"]} == {("float32", False), ("mixed_bfloat16", False)}
    assert all(r["status"] == "completed" for r in payload["runs"])
    (comparison,) = payload["comparison"]
    assert comparison["variant"] == "mixed_bfloat16" and comparison["speedup_warm_epoch"] > 0
    assert payload["nan_check"]["guard_works"], payload["nan_check"]


def test_bench_all_quick_writes_one_json_per_bench(tmp_path):
    assert cli("bench", "all", "--quick", "--skip", "train", "overhead", "options", "--out", tmp_path) == 0
    assert {p.name for p in tmp_path.iterdir()} == {"bench-flops.json", "bench-orchestration.json"}
    assert cli("bench") == 2
