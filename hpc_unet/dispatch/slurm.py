"""Slurm options: validate, turn into a submitit executor, render the sbatch script, submit arrays.

Login-node code: it never imports TensorFlow, and submitit is imported inside functions so that
``hpc-unet --help`` stays fast. Every setting is checked before anything is submitted, so a typo fails
in a second on the login node instead of after hours in the queue, and nothing a user types can inject
shell into the generated script except the ``setup`` lines, which are shell by design (dispatch/jobscript.py
checks them and every path written into the script).
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hpc_unet.dispatch import jobscript
from hpc_unet.errors import UserError

# Settings used when neither the grid spec's [slurm] table nor a flag gives one. None = leave it to the
# site's defaults (no #SBATCH line). One A40 per task, CPU cores for data loading, generous memory.
SLURM_DEFAULTS: dict[str, Any] = {
    "job_name": "hpc-unet",
    "partition": None,
    "gpu_type": "a40",
    "gpus_per_task": None,
    "cpus_per_task": 8,
    "mem": "64G",
    "time": "04:00:00",
    "account": None,
    "qos": None,
    "constraint": None,
    "array_parallelism": 256,
    "sbatch": {},
    "setup": [],
    "max_array_size": None,
    "timeout_requeues": 3,
    "then_analyze": False,
}
# Upper bound of a time limit: a year. Slurm keeps limits in minutes; an absurd value is a typo.
MAX_TIME_MINUTES = 365 * 24 * 60

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
PARTITION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*(,[A-Za-z0-9][A-Za-z0-9_.+-]*)*$")
# Slurm feature expressions: a40, a40&ib, [rack1|rack2], a40*2. Written quoted by submitit, read by sbatch.
CONSTRAINT_RE = re.compile(r"^[A-Za-z0-9_.,&|!*\[\]:-]+$")
TIME_RE = re.compile(r"^(?:(?P<d>\d+)-(?P<dh>\d+)(?::(?P<dm>\d+)(?::(?P<ds>\d+))?)?|(?P<a>\d+)(?::(?P<b>\d+)(?::(?P<c>\d+))?)?)$")
MEM_RE = re.compile(r"^(?P<n>\d+)(?P<unit>[KMGT]?)B?$", re.IGNORECASE)
SBATCH_KEY_RE = re.compile(r"^[a-z][a-z0-9-]*$")
UNSAFE_VALUE_CHARS = set(";&|$`<>\\\"'\n\r\0")
# Flags submitit writes itself; overriding them through --sbatch would break logs, requeue or the array.
RESERVED_SBATCH_KEYS = {"array", "output", "error", "signal", "open-mode", "wrap", "parsable", "job-name",
                        "requeue", "no-requeue"}
INT_KEYS = ("cpus_per_task", "gpus_per_task", "array_parallelism", "max_array_size", "timeout_requeues")
NAME_KEYS = ("job_name", "account", "qos", "gpu_type")


def _fail(key: str, value: Any, fix: str) -> UserError:
    return UserError(f"[slurm] {key} = {value!r} is invalid: {fix}")


def time_to_minutes(value: Any) -> int:
    """Slurm time ("MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS", or minutes as an int)
    -> whole minutes, rounded up. submitit needs minutes to tell a time limit from a preemption."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise _fail("time", value, 'give a Slurm time such as "90", "04:00:00" or "1-12:00:00"')
    if isinstance(value, int):
        if value <= 0:
            raise _fail("time", value, "it must be a positive number of minutes")
        if value > MAX_TIME_MINUTES:
            raise _fail("time", value, f"it must be at most {MAX_TIME_MINUTES} minutes (365 days)")
        return value
    m = TIME_RE.match(value.strip())
    if not m:
        raise _fail("time", value, 'give a Slurm time such as "90" (minutes), "04:00:00" or "1-12:00:00"')
    g = {k: int(v) if v is not None else 0 for k, v in m.groupdict().items()}
    if m.group("d") is not None:
        seconds = g["d"] * 86400 + g["dh"] * 3600 + g["dm"] * 60 + g["ds"]
    elif m.group("c") is not None:
        seconds = g["a"] * 3600 + g["b"] * 60 + g["c"]
    else:
        seconds = g["a"] * 60 + g["b"]
    if seconds <= 0:
        raise _fail("time", value, "the time limit must be positive")
    if seconds > MAX_TIME_MINUTES * 60:
        raise _fail("time", value, "the time limit must be at most 365 days (365-00:00:00)")
    return math.ceil(seconds / 60)


def _check_mem(value: Any) -> str:
    text = str(value).strip() if isinstance(value, int | str) and not isinstance(value, bool) else ""
    m = MEM_RE.match(text)
    if not m or int(m.group("n")) <= 0:
        raise _fail("mem", value, 'give a positive size such as "16G" or "4000M" (no unit = megabytes)')
    return f"{int(m.group('n'))}{m.group('unit').upper()}"


def _check_value_text(key: str, value: Any) -> str:
    text = str(value)
    bad = sorted(UNSAFE_VALUE_CHARS & set(text))
    if bad or jobscript.CONTROL_RE.search(text):
        raise _fail(key, value, f"it must not contain {' '.join(repr(c) for c in bad) or 'control characters'}")
    return text


def _check_sbatch(extra: Any) -> dict[str, Any]:
    if not isinstance(extra, dict):
        raise _fail("sbatch", extra, 'give a table of sbatch options, e.g. sbatch = { mail-type = "END" }')
    out: dict[str, Any] = {}
    for raw_key, value in extra.items():
        key = str(raw_key).strip().lstrip("-").replace("_", "-")
        if not SBATCH_KEY_RE.match(key):
            raise UserError(f"[slurm] sbatch option {raw_key!r} is invalid: use an sbatch long option name such "
                            "as mail-type or exclude (letters, digits, dashes)")
        if key in RESERVED_SBATCH_KEYS:
            raise UserError(f"[slurm] sbatch option {key!r} is set by hpc-unet itself; remove it")
        if value is True:
            out[key] = True
            continue
        if value is None or value is False or isinstance(value, dict | list):
            raise UserError(f"[slurm] sbatch option {key!r} needs a value (KEY=VALUE), not {value!r}")
        text = _check_value_text(f"sbatch.{key}", value)
        if not text.strip():
            raise UserError(f"[slurm] sbatch option {key!r} has an empty value; give KEY=VALUE")
        out[key] = text
    return out


def _check_setup(lines: Any) -> list[str]:
    if isinstance(lines, str):
        lines = [lines]
    if not isinstance(lines, list):
        raise _fail("setup", lines, 'give a list of shell lines, e.g. setup = ["module load cuda/12"]')
    out = []
    for line in lines:
        if not isinstance(line, str):
            raise _fail("setup", line, "each setup line must be a string")
        if any(c in line for c in "\n\r\0"):
            raise _fail("setup", line, "one setup line must not contain a newline or NUL; give one list item per line")
        out.append(jobscript.check_setup_line(line))
    return out


def validate_slurm_options(opts: dict[str, Any]) -> dict[str, Any]:
    """Complete ``opts`` with SLURM_DEFAULTS and check every setting; return the normalised options.

    Raises UserError naming the setting and the fix. ``time`` comes back as whole minutes.
    """
    unknown = sorted(set(opts) - set(SLURM_DEFAULTS))
    if unknown:
        from hpc_unet.spec import did_you_mean

        raise UserError(f"unknown Slurm setting '{unknown[0]}'{did_you_mean(unknown[0], SLURM_DEFAULTS)}; "
                        f"allowed: {', '.join(SLURM_DEFAULTS)}")
    out = {k: (list(v) if isinstance(v, list) else dict(v) if isinstance(v, dict) else v)
           for k, v in SLURM_DEFAULTS.items()}
    out.update({k: v for k, v in opts.items() if v is not None})
    for key in NAME_KEYS:
        value = out[key]
        if value is None or (key == "gpu_type" and value == ""):
            continue
        if not isinstance(value, str) or not NAME_RE.match(value):
            raise _fail(key, value, "use letters, digits and . _ + - only (no spaces or shell characters)")
    if out["partition"] is not None and (not isinstance(out["partition"], str)
                                         or not PARTITION_RE.match(out["partition"])):
        raise _fail("partition", out["partition"],
                    "use a partition name (or a comma-separated list) of letters, digits and . _ + -")
    if out["constraint"] is not None and (not isinstance(out["constraint"], str)
                                          or not CONSTRAINT_RE.match(out["constraint"])):
        raise _fail("constraint", out["constraint"],
                    "use feature names joined by & | , and [ ] (e.g. a40&ib), no spaces or other characters")
    for key in INT_KEYS:
        value = out[key]
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "timeout_requeues" else 1):
            need = "a non-negative integer" if key == "timeout_requeues" else "a positive integer"
            raise _fail(key, value, f"it must be {need}")
    out["time"] = time_to_minutes(out["time"])
    out["mem"] = _check_mem(out["mem"])
    out["sbatch"] = _check_sbatch(out["sbatch"])
    out["setup"] = _check_setup(out["setup"])
    if not isinstance(out["then_analyze"], bool):
        raise _fail("then_analyze", out["then_analyze"], "it must be true or false")
    return out


def add_slurm_arguments(parser: argparse.ArgumentParser) -> None:
    """The Slurm flags of ``hpc-unet submit``; each overrides the grid spec's [slurm] table."""
    g = parser.add_argument_group("Slurm (override the grid spec's [slurm] table)")
    g.add_argument("--partition", help="partition(s), e.g. a40 (default: the site's default partition)")
    g.add_argument("--gpu-type", help="GPU type for --gres=gpu:TYPE:1 (default a40; '' for an untyped gpu:1)")
    g.add_argument("--gpus-per-task", type=int, metavar="N",
                   help="request GPUs with --gpus-per-task=N instead of --gres (no GPU type)")
    g.add_argument("--cpus-per-task", type=int, metavar="N", help="CPU cores per task (default 8)")
    g.add_argument("--mem", help="memory per task, e.g. 64G or 4000M (default 64G)")
    g.add_argument("--time", help="time limit per task, e.g. 90, 04:00:00 or 1-00:00:00 (default 04:00:00)")
    g.add_argument("--account", help="account to charge")
    g.add_argument("--qos", help="quality of service")
    g.add_argument("--constraint", help="node features, e.g. a40 or a40&ib")
    g.add_argument("--array-parallelism", type=int, metavar="N", help="at most N tasks run at once (default 256)")
    g.add_argument("--sbatch", action="append", metavar="KEY=VALUE", default=None,
                   help="any other sbatch option, e.g. --sbatch mail-type=END (repeatable; merged into [slurm] sbatch)")
    g.add_argument("--setup", action="append", metavar="LINE", default=None,
                   help="shell line run before the task, e.g. 'module load cuda/12' (repeatable; after [slurm] setup)")
    g.add_argument("--max-array-size", type=int, metavar="N",
                   help="split arrays into chunks of at most N tasks (default: the cluster's MaxArraySize)")


FLAG_KEYS = ("partition", "gpu_type", "gpus_per_task", "cpus_per_task", "mem", "time", "account", "qos",
             "constraint", "array_parallelism", "max_array_size")


def parse_sbatch_items(items: list[str] | None) -> dict[str, Any]:
    """``KEY=VALUE`` strings from --sbatch -> dict (a bare KEY is a flag without value)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not key.strip():
            raise UserError(f"--sbatch {item!r} must look like KEY=VALUE, e.g. --sbatch mail-type=END")
        out[key.strip()] = value if sep else True
    return out


def options_from_args(args: argparse.Namespace, spec_slurm: dict[str, Any] | None = None) -> dict[str, Any]:
    """Slurm options: the site profile, the spec's [slurm] table over it, the command-line flags over
    both, then validated."""
    return options_with_sources(args, spec_slurm)[0]


def options_with_sources(args: argparse.Namespace, spec_slurm: dict[str, Any] | None = None,
                         environ: dict[str, str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """(validated options, key -> where its value came from: "default", "site profile PATH", "spec" or
    "--flag"). Setup lines add up (site, then spec, then flags); sbatch tables merge key by key."""
    from hpc_unet.dispatch.site import load_site

    site, site_file = load_site(environ)
    if site:
        try:
            validate_slurm_options(site)
        except UserError as exc:
            raise UserError(f"site profile {site_file}: {exc}") from None
    opts: dict[str, Any] = {}
    sources: dict[str, str] = {}

    def layer(values: dict[str, Any], source: str) -> None:
        for key, value in values.items():
            if value is None:
                continue
            if key == "setup":
                lines = [value] if isinstance(value, str) else value
                if not isinstance(lines, list):
                    raise _fail("setup", value, 'give a list of shell lines, e.g. setup = ["module load cuda/12"]')
                if lines:
                    opts["setup"] = [*opts.get("setup", []), *lines]
                    previous = [src for src in sources.get("setup", "").split(" + ") if src]
                    sources["setup"] = " + ".join(dict.fromkeys([*previous, source]))
                continue
            if key == "sbatch":
                if not isinstance(value, dict):
                    raise _fail("sbatch", value, 'give a table of sbatch options, e.g. sbatch = { mail-type = "END" }')
                opts["sbatch"] = {**opts.get("sbatch", {}), **value}
                for sub in value:
                    sources[f"sbatch.{sub}"] = source
                continue
            opts[key] = value
            sources[key] = source

    layer(site, f"site profile {site_file}")
    layer(dict(spec_slurm or {}), "spec [slurm]")
    flags = {key: getattr(args, key, None) for key in FLAG_KEYS}
    for key in FLAG_KEYS:
        if flags[key] is not None:
            layer({key: flags[key]}, f"--{key.replace('_', '-')}")
    if getattr(args, "sbatch", None):
        layer({"sbatch": parse_sbatch_items(args.sbatch)}, "--sbatch")
    if getattr(args, "setup", None):
        layer({"setup": list(args.setup)}, "--setup")
    if getattr(args, "then_analyze", False):
        layer({"then_analyze": True}, "--then-analyze")
    validated = validate_slurm_options(opts)
    for key in SLURM_DEFAULTS:
        if key not in ("sbatch",) and key not in sources:
            sources[key] = "default"
    return validated, sources


def describe_sources(opts: dict[str, Any], sources: dict[str, str]) -> list[str]:
    """``# partition = "a40"  <- site profile ~/.config/hpc-unet/site.toml`` lines for ``submit --dry-run``."""
    import json

    lines = []
    for key in SLURM_DEFAULTS:
        if key in ("sbatch", "job_name"):
            continue
        value = opts.get(key)
        shown = "(not set: the cluster's default)" if value is None else json.dumps(value)
        shown += " minutes" if key == "time" and value is not None else ""
        lines.append(f"# {key} = {shown}  <- {sources.get(key, 'default')}")
    for key, value in (opts.get("sbatch") or {}).items():
        lines.append(f"# sbatch.{key} = {json.dumps(value)}  <- {sources.get(f'sbatch.{key}', 'default')}")
    return lines


def executor_parameters(opts: dict[str, Any]) -> dict[str, Any]:
    """Validated options -> keyword arguments of submitit's SlurmExecutor.update_parameters."""
    params: dict[str, Any] = {
        "job_name": opts["job_name"],
        "time": opts["time"],
        "cpus_per_task": opts["cpus_per_task"],
        "mem": opts["mem"],
        "array_parallelism": opts["array_parallelism"],
    }
    if opts["gpus_per_task"]:
        # --gpus-per-task needs a task count; one task per array element.
        params["gpus_per_task"] = opts["gpus_per_task"]
        params["ntasks_per_node"] = 1
    else:
        params["gres"] = f"gpu:{opts['gpu_type']}:1" if opts["gpu_type"] else "gpu:1"
    for key in ("partition", "account", "qos", "constraint"):
        if opts[key]:
            params[key] = opts[key]
    # --requeue: a task is requeued after preemption, node failure or its own `scontrol requeue` also
    # where the site's default is JobRequeue=0 (which otherwise cancels it or refuses the requeue)
    params["additional_parameters"] = {**opts["sbatch"], "requeue": True}
    if opts["setup"]:
        params["setup"] = list(opts["setup"])
    return params


def _executor(folder: Path, opts: dict[str, Any], offline: bool = False) -> Any:
    import submitit

    jobscript.refuse_control(folder, "the study path")
    jobscript.refuse_control(sys.executable, "the Python executable path")

    cls = submitit.SlurmExecutor
    if offline and shutil.which("srun") is None:
        class _OfflineSlurmExecutor(submitit.SlurmExecutor):  # renders scripts where Slurm is not installed
            @classmethod
            def affinity(cls) -> int:
                return 1

        cls = _OfflineSlurmExecutor
    executor = cls(folder=Path(folder), max_num_timeout=opts["timeout_requeues"],
                   python=jobscript.step_command(sys.executable))
    executor.update_parameters(**executor_parameters(opts))
    return executor


def make_executor(folder: Path, opts: dict[str, Any]) -> Any:
    """A configured ``submitit.SlurmExecutor`` writing its scripts, pickles and logs under ``folder``.

    submitit adds ``--signal=USR2@90``: on USR2 (preemption with preempt_send_user_signal, or the time
    limit coming) it checkpoints and requeues the task; ``timeout_requeues`` caps the time-limit requeues.
    """
    opts = validate_slurm_options(opts)
    if shutil.which("srun") is None:
        raise UserError("Slurm's srun is not on PATH: submit from a login node of a Slurm cluster, "
                        "or run the study here with --executor local")
    return _executor(folder, opts)


def render_sbatch(folder: Path, opts: dict[str, Any], n_tasks: int) -> str:
    """The sbatch script submitit writes for an array of ``n_tasks`` (a plain job for one task),
    built by submitit's own code so that ``submit --dry-run`` shows exactly what would be submitted."""
    from submitit.slurm.slurm import _make_sbatch_string

    opts = validate_slurm_options(opts)
    executor = _executor(folder, opts, offline=True)
    params = dict(executor.parameters)
    if n_tasks > 1:
        params["map_count"] = n_tasks
    return _make_sbatch_string(command=executor._submitit_command_str, folder=executor.folder, **params)


def cluster_max_array_size(timeout: float = 10.0) -> int | None:
    """MaxArraySize from ``scontrol show config``; None when Slurm is not installed or not answering."""
    if shutil.which("scontrol") is None:
        return None
    try:
        proc = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0:
        return None
    m = re.search(r"^MaxArraySize\s*=\s*(\d+)", proc.stdout, re.MULTILINE)
    return int(m.group(1)) if m else None


def split_chunks(n: int, max_array_size: int) -> list[tuple[int, int]]:
    """[lo, hi) ranges of at most ``max_array_size`` tasks: array indices must stay below the
    cluster's MaxArraySize, so a larger study is submitted as several arrays."""
    if max_array_size < 1:
        raise UserError(f"max_array_size = {max_array_size} is invalid: it must be a positive integer")
    return [(lo, min(lo + max_array_size, n)) for lo in range(0, max(n, 0), max_array_size)]


def submit_array(executor: Any, tasks: list[Any]) -> list[str]:
    """Submit ``tasks`` as one job array (one task: a plain job); return their job ids ("123_4", or "123")."""
    if not tasks:
        return []
    with executor.batch():
        jobs = [executor.submit(task) for task in tasks]
    return [str(job.job_id) for job in jobs]


def _ask(cmd: list[str], stdin: str | None = None, timeout: float = 30.0) -> tuple[int, str]:
    """Run a Slurm client command; (exit code, stdout + stderr). Exit 124 and a note on a timeout."""
    try:
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, f"{cmd[0]} did not answer within {timeout:.0f} s"
    except OSError as exc:
        return 127, str(exc)
    return proc.returncode, (proc.stdout + "\n" + proc.stderr).strip()


def slurm_message(text: str) -> str:
    """Slurm's own words from a client's output, on one line (its error lines, else its last line)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "failure" in ln.lower() or "down" in ln.lower()]
    return "; ".join(dict.fromkeys(errors or lines[-1:])) or "no message"


def check_reachable() -> None:
    """The controller answers (``scontrol ping``); else one line with Slurm's words. No side effects."""
    for tool in ("sbatch", "scontrol"):
        if shutil.which(tool) is None:
            raise UserError(f"Slurm's {tool} is not on PATH: submit from a login node of a Slurm cluster, "
                            "or run the study here with --executor local")
    rc, out = _ask(["scontrol", "ping"])
    if rc != 0 or "UP" not in out:
        raise UserError(f"the Slurm controller does not answer ({slurm_message(out)}); nothing was submitted "
                        "and the study is unchanged: retry when `scontrol ping` says UP")


def _check_names(opts: dict[str, Any]) -> None:
    """Partition, GPU type, account and qos exist, asked of sinfo and sacctmgr (read-only)."""
    partitions = [p for p in (opts.get("partition") or "").split(",") if p]
    rc, out = _ask(["sinfo", "-h", "-o", "%R|%G"])
    if rc == 0:
        gres_of: dict[str, set[str]] = {}
        for line in out.splitlines():
            name, _, gres = line.partition("|")
            gres_of.setdefault(name.strip(), set()).update(g for g in gres.strip().split(",") if g and g != "(null)")
        for part in partitions:
            if part not in gres_of:
                raise UserError(f"partition {part!r} does not exist on this cluster (sinfo lists "
                                f"{', '.join(sorted(gres_of)) or 'none'}); fix --partition or [slurm] partition")
        gpu_type = opts.get("gpu_type")
        if gpu_type and not opts.get("gpus_per_task"):
            for part in partitions or list(gres_of):
                if not any(g.startswith(f"gpu:{gpu_type}:") or g == f"gpu:{gpu_type}" for g in gres_of[part]):
                    if partitions:
                        have = ", ".join(sorted(gres_of[part])) or "no GRES"
                        raise UserError(f"partition {part!r} has no GPUs of type {gpu_type!r} ({have}); fix "
                                        "--gpu-type (or '' for any GPU) or --partition")
    # account / qos: refused only when accounting lists some and not this one (a site without
    # associations, or hiding them with PrivateData, lists none: sbatch --test-only then decides)
    import getpass

    lists = {"account": ["sacctmgr", "-n", "-P", "show", "assoc", f"user={getpass.getuser()}", "format=account"],
             "qos": ["sacctmgr", "-n", "-P", "show", "qos", "format=name"]}
    for key, cmd in lists.items():
        name = opts.get(key)
        if not name or shutil.which("sacctmgr") is None:
            continue
        rc, out = _ask(cmd)
        known = {ln.strip() for ln in out.splitlines() if ln.strip()} if rc == 0 else set()
        if known and name.lower() not in {k.lower() for k in known}:
            raise UserError(f"{key} {name!r} is not one that Slurm's accounting knows for you "
                            f"({', '.join(sorted(known))}); fix --{key} or [slurm] {key}")


# Node states in which Slurm can start a job now (sinfo %T, lower case; a trailing "*" means not responding)
AVAILABLE_NODE_STATES = {"idle", "mixed", "allocated", "completing", "planned"}
NO_NODE_NOW = "Requested node configuration is not available"


def unavailable_nodes(partitions: list[str]) -> list[str]:
    """'node (state: reason)' for each node of ``partitions`` (all when none named) that cannot start a job
    now: down, drained, failing, in maintenance, not responding. [] when sinfo does not answer."""
    cmd = ["sinfo", "-h", "-N", "-o", "%N|%T|%E"] + (["-p", ",".join(partitions)] if partitions else [])
    rc, out = _ask(cmd)
    if rc != 0:
        return []
    found: dict[str, str] = {}
    for line in out.splitlines():
        node, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        state = state.strip().lower()
        if node.strip() and state and state not in AVAILABLE_NODE_STATES:
            why = reason.strip() if reason.strip() not in ("", "none") else ""
            found.setdefault(node.strip(), f"{node.strip()} ({state}{': ' + why if why else ''})")
    return list(found.values())


def preflight(opts: dict[str, Any], script: str) -> str:
    """Everything that can fail without side effects, before the data cache is built or a file written:
    the controller answers, partition / GPU type / account / qos exist, and ``sbatch --test-only`` accepts
    the very script that would be submitted (limits, GRES, memory, time). Raises UserError with Slurm's words.

    ``--test-only`` places the job on nodes that can run it now, so with the partition's nodes drained (a
    maintenance) it refuses what sbatch itself accepts and queues. Then, and only then, the array goes to the
    real sbatch, which still refuses a request no node could ever run (checked on the local cluster:
    tests/test_slurm_status_waiting.py); the returned note says so ('' otherwise)."""
    check_reachable()
    _check_names(opts)
    rc, out = _ask(["sbatch", "--test-only"], stdin=script)
    if rc == 0:
        return ""
    if NO_NODE_NOW in out:
        down = unavailable_nodes([p for p in (opts.get("partition") or "").split(",") if p])
        if down:
            shown = ", ".join(down[:3]) + (f" and {len(down) - 3} more" if len(down) > 3 else "")
            return (f"note: nodes of this partition are down or drained ({shown}), so `sbatch --test-only` could not "
                    "place the array now; submitting it anyway: it waits in the queue until they return "
                    "(`hpc-unet status` says why tasks wait)")
    raise UserError(f"Slurm would refuse this array: {slurm_message(out)}; nothing was submitted and the "
                    "study is unchanged")


def snapshot(folder: Path) -> set[Path] | None:
    """Every path under ``folder`` (None when it does not exist), to undo a failed submission."""
    return set(folder.rglob("*")) if folder.exists() else None


def _snapshot(folder: Path) -> set[Path]:
    return set(folder.rglob("*")) if folder.exists() else set()


def remove_new(top: Path, before: set[Path] | None) -> None:
    """Remove what appeared under ``top`` since ``before`` (its snapshot; None: ``top`` did not exist):
    submitit's pickles, scripts and folders of a failed submission."""
    for path in sorted(_snapshot(top) - (before or set()), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    if before is None and top.exists() and not any(top.iterdir()):
        top.rmdir()


def submit_array_or_fail(executor: Any, tasks: list[Any]) -> list[str]:
    """submit_array, with an sbatch failure as one UserError line naming Slurm's message (submitit
    prints sbatch's stderr itself and raises with a traceback; both are caught here)."""
    import contextlib
    import io

    from submitit.core.utils import FailedJobError

    sink = io.StringIO()
    try:
        with contextlib.redirect_stderr(sink):
            return submit_array(executor, tasks)
    except (FailedJobError, subprocess.CalledProcessError, OSError) as exc:
        raise UserError(f"sbatch failed: {slurm_message(str(exc) or sink.getvalue())}") from exc
