"""A missing or mistyped path, given to any verb, gets one stderr line that names the real problem (the
path that does not exist, or what it is instead), not a later symptom such as "run collect"."""

from __future__ import annotations

import pytest
from conftest import cli
from test_reliability_helpers import fake_shard, make_study

NOWHERE = "/no/such/dir"


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    study = make_study(tmp_path_factory.mktemp("m") / "s", "grid.learning_rate=[1e-3]", "grid.batch_size=[8]")
    from hpc_unet.manifest import read_manifest

    for exp_id in read_manifest(study)["exp_id"]:
        fake_shard(study, exp_id, 1)
    assert cli("collect", "--study", study.root) == 0
    return study


CASES = [  # (argv with {S} the real study and {T} a scratch dir, words the message must hold)
    (["analyze", "--study", "{S}", "--baseline", NOWHERE], ["no such study", NOWHERE]),
    (["report", "--study", "{S}", "--baseline", NOWHERE], ["no such study", NOWHERE]),
    (["manifest", "--grid", "/no/such.toml", "--study", "{T}/new"], ["/no/such.toml", "does not exist"]),
    (["demo", "--grid", "/no/such.toml", "--study", "{T}/demo"], ["/no/such.toml", "does not exist"]),
    (["train", "--study", "{S}", "--experiment", "unet-lr1e-03-bs8-s9"],
     ["no experiment 'unet-lr1e-03-bs8-s9'", "did you mean 'unet-lr1e-03-bs8-s0'"]),
    (["submit", "--study", "{S}", "--only", "unet-lr1e-03-bs8-s9", "--executor", "local"],
     ["unknown experiment 'unet-lr1e-03-bs8-s9'", "did you mean"]),
    (["status", "--study", "{S}/manifest.parquet"], ["is a file, not a study directory"]),
    (["bench", "overhead", "--demo-study", NOWHERE, "--no-tasks", "--no-checkpoint"], ["no such study", NOWHERE]),
    (["bench", "flops", "--measured", "/no/such.json"], ["/no/such.json", "No such file"]),
    (["predict", "--model", "/no/such.keras", "--images", "/no/such.tif", "--out", "{T}/p"],
     ["/no/such.keras does not exist"]),
] + [([verb, "--study", NOWHERE, *extra], ["no such study", NOWHERE, "check the path"]) for verb, extra in [
    ("submit", []), ("status", []), ("collect", []), ("analyze", []), ("report", []),
    ("followup", ["--out", "{T}/next.toml"]), ("train", ["--experiment", "x"]), ("data", []),
    ("predict", ["--best", "--images", "/no/such.tif", "--out", "{T}/p"]),
    ("evaluate", ["--images", "/no/such.tif", "--masks", "/no/such.tif"])]]


@pytest.mark.parametrize("argv,words", CASES, ids=[" ".join(argv[:2]) for argv, _ in CASES])
def test_a_bad_path_is_named(study, tmp_path, capsys, argv, words):
    if argv[0] == "data":
        argv = ["data", "prepare", *argv[1:]]
    args = [a.replace("{S}", str(study.root)).replace("{T}", str(tmp_path)) for a in argv]
    capsys.readouterr()
    assert cli(*args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for word in words:
        assert word in err, err
    assert "run `hpc-unet collect" not in err
