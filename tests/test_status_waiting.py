"""Why queued tasks wait: squeue's "(reason)" parsed, routine reasons left out, the others grouped with
advice, and shown by `status` (table, --summary, --json) with fake Slurm clients on PATH. The real
cluster's wording for a drained node is checked in tests/test_slurm_status_waiting.py."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from conftest import cli
from test_slurm_parsing import on_path, slurm_study  # noqa: F401 (on_path: the fixture, requested by name)

from hpc_unet.dispatch.slurm import NO_NODE_NOW, preflight
from hpc_unet.errors import UserError
from hpc_unet.status.slurm_state import parse_squeue
from hpc_unet.status.waiting import advice, waiting, waiting_lines

DRAINED = "Nodes required for job are DOWN, DRAINED or reserved for jobs in higher priority partitions"


def test_squeue_reason_is_read_from_the_parenthesised_node_column() -> None:
    text = (f"90|0|RUNNING|vm|1:05\n90|1|PENDING|({DRAINED})|0:00\n90|2|PENDING|(JobHeldUser)|0:00\n"
            "90|3|PENDING|(null)|0:00\n90|4|PENDING||0:00\n90|5|FAILED|(NonZeroExitCode)|0:02\n")
    found, clean = parse_squeue(text, {f"90_{i}" for i in range(6)})
    assert clean
    assert [(found[f"90_{i}"].reason, found[f"90_{i}"].node) for i in range(6)] == [
        ("", "vm"), (DRAINED, ""), ("JobHeldUser", ""), ("", ""), ("", ""), ("NonZeroExitCode", "")]


def row(i: int, reason: str, state: str = "queued") -> dict:
    return {"exp_id": f"e{i}", "job_id": f"90_{i}", "state": state, "slurm_reason": reason}


@pytest.mark.parametrize("reason", ["", "None", "Priority", "Resources", "JobArrayTaskLimit", "BeginTime",
                                    "Dependency", "Licenses"])
def test_routine_reasons_are_not_shown(reason: str) -> None:
    assert waiting([row(0, reason), row(1, reason)]) == []


def test_reasons_are_grouped_most_tasks_first_and_only_for_queued_rows() -> None:
    """Ties in count go by the reason's name; a running task's reason is ignored."""
    rows = [row(7, "JobHeldUser"), row(1, DRAINED), row(2, DRAINED), row(3, "Priority"),
            row(4, DRAINED, state="running"), row(0, "AssocGrpGRES"), row(6, "JobHeldUser")]
    got = waiting(rows)
    assert [(w["reason"], w["count"], w["jobs"]) for w in got] == [
        ("JobHeldUser", 2, ["90_7", "90_6"]), (DRAINED, 2, ["90_1", "90_2"]), ("AssocGrpGRES", 1, ["90_0"])]
    assert waiting_lines(got)[0] == "2 queued wait on Slurm: JobHeldUser -- held: `scontrol release 90_7 90_6` lets " \
                                    "them start"
    no_job = {"exp_id": "e9", "state": "queued", "slurm_reason": "JobHeldAdmin"}  # named by its experiment
    assert [w["jobs"] for w in waiting([no_job])] == [["e9"]]


@pytest.mark.parametrize(("reason", "words"), [
    (DRAINED, "their nodes are down, drained, or held by a higher-priority partition: `sinfo -R` lists down and "
              "drained nodes with why (they start once an administrator returns one to service); if none is "
              "listed, they start when the higher-priority jobs end"),
    ("ReqNodeNotAvail, UnavailableNodes:gpu01", "a node they need is down or drained"),
    ("NodeDown", "a node they need is down or drained"),
    ("launch failed requeued held", "failed launch: check the node (`sinfo -R`), then `scontrol release 9_1 9_2 9_3 ...`"),
    ("JobHeldUser", "held: `scontrol release 9_1 9_2 9_3 ...` lets them start"),
    ("JobHeldAdmin", "held by an administrator"),
    ("DependencyNeverSatisfied", "a dependency can never be met: `scancel 9_1 9_2 9_3 ...`"),
    ("BadConstraints", "no node has what they ask for"),
    ("AssociationJobLimit", "an account or QOS limit"),
    ("QOSMaxWallDurationPerJobLimit", "more than one job may have under the account or QOS, so they never start: "
                                      "`scancel 9_1 9_2 9_3 ...`"),
    ("AssocMaxGRESPerJob", "so they never start"),
    ("InvalidQOS", "then submit with a valid --account / --qos"),
    ("InvalidQOS", "the account or QOS is not valid for you"),
    ("InvalidAccount", "the account or QOS is not valid for you"),
    ("PartitionDown", "the partition's state or limits hold them"),
    ("PartitionTimeLimit", "the partition's state or limits hold them"),
    ("QOSMaxGRESPerUser", "an account or QOS limit"),
    ("AssocGrpGRES", "an account or QOS limit"),
    ("MaxGRESPerAccount", "an account or QOS limit"),
    ("MaxCpuPerAccount", "an account or QOS limit"),
    ("MaxMemoryPerAccount", "an account or QOS limit"),
    ("AccountingPolicy", "an account or QOS limit"),
    ("MaxGRESPerJob", "`scontrol show job 9_1 9_2 9_3 ...` says more"),  # not a "Max...PerAccount"
    ("Reservation", "`scontrol show job 9_1 9_2 9_3 ...` says more"),
])
def test_advice_for_each_kind_of_reason(reason: str, words: str) -> None:
    assert words in advice(reason, ["9_1", "9_2", "9_3", "9_4"])


def test_advice_names_at_most_three_jobs() -> None:
    assert advice("JobHeldUser", ["9_1", "9_2", "9_3"]) == "held: `scontrol release 9_1 9_2 9_3` lets them start"
    assert advice("JobHeldUser", ["9_1"]) == "held: `scontrol release 9_1` lets them start"


def test_status_says_why_tasks_wait_on_a_drained_node(tmp_path: Path, on_path, capsys) -> None:  # noqa: F811
    """Three queued tasks: one routine (Priority), two on a drained node: the table, --summary and --json say
    so once, with the count and what to do; with only routine reasons nothing is said."""
    study, ids = slurm_study(tmp_path)
    capsys.readouterr()
    queue = f"90|0|PENDING|(Priority)|0:00\n90|1|PENDING|({DRAINED})|0:00\n90|2|PENDING|({DRAINED})|0:00"
    on_path(squeue=queue, sacct=None)
    assert cli("status", "--study", study.root, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["summary"]["waiting"] == [{"reason": DRAINED, "count": 2, "jobs": ["90_1", "90_2"],
                                          "advice": "their nodes are down, drained, or held by a higher-priority "
                                                    "partition: `sinfo -R` lists down and drained nodes with why (they "
                                                    "start once an administrator returns one to service); if none is "
                                                    "listed, they start when the higher-priority jobs end"}]
    reasons = {r["exp_id"]: r["slurm_reason"] for r in out["experiments"]}
    assert reasons == {ids[0]: "Priority", ids[1]: DRAINED, ids[2]: DRAINED}
    line = f"2 queued wait on Slurm: {DRAINED} -- their nodes are down, drained, or held by a higher-priority"
    for flags in ([], ["--summary"]):
        assert cli("status", "--study", study.root, *flags) == 0
        text = capsys.readouterr().out
        assert line in " ".join(text.split()) and text.count("queued wait on Slurm") == 1, text
    on_path(squeue=queue.replace(DRAINED, "Resources"), sacct=None)
    assert cli("status", "--study", study.root) == 0
    assert "wait on Slurm" not in capsys.readouterr().out


# ---------------------------------------------------------------- submit while the partition's nodes are out
def fake_slurm_for_preflight(bin_dir: Path, nodes: str, test_only: str) -> None:
    """scontrol ping UP; sinfo lists partition a40 (and ``nodes`` for -N); sbatch --test-only says ``test_only``."""
    bin_dir.mkdir(exist_ok=True)
    bodies = {"scontrol": 'echo "Slurmctld(primary) at vm is UP"',
              "sinfo": f'case "$*" in *%N*) printf "{nodes}";; *) echo "a40|gpu:a40:4";; esac',
              "sbatch": f'cat >/dev/null; echo "allocation failure: {test_only}" >&2; exit 1'}
    for name, body in bodies.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)


@pytest.mark.parametrize(("nodes", "test_only", "outcome"), [
    ("vm|drained|Kill task failed\\n", NO_NODE_NOW, "note: nodes of this partition are down or drained (vm (drained: "
                                                    "Kill task failed)), so `sbatch --test-only` could not place"),
    ("a|idle*|none\\nb|mixed|none\\n", NO_NODE_NOW, "are down or drained (a (idle*)), so"),
    ("a|down|x\\nb|drained|y\\nc|maint|z\\nd|fail|w\\n", NO_NODE_NOW, "(a (down: x), b (drained: y), c (maint: z) and "
                                                                      "1 more)"),
    ("a|idle|none\\nb|mixed|none\\nc|allocated|none\\nd|completing|none\\ne|planned|none\\n", NO_NODE_NOW, None),
    ("vm|drained|Kill task failed\\n", "Invalid generic resource (gres) specification", None),
    ("", NO_NODE_NOW, None),
])
def test_test_only_refusal_is_let_through_only_while_nodes_are_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  nodes: str, test_only: str,
                                                                  outcome: str | None) -> None:
    """`sbatch --test-only` says "Requested node configuration is not available" both for a request no node
    could run and for one that only waits for drained nodes (measured: tests/test_slurm_status_waiting.py);
    the real sbatch tells them apart, so preflight lets it decide only while some node is out."""
    fake_slurm_for_preflight(tmp_path / "bin", nodes, test_only)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    if outcome is None:
        with pytest.raises(UserError, match=re.escape(f"Slurm would refuse this array: allocation failure: {test_only};")):
            preflight({"partition": "a40"}, "#!/bin/bash\n")
    else:
        note = preflight({"partition": "a40"}, "#!/bin/bash\n")
        assert outcome in note and note.endswith("(`hpc-unet status` says why tasks wait)"), note
