"""How status asks Slurm: the exact sacct/squeue command lines (the flags that keep fields from being cut),
the order sacct -> squeue and which ids each is asked, timeouts that also end a child holding the pipes,
and what an answer that is missing, failing or "Invalid job id" means. Fake clients on PATH record their
arguments and answer from files; no cluster."""

from __future__ import annotations

import shutil
import stat
import time
from pathlib import Path

import pytest

from hpc_unet.status import slurm_state
from hpc_unet.status.slurm_state import FINISHED, SACCT_FORMAT, TaskState, query_states

FAKE = """#!/bin/sh
printf '%s\\n' "$0 $*" >> "{log}"
name=${{0##*/}}
[ -f "{d}/$name.sleep" ] && {{ {sleep} 30 & {sleep} 30; }}
[ -f "{d}/$name.err" ] && {cat} "{d}/$name.err" >&2
[ -f "{d}/$name.out" ] && {cat} "{d}/$name.out"
exit $({cat} "{d}/$name.rc" 2>/dev/null || echo 0)
"""


class Fakes:
    def __init__(self, root: Path) -> None:
        self.dir = root
        self.log = root / "calls.log"

    def answer(self, name: str, out: str = "", rc: int = 0, err: str = "", hang: bool = False) -> None:
        (self.dir / f"{name}.out").write_text(out)
        (self.dir / f"{name}.rc").write_text(str(rc))
        (self.dir / f"{name}.err").write_text(err)
        if hang:
            (self.dir / f"{name}.sleep").write_text("")

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [[Path(line.split()[0]).name, *line.split()[1:]] for line in self.log.read_text().splitlines()]


@pytest.fixture
def fakes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fakes:
    f = Fakes(tmp_path)
    for name in ("sacct", "squeue"):
        script = tmp_path / name
        script.write_text(FAKE.format(log=f.log, d=tmp_path, cat=shutil.which("cat"), sleep=shutil.which("sleep")))
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(tmp_path))  # these two only, never a real Slurm client of this machine
    return f


def only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    """Leave only ``name`` of the two clients on PATH."""
    other = tmp_path / ("squeue" if name == "sacct" else "sacct")
    other.unlink()
    monkeypatch.setenv("PATH", str(tmp_path))


SACCT = ["sacct", "-j", "90,1234", f"--format={SACCT_FORMAT}", "--parsable2", "-n", "-X"]
# squeue's %R: the nodes of a running job, "(reason)" of a pending one; %N would print nothing for it
SQUEUE = ["squeue", "-h", "-r", "-t", "all", "-j", "{}", "-o", "%F|%K|%T|%R|%M"]


def test_sacct_first_then_squeue_for_what_it_does_not_know_or_calls_live(fakes):
    fakes.answer("sacct", "90_0|COMPLETED|vm1|00:10:00\n90_1|RUNNING|vm2|00:05:00\n"
                          "1234|CANCELLED by 0|None assigned|00:00:03\n90_[3-4]|PENDING|None assigned|00:00:00\n")
    fakes.answer("squeue", "90|1|RUNNING|vm2|5:01\n90|3|PENDING|(Priority)|0:00\n")
    states = query_states(["1234", "90_0", "90_1", "90_2", "90_3", "90_4", "90_0", ""])
    assert fakes.calls() == [SACCT, [*SQUEUE[:6], "90", *SQUEUE[7:]]]  # job ids sorted as numbers
    assert states == {
        "1234": TaskState("CANCELLED", "", 3.0, "sacct", "CANCELLED by 0"),
        "90_0": TaskState("COMPLETED", "vm1", 600.0, "sacct", "COMPLETED"),
        "90_1": TaskState("RUNNING", "vm2", 301.0, "squeue", "RUNNING"),  # the controller is the truth
        "90_2": TaskState(FINISHED, source="squeue"),  # squeue answered cleanly and does not list it
        "90_3": TaskState("PENDING", "", 0.0, "squeue", "PENDING", reason="Priority"),
        "90_4": TaskState(FINISHED, source="squeue"),
    }


def test_squeue_is_asked_only_for_ids_sacct_left_open(fakes):
    fakes.answer("sacct", "90_0|COMPLETED|vm1|00:10:00\n90_1|FAILED|vm1|00:00:10\n")
    assert {k: v.state for k, v in query_states(["90_0", "90_1"]).items()} == {"90_0": "COMPLETED", "90_1": "FAILED"}
    assert [c[0] for c in fakes.calls()] == ["sacct"]


def test_sacct_failing_falls_back_to_squeue(fakes):
    fakes.answer("sacct", "90_0|COMPLETED|vm1|00:10:00\n", rc=1, err="sacct: error: Slurm accounting storage is disabled")
    fakes.answer("squeue", "90|0|COMPLETING|vm1|10:00\n")
    states = query_states(["90_0"])
    assert states["90_0"] == TaskState("COMPLETING", "vm1", 600.0, "squeue", "COMPLETING")
    assert [c[0] for c in fakes.calls()] == ["sacct", "squeue"]


def test_an_unlisted_sacct_state_is_asked_of_squeue(fakes):
    fakes.answer("sacct", "90_0||vm1|00:10:00\n")  # an empty state: not an answer
    fakes.answer("squeue", "90|0|RUNNING|vm1|10:00\n")
    assert query_states(["90_0"])["90_0"].state == "RUNNING"


def test_invalid_job_id_means_every_id_left_the_queue(fakes, tmp_path, monkeypatch):
    only(tmp_path, monkeypatch, "squeue")
    fakes.answer("squeue", "90|0|RUNNING|vm1|0:01\n", rc=1,
                 err="slurm_load_jobs error: Invalid job id specified")
    states = query_states(["90_0", "91"])
    assert states == {"90_0": TaskState(FINISHED, source="squeue"), "91": TaskState(FINISHED, source="squeue")}


def test_a_failing_controller_leaves_ids_unknown(fakes, tmp_path, monkeypatch):
    only(tmp_path, monkeypatch, "squeue")
    fakes.answer("squeue", "", rc=1, err="slurm_load_jobs error: Unable to contact slurm controller")
    assert query_states(["90_0"]) == {"90_0": TaskState("", source="none")}


def test_an_unclean_squeue_answer_leaves_unlisted_ids_unknown(fakes, tmp_path, monkeypatch):
    only(tmp_path, monkeypatch, "squeue")
    fakes.answer("squeue", "90|0|RUNNING|vm1|0:01\n90_[1-3,5|PENDING\n")
    states = query_states(["90_0", "90_1"])
    assert states["90_0"].state == "RUNNING" and states["90_1"] == TaskState("", source="none")


def test_no_slurm_on_path_asks_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert query_states(["90_0"]) == {}
    assert query_states([]) == {}


def test_only_sacct_installed(fakes, tmp_path, monkeypatch):
    only(tmp_path, monkeypatch, "sacct")
    fakes.answer("sacct", "90_0|RUNNING|vm1|00:00:10\n")
    assert query_states(["90_0", "bad id"]) == {"90_0": TaskState("RUNNING", "vm1", 10.0, "sacct", "RUNNING"),
                                                "bad id": TaskState("", source="none")}


@pytest.mark.parametrize("client", ["sacct", "squeue"])
def test_a_hanging_client_and_its_child_are_killed_at_the_timeout(fakes, tmp_path, monkeypatch, client):
    """The fake starts a child that keeps the pipes open (like an ssh wrapper) and hangs; the query
    returns at its timeout, not when the child exits (30 s)."""
    only(tmp_path, monkeypatch, client)
    fakes.answer(client, "90|0|RUNNING|vm1|0:01\n", hang=True)
    t0 = time.monotonic()
    states = query_states(["90_0"], timeout=1.0)
    assert time.monotonic() - t0 < 15
    assert states == {"90_0": TaskState("", source="none")}


def test_run_returns_the_command_and_its_output(fakes):
    fakes.answer("squeue", "hello\n", rc=3, err="warn\n")
    proc = slurm_state._run(["squeue", "-x"], 10)
    assert (proc.args, proc.returncode, proc.stdout, proc.stderr) == (["squeue", "-x"], 3, "hello\n", "warn\n")
    assert slurm_state._run(["/nonexistent/squeue"], 10) is None


def test_squeue_is_asked_for_every_array_in_numeric_order(fakes, tmp_path, monkeypatch):
    only(tmp_path, monkeypatch, "squeue")
    fakes.answer("squeue", "9|0|RUNNING|vm1|0:01\n10|N/A|PENDING|(Resources)|0:00\n")
    states = query_states(["10", "9_0", "bad id"])
    assert fakes.calls() == [[*SQUEUE[:6], "9,10", *SQUEUE[7:]]]
    assert (states["9_0"].state, states["10"].state, states["bad id"].state) == ("RUNNING", "PENDING", "")


def test_ids_that_are_not_job_ids_are_asked_of_nobody(fakes):
    assert query_states(["bad id", "12_x"]) == {"bad id": TaskState("", source="none"),
                                                "12_x": TaskState("", source="none")}
    assert fakes.calls() == []


def test_a_bad_line_first_does_not_hide_the_good_ones():
    from hpc_unet.status.slurm_state import _parse_rows, parse_squeue

    found, clean = parse_squeue("garbage\n90|1|RUNNING|vm|0:01\n", {"90_1"})
    assert not clean and found["90_1"].state == "RUNNING"
    for bad in ("90|[1-|PENDING||0:00", "90|2|RUN NING|vm|0:01"):
        found, clean = parse_squeue(f"{bad}\n90|1|RUNNING|vm|0:01\n", {"90_1"})
        assert not clean and found["90_1"].state == "RUNNING"
    rows = _parse_rows("90_0|RUNNING\n90_1|RUNNING|vm|00:00:01\n", {"90_0", "90_1"}, "sacct", 2, 3)
    assert set(rows) == {"90_1"}  # a short row is skipped, the next one read
    rows = _parse_rows("90_0|RUNNING|vm\n", {"90_0"}, "sacct", 2, 3)
    assert rows == {}  # one column short of the elapsed time


def test_squeue_task_column_forms():
    from hpc_unet.status.slurm_state import parse_squeue

    found, clean = parse_squeue("90||RUNNING|vm|0:01\n91|3-5|PENDING||0:00\n", {"90", "91_3", "91_4", "91_5"})
    assert clean and found["90"].state == "RUNNING"
    assert {k: v.state for k, v in found.items() if k.startswith("91")} == dict.fromkeys(["91_3", "91_4", "91_5"],
                                                                                          "PENDING")


def test_odd_parts_blank_lines_and_unwanted_rows():
    from hpc_unet.status.slurm_state import _parse_rows, expand_row_id, parse_squeue

    assert expand_row_id("90_[x,3,y-z,5-6]") == ["90_3", "90_5", "90_6"]  # an odd part is passed over, not fatal
    found, clean = parse_squeue("\n  \n90|1|RUNNING|vm|0:01\n", {"90_1"})
    assert clean and found["90_1"].state == "RUNNING"  # blank lines are no answer and stop nothing
    rows = _parse_rows("90_1|RUNNING|(Priority)|00:00:01\n91_0|FAILED|vm|00:00:01\n", {"90_1"}, "sacct", 2, 3)
    assert set(rows) == {"90_1"} and rows["90_1"].node == ""  # only the ids asked about; "(...)" is no node
