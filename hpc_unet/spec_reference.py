"""The grid spec reference: every table and key (type, default, allowed values, meaning) and every
environment variable hpc-unet reads, generated from the live definitions.

Keys, defaults and allowed values come from ``spec.py`` (and the Slurm defaults from
``dispatch/slurm.py``); environment variables are found by scanning the package source for
``os.environ`` / ``getenv`` reads. Only the one-line meanings are written here. `hpc-unet spec keys`
prints the reference, `--markdown` prints docs/spec.md, and tests/test_spec_reference.py fails when a key
or variable has no meaning here or docs/spec.md is out of date.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpc_unet import spec

MEANINGS: dict[str, str] = {
    "study.name": "study name: written into every manifest row (study_name) and the report",
    "study.description": "free text shown in the report",
    "data.kind": "where the images come from: a TIFF stack pair, folders of image/mask files, or synthetic data",
    "data.images": "image stack (tiff) or folder of images (folders); relative paths resolve against the "
                   "current directory, $VARS expand; write a literal $ as $$ (a lone $ naming no set variable "
                   "is refused)",
    "data.masks": "mask stack or folder matching data.images",
    "data.test_images": "optional held-out test images, scored with the best weights (test_jaccard)",
    "data.test_masks": "masks of data.test_images (set both or neither)",
    "data.patch_size": "square patch side in pixels; divisible by 2**depth",
    "data.val_fraction": "fraction of patches (or slices, with split = slice) held out for validation",
    "data.split_seed": "seed of the train/validation split (fixed across experiments)",
    "data.split": "what the validation split is made of",
    "data.max_patches": "cap on the number of patches (for quick runs)",
    "data.synth_slices": "synthetic data: number of slices",
    "data.synth_height": "synthetic data: slice height in pixels",
    "data.synth_width": "synthetic data: slice width in pixels",
    "data.synth_seed": "synthetic data: random seed",
    "data.normalize": "how image intensities are scaled to [0, 1]",
    "data.percentile_low": "normalize = percentile: the intensity percentile mapped to 0",
    "data.percentile_high": "normalize = percentile: the intensity percentile mapped to 1",
    "data.normalize_per": "normalization statistics per image or over the whole dataset",
    "data.mask": "how mask values become foreground",
    "train.architecture": "the network",
    "train.learning_rate": "Adam learning rate",
    "train.batch_size": "patches per training step",
    "train.epochs": "maximum epochs (early stopping may end a run sooner)",
    "train.seed": "seed of weights and data order (replicates count up from it)",
    "train.loss": "training loss",
    "train.focal_gamma": "focal loss: focusing parameter gamma",
    "train.class_balancing": "focal loss: weight classes by focal_alpha",
    "train.focal_alpha": "focal loss: foreground weight when class_balancing is on",
    "train.clipnorm": "gradient norm clipping of the optimizer",
    "train.reduce_lr": "halve (reduce_lr_factor) the learning rate when val Jaccard stalls",
    "train.reduce_lr_factor": "factor ReduceLROnPlateau multiplies the learning rate by",
    "train.reduce_lr_patience": "epochs without improvement before the learning rate is reduced",
    "train.min_lr": "lower bound of the reduced learning rate",
    "train.early_stopping": "stop when val Jaccard has not improved for early_stopping_patience epochs "
                            "(best weights are kept)",
    "train.early_stopping_patience": "epochs without improvement before early stopping",
    "train.base_filters": "filters of the first U-Net level (doubled per level)",
    "train.depth": "pooling levels of the U-Net",
    "train.dropout": "dropout rate in the convolution blocks",
    "train.batch_norm": "batch normalization in the convolution blocks",
    "train.precision": "Keras mixed-precision policy (mixed_bfloat16 on GPUs with bf16 support)",
    "train.jit_compile": "XLA-compile the train step",
    "train.run_eagerly": "run Keras eagerly (no graph tracing)",
    "train.graph_rewrites": "Grappler graph optimizations at trace time",
    "train.augment": "training augmentation",
    "train.tensorboard": "write a TensorBoard log to runs/<exp_id>/tensorboard (`hpc-unet status --tensorboard` "
                         "prints the command that opens all of them)",
    "train.device": "where the task trains: auto needs a GPU whenever Slurm/CUDA_VISIBLE_DEVICES allocated one "
                    "(the task fails at once with TensorFlow's reason if it cannot use it); gpu always needs "
                    "one; cpu hides the GPUs",
    "train.init_from": "start from a trained model's weights (fine-tuning): checked at manifest time (the source's "
                       "architecture, depth, base filters, channels and batch norm must match); its SHA-256 goes "
                       "into the manifest and results (docs/transfer.md)",
    "train.freeze": "with init_from: keep the source's encoder fixed (encoder), or for unfreeze_epoch epochs "
                    "and then train every layer with a fresh Adam (encoder_then_all)",
    "train.unfreeze_epoch": "freeze = encoder_then_all: epochs trained with the encoder frozen",
    "train.train_fraction": "data budget: train on the first ceil(fraction x N) training patches in the split's "
                            "order (nested across budgets; validation and test unchanged); also accepted in [data]",
    "grid.replicates": "repeat every grid cell with seeds seed, seed+1, ... (not with a seed axis)",
    "grid.<train key>": "any [train] key given as a list of values is an axis: the grid is the product of all axes",
    "slurm.partition": "partition(s), comma-separated",
    "slurm.gpu_type": "GPU type of --gres=gpu:TYPE:1 ('' for an untyped gpu:1)",
    "slurm.gpus_per_task": "request GPUs with --gpus-per-task=N instead of --gres",
    "slurm.cpus_per_task": "CPU cores per task (data loading)",
    "slurm.mem": "memory per task, e.g. 64G",
    "slurm.time": "time limit per task: minutes, HH:MM:SS or D-HH:MM:SS",
    "slurm.account": "account to charge",
    "slurm.qos": "quality of service",
    "slurm.constraint": "node features, e.g. a40&ib",
    "slurm.array_parallelism": "at most this many array tasks run at once (%N); a requeued task waits at the "
                               "back of the array",
    "slurm.sbatch": "any other sbatch options as a table, e.g. { mail-type = \"END\" }",
    "slurm.setup": "shell lines run before each task (module load, conda activate)",
    "slurm.max_array_size": "split arrays into chunks of at most this many tasks (default: the cluster's MaxArraySize)",
    "slurm.timeout_requeues": "times a task that hits its time limit is requeued to resume from its checkpoint",
    "slurm.then_analyze": "also submit a 1-CPU job that runs collect + analyze when every array has ended "
                          "(--dependency=afterany); status shows it",
    "policy.on_oom": "after an out-of-memory: only record it, or also skip the same cell's larger batch sizes",
    "analysis.primary_metric": "the metric that ranks configurations: best cell, robustness, headline, followup "
                               "(docs/analysis.md)",
    "hypothesis.id": "short unique name of the claim",
    "hypothesis.claim": "the claim in words, quoted in the report",
    "hypothesis.rule": "how the verdict is computed (docs/analysis.md)",
    "hypothesis.architecture": "architecture level(s) the rule is about",
    "hypothesis.learning_rate": "learning rate level(s) the rule is about ([low, high] for lr_range_best)",
    "hypothesis.batch_size": "batch sizes the rule is about, in order",
    "hypothesis.reduction": "expected relative reduction (baseline_stability)",
}

ENV_MEANINGS: dict[str, str] = {
    "HPC_UNET_DATA": "convention, not read by the code: spec paths expand $VARS, so `images = "
                     "\"${HPC_UNET_DATA}/training.tif\"` finds the data wherever a site keeps it",
    "HPC_UNET_THREADS": "TensorFlow intra- and inter-op threads of a training (or predict) process; local "
                        "submit sets it to cores / --max-parallel when unset",
    "HPC_UNET_FAULT": "fault injection for the reliability tests: point[@n][:action[:count]] (hpc_unet/study.py)",
    "HPC_UNET_FAULT_STATE": "file that counts HPC_UNET_FAULT firings across processes",
    "CUDA_VISIBLE_DEVICES": "GPUs given to the task (Slurm sets it with SLURM_JOB_GPUS); non-empty and not -1 "
                            "means a GPU was allocated (train device = auto then requires one); device = cpu "
                            "sets it to -1",
    "HPC_UNET_SITE": "path of the per-user site profile ([slurm] defaults under the spec and the flags); default "
                     "~/.config/hpc-unet/site.toml, empty: none",
    "HPC_UNET_USR2_FLAG": "set by the job step wrapper: the file recording a USR2 that arrived before Python "
                          "could handle it (the task then replays it)",
    "HPC_UNET_LEASE_STALE_S": "seconds without a heartbeat after which an experiment's lease no longer counts",
    "TF_CPP_MIN_LOG_LEVEL": "TensorFlow's C++ log level; hpc-unet sets 3 (errors only) unless already set",
    "SLURM_JOB_ID": "set by Slurm: the job id recorded in results and leases",
    "SLURM_ARRAY_JOB_ID": "set by Slurm: the array's job id (job ids are recorded as ARRAY_TASK)",
    "SLURM_ARRAY_TASK_ID": "set by Slurm: the array task index",
    "SUBMITIT_JOB_ID": "set by submitit for local tasks: the job id when there is no Slurm job",
}

ENV_READ_RE = re.compile(
    r"""(?:environ\.get|environ\.setdefault|getenv)\(\s*["']([A-Z][A-Z0-9_]+)["']|environ\[\s*["']([A-Z][A-Z0-9_]+)["']\]"""
    r"""|^\s*ENV_[A-Z_]+\s*=\s*["']([A-Z][A-Z0-9_]+)["']""", re.MULTILINE)


@dataclass(frozen=True)
class Key:
    table: str
    key: str
    type: str
    default: str
    allowed: str
    meaning: str


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, dict):
        return "table"
    if isinstance(value, list):
        return "list"
    return "string"


def _show(value: Any) -> str:
    if value is None:
        return "(site default)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, dict):
        return "{}" if not value else str(value)
    return repr(value)


def _params(table: str, params: dict[str, tuple[Any, Any, str]]) -> list[Key]:
    return [Key(table, k, _type_of(d), _show(d), allowed, MEANINGS.get(f"{table}.{k}", ""))
            for k, (d, _check, allowed) in params.items()]


def keys() -> list[Key]:
    """Every key of a grid spec, table by table, in spec.TABLES order."""
    from hpc_unet.dispatch.slurm import SLURM_DEFAULTS

    out: list[Key] = []
    for table in spec.TABLES:
        if table == "study":
            out += [Key("study", "name", "string", '"study"', "text", MEANINGS.get("study.name", "")),
                    Key("study", "description", "string", '""', "text", MEANINGS.get("study.description", ""))]
            out += [Key("study", k, "", "", "", MEANINGS.get(f"study.{k}", ""))
                    for k in spec.STUDY_KEYS if k not in ("name", "description")]
        elif table == "data":
            out += _params("data", spec.DATA_PARAMS)
        elif table == "train":
            out += _params("train", spec.TRAIN_PARAMS)
        elif table == "grid":
            out += [Key("grid", "replicates", "int", "1", "a positive integer, at most 10000", MEANINGS["grid.replicates"]),
                    Key("grid", "<train key>", "list", "-", "values allowed for that [train] key",
                        MEANINGS["grid.<train key>"])]
        elif table == "slurm":
            out += [Key("slurm", k, _type_of(SLURM_DEFAULTS.get(k)) if SLURM_DEFAULTS.get(k) is not None else "",
                        _show(SLURM_DEFAULTS.get(k)), "see `hpc-unet submit --help`", MEANINGS.get(f"slurm.{k}", ""))
                    for k in spec.SLURM_KEYS]
        elif table == "policy":
            out += [Key("policy", "on_oom", "string", '"record"', f"one of {', '.join(spec.OOM_POLICIES)}",
                        MEANINGS.get("policy.on_oom", ""))]
            out += [Key("policy", k, "", "", "", MEANINGS.get(f"policy.{k}", ""))
                    for k in spec.POLICY_KEYS if k != "on_oom"]
        elif table == "hypothesis":
            rules = f"one of {', '.join(spec.HYPOTHESIS_RULES)}"
            out += [Key("hypothesis", k, "string" if k in ("id", "claim", "rule") else "level or list",
                        "(required)" if k in ("id", "claim", "rule") else "-", rules if k == "rule" else "",
                        MEANINGS.get(f"hypothesis.{k}", "")) for k in spec.HYPOTHESIS_KEYS]
        elif table == "analysis":
            out.append(Key("analysis", "primary_metric", "string", f'"{spec.PRIMARY_METRICS[0]}"',
                           f"one of {', '.join(spec.PRIMARY_METRICS)}", MEANINGS["analysis.primary_metric"]))
        else:
            out.append(Key(table, "", "", "", "", MEANINGS.get(f"{table}", "")))
    return out


def environment_variables(root: Path | None = None) -> dict[str, str]:
    """Every environment variable the package source reads (plus HPC_UNET_DATA, a convention) -> meaning."""
    root = root or Path(__file__).resolve().parent
    found: set[str] = {"HPC_UNET_DATA"}
    for path in sorted(root.rglob("*.py")):
        for match in ENV_READ_RE.finditer(path.read_text(errors="replace")):
            found.add(next(g for g in match.groups() if g))
    return {name: ENV_MEANINGS.get(name, "") for name in sorted(found)}


def markdown() -> str:
    """docs/spec.md."""
    lines = ["# Grid spec reference", "",
             "Generated by `hpc-unet spec keys --markdown` from `hpc_unet/spec.py` (do not edit by hand;",
             "tests/test_spec_reference.py checks it is current). A grid spec is a TOML file with the tables",
             "below; `--set table.key=value` overrides any key on the command line. Numbers outside the",
             "bounds in the `allowed` column (inf and nan included) are refused by `manifest`: the upper",
             "bounds are far above real studies and catch typos before they become diverged or endless runs.",
             ""]
    table = None
    for k in keys():
        if k.table != table:
            table = k.table
            header = f"[[{table}]]" if table == "hypothesis" else f"[{table}]"
            lines += ["", f"## `{header}`", "", "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        lines.append(f"| `{k.key}` | {k.type} | {_cell(k.default)} | {_cell(k.allowed)} | {_cell(k.meaning)} |")
    lines += ["", "## Environment variables", "", "| variable | meaning |", "|---|---|"]
    lines += [f"| `{name}` | {_cell(meaning)} |" for name, meaning in environment_variables().items()]
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|") if text else ""


def text() -> str:
    """The reference for a terminal: one block per table, one line per key."""
    lines: list[str] = []
    table = None
    for k in keys():
        if k.table != table:
            table = k.table
            lines += ["", f"[[{table}]]" if table == "hypothesis" else f"[{table}]"]
        default = f" = {k.default}" if k.default not in ("", "-") else ""
        lines.append(f"  {k.key} ({k.type}){default}: {k.meaning}")
        if k.allowed:
            lines.append(f"      allowed: {k.allowed}")
    lines += ["", "environment variables"]
    lines += [f"  {name}: {meaning}" for name, meaning in environment_variables().items()]
    return "\n".join(lines).lstrip("\n") + "\n"
