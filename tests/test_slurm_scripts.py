"""What goes into a generated job script (no cluster needed): every path and value is refused (control
characters) or quoted so that ``bash -n`` passes and nothing runs; setup lines are complete commands;
the step wrapper hands an early USR2 to submitit; the local executor keeps the user's GPUs; the site
profile and where each setting came from; the analysis job's script.

The fuzz test draws values from a seeded generator (pieces of shell syntax, quotes, control characters,
command substitutions) for every field that reaches a script, and checks each script with ``bash -n``
(an independent parser) and, for a sample, by running it with a fake ``srun`` that records its argv: the
study path must come back byte for byte, and no ``pwned`` file may appear.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, cli

from hpc_unet.dispatch import analyze_job, jobscript, slurm
from hpc_unet.dispatch.submit import local_gpus, slot_env
from hpc_unet.errors import UserError
from hpc_unet.study import Study

OPTS = {"partition": "a40", "gpu_type": "a40", "cpus_per_task": 1, "mem": "2G", "time": "00:20:00"}
NEWLINE_STUDY = "studies/nl\ntouch pwned\n#"


def bash_n(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)


def parse(argv: list[str], spec_slurm: dict | None = None, environ: dict | None = None) -> tuple[dict, dict]:
    parser = argparse.ArgumentParser()
    slurm.add_slurm_arguments(parser)
    parser.add_argument("--then-analyze", action="store_true")
    return slurm.options_with_sources(parser.parse_args(argv), spec_slurm or {}, environ=environ or {"HOME": "/nonexistent"})


# --- paths with control characters ------------------------------------------------------------------

def test_a_newline_in_the_study_path_is_refused_by_manifest_and_submit(tmp_path: Path, capsys, monkeypatch) -> None:
    """The issue's case: S=$'studies/nl\\ntouch pwned\\n#' reached the #SBATCH lines, and bash ran `touch pwned`."""
    monkeypatch.chdir(tmp_path)
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", NEWLINE_STUDY, "--quiet") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "control character '\\n'" in err, err
    assert not (tmp_path / "studies").exists() and not (tmp_path / "pwned").exists()
    # a study renamed afterwards (or reached through such a name): submit --dry-run refuses it too
    good = tmp_path / "good"
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", good, "--quiet") == 0
    capsys.readouterr()
    bad = tmp_path / NEWLINE_STUDY
    bad.parent.mkdir(parents=True)
    good.rename(bad)
    assert cli("submit", "--study", bad, "--dry-run") == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1, captured
    assert "control character" in captured.err
    with pytest.raises(UserError, match="control character"):
        slurm.render_sbatch(bad / "jobs" / "slurm", OPTS, 4)
    assert not (tmp_path / "pwned").exists()


# --- setup lines ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "words"), [
    ("echo 'unterminated", "matching"),
    ("cat <<EOF", "here-document"),
    ("module load cuda \\", "backslash"),
    ("module load cuda |", "syntax error"),
    ("if true; then", "syntax error"),
    ("echo $(date", "matching"),
    ("echo ok\ttab", "control character"),
])
def test_a_setup_line_that_is_not_one_complete_command_is_refused(line: str, words: str) -> None:
    with pytest.raises(UserError) as err:
        slurm.validate_slurm_options({"setup": ["module purge", line]})
    assert words in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.parametrize("line", [
    "module load cuda/12.4", "source /opt/env/bin/activate && export A=$HOME", "echo a \\\\",
    "export X='a b'; echo \"$X\"", "[ -f ~/.bashrc ] && . ~/.bashrc || true", "cat <<< here-string",
])
def test_complete_setup_lines_pass_and_the_srun_line_stays_a_command(line: str, tmp_path: Path) -> None:
    script = slurm.render_sbatch(tmp_path, slurm.validate_slurm_options({**OPTS, "setup": [line]}), 3)
    assert bash_n(script).returncode == 0
    # the setup line is its own line, and the srun line after it is untouched
    lines = script.splitlines()
    assert lines[lines.index(line) + 1:][-1].startswith("srun ")


def test_setup_with_the_local_executor_is_refused(tmp_path: Path, capsys) -> None:
    study = tmp_path / "s"
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", study, "--quiet") == 0
    capsys.readouterr()
    for flag in (["--setup", "module load cuda"], ["--then-analyze"]):
        assert cli("submit", "--study", study, "--executor", "local", *flag) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{flag[0]} applies to Slurm jobs" in err, err
    assert not (study / "submissions").exists()


# --- time limits -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "minutes"), [("365-00:00:00", 525600), (525600, 525600), ("525600", 525600),
                                                ("8760:00:00", 525600)])
def test_a_year_is_the_longest_time_limit(value: str | int, minutes: int) -> None:
    assert slurm.validate_slurm_options({"time": value})["time"] == minutes


@pytest.mark.parametrize("value", ["365-00:01:00", 525601, "525601", "99999999999999999999", "8760:00:01"])
def test_a_time_limit_over_a_year_is_refused(value: str | int) -> None:
    with pytest.raises(UserError, match="365 days"):
        slurm.validate_slurm_options({"time": value})


def test_time_flag_over_a_year_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    study = tmp_path / "s"
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", study, "--quiet") == 0
    capsys.readouterr()
    assert cli("submit", "--study", study, "--dry-run", "--time", "99999999999999999999") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "365 days" in err


# --- the fuzz ---------------------------------------------------------------------------------------

PIECES = ["a", "Z", "0", "9", " ", "'", '"', "$", "`", ";", "&", "|", "\\", "#", "%", "(", ")", "{", "}", "<",
          ">", "*", "?", "!", "~", "=", ",", ":", "-", "_", ".", "+", "@", "[", "]", "\n", "\t", "\r", "\x00",
          "\x1b", "\x7f", "é", "✓", "$(touch pwned)", "`touch pwned`", "; touch pwned", "\ntouch pwned\n#",
          "'; touch pwned; '", "${IFS}", "$HOME", "<<EOF", "EOF", "&& touch pwned", "%A_%a", "gpu:a40:1"]
FIELDS = ["study", "study", "study", "partition", "account", "qos", "gpu_type", "constraint", "mem", "time",
          "sbatch.comment", "sbatch.mail-user", "sbatch-key", "setup"]
N_FUZZ = 1200


def fuzz_value(rng: random.Random) -> str:
    return "".join(rng.choice(PIECES) for _ in range(rng.randint(1, 6)))


def fuzz_case(rng: random.Random, base: Path) -> tuple[str, str, Path, dict]:
    field, value = rng.choice(FIELDS), fuzz_value(rng)
    folder, opts = base / "plain" / "jobs" / "slurm", dict(OPTS)
    if field == "study":
        value = value.replace("/", "_")[:80]
        value = "x" + value if value in (".", "..") else value
        folder = base / value / "jobs" / "slurm"
    elif field.startswith("sbatch."):
        opts["sbatch"] = {field.split(".", 1)[1]: value}
    elif field == "sbatch-key":
        opts["sbatch"] = {value: "1"}
    elif field == "setup":
        opts["setup"] = [value]
    else:
        opts[field] = value
    return field, value, folder, opts


def test_fuzzed_paths_and_values_are_refused_or_quoted(tmp_path: Path) -> None:
    """>= 1,000 seeded cases: each is refused with one line, or its script passes `bash -n`; a value with a
    control character is never accepted (setup lines: shell by design, but still complete commands)."""
    rng = random.Random(20)
    scripts: list[tuple[str, str, Path, str]] = []
    refused = 0
    for _ in range(N_FUZZ):
        field, value, folder, opts = fuzz_case(rng, tmp_path / "fuzz")
        try:
            script = slurm.render_sbatch(folder, opts, rng.choice([1, 7]))
        except UserError as exc:
            refused += 1
            assert "\n" not in str(exc), (field, value, str(exc))
            continue
        assert not jobscript.CONTROL_RE.search(value), (field, value)
        scripts.append((field, value, folder, script))
    assert len(scripts) + refused == N_FUZZ >= 1000
    # bash -n on every accepted script, in one shell (fast)
    folder = tmp_path / "scripts"
    folder.mkdir()
    for i, (_, _, _, script) in enumerate(scripts):
        (folder / f"{i}.sh").write_text(script)
    check = subprocess.run(["bash", "-c", 'for f in "$1"/*.sh; do bash -n "$f" 2>/dev/null || echo "$f"; done', "-",
                            str(folder)], capture_output=True, text=True, timeout=300)
    assert check.stdout == "", [scripts[int(Path(f).stem)][:2] for f in check.stdout.split()]
    # run a sample of the scripts without setup lines against a fake srun: nothing runs but srun, and the
    # study path and the wrapper come back as srun's arguments byte for byte
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text('#!/bin/bash\nprintf "%s\\0" "$@" > "$SRUN_ARGS"\n')
    (fake / "srun").chmod(0o755)
    work = tmp_path / "work"
    work.mkdir()
    sample = [s for s in scripts if s[0] != "setup"]
    studies = [s for s in sample if s[0] == "study"]
    sample = studies[:60] + [s for s in sample if s[0] != "study"][:40]
    for i, (field, value, jobs, script) in enumerate(sample):
        out = tmp_path / f"srun{i}.args"
        proc = subprocess.run(["bash", "-c", script], cwd=work, capture_output=True, timeout=60,
                              env={"PATH": f"{fake}:/usr/bin:/bin", "SRUN_ARGS": str(out)})
        assert proc.returncode == 0, (field, value, proc.stderr)
        argv = out.read_bytes().decode().split("\0")[:-1]
        assert argv[-1] == str(jobs), (field, value, argv)
        assert argv[argv.index("-c") + 1] == jobscript.STEP_PROGRAM and sys.executable in argv
    assert not any(work.iterdir()) and not (tmp_path / "pwned").exists()
    print(f"fuzz: {N_FUZZ} cases, {refused} refused, {len(scripts)} rendered and bash -n clean, "
          f"{len(sample)} run against a fake srun ({len(studies[:60])} study paths)")


# --- the step wrapper: an early USR2 ---------------------------------------------------------------

SLOW_TASK = """
import os, signal, sys, time
time.sleep(float(sys.argv[1]))          # Python starting and unpickling: USR2 must not kill it now
handled = []
signal.signal(signal.SIGUSR2, lambda s, f: handled.append(s))   # submitit installs its handler here
from hpc_unet.dispatch.task import replay_early_usr2
replayed = replay_early_usr2()
open(sys.argv[2], "w").close()          # handler installed and replay done
time.sleep(1.0)
print(f"handled={len(handled)} replayed={replayed}", flush=True)
"""


def run_step(tmp_path: Path, wrapped: bool, delay: float, signal_at: float | None,
             after_ready: bool = False) -> subprocess.CompletedProcess:
    """Run the fake task as srun would (its own process group, signalled as a whole like a job step):
    USR2 ``signal_at`` seconds after the start, or once the handler is installed (``after_ready``)."""
    ready = tmp_path / f"ready-{time.monotonic_ns()}"
    cmd = [sys.executable, "-c", SLOW_TASK, str(delay), str(ready)]
    if wrapped:
        cmd = ["/bin/bash", "-c", jobscript.STEP_PROGRAM, "hpc-unet-step", *cmd]
    env = {**os.environ, "TMPDIR": str(tmp_path), "SLURM_JOB_ID": "77"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    if after_ready:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGUSR2)
    elif signal_at is not None:
        time.sleep(signal_at)
        os.killpg(proc.pid, signal.SIGUSR2)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_usr2_before_python_handles_it_is_replayed_once(tmp_path: Path) -> None:
    bare = run_step(tmp_path, wrapped=False, delay=1.5, signal_at=0.5)
    assert bare.returncode == -signal.SIGUSR2  # what happened before: the task died of the signal (exit 12)
    early = run_step(tmp_path, wrapped=True, delay=1.5, signal_at=0.5)
    assert early.returncode == 0 and early.stdout.strip() == "handled=1 replayed=True", early
    assert "USR2 arrived before Python could handle it" in early.stderr
    late = run_step(tmp_path, wrapped=True, delay=0.0, signal_at=None, after_ready=True)  # handled: no replay
    assert late.returncode == 0 and late.stdout.strip() == "handled=1 replayed=False", late
    none = run_step(tmp_path, wrapped=True, delay=0.2, signal_at=None)
    assert none.returncode == 0 and none.stdout.strip() == "handled=0 replayed=False", none
    assert not list(tmp_path.glob("hpc-unet-usr2.*"))  # the wrapper removes its flag file


def test_step_wrapper_passes_the_exit_status_and_survives_sigterm(tmp_path: Path) -> None:
    code = subprocess.run(["/bin/bash", "-c", jobscript.STEP_PROGRAM, "hpc-unet-step", sys.executable, "-c",
                           "import sys; sys.exit(3)"], timeout=60)
    assert code.returncode == 3
    # SIGTERM to the whole step (a requeue or cancel): the wrapper waits for Python, which decides
    prog = ("import signal, time; signal.signal(signal.SIGTERM, lambda *a: None); print('ready', flush=True); "
            "time.sleep(1.5); print('done')")
    proc = subprocess.Popen(["/bin/bash", "-c", jobscript.STEP_PROGRAM, "hpc-unet-step", sys.executable, "-c", prog],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "ready"  # Python's handler is in place (no fixed sleep on a busy machine)
    os.killpg(proc.pid, signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and out.strip() == "done"


# --- local executor GPUs (mocked: there is no GPU on this machine) ------------------------------------

def fake_nvidia_smi(folder: Path, n: int) -> str:
    path = folder / "nvidia-smi"
    lines = "\\n".join(f"GPU {i}: NVIDIA A40 (UUID: GPU-{i:04d})" for i in range(n))
    path.write_text(f'#!/bin/sh\nprintf "{lines}\\n"\n')
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_local_gpus_from_the_environment_or_nvidia_smi(tmp_path: Path) -> None:
    """A mock: CUDA_VISIBLE_DEVICES values and a fake nvidia-smi stand in for GPUs this machine lacks."""
    assert local_gpus({"CUDA_VISIBLE_DEVICES": "2,3"}) == ["2", "3"]
    assert local_gpus({"CUDA_VISIBLE_DEVICES": "GPU-ab12,GPU-cd34"}) == ["GPU-ab12", "GPU-cd34"]
    assert local_gpus({"CUDA_VISIBLE_DEVICES": ""}) == [] and local_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert local_gpus({}, nvidia_smi=fake_nvidia_smi(tmp_path, 3)) == ["0", "1", "2"]
    assert local_gpus({}, nvidia_smi=str(tmp_path / "missing")) is None


@pytest.mark.parametrize(("gpus", "slots", "expected"), [
    (["0", "1"], 1, ["0,1"]),                      # one slot keeps every GPU the user has
    (["0", "1"], 2, ["0", "1"]),                   # one GPU per slot
    (["4", "6"], 3, ["4", "6", "4"]),              # more slots than GPUs: round robin
    (["0", "1", "2", "3"], 2, ["0", "1"]),
    ([], 2, ["", ""]),                             # the user has none: none
    (None, 2, [None, None]),                       # unknown: unset, as in the user's shell
])
def test_one_gpu_per_parallel_slot(gpus: list | None, slots: int, expected: list) -> None:
    assert [slot_env(gpus, i, slots)["CUDA_VISIBLE_DEVICES"] for i in range(slots)] == expected


def test_local_submit_hands_each_slot_its_gpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real run_local with 3 experiments at --max-parallel 2 and CUDA_VISIBLE_DEVICES=3,5 (a mock: no
    GPU here): the task pickles carry GPU 3 and GPU 5 (submitit alone gives both CUDA_VISIBLE_DEVICES=""),
    and a task started when a slot frees gets that slot's GPU. Stopped before training
    (an interrupt after the first tasks start, as Ctrl-C would); the task applies its env before TensorFlow."""
    import cloudpickle

    from hpc_unet.dispatch.submit import plan, run_local
    from hpc_unet.dispatch.task import apply_env

    study = tmp_path / "s"
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", study, "--quiet",
               "--set", "grid.learning_rate=[1e-3]", "--set", "grid.batch_size=[8]") == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    calls = []

    def stop() -> None:
        calls.append(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_local(Study.at(study), plan(Study.at(study)), executor="local", max_parallel=2, on_update=stop)
    tasks = [cloudpickle.loads(p.read_bytes()).function for p in (study / "jobs" / "local").rglob("*_submitted.pkl")]
    assert sorted(t.env["CUDA_VISIBLE_DEVICES"] for t in tasks) == ["3", "5"] and calls == [1]
    assert slot_env(["3", "5"], 0, 2) == {"CUDA_VISIBLE_DEVICES": "3"}  # a freed slot 0 gets GPU 3 again
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    apply_env({"CUDA_VISIBLE_DEVICES": "5"})
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
    apply_env({"CUDA_VISIBLE_DEVICES": None})
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


# --- evaluate --slurm --dry-run ---------------------------------------------------------------------

def test_evaluate_dry_run_prints_the_job_command_quoted(tmp_path: Path, capsys) -> None:
    study = tmp_path / "s"
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", study, "--quiet") == 0
    out_dir = tmp_path / "out dir $(touch pwned) 'q'"
    capsys.readouterr()
    assert cli("evaluate", "--study", study, "--slurm", "--dry-run", "--out", out_dir, "--partition", "a40") == 0
    (line,) = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("# the job runs: ")]
    argv = shlex.split(line.removeprefix("# the job runs: hpc-unet evaluate "))
    assert argv[argv.index("--out") + 1] == str(out_dir)
    assert argv[argv.index("--study") + 1] == str(study)


# --- the site profile -------------------------------------------------------------------------------

def write_site(tmp_path: Path, text: str) -> dict:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return {"HPC_UNET_SITE": str(path)}


def test_site_profile_under_the_spec_under_the_flags(tmp_path: Path) -> None:
    env = write_site(tmp_path, '[slurm]\npartition = "site-p"\naccount = "lab"\nqos = "normal"\n'
                     'gpu_type = "a100"\ntime = "08:00:00"\nsetup = ["module load site"]\n'
                     'sbatch = { mail-type = "FAIL", comment = "site" }\n')
    opts, sources = parse(["--qos", "high", "--setup", "echo flag"],
                          {"partition": "spec-p", "setup": ["module load spec"], "sbatch": {"comment": "spec"}},
                          environ=env)
    site = f"site profile {env['HPC_UNET_SITE']}"
    assert (opts["partition"], sources["partition"]) == ("spec-p", "spec [slurm]")
    assert (opts["account"], sources["account"]) == ("lab", site)
    assert (opts["qos"], sources["qos"]) == ("high", "--qos")
    assert (opts["gpu_type"], sources["gpu_type"]) == ("a100", site)
    assert (opts["time"], sources["time"]) == (480, site)
    assert (opts["mem"], sources["mem"]) == ("64G", "default")
    assert opts["setup"] == ["module load site", "module load spec", "echo flag"]
    assert sources["setup"] == f"{site} + spec [slurm] + --setup"
    assert opts["sbatch"] == {"mail-type": "FAIL", "comment": "spec"}
    assert sources["sbatch.mail-type"] == site and sources["sbatch.comment"] == "spec [slurm]"
    lines = slurm.describe_sources(opts, sources)
    assert f'# account = "lab"  <- {site}' in lines and '# qos = "high"  <- --qos' in lines
    assert '# constraint = (not set: the cluster\'s default)  <- default' in lines


def test_without_a_site_profile_nothing_changes(tmp_path: Path) -> None:
    assert parse([], {"partition": "a40"}, environ={"HOME": str(tmp_path)})[0] == \
        slurm.validate_slurm_options({"partition": "a40"})
    assert parse([], {}, environ={"HPC_UNET_SITE": ""})[0] == slurm.validate_slurm_options({})
    # the default location: $XDG_CONFIG_HOME/hpc-unet/site.toml, else ~/.config/hpc-unet/site.toml
    (tmp_path / ".config" / "hpc-unet").mkdir(parents=True)
    (tmp_path / ".config" / "hpc-unet" / "site.toml").write_text('[slurm]\naccount = "home"\n')
    assert parse([], {}, environ={"HOME": str(tmp_path)})[0]["account"] == "home"
    assert parse([], {}, environ={"HOME": "/x", "XDG_CONFIG_HOME": str(tmp_path / ".config")})[0]["account"] == "home"


@pytest.mark.parametrize(("text", "words"), [
    ('[slurm]\npartiton = "a40"\n', "did you mean 'partition'"),
    ('[slurm]\npartition = "a40; reboot"\n', "partition"),
    ('[slurm]\nsetup = ["echo \'x"]\n', "setup line"),
    ('[slurm]\ntime = "999-00:00:00"\n', "365 days"),
    ("[slurm\n", "not valid TOML"),
    ('[train]\nepochs = 3\n', "unknown table [train]"),
])
def test_a_bad_site_profile_is_one_line_naming_the_file(tmp_path: Path, text: str, words: str) -> None:
    env = write_site(tmp_path, text)
    with pytest.raises(UserError) as err:
        parse([], {}, environ=env)
    assert env["HPC_UNET_SITE"] in str(err.value) and words in str(err.value) and "\n" not in str(err.value)


def test_a_named_site_profile_that_is_missing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="does not exist"):
        parse([], {}, environ={"HPC_UNET_SITE": str(tmp_path / "nope.toml")})


def test_submit_dry_run_says_where_each_value_came_from(tmp_path: Path, capsys, monkeypatch) -> None:
    env = write_site(tmp_path, '[slurm]\naccount = "lab"\nsetup = ["module load cuda/12.4"]\n')
    monkeypatch.setenv("HPC_UNET_SITE", env["HPC_UNET_SITE"])
    study = tmp_path / "s"
    assert cli("manifest", "--grid", REPO / "manifests" / "smoke.toml", "--study", study, "--quiet") == 0
    capsys.readouterr()
    assert cli("submit", "--study", study, "--dry-run", "--mem", "3G", "--then-analyze") == 0
    out = capsys.readouterr().out
    assert "#SBATCH --account=lab" in out and "module load cuda/12.4\n" in out
    assert f'# account = "lab"  <- site profile {env["HPC_UNET_SITE"]}' in out
    assert '# mem = "3G"  <- --mem' in out and '# partition = "a40"  <- spec [slurm]' in out
    assert "# then_analyze = true  <- --then-analyze" in out and "--dependency=afterany" in out


# --- the analysis job's script ---------------------------------------------------------------------

def test_analysis_job_script_waits_for_every_array_and_asks_for_no_gpu(tmp_path: Path) -> None:
    study = Study.at(tmp_path / "a b $(touch pwned)")
    opts = slurm.validate_slurm_options({**OPTS, "account": "lab", "setup": ["module load x"]})
    script = analyze_job.render_script(study, opts, ["101", "102", "103"])
    assert bash_n(script).returncode == 0
    assert "#SBATCH --dependency=afterany:101:102:103" in script.splitlines()
    assert "gres" not in script and "gpu" not in script and "#SBATCH --account=lab" in script
    lines = script.splitlines()
    assert lines.index("module load x") < lines.index("set -e")
    commands = [shlex.split(ln) for ln in lines if ln.startswith(shlex.quote(sys.executable))]
    assert [c[3:] for c in commands] == [["collect", "--study", str(study.root)], ["analyze", "--study", str(study.root)]]
    with pytest.raises(UserError):
        analyze_job.render_script(study, opts, ["101; touch pwned"])
