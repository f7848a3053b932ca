"""The per-user site profile: Slurm defaults a lab writes once (partition, GPU type, account, qos, setup
lines, time limits ...), below the grid spec's [slurm] table and the command-line flags.

The file is TOML with one ``[slurm]`` table taking the spec's [slurm] keys::

    # ~/.config/hpc-unet/site.toml
    [slurm]
    partition = "a40"
    account = "proj123"
    setup = ["module load cuda/12.4", "source /project/proj123/envs/hpc-unet/bin/activate"]

Its path: ``$HPC_UNET_SITE`` when set (empty: no profile), else ``$XDG_CONFIG_HOME/hpc-unet/site.toml``
(``~/.config/hpc-unet/site.toml``). A missing default file is no profile; a missing file named by the
variable is an error (a typo would otherwise silently drop the site's settings).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from hpc_unet.errors import UserError

ENV_SITE = "HPC_UNET_SITE"


def site_path(environ: dict[str, str] | None = None) -> tuple[Path | None, bool]:
    """(path of the site profile or None, whether the path was named explicitly by HPC_UNET_SITE)."""
    env = os.environ if environ is None else environ
    if ENV_SITE in env:
        value = env[ENV_SITE].strip()
        return (Path(value).expanduser(), True) if value else (None, True)
    base = Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME") or Path.home()) / ".config")
    return base / "hpc-unet" / "site.toml", False


def load_site(environ: dict[str, str] | None = None) -> tuple[dict[str, Any], Path | None]:
    """The profile's [slurm] table (unvalidated; slurm.options_with_sources validates it) and its path;
    ({}, None) without a profile. Raises one-line UserErrors naming the file."""
    from hpc_unet.spec import SLURM_KEYS, did_you_mean

    path, explicit = site_path(environ)
    if path is None:
        return {}, None
    if not path.is_file():
        if explicit:
            raise UserError(f"{ENV_SITE}={path} does not exist; fix the path, or set {ENV_SITE}= (empty) for no "
                            "site profile")
        return {}, None
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"site profile {path} is not valid TOML ({' '.join(str(exc).split())}); fix or remove it") from None
    unknown = sorted(set(raw) - {"slurm"})
    if unknown:
        raise UserError(f"site profile {path}: unknown table [{unknown[0]}]; only [slurm] is read")
    table = raw.get("slurm", {})
    if not isinstance(table, dict):
        raise UserError(f"site profile {path}: slurm must be a table ([slurm])")
    for key in table:
        if key not in SLURM_KEYS:
            raise UserError(f"site profile {path}: unknown [slurm] key '{key}'{did_you_mean(key, SLURM_KEYS)}; "
                            f"allowed: {', '.join(SLURM_KEYS)}")
    return dict(table), path
