"""`hpc-unet spec keys`: generated from spec.py; docs/spec.md is its --markdown output, and every key and
environment variable has a meaning."""

from __future__ import annotations

from conftest import REPO, cli

from hpc_unet import spec, spec_reference


def test_docs_spec_md_is_the_generated_reference(capsys):
    assert cli("spec", "keys", "--markdown") == 0
    generated = capsys.readouterr().out
    assert (REPO / "docs" / "spec.md").read_text() == generated, \
        "docs/spec.md is stale: run `hpc-unet spec keys --markdown > docs/spec.md`"


def test_every_key_and_variable_has_a_meaning():
    keys = spec_reference.keys()
    named = {(k.table, k.key) for k in keys}
    for table, params in (("train", spec.TRAIN_PARAMS), ("data", spec.DATA_PARAMS)):
        assert {(table, key) for key in params} <= named  # new keys appear without editing the reference
    assert {("slurm", key) for key in spec.SLURM_KEYS} <= named
    assert {k.table for k in keys} == set(spec.TABLES)
    undocumented = [f"{k.table}.{k.key}" for k in keys if not k.meaning]
    assert undocumented == [], f"add a meaning to hpc_unet/spec_reference.py MEANINGS for {undocumented}"
    env = spec_reference.environment_variables()
    assert {"HPC_UNET_THREADS", "HPC_UNET_DATA", "HPC_UNET_FAULT"} <= set(env)
    assert [name for name, meaning in env.items() if not meaning] == []
    stale = set(spec_reference.ENV_MEANINGS) - set(env)
    assert stale == set(), f"ENV_MEANINGS names variables the code no longer reads: {stale}"


def test_a_variable_read_anywhere_in_the_package_is_found(tmp_path):
    (tmp_path / "mod.py").write_text('import os\nX = os.environ.get("HPC_UNET_NEW_KNOB", "1")\n'
                                     'ENV_OTHER = "HPC_UNET_OTHER"\nos.environ["HPC_UNET_THIRD"]\n')
    found = spec_reference.environment_variables(tmp_path)
    assert {"HPC_UNET_NEW_KNOB", "HPC_UNET_OTHER", "HPC_UNET_THIRD"} <= set(found)
    assert found["HPC_UNET_NEW_KNOB"] == ""  # no meaning yet: the test above would fail


def test_spec_keys_text_names_precision_jit_and_threads(capsys):
    assert cli("spec", "keys") == 0
    out = capsys.readouterr().out
    for needle in ("precision (string) = \"float32\"", "jit_compile (bool) = false", "HPC_UNET_THREADS",
                   "[slurm]", "array_parallelism (int) = 256", "on_oom"):
        assert needle in out
