"""The checks of a node that `hpc-unet doctor` prints and `submit --preflight` runs as a one-task job.

Versions, the GPUs TensorFlow sees, a convolution micro-benchmark, the study's files and Slurm; each
check returns a dict with a ``problem`` entry when it would make a training task fail or crawl.
TensorFlow is imported inside the checks that need it, so importing this module stays cheap.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

# Convolution shapes (batch, height, width, channels) of the micro-benchmark: large enough to keep a
# GPU busy, small enough for a few iterations per second on one CPU core.
GPU_SHAPE = (32, 128, 128, 128)
CPU_SHAPE = (4, 64, 64, 32)


def versions() -> dict[str, Any]:
    import tensorflow as tf

    info = tf.sysconfig.get_build_info()
    import keras

    return {"python": platform.python_version(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "cuda_build": bool(info.get("is_cuda_build")), "cuda": info.get("cuda_version") or "",
            "cudnn": info.get("cudnn_version") or "", "host": platform.node()}


def _nvidia_smi_memory() -> list[int]:
    """Total memory (bytes) per GPU from nvidia-smi, if present; TensorFlow reports only what it uses."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=10).stdout
        return [int(float(v)) * 2**20 for v in out.split()]
    except (OSError, subprocess.SubprocessError, ValueError):
        return []


def gpus(required: str) -> dict[str, Any]:
    """The GPUs TensorFlow sees; a problem when one is ``required`` (a reason) and there is none."""
    from hpc_unet.train.device import list_gpus_with_messages, loader_summary

    found, messages = list_gpus_with_messages()
    import tensorflow as tf

    memory = _nvidia_smi_memory()
    listed = []
    for i, gpu in enumerate(found):
        details = tf.config.experimental.get_device_details(gpu)
        listed.append({"name": str(details.get("device_name", gpu.name)),
                       "compute_capability": ".".join(map(str, details.get("compute_capability", ()) or ())),
                       "memory_bytes": memory[i] if i < len(memory) else None})
    out: dict[str, Any] = {"count": len(listed), "devices": listed, "required": required}
    if not listed:
        out["tensorflow_said"] = loader_summary(messages)
    if required and not listed:
        out["problem"] = f"a GPU is required ({required}) but TensorFlow sees none; TensorFlow said: " \
                         f"{out['tensorflow_said']}"
    return out


def conv_benchmark(seconds: float) -> dict[str, Any]:
    """Achieved TFLOPS of a 3x3 same-padded convolution, float32 then bfloat16, ``seconds`` in all."""
    import tensorflow as tf

    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    n, h, w, c = GPU_SHAPE if on_gpu else CPU_SHAPE
    flops = 2.0 * n * h * w * c * c * 9
    out: dict[str, Any] = {"device": "GPU" if on_gpu else "CPU", "shape": [n, h, w, c], "kernel": [3, 3]}
    for dtype in ("float32", "bfloat16"):
        x = tf.random.stateless_normal((n, h, w, c), seed=(1, 2), dtype=dtype)
        k = tf.random.stateless_normal((3, 3, c, c), seed=(3, 4), dtype=dtype) * 0.05
        conv = tf.function(lambda a, b: tf.nn.conv2d(a, b, 1, "SAME"))
        try:
            conv(x, k).numpy()  # trace and warm up
            runs, t0 = 0, time.perf_counter()
            while True:
                y = conv(x, k)
                runs += 1
                if runs % 4 == 0:
                    y.numpy()  # synchronise: a GPU runs the queued convolutions in order
                    if time.perf_counter() - t0 >= seconds / 2:
                        break
            elapsed = time.perf_counter() - t0
            out[dtype] = {"tflops": round(flops * runs / elapsed / 1e12, 4), "runs": runs,
                          "seconds": round(elapsed, 3)}
        except Exception as exc:  # e.g. no bfloat16 convolution kernel on this CPU
            out[dtype] = {"tflops": None, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    if out["float32"].get("tflops") is None:
        out["problem"] = f"the float32 convolution benchmark failed ({out['float32']['error']})"
    return out


def _readable(path: str) -> bool:
    p = Path(path)
    return p.is_file() and os.access(p, os.R_OK) or p.is_dir() and os.access(p, os.R_OK | os.X_OK)


def study_check(root: str) -> dict[str, Any]:
    """The study's data paths readable and its directory writable (a temporary file is created and removed)."""
    from hpc_unet.manifest import read_manifest
    from hpc_unet.study import Study

    study = Study.at(root).require()
    frame = read_manifest(study)
    paths = sorted({str(v) for col in ("data_images", "data_masks", "data_test_images", "data_test_masks")
                    if col in frame.columns for v in frame[col] if v})
    unreadable = [p for p in paths if not _readable(p)]
    try:
        fd, tmp = tempfile.mkstemp(prefix=".doctor.", dir=study.root)
        os.close(fd)
        os.unlink(tmp)
        writable, why = True, ""
    except OSError as exc:
        writable, why = False, exc.strerror or str(exc)
    devices = sorted({str(v) for v in frame["device"]}) if "device" in frame.columns else ["auto"]
    out: dict[str, Any] = {"study": str(study.root), "data_paths": paths, "unreadable": unreadable,
                           "writable": writable, "devices": devices}
    problems = [f"cannot read {p}" for p in unreadable]
    if not writable:
        problems.append(f"cannot write in {study.root} ({why})")
    if problems:
        out["problem"] = "; ".join(problems)
    return out


def slurm_check(timeout: float = 10.0) -> dict[str, Any]:
    """Whether ``sinfo`` answers; not installed is no problem (a workstation), no answer is."""
    if shutil.which("sinfo") is None:
        return {"state": "not installed"}
    try:
        proc = subprocess.run(["sinfo", "--noheader", "--format=%P %a %D %t"], capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"state": "no answer", "problem": f"sinfo did not answer within {timeout:.0f} s"}
    except OSError as exc:
        return {"state": "no answer", "problem": f"sinfo failed to start ({exc})"}
    if proc.returncode != 0:
        message = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"state": "no answer", "problem": f"sinfo failed: {message}"}
    return {"state": "answers", "partitions": proc.stdout.strip().splitlines()[:20]}


def gpu_requirement(study_devices: list[str] | None) -> str:
    """Why this node must have a usable GPU ('' when it need not)."""
    from hpc_unet.train.device import allocated_gpus

    devices = set(study_devices or ["auto"])
    if devices == {"cpu"}:
        return ""
    if "gpu" in devices:
        return 'the study sets device = "gpu"'
    return allocated_gpus(os.environ)


def collect_report(study: str | None = None, bench_seconds: float = 10.0, slurm: bool = True) -> dict[str, Any]:
    """Every check as one dict; ``problems`` lists what makes the node unfit (empty: fit)."""
    report: dict[str, Any] = {}
    if study:
        report["study"] = study_check(study)
    required = gpu_requirement(report.get("study", {}).get("devices"))
    report["gpus"] = gpus(required)
    report["versions"] = versions()
    if bench_seconds > 0:
        report["benchmark"] = conv_benchmark(bench_seconds)
    if slurm:
        report["slurm"] = slurm_check()
    report["problems"] = [f"{name}: {part['problem']}" for name, part in report.items()
                          if isinstance(part, dict) and part.get("problem")]
    return report


def format_report(report: dict[str, Any]) -> str:
    v = report["versions"]
    lines = [f"host {v['host']}: Python {v['python']}, TensorFlow {v['tensorflow']} (Keras {v['keras']}), "
             + (f"built for CUDA {v['cuda']} / cuDNN {v['cudnn']}" if v["cuda_build"] else "built without CUDA")]
    g = report["gpus"]
    if g["devices"]:
        for d in g["devices"]:
            mem = f", {d['memory_bytes'] / 2**30:.0f} GiB" if d.get("memory_bytes") else ""
            lines.append(f"GPU: {d['name']} (compute {d['compute_capability'] or '?'}{mem})")
    else:
        lines.append("GPU: none seen by TensorFlow" + (f" (required: {g['required']})" if g["required"] else "")
                     + f"; TensorFlow said: {g['tensorflow_said']}")
    b = report.get("benchmark")
    if b:
        speeds = ", ".join(f"{dt} {b[dt]['tflops']} TFLOPS" if b[dt].get("tflops") is not None
                           else f"{dt} unavailable ({b[dt]['error']})" for dt in ("float32", "bfloat16"))
        lines.append(f"conv 3x3 {'x'.join(map(str, b['shape']))} on {b['device']}: {speeds}")
    s = report.get("study")
    if s:
        lines.append(f"study {s['study']}: {len(s['data_paths'])} data path(s), "
                     f"{len(s['unreadable'])} unreadable, directory {'writable' if s['writable'] else 'NOT writable'}")
    if "slurm" in report:
        lines.append(f"Slurm: {report['slurm']['state']}")
    lines += [f"PROBLEM {p}" for p in report["problems"]] or ["ok: no problems found"]
    return "\n".join(lines)
