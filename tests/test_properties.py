"""Property tests where the inputs are combinatorial: Slurm's squeue/sacct lines and array ranges (any set
of task ids, any length, cut anywhere), the precedence rule over every combination of evidence, and predict's
tiling and blending (any image size reconstructs an all-ones probability map exactly). The overlap
metrics' property test lives in test_metrics.py, which imports Keras at collection."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from hpc_unet.predict import tiles
from hpc_unet.status import precedence
from hpc_unet.status.precedence import Evidence, decide, may_prune, should_submit
from hpc_unet.status.slurm_state import (
    ENDED_STATES,
    LIVE_STATES,
    _parse_rows,
    base_state,
    expand_row_id,
    parse_elapsed,
    parse_squeue,
)

task_sets = st.sets(st.integers(0, 5000), min_size=1, max_size=60)
job_ids = st.integers(1, 10**9)
states = st.sampled_from(sorted(LIVE_STATES | ENDED_STATES))


def slurm_range(ids: set[int]) -> str:
    """How Slurm prints a set of task ids: runs of consecutive ids as ``a-b``, comma separated."""
    runs: list[list[int]] = []
    for i in sorted(ids):
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def elapsed_text(seconds: int) -> str:
    d, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if d:
        return f"{d}-{h:02d}:{m:02d}:{s:02d}"
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


# ------------------------------------------------------------------------------------------ Slurm lines
@given(job=job_ids, ids=task_sets, throttle=st.one_of(st.none(), st.integers(1, 64)))
def test_any_array_range_expands_to_exactly_its_tasks(job, ids, throttle):
    text = f"{job}_[{slurm_range(ids)}{'' if throttle is None else f'%{throttle}'}]"
    assert expand_row_id(text) == [f"{job}_{i}" for i in sorted(ids)]


@given(job=job_ids, ids=task_sets, data=st.data())
def test_a_range_cut_anywhere_gives_no_task(job, ids, data):
    """squeue's %i cuts at 30 characters: a cut range must yield nothing (unknown), never a subset."""
    text = f"{job}_[{slurm_range(ids)}]"
    cut = data.draw(st.integers(len(str(job)) + 1, len(text) - 1))
    assert expand_row_id(text[:cut]) == []


@given(job=job_ids, task=st.one_of(st.none(), st.integers(0, 10**6)))
def test_single_ids_pass_through(job, task):
    text = str(job) if task is None else f"{job}_{task}"
    assert expand_row_id(text) == [text] and expand_row_id(f"  {text} ") == [text]


@given(seconds=st.integers(0, 400 * 86400))
def test_elapsed_round_trips(seconds):
    assert parse_elapsed(elapsed_text(seconds)) == float(seconds)


@given(text=st.text(alphabet="0123456789:-x ", max_size=14))
def test_elapsed_parses_only_slurm_durations(text):
    value = parse_elapsed(text)
    assert value is None or value >= 0


@given(rows=st.lists(st.tuples(job_ids, st.one_of(st.none(), st.integers(0, 5000)), states,
                               st.sampled_from(["vm1", "gpu-a40-007", "(Priority)", "None assigned", ""]),
                               st.integers(0, 10 * 86400)),
                     min_size=1, max_size=20, unique_by=lambda r: (r[0], r[1])))
def test_squeue_lines_parse_to_their_states(rows):
    lines = [f"{job}|{'N/A' if task is None else task}|{state}|{node}|{elapsed_text(sec)}"
             for job, task, state, node, sec in rows]
    wanted = {str(job) if task is None else f"{job}_{task}" for job, task, *_ in rows}
    found, clean = parse_squeue("\n".join(lines) + "\n", wanted)
    assert clean and set(found) == wanted
    for job, task, state, node, sec in rows:
        got = found[str(job) if task is None else f"{job}_{task}"]
        assert (got.state, got.elapsed_seconds, got.source) == (state, float(sec), "squeue")
        assert got.node == ("" if node.startswith("(") or node in ("None assigned", "") else node)


@given(good=st.tuples(job_ids, st.integers(0, 99), states),
       bad=st.sampled_from(["garbage", "90|1|RUNNING|vm", "90|1|RUNNING|vm|0:01|extra", "x90|1|RUNNING|vm|0:01",
                            "90|[1-|PENDING||0:00", "90|1||vm|0:01", "90|1|RUN NING|vm|0:01"]))
def test_one_unparsable_squeue_line_makes_the_answer_unclean(good, bad):
    job, task, state = good
    found, clean = parse_squeue(f"{job}|{task}|{state}|vm|0:01\n{bad}\n", {f"{job}_{task}"})
    assert not clean and found[f"{job}_{task}"].state == state


@given(job=job_ids, ids=task_sets, state=states, single=st.integers(0, 5000))
def test_sacct_range_rows_cover_their_tasks_and_exact_rows_win(job, ids, state, single):
    assume(single in ids)
    text = (f"{job}_[{slurm_range(ids)}]|PENDING|None assigned|00:00:00\n"
            f"{job}_{single}|{state}|node1|01:00:00\n")
    wanted = {f"{job}_{i}" for i in ids} | {f"{job}_{max(ids) + 1}"}
    found = _parse_rows(text, wanted, "sacct", node_col=2, elapsed_col=3)
    assert set(found) == {f"{job}_{i}" for i in ids}  # the id sacct does not list is left for squeue
    assert found[f"{job}_{single}"].state == state and found[f"{job}_{single}"].elapsed_seconds == 3600.0
    assert all(found[f"{job}_{i}"].state == "PENDING" and found[f"{job}_{i}"].node == "" for i in ids - {single})


@given(state=states, suffix=st.sampled_from(["", "+", " by 12345"]))
def test_base_state_strips_slurms_decorations(state, suffix):
    assert base_state(f" {state.lower()}{suffix} ") == state


# ----------------------------------------------------------------------------------------- precedence
SHARDS = [None, "completed", "skipped", "failed", "oom", "diverged"]
SCHEDULER = [precedence.SCHED_NONE, precedence.SCHED_RUNNING, precedence.SCHED_QUEUED, precedence.SCHED_ENDED,
             precedence.SCHED_UNKNOWN]
EVERY = [Evidence(shard, sa, ta, lease, sched, fresh)
         for shard, sa, ta, lease, sched, fresh in itertools.product(SHARDS, range(3), range(3), (False, True),
                                                                     SCHEDULER, (False, True))
         if (shard is None) == (sa == 0)]


def rule(ev: Evidence) -> str:
    """The numbered rule of status/precedence.py's docstring, read as a table: the first that applies."""
    submitted = ev.task_attempt > 0
    table = [
        (ev.shard in ("completed", "skipped"), ev.shard),                                 # 1
        (ev.lease_live, "running"),                                                        # 2
        (submitted and ev.shard is not None and ev.shard_attempt >= ev.task_attempt, ev.shard),  # 3
        (submitted and ev.scheduler == "running", "running"),                              # 4
        (submitted and ev.scheduler == "queued", "queued"),                                # 4
        (submitted and (ev.scheduler == "unknown" or ev.heartbeat_fresh), "unknown"),      # 5
        (submitted, "lost"),                                                               # 6
        (ev.shard is not None, ev.shard),                                                  # 7
        (True, "pending"),                                                                 # 8
    ]
    return next(state for applies, state in table if applies)


def test_precedence_over_every_combination_of_evidence():
    assert len(EVERY) == (1 + 5 * 2) * 3 * 2 * 5 * 2  # shard/attempt pairs x tasks x lease x scheduler x beat
    for ev in EVERY:
        state = decide(ev)
        assert state == rule(ev), ev
        # the guarantees status, submit and collect rely on
        if ev.shard == "completed":
            assert state == "completed" and not should_submit(state, retry_failed=True)
        latest_has_result = ev.shard is not None and ev.shard_attempt >= ev.task_attempt
        if ev.lease_live or (ev.task_attempt and ev.scheduler in ("running", "queued", "unknown")
                             and not latest_has_result):
            assert not should_submit(state, retry_failed=True), ev  # never a second live task
        if state == "lost":
            assert ev.scheduler in ("ended", "") and not ev.heartbeat_fresh and not ev.lease_live, ev
        assert may_prune(ev) == (ev.shard == "completed" and not ev.lease_live and not ev.heartbeat_fresh)


@pytest.mark.parametrize(("state", "plain", "retry"), [
    ("pending", True, True), ("lost", True, True), ("failed", False, True), ("oom", False, True),
    ("diverged", False, True), ("completed", False, False), ("skipped", False, False),
    ("running", False, False), ("queued", False, False), ("unknown", False, False),
])
def test_should_submit_table(state, plain, retry):
    assert should_submit(state) is plain and should_submit(state, retry_failed=True) is retry


# --------------------------------------------------------------------------------------- tiling+blending
@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 150), w=st.integers(1, 150), patch=st.sampled_from([8, 16, 32, 48]))
def test_any_image_size_reconstructs_an_all_ones_probability_exactly(h, w, patch):
    image = np.zeros((h, w, 1))
    padded, size = tiles.pad_to_tile(image, patch)
    assert size == (h, w) and padded.shape == (max(h, patch), max(w, patch), 1)
    ph, pw = padded.shape[:2]
    blender = tiles.Blender(ph, pw, tiles.gaussian_weights(patch))
    covered = np.zeros((ph, pw), int)
    for y, x in tiles.windows(ph, pw, patch):
        assert 0 <= y <= ph - patch and 0 <= x <= pw - patch  # every tile inside the padded image
        blender.add(y, x, np.ones((patch, patch)))
        covered[y:y + patch, x:x + patch] += 1
    assert covered.min() >= 1  # every pixel seen by a tile
    out = blender.result(size)
    assert out.shape == (h, w) and out.dtype == np.float32 and (out == 1.0).all()


@given(length=st.integers(1, 2000), patch=st.integers(1, 256))
def test_tile_starts_cover_with_at_least_half_overlap(length, patch):
    s = tiles.starts(length, patch)
    assert s[0] == 0 and s == sorted(set(s))
    if length <= patch:
        assert s == [0]
    else:
        assert s[-1] == length - patch
        assert all(b - a <= patch * (1 - tiles.OVERLAP) + 0.5 for a, b in itertools.pairwise(s))
        assert all(b - a >= 1 for a, b in itertools.pairwise(s))


@given(patch=st.integers(1, 300))
def test_gaussian_weights_are_positive_symmetric_and_peak_at_one(patch):
    w = tiles.gaussian_weights(patch)
    assert w.shape == (patch, patch) and w.max() == 1.0 and w.min() > 0
    assert np.array_equal(w, w.T) and np.array_equal(w, w[::-1, ::-1])
