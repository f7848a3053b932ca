"""What may go into a generated job script, and the step wrapper that closes the early-USR2 window.

Every path and value hpc-unet writes into an sbatch script is either refused here (control characters:
a newline ends the ``#SBATCH`` comment and the rest of the value runs as a command) or shell-quoted by
submitit (``shlex.quote``). Setup lines are shell by design; each must be one complete command that
``bash -n`` accepts on its own, so that none can swallow the lines after it (an open quote, a here-document,
a trailing backslash or ``|``).

The step wrapper: Slurm's USR2 (preemption with ``preempt_send_user_signal``, or ``--signal=USR2@90``
before the time limit) goes to every process of the job step. Python's default action for USR2 is to
die, and submitit installs its handler only after the interpreter has started and unpickled the task
(~0.5 s, longer on a busy shared filesystem); a task signalled then ended FAILED (signal 12), not
requeued. The wrapper is a small bash program run by srun: it starts Python with USR2 ignored, records a
USR2 that reaches it in a flag file, and the task (dispatch/task.py) re-sends a recorded USR2 to itself
once submitit's handler is installed, so submitit checkpoints and requeues as for any preemption.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from typing import Any

from hpc_unet.errors import UserError

ENV_EARLY_SIGNAL = "HPC_UNET_USR2_FLAG"
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
# One statement per item, joined with "; ". USR2 is ignored before the child
# starts (it inherits the ignore, which survives exec; a handler would not), then the wrapper records
# USR2 and ignores SIGTERM (a requeue's or cancel's SIGTERM must not end the wrapper before Python, which
# submitit keeps alive until SIGKILL); it waits for Python and exits with its status.
_STEP = [
    'f="${TMPDIR:-/tmp}/hpc-unet-usr2.${SLURM_JOB_ID:-0}.$$"',
    'rm -f "$f"',
    f'export {ENV_EARLY_SIGNAL}="$f"',
    "trap '' USR2",
    '"$@" & c=$!',
    "trap ': > \"$f\"' USR2",
    "trap : TERM",
    "trap 'rm -f \"$f\"' EXIT",
    'while :; do wait "$c"; r=$?; kill -0 "$c" 2>/dev/null || break; done',
    'exit "$r"',
]
STEP_PROGRAM = "; ".join(_STEP)


def step_command(python: str) -> str:
    """The command srun runs instead of bare ``python``: the wrapper, then python and its arguments."""
    return f"/bin/bash -c {shlex.quote(STEP_PROGRAM)} hpc-unet-step {shlex.quote(python)}"


def refuse_control(text: Any, what: str) -> str:
    """``text`` unchanged, or one-line UserError when it holds a control character (newline, tab, NUL ...)."""
    value = str(text)
    m = CONTROL_RE.search(value)
    if m:
        raise UserError(f"{what} {value!r} contains the control character {m.group()!r}, which would break the "
                        "generated job script; rename it without control characters (newline, tab, ...)")
    return value


def check_setup_line(line: str) -> str:
    """One setup line, checked: no control character, a complete command that ``bash -n`` accepts alone
    without a warning, and no trailing backslash (which would join the next line of the script)."""
    refuse_control(line, "[slurm] setup line")
    if (len(line) - len(line.rstrip("\\"))) % 2:
        raise UserError(f"[slurm] setup line {line!r} ends with a backslash, which would join it to the next "
                        "line of the job script; remove it (one complete command per line)")
    bash = shutil.which("bash")
    if bash is None:
        return line
    proc = subprocess.run([bash, "-n", "-c", line], capture_output=True, text=True, timeout=30)
    said = "; ".join(re.sub(r"^\S*bash: (-c: )?(line \d+: )?", "", ln).strip()
                     for ln in proc.stderr.splitlines() if ln.strip())
    if proc.returncode != 0 or said:
        raise UserError(f"[slurm] setup line {line!r} is not one complete shell command (bash -n: "
                        f"{said or 'exit ' + str(proc.returncode)}); give one complete command per line, "
                        "without here-documents")
    return line
