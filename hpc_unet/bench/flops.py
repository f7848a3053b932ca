"""Analytic FLOPs of the three U-Nets, device peaks, achieved utilization and the grid's GPU-hours.

Counting: multiply-accumulates (MACs) of every Conv2D, Conv2DTranspose and Dense layer of the built
Keras model, from the layers' shapes (``Conv2D``: H_out*W_out*kh*kw*C_in/groups*C_out;
``Conv2DTranspose``: H_in*W_in*kh*kw*C_in*C_out; ``Dense``: positions*in*out). Batch norm, ReLU, pooling,
upsampling and the attention multiply are elementwise and left out (< 1 % here). One MAC = 2 FLOPs.
A training step costs ~3x the forward pass (forward, gradient w.r.t. activations, gradient w.r.t.
weights); validation is forward only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hpc_unet.bench.common import print_table
from hpc_unet.spec import ARCHITECTURES

TRAIN_FACTOR = 3.0
PROTOCOL = {"train_patches": 1780, "val_patches": 198, "epochs": 30, "runs_per_architecture": 12,
            "study_estimate_hours": (36.0, 48.0), "study_estimate_minutes_per_run": (60.0, 90.0)}

# Dense (no 2:4 sparsity) peak TFLOPS. NVIDIA quotes TF32/BF16 tensor-core peaks for Hopper *with*
# sparsity on its datasheets (marked *); the dense figure is half of it.
DEVICE_PEAKS: dict[str, dict[str, Any]] = {
    "A40": {"fp32": 37.4, "tf32": 74.8, "bf16": 149.7, "memory_gb": 48, "bandwidth_gbs": 696,
            "source": "NVIDIA A40 datasheet: FP32 37.4, TF32 74.8, BF16 149.7 dense"},
    "H100 SXM": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "memory_gb": 80, "bandwidth_gbs": 3350,
                 "source": "NVIDIA H100 datasheet, H100 SXM: FP32 67, TF32 989*, BF16 1,979* TFLOPS "
                           "(* with sparsity; dense = half); 66.9/494.7/989.4 from the Hopper whitepaper"},
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "memory_gb": 80, "bandwidth_gbs": 2000,
                  "source": "NVIDIA H100 datasheet, H100 PCIe: FP32 51, TF32 756*, BF16 1,513* TFLOPS "
                            "(* with sparsity; dense = half)"},
    "H200": {"fp32": 66.9, "tf32": 494.7, "bf16": 989.4, "memory_gb": 141, "bandwidth_gbs": 4800,
             "source": "NVIDIA H200 datasheet, H200 SXM: FP32 67, TF32 989*, BF16 1,979* TFLOPS "
                       "(* with sparsity; dense = half); same GH100 compute as H100 SXM"},
}


def device_key(name: str) -> str | None:
    """Map a TensorFlow device name ('NVIDIA H100 80GB HBM3', 'NVIDIA A40', ...) to a DEVICE_PEAKS key."""
    text = name.upper()
    if "H200" in text:
        return "H200"
    if "H100" in text:
        return "H100 PCIe" if "PCIE" in text else "H100 SXM"
    if "A40" in text:
        return "A40"
    return None


def _math(precision: str) -> str:
    return "BF16" if "bfloat16" in precision else "TF32"


def peak_tflops(device: str, precision: str) -> float | None:
    """Dense peak for the math TensorFlow uses: float32 runs convolutions on TF32 tensor cores by default
    on Ampere and Hopper; mixed_bfloat16 on BF16 tensor cores."""
    key = device_key(device)
    if key is None:
        return None
    return DEVICE_PEAKS[key]["bf16" if "bfloat16" in precision else "tf32"]


def layer_macs(model: Any) -> list[dict[str, Any]]:
    """MACs per image of each Conv2D / Conv2DTranspose / Dense layer of a built Keras model."""
    from keras import layers

    out = []
    for layer in model.layers:
        if isinstance(layer, layers.Conv2DTranspose):
            _, h, w, cin = layer.input.shape
            kh, kw = layer.kernel_size
            macs = h * w * kh * kw * cin * layer.filters
        elif isinstance(layer, layers.Conv2D) and not isinstance(layer, layers.DepthwiseConv2D):
            _, h, w, cout = layer.output.shape
            cin = layer.input.shape[-1]
            kh, kw = layer.kernel_size
            macs = h * w * kh * kw * (cin // layer.groups) * cout
        elif isinstance(layer, layers.Dense):
            shape = layer.input.shape
            positions = 1
            for d in shape[1:-1]:
                positions *= d
            macs = positions * shape[-1] * layer.units
        else:
            continue
        out.append({"layer": layer.name, "type": type(layer).__name__, "macs": int(macs)})
    return out


def model_macs(model: Any) -> int:
    """Forward MACs per image (see ``layer_macs``)."""
    return sum(item["macs"] for item in layer_macs(model))


@dataclass
class ArchCost:
    architecture: str
    params: int
    forward_macs: int

    @property
    def forward_flops(self) -> float:
        return 2.0 * self.forward_macs

    @property
    def train_flops(self) -> float:
        return TRAIN_FACTOR * self.forward_flops


def arch_costs(size: int = 256, base: int = 64, depth: int = 4,
               architectures: tuple[str, ...] = ARCHITECTURES) -> list[ArchCost]:
    """Build each model (no training) and count its MACs per ``size`` x ``size`` x 1 image."""
    from hpc_unet.bench.common import quiet_tensorflow

    quiet_tensorflow()
    import keras

    from hpc_unet.models import build_model

    costs = []
    for arch in architectures:
        model = build_model(arch, input_shape=(size, size, 1), base_filters=base, depth=depth)
        costs.append(ArchCost(arch, int(model.count_params()), model_macs(model)))
        del model
        keras.backend.clear_session()
    return costs


def grid_projection(costs: list[ArchCost], device: str = "A40", precision: str = "float32",
                    utilizations: tuple[float, ...] = (1.0, 0.5, 0.3)) -> dict[str, Any]:
    """FLOPs and GPU-hours of the full grid (every run to 30 epochs, no early stop) at given utilizations."""
    p = PROTOCOL
    per_arch = {c.architecture: p["epochs"] * (c.train_flops * p["train_patches"] + c.forward_flops * p["val_patches"])
                for c in costs}
    total = sum(f * p["runs_per_architecture"] for f in per_arch.values())
    peak = peak_tflops(device, precision) or float("nan")
    hours = {f"{u:g}": total / (peak * 1e12 * u) / 3600 for u in utilizations}
    minutes = {arch: {f"{u:g}": f / (peak * 1e12 * u) / 60 for u in utilizations} for arch, f in per_arch.items()}
    return {"device": device, "precision": precision, "peak_tflops": peak, "math": _math(precision),
            "run_minutes_by_utilization": minutes,
            "study_estimate_minutes_per_run": list(p["study_estimate_minutes_per_run"]),
            "run_flops": per_arch, "grid_flops": total, "grid_eflop": total / 1e18,
            "gpu_hours_by_utilization": hours,
            "study_estimate_hours": list(p["study_estimate_hours"]),
            "utilization_implied_by_estimate": [total / (peak * 1e12 * h * 3600) for h in p["study_estimate_hours"]]}


def achieved(costs: list[ArchCost], measurements: list[dict[str, Any]], device: str,
             precision: str) -> list[dict[str, Any]]:
    """Achieved TFLOPS and fraction of peak from measured training images/s per architecture."""
    by_arch = {c.architecture: c for c in costs}
    out = []
    for m in measurements:
        cost = by_arch.get(m["architecture"])
        if cost is None or not m.get("train_images_per_s"):
            continue
        peak = peak_tflops(device, str(m.get("precision") or precision))
        tflops = cost.train_flops * float(m["train_images_per_s"]) / 1e12
        out.append({**m, "achieved_tflops": tflops, "peak_tflops": peak,
                    "fraction_of_peak": tflops / peak if peak else None})
    return out


def bench_flops(size: int = 256, base: int = 64, depth: int = 4, device: str = "A40",
                precision: str = "float32", measurements: list[dict[str, Any]] | None = None,
                measured_device: str = "", measured_precision: str = "float32",
                measured_size: tuple[int, int, int] | None = None) -> dict[str, Any]:
    """The ``bench flops`` payload: costs, peaks, projection and (given measurements) utilization."""
    from hpc_unet.bench.common import machine

    costs = arch_costs(size, base, depth)
    payload: dict[str, Any] = {
        "bench": "flops", "machine": machine(),
        "config": {"size": size, "base": base, "depth": depth, "train_factor": TRAIN_FACTOR},
        "architectures": [{"architecture": c.architecture, "params": c.params, "forward_macs": c.forward_macs,
                           "forward_gmacs": c.forward_macs / 1e9, "train_gflops_per_image": c.train_flops / 1e9}
                          for c in costs],
        # an earlier hand count; its attention figures leave out the gates' Conv2DTranspose and strided
        # theta (docs/bench.md, section 3)
        "hand_estimate_gmacs_256_base64": {"UNet": 55.6, "Attention_UNet": 57.5, "Attention_ResUNet": 61.3},
        "device_peaks_tflops_dense": DEVICE_PEAKS,
        "projection": grid_projection(costs, device, precision) if (size, base, depth) == (256, 64, 4) else None,
        "achieved": [],
    }
    if measurements:
        m_costs = costs if measured_size is None or measured_size == (size, base, depth) else arch_costs(*measured_size)
        payload["achieved"] = achieved(m_costs, measurements, measured_device, measured_precision)
    return payload


def measurements_from(payload: dict[str, Any]) -> tuple[list[dict[str, Any]], str, str, tuple[int, int, int]]:
    """(rows, device, precision, (size, base, depth)) from a ``bench train`` or gpu_check JSON."""
    cfg = payload.get("config", {})
    rows = [r for r in payload.get("rows", []) if r.get("path", "ours") == "ours"]
    return (rows, str(payload.get("device", "")), str(cfg.get("precision", "float32")),
            (int(cfg.get("size", 256)), int(cfg.get("base", 64)), int(cfg.get("depth", 4))))


def print_flops(payload: dict[str, Any]) -> None:
    cfg = payload["config"]
    ref = payload["hand_estimate_gmacs_256_base64"] if (cfg["size"], cfg["base"], cfg["depth"]) == (256, 64, 4) else {}
    print_table(
        f"FLOPs per {cfg['size']}x{cfg['size']}x1 image, base {cfg['base']}, depth {cfg['depth']} "
        f"(conv MACs; training = {cfg['train_factor']:g} x forward)",
        ["architecture", "params (M)", "forward GMACs", "hand estimate", "train GFLOP/image"],
        [[a["architecture"], a["params"] / 1e6, a["forward_gmacs"], ref.get(a["architecture"]),
          a["train_gflops_per_image"]] for a in payload["architectures"]],
    )
    print_table(
        "Device peaks (dense TFLOPS; TensorFlow float32 uses TF32 tensor cores on these GPUs)",
        ["device", "FP32", "TF32", "BF16", "memory GB", "source"],
        [[k, v["fp32"], v["tf32"], v["bf16"], v["memory_gb"], v["source"]] for k, v in payload["device_peaks_tflops_dense"].items()],
    )
    proj = payload.get("projection")
    if proj:
        archs = list(proj["run_minutes_by_utilization"])
        rows = [[f"{float(u):.0%} of {proj['math']} peak ({proj['peak_tflops']:g} TFLOPS)", h,
                 *(proj["run_minutes_by_utilization"][a][u] for a in archs)]
                for u, h in proj["gpu_hours_by_utilization"].items()]
        lo, hi = proj["study_estimate_hours"]
        ulo, uhi = proj["utilization_implied_by_estimate"]
        mlo, mhi = proj["study_estimate_minutes_per_run"]
        print_table(
            f"Full grid on one {proj['device']} ({proj['precision']}): 36 runs x 30 epochs x (1,780 train + 198 val) "
            f"= {proj['grid_eflop']:.2f} EFLOP",
            ["utilization", "grid GPU-hours", *(f"{a} min/run" for a in archs)], rows,
            caption=f"the study's estimate, {lo:g}-{hi:g} h ({mlo:g}-{mhi:g} min per run), means {uhi:.1%}-{ulo:.1%} of peak",
        )
    if payload.get("achieved"):
        print_table(
            "Achieved (from measured training images/s)",
            ["architecture", "batch", "precision", "train img/s", "TFLOPS", "peak", "fraction"],
            [[a["architecture"], a.get("batch"), a.get("precision", ""), a["train_images_per_s"], a["achieved_tflops"],
              a["peak_tflops"], a["fraction_of_peak"]] for a in payload["achieved"]],
        )
