"""Slurm options, the rendered sbatch script and the sacct/squeue parsing. No cluster needed: the
scheduler commands are replaced by small scripts on PATH."""

from __future__ import annotations

import argparse
import os
import shlex
import stat
import sys
import time
from pathlib import Path

import pytest

from hpc_unet.dispatch import slurm
from hpc_unet.errors import UserError
from hpc_unet.spec import load_spec
from hpc_unet.status import slurm_state

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
SMOKE_OPTS = {"partition": "a40", "gpu_type": "a40", "cpus_per_task": 1, "mem": "2G", "time": "00:20:00"}


def parse(argv: list[str], spec_slurm: dict | None = None) -> dict:
    parser = argparse.ArgumentParser()
    slurm.add_slurm_arguments(parser)
    return slurm.options_from_args(parser.parse_args(argv), spec_slurm or {})


def normalise(script: str, study: Path) -> str:
    """Replace the machine-specific parts (study path, Python executable) by placeholders."""
    script = script.replace(str(study), "<STUDY>")
    for python in {shlex.quote(sys.executable), sys.executable}:
        script = script.replace(python, "<PYTHON>")
    return script


# --- validation -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("opts", "fragment"), [
    ({"partition": "a40; rm -rf /"}, "partition"),
    ({"partition": "a40 gpu"}, "partition"),
    ({"partition": "$(id)"}, "partition"),
    ({"account": "proj`id`"}, "account"),
    ({"qos": "normal|high"}, "qos"),
    ({"gpu_type": "a40:2"}, "gpu_type"),
    ({"constraint": "a40 && id"}, "constraint"),
    *[({"time": t}, "time") for t in ("-5", -5, "0", "00:00:00", "1h", "4:00:00:00")],
    *[({"mem": m}, "mem") for m in ("16GiB", "0G", "-4G", "lots")],
    ({"cpus_per_task": 0}, "cpus_per_task"),
    ({"cpus_per_task": "8"}, "cpus_per_task"),
    ({"gpus_per_task": -1}, "gpus_per_task"),
    ({"array_parallelism": True}, "array_parallelism"),
    ({"max_array_size": 0}, "max_array_size"),
    *[({"setup": [line]}, "setup") for line in ("module load cuda\nrm -rf /", "echo \0", 3)],
    ({"sbatch": {"mail type": "END"}}, "mail type"),
    ({"sbatch": {"mail-type;id": "END"}}, "mail-type;id"),
    ({"sbatch": {"comment": "a; rm -rf /"}}, "sbatch.comment"),
    ({"sbatch": {"comment": "line\nline"}}, "sbatch.comment"),
    ({"sbatch": {"array": "0-3"}}, "array"),
    ({"sbatch": {"signal": "USR1@60"}}, "signal"),
    ({"sbatch": "mail-type=END"}, "sbatch"),
    ({"partiton": "a40"}, "did you mean 'partition'"),
])
def test_invalid_settings_are_rejected_with_the_setting_named(opts: dict, fragment: str) -> None:
    with pytest.raises(UserError) as err:
        slurm.validate_slurm_options(opts)
    message = str(err.value)
    assert fragment in message
    assert "\n" not in message.strip()


@pytest.mark.parametrize(("text", "minutes"), [
    ("90", 90), (90, 90), ("05:30", 6), ("04:00:00", 240), ("00:20:00", 20), ("00:00:01", 1),
    ("1-00:00:00", 1440), ("2-12", 3600), ("1-01:30", 1530),
])
def test_time_formats_become_whole_minutes(text: str | int, minutes: int) -> None:
    assert slurm.validate_slurm_options({"time": text})["time"] == minutes


def test_defaults_and_normalisation() -> None:
    opts = slurm.validate_slurm_options({"mem": "4000m", "sbatch": {"--mail_type": "END", "exclusive": True},
                                         "setup": "module load cuda/12"})
    assert opts["mem"] == "4000M"
    assert opts["sbatch"] == {"mail-type": "END", "exclusive": True}
    assert opts["setup"] == ["module load cuda/12"]
    assert opts["gpu_type"] == "a40" and opts["gpus_per_task"] is None
    assert opts["timeout_requeues"] == 3 and opts["time"] == 240
    assert opts == slurm.validate_slurm_options(opts)  # idempotent: records can be validated again
    # setup lines are shell by design; only line breaks are refused
    assert slurm.validate_slurm_options({"setup": ["source /opt/env/bin/activate && export A=$HOME"]})["setup"]
    assert slurm.validate_slurm_options({"constraint": "[rack1|rack2]&a40"})["constraint"] == "[rack1|rack2]&a40"
    assert slurm.validate_slurm_options({"partition": "a40,a100"})["partition"] == "a40,a100"


def test_spec_defaults_overridden_by_flags() -> None:
    spec = load_spec(REPO / "manifests" / "smoke.toml")
    assert parse([], spec.slurm) == slurm.validate_slurm_options(SMOKE_OPTS)
    opts = parse(["--partition", "urgent", "--mem", "8G", "--time", "1-00:00:00", "--cpus-per-task", "4",
                  "--sbatch", "mail-type=END", "--sbatch", "exclusive", "--setup", "module load cuda/12",
                  "--account", "proj1", "--qos", "high", "--constraint", "a40", "--array-parallelism", "6",
                  "--max-array-size", "10"],
                 {**spec.slurm, "sbatch": {"comment": "grid", "mail-type": "FAIL"}, "setup": ["module purge"]})
    assert opts["partition"] == "urgent" and opts["mem"] == "8G" and opts["time"] == 1440
    assert opts["cpus_per_task"] == 4 and opts["account"] == "proj1" and opts["qos"] == "high"
    assert opts["constraint"] == "a40" and opts["array_parallelism"] == 6 and opts["max_array_size"] == 10
    assert opts["sbatch"] == {"comment": "grid", "mail-type": "END", "exclusive": True}
    assert opts["setup"] == ["module purge", "module load cuda/12"]
    assert opts["gpu_type"] == "a40"  # from the spec, not overridden


def test_flag_errors_are_user_errors() -> None:
    with pytest.raises(UserError, match="partition"):
        parse(["--partition", "a40&&reboot"])
    with pytest.raises(UserError, match="--sbatch"):
        parse(["--sbatch", "=END"])
    with pytest.raises(UserError, match="time"):
        parse(["--time", "-1"])


# --- the sbatch script ------------------------------------------------------------------------------

def test_rendered_sbatch_for_the_smoke_study_matches_golden(tmp_path: Path) -> None:
    spec = load_spec(REPO / "manifests" / "smoke.toml")
    study = tmp_path / "smoke-study"
    script = normalise(slurm.render_sbatch(study / "jobs" / "slurm", parse([], spec.slurm), 36), study)
    golden = GOLDEN / "smoke-a40.sbatch"
    if os.environ.get("HPC_UNET_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(script)
    assert script == golden.read_text(), "rendered script changed; rerun with HPC_UNET_UPDATE_GOLDEN=1 if intended"


def test_gres_by_default_gpus_per_task_when_given(tmp_path: Path) -> None:
    typed = slurm.render_sbatch(tmp_path, parse(["--gpu-type", "a100"]), 4)
    assert "#SBATCH --gres=gpu:a100:1" in typed and "gpus-per-task" not in typed
    untyped = slurm.render_sbatch(tmp_path, parse(["--gpu-type", ""]), 4)
    assert "#SBATCH --gres=gpu:1" in untyped
    plain = slurm.render_sbatch(tmp_path, parse(["--gpus-per-task", "2"], {"gpu_type": "a40"}), 4)
    assert "#SBATCH --gpus-per-task=2" in plain and "#SBATCH --ntasks-per-node=1" in plain
    assert "--gres" not in plain


def test_rendered_script_carries_every_setting(tmp_path: Path) -> None:
    opts = parse(["--partition", "a40", "--account", "proj1", "--qos", "high", "--constraint", "a40&ib",
                  "--array-parallelism", "4", "--sbatch", "mail-type=END", "--sbatch", "comment=grid search",
                  "--setup", "module load cuda/12", "--setup", "source /opt/venv/bin/activate",
                  "--time", "90", "--mem", "16G"])
    script = slurm.render_sbatch(tmp_path / "jobs", opts, 10)
    for line in ["#SBATCH --array=0-9%4", "#SBATCH --account=proj1", "#SBATCH --qos=high",
                 "#SBATCH --constraint='a40&ib'", "#SBATCH --mail-type=END", "#SBATCH --comment='grid search'",
                 "#SBATCH --time=90", "#SBATCH --mem=16G", "#SBATCH --signal=USR2@90",
                 "module load cuda/12\nsource /opt/venv/bin/activate\n"]:
        assert line in script
    # the setup lines come before the command
    assert script.index("source /opt/venv") < script.index("submitit.core._submit")
    one = slurm.render_sbatch(tmp_path / "jobs", opts, 1)
    assert "--array" not in one and "%j_0_log.out" in one


def test_render_works_without_slurm_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert "#SBATCH --partition=a40" in slurm.render_sbatch(tmp_path, SMOKE_OPTS, 3)
    with pytest.raises(UserError, match="srun"):
        slurm.make_executor(tmp_path, SMOKE_OPTS)
    assert slurm.cluster_max_array_size() is None


def test_executor_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_bin(tmp_path, "srun", "exit 0")
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    ex = slurm.make_executor(tmp_path / "jobs", {**SMOKE_OPTS, "timeout_requeues": 5,
                                                 "sbatch": {"mail-type": "END"}})
    assert ex.max_num_timeout == 5
    assert ex.parameters["time"] == 20 and ex.parameters["gres"] == "gpu:a40:1"
    assert ex.parameters["additional_parameters"] == {"mail-type": "END", "requeue": True}


@pytest.mark.parametrize(("n", "size", "chunks"), [
    (36, 1001, [(0, 36)]), (36, 10, [(0, 10), (10, 20), (20, 30), (30, 36)]), (10, 10, [(0, 10)]),
    (11, 10, [(0, 10), (10, 11)]), (0, 5, []), (3, 1, [(0, 1), (1, 2), (2, 3)]),
])
def test_split_chunks(n: int, size: int, chunks: list) -> None:
    assert slurm.split_chunks(n, size) == chunks


def test_split_chunks_rejects_zero() -> None:
    with pytest.raises(UserError):
        slurm.split_chunks(5, 0)


def test_submit_array_of_nothing_submits_nothing() -> None:
    assert slurm.submit_array(object(), []) == []


# --- sacct / squeue parsing with fake commands ------------------------------------------------------

def fake_bin(folder: Path, name: str, body: str) -> Path:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def fake_slurm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Install fake sacct/squeue printing given text (or failing) and logging their arguments."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setenv("PATH", f"{bindir}:/usr/bin:/bin")

    def install(sacct: str | None, squeue: str | None, squeue_rc: int = 0, squeue_err: str = "",
                sacct_sleep: float = 0) -> Path:
        log = tmp_path / "calls.log"
        if sacct is None:
            fake_bin(bindir, "sacct", f'echo "sacct $*" >> {log}\n'
                     'echo "sacct: error: Problem talking to the database: Connection refused" >&2\nexit 1')
        else:
            (tmp_path / "sacct.out").write_text(sacct)
            fake_bin(bindir, "sacct", f'echo "sacct $*" >> {log}\nsleep {sacct_sleep}\ncat {tmp_path / "sacct.out"}')
        if squeue is None:
            fake_bin(bindir, "squeue", f'echo "squeue $*" >> {log}\n'
                     'echo "slurm_load_jobs error: Unable to contact slurm controller (connect failure)" >&2\nexit 1')
        else:
            (tmp_path / "squeue.out").write_text(squeue)
            fake_bin(bindir, "squeue", f'echo "squeue $*" >> {log}\ncat {tmp_path / "squeue.out"}\n'
                     f'echo "{squeue_err}" >&2\nexit {squeue_rc}')
        return log

    return install


SACCT = """\
100_0|COMPLETED|gpu01|00:12:03|2026-01-01T10:00:00|2026-01-01T10:12:03
100_1|CANCELLED by 0|gpu02|00:01:00|2026-01-01T10:00:00|2026-01-01T10:01:00
100_2|FAILED|gpu01|00:00:10|2026-01-01T10:00:00|2026-01-01T10:00:10
100_3|TIMEOUT|gpu03|04:00:08|2026-01-01T10:00:00|2026-01-01T14:00:08
100_4|NODE_FAIL|gpu04|1-02:03:04|2026-01-01T10:00:00|2026-01-02T12:03:04
100_5|OUT_OF_MEMORY|gpu01|00:05:00|2026-01-01T10:00:00|2026-01-01T10:05:00
100_6|RUNNING|gpu02|00:30:00|2026-01-01T10:00:00|Unknown
100_7|REQUEUED|gpu02|00:10:00|2026-01-01T10:00:00|2026-01-01T10:10:00
100_8|PREEMPTED|gpu03|00:10:00|2026-01-01T10:00:00|2026-01-01T10:10:00
100_[9-11,14%4]|PENDING|None assigned|00:00:00|Unknown|Unknown
200|COMPLETED|gpu01|00:00:05|2026-01-01T10:00:00|2026-01-01T10:00:05
"""


# squeue -r: one line per array task (%F|%K|%T|%N|%M), never a range that %i would cut at 30 characters
SQUEUE_LIVE = """\
100|6|RUNNING|gpu02|30:05
100|7|PENDING||0:00
100|8|PENDING||0:00
100|9|PENDING||0:00
100|10|PENDING||0:00
100|11|PENDING||0:00
100|14|PENDING||0:00
"""


def test_sacct_states(fake_slurm) -> None:
    log = fake_slurm(SACCT, SQUEUE_LIVE)
    ids = [f"100_{i}" for i in range(15)] + ["200"]
    states = slurm_state.query_states(ids)
    got = {k: v.state for k, v in states.items()}
    assert got["100_0"] == "COMPLETED" and got["100_1"] == "CANCELLED" and got["100_2"] == "FAILED"
    assert got["100_3"] == "TIMEOUT" and got["100_4"] == "NODE_FAIL" and got["100_5"] == "OUT_OF_MEMORY"
    assert got["200"] == "COMPLETED"
    assert states["100_1"].raw == "CANCELLED by 0"
    assert states["100_4"].elapsed_seconds == 93784 and states["100_4"].node == "gpu04"
    final = ("100_0", "100_1", "100_2", "100_3", "100_4", "100_5", "200")
    assert all(states[k].source == "sacct" for k in final)
    # live states are confirmed with the controller (sacct lags): requeued/preempted tasks wait again
    assert got["100_6"] == "RUNNING" and got["100_7"] == "PENDING" and got["100_8"] == "PENDING"
    assert states["100_6"].elapsed_seconds == 1805 and states["100_6"].source == "squeue"
    assert [got[f"100_{i}"] for i in (9, 10, 11, 14)] == ["PENDING"] * 4
    # 100_12/13 are in neither answer: squeue no longer lists them
    assert got["100_12"] == got["100_13"] == "FINISHED" and states["100_12"].source == "squeue"
    calls = log.read_text().splitlines()
    assert calls[0].startswith("sacct -j 100,200 --format=JobID,State,NodeList,Elapsed,Start,End --parsable2 -n -X")
    assert calls[1].startswith("squeue -h -r -t all -j 100 ") and len(calls) == 2


def test_sacct_with_only_finished_jobs_needs_no_squeue(fake_slurm) -> None:
    log = fake_slurm(SACCT, None)
    states = slurm_state.query_states(["100_0", "100_1", "200"])
    assert [s.state for s in states.values()] == ["COMPLETED", "CANCELLED", "COMPLETED"]
    assert len(log.read_text().splitlines()) == 1


def test_stale_sacct_is_corrected_by_squeue(fake_slurm) -> None:
    # after a slurmdbd outage sacct still says RUNNING for a job the controller has cancelled
    fake_slurm("100_6|RUNNING|gpu02|00:30:00|2026-01-01T10:00:00|Unknown\n", "100|6|CANCELLED|gpu02|31:00\n")
    assert slurm_state.query_states(["100_6"])["100_6"].state == "CANCELLED"
    # ... and when the controller does not answer either, sacct's word stands
    fake_slurm("100_6|RUNNING|gpu02|00:30:00|2026-01-01T10:00:00|Unknown\n", None)
    assert slurm_state.query_states(["100_6"])["100_6"] == slurm_state.TaskState(
        "RUNNING", node="gpu02", elapsed_seconds=1800, source="sacct", raw="RUNNING")


def test_squeue_fallback_when_sacct_fails(fake_slurm) -> None:
    fake_slurm(None, "300|1|RUNNING|gpu07|1:02:03\n300|2|PENDING||0:00\n300|3|PENDING||0:00\n300|0|COMPLETING|gpu07|5:00\n")
    states = slurm_state.query_states(["300_0", "300_1", "300_2", "300_3", "300_4"])
    assert {k: v.state for k, v in states.items()} == {
        "300_0": "COMPLETING", "300_1": "RUNNING", "300_2": "PENDING", "300_3": "PENDING", "300_4": "FINISHED"}
    assert states["300_1"].elapsed_seconds == 3723 and states["300_1"].node == "gpu07"
    assert states["300_0"].elapsed_seconds == 300
    assert {s.source for s in states.values()} == {"squeue"}


def test_squeue_invalid_job_id_means_left_the_queue(fake_slurm) -> None:
    fake_slurm(None, "", squeue_rc=1, squeue_err="slurm_load_jobs error: Invalid job id specified")
    states = slurm_state.query_states(["400_0", "400"])
    assert {v.state for v in states.values()} == {"FINISHED"}


def test_nothing_answers(fake_slurm) -> None:
    fake_slurm(None, None)
    states = slurm_state.query_states(["500_0"])
    assert states == {"500_0": slurm_state.TaskState(state="", source="none")}


def test_sacct_timeout_does_not_hang(fake_slurm) -> None:
    fake_slurm(SACCT, "100|0|RUNNING|gpu01|0:10\n", sacct_sleep=30)
    t0 = time.monotonic()
    states = slurm_state.query_states(["100_0"], timeout=1)
    assert time.monotonic() - t0 < 10
    assert states["100_0"].state == "RUNNING" and states["100_0"].source == "squeue"


def test_no_slurm_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert slurm_state.query_states(["1_0"]) == {}
    assert slurm_state.query_states([]) == {}


def test_parsers() -> None:
    assert slurm_state.parse_elapsed("00:00:05") == 5
    assert slurm_state.parse_elapsed("2-00:00:00") == 172800
    assert slurm_state.parse_elapsed("INVALID") is None
    assert slurm_state.expand_row_id("7_[0-2]") == ["7_0", "7_1", "7_2"]
    assert slurm_state.expand_row_id("7") == ["7"]
    assert slurm_state.base_state("CANCELLED by 1000") == "CANCELLED"
