"""Which device a task trains on: the ``device`` train setting, and failing fast when a GPU was
allocated but TensorFlow cannot use it.

A ``tensorflow`` install without its CUDA libraries (``pip install tensorflow`` instead of the ``gpu``
extra, ``tensorflow[and-cuda]``) finds no GPU on a node without a matching system CUDA 12 / cuDNN 9 and
silently trains on the CPU: days instead of hours, with the allocated GPU idle. So when a task was given a
GPU and TensorFlow sees none, it stops before loading data, with one line that includes TensorFlow's own
loader messages (``hpc_unet`` sets ``TF_CPP_MIN_LOG_LEVEL=3``, which hides them; here they are captured
from file descriptor 2 while TensorFlow starts).

``device``: ``auto`` (default) needs a GPU exactly when one was allocated; ``gpu`` always needs one;
``cpu`` hides the GPUs (``CUDA_VISIBLE_DEVICES=-1``) and trains on the CPU.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from typing import Any

DEVICES = ("auto", "gpu", "cpu")
# What Slurm and CUDA put in these variables when no GPU is present: empty, "-1" (hidden), "NoDevFiles"
# (a GRES without device files).
NO_GPU_VALUES = ("", "-1", "NoDevFiles")
GPU_ENV = ("SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")
LOADER_WORDS = ("cuda", "cudnn", "gpu", "dlopen", "libcu", "driver", "ptx", "nvidia")


class GPUUnavailable(RuntimeError):
    """A GPU was required (allocated, or ``device = "gpu"``) but TensorFlow sees none."""


def allocated_gpus(env: Mapping[str, str], spec_slurm: Mapping[str, Any] | None = None) -> str:
    """Why this task counts as given a GPU, e.g. ``SLURM_JOB_GPUS=0``; empty when it was not.

    The spec's ``[slurm]`` GPU request counts only inside a Slurm job (``SLURM_JOB_ID`` set): the same
    spec run with ``--executor local`` on a laptop has no GPU and should not need one.
    """
    for key in GPU_ENV:
        value = env.get(key)
        if value is not None and value.strip() not in NO_GPU_VALUES:
            return f"{key}={value.strip()}"
    if env.get("SLURM_JOB_ID") and spec_slurm:
        if spec_slurm.get("gpus_per_task"):
            return f"[slurm] gpus_per_task = {spec_slurm['gpus_per_task']}"
        if spec_slurm.get("gpu_type"):
            return f"[slurm] gpu_type = {spec_slurm['gpu_type']!r}"
    return ""


def _hide_gpus() -> None:
    os.environ["CUDA_VISIBLE_DEVICES"] = "-1"
    if "tensorflow" in sys.modules:  # already started in this process (packed tasks, tests)
        import tensorflow as tf

        try:
            tf.config.set_visible_devices([], "GPU")
        except RuntimeError:
            pass  # runtime initialised: a GPU it already uses stays visible; CPU placement is then Keras's


def list_gpus_with_messages() -> tuple[list[Any], str]:
    """TensorFlow's GPUs, and what TensorFlow wrote to stderr while starting (empty if it had started).

    The log level is lowered to warnings for the import, so library-loading failures are reported.
    """
    if "tensorflow" in sys.modules:
        import tensorflow as tf

        return tf.config.list_physical_devices("GPU"), ""
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "1"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace")
            sys.stderr.write(text)  # the task log keeps them, also when the import itself failed
    return gpus, text


def loader_summary(text: str, limit: int = 400) -> str:
    """The loader lines of TensorFlow's start-up output, joined on one line (log prefixes removed)."""
    lines = []
    for line in text.splitlines():
        message = line.split("] ", 1)[-1].strip()
        if message and any(w in message.lower() for w in LOADER_WORDS) and message not in lines:
            lines.append(message)
    joined = " | ".join(lines) or "nothing (no loader messages)"
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def build_summary() -> str:
    """``TensorFlow 2.21.0 built for CUDA 12.5.1 / cuDNN 9`` (or ``without CUDA``)."""
    import tensorflow as tf

    info = tf.sysconfig.get_build_info()
    if not info.get("is_cuda_build"):
        return f"TensorFlow {tf.__version__} built without CUDA"
    return f"TensorFlow {tf.__version__} built for CUDA {info.get('cuda_version', '?')} / cuDNN {info.get('cudnn_version', '?')}"


def select_device(device: str, env: Mapping[str, str] | None = None,
                  spec_slurm: Mapping[str, Any] | None = None) -> str:
    """Apply ``device`` before training; return why a GPU is required ('' when not).

    Raises GPUUnavailable (one line: what was allocated, what TensorFlow said, the fix) when a GPU is
    required and TensorFlow sees none. Call it before TensorFlow is imported where possible.
    """
    if device not in DEVICES:
        raise ValueError(f"device {device!r} is not one of {', '.join(DEVICES)}")
    env = os.environ if env is None else env
    if device == "cpu":
        _hide_gpus()
        return ""
    allocated = allocated_gpus(env, spec_slurm)
    if device == "auto" and not allocated:
        return ""
    reason = allocated or 'device = "gpu"'
    gpus, messages = list_gpus_with_messages()
    if gpus:
        return reason
    raise GPUUnavailable(
        f"a GPU is required ({reason}) but {build_summary()} sees none; TensorFlow said: "
        f"{loader_summary(messages)}. Fix: pip install -e \".[gpu]\" (tensorflow[and-cuda]) and check the node "
        "with `hpc-unet doctor`, or set device = \"cpu\" in [train]")
