"""Checkpoint bundles: atomic, pruned to two, a damaged newest one falls back to the previous; the
background writer; unchanged best weights linked; version-1 bundles still read."""

from __future__ import annotations

import numpy as np
import pytest

from hpc_unet.train.checkpoint import Bundle, CheckpointWriter, bundles, load_latest, read_bundle, save_bundle


def bundle(epoch: int) -> Bundle:
    rng = np.random.default_rng(epoch)
    return Bundle(epoch=epoch, model=[rng.normal(size=(3, 3)), rng.normal(size=4)],
                  optimizer=[np.array(epoch), rng.normal(size=(3, 3))], best=[np.ones(2) * epoch],
                  state={"history": [{"epoch": e} for e in range(1, epoch + 1)], "finished": False})


def test_roundtrip_and_pruning(tmp_path):
    for e in (1, 2, 3):
        save_bundle(tmp_path, bundle(e))
    assert [p.name for p in bundles(tmp_path)] == ["e0003", "e0002"]
    got = load_latest(tmp_path)
    assert got.epoch == 3 and len(got.state["history"]) == 3
    np.testing.assert_array_equal(got.model[0], bundle(3).model[0])
    np.testing.assert_array_equal(got.best[0], np.ones(2) * 3)


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete-state", "garbage-state"])
def test_damaged_newest_falls_back(tmp_path, damage):
    save_bundle(tmp_path, bundle(1))
    newest = save_bundle(tmp_path, bundle(2))
    target = newest / "model.npz"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[:50])
    elif damage == "flip":  # one bit of array data (not header padding): the zip member CRC catches it
        import zipfile

        with zipfile.ZipFile(target) as z:
            info = z.getinfo("arr_0.npy")
        data = bytearray(target.read_bytes())
        data[info.header_offset + 30 + len(info.filename) + len(info.extra) + 128 + 8] ^= 0x01
        target.write_bytes(bytes(data))
    elif damage == "delete-state":
        (newest / "state.json").unlink()
    else:
        (newest / "state.json").write_text("{not json")
    with pytest.warns(UserWarning, match="falling back"):
        got = load_latest(tmp_path)
    assert got.epoch == 1


def test_failed_write_leaves_previous(tmp_path, monkeypatch):
    save_bundle(tmp_path, bundle(1))
    monkeypatch.setenv("HPC_UNET_FAULT", "checkpoint-write:raise")
    with pytest.raises(RuntimeError, match="injected"):
        save_bundle(tmp_path, bundle(2))
    assert [p.name for p in bundles(tmp_path)] == ["e0001"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert load_latest(tmp_path).epoch == 1


def test_background_writer_does_not_block_and_publishes_in_order(tmp_path, monkeypatch):
    """A slow disk (each array file takes 0.3 s) blocks only the write thread; close() waits for it."""
    import threading
    import time

    from hpc_unet.train import checkpoint

    real = checkpoint._save_arrays
    threads = set()

    def slow(path, arrays):
        threads.add(threading.current_thread().name)
        time.sleep(0.3)
        real(path, arrays)

    monkeypatch.setattr(checkpoint, "_save_arrays", slow)
    writer = CheckpointWriter(tmp_path)
    assert writer.submit(bundle(1)) < 0.1
    assert bundles(tmp_path) == []  # still being written
    blocked = writer.submit(bundle(2))  # waits for bundle 1 first: one write in flight
    assert blocked > 0.3 and [p.name for p in bundles(tmp_path)] == ["e0001"]
    writer.close()
    assert [p.name for p in bundles(tmp_path)] == ["e0002", "e0001"]
    assert threads == {"checkpoint-writer"}


def test_background_write_error_reaches_the_training_thread(tmp_path, monkeypatch):
    writer = CheckpointWriter(tmp_path)
    writer.submit(bundle(1))
    writer.close()
    monkeypatch.setenv("HPC_UNET_FAULT", "checkpoint-write:raise")
    writer.submit(bundle(2))
    with pytest.raises(RuntimeError, match="injected"):
        writer.close()
    assert [p.name for p in bundles(tmp_path)] == ["e0001"]
    writer.submit(bundle(3))
    writer.close(raise_error=False)  # an exception already in flight: the write error is dropped
    assert load_latest(tmp_path).epoch == 1


def test_unchanged_best_weights_are_linked_not_rewritten(tmp_path):
    first = save_bundle(tmp_path, bundle(1))
    same = bundle(2)
    same.best, same.best_changed = [np.zeros(1)], False  # not written: the previous file is linked
    second = save_bundle(tmp_path, same)
    assert (second / "best.npz").stat().st_ino == (first / "best.npz").stat().st_ino
    np.testing.assert_array_equal(load_latest(tmp_path).best[0], np.ones(2))
    third = save_bundle(tmp_path, bundle(3))  # changed: written anew; pruning e0001 keeps e0002's link valid
    assert (third / "best.npz").stat().st_ino != (second / "best.npz").stat().st_ino
    np.testing.assert_array_equal(read_bundle(second).best[0], np.ones(2))


def test_version_1_bundle_is_read_as_weights_only(tmp_path):
    import json

    path = save_bundle(tmp_path, bundle(1))
    state = json.loads((path / "state.json").read_text())
    state["bundle_version"] = 1
    (path / "state.json").write_text(json.dumps(state))
    got = load_latest(tmp_path)
    assert got.epoch == 1 and got.variables is False
    state["bundle_version"] = 99
    (path / "state.json").write_text(json.dumps(state))
    with pytest.warns(UserWarning, match="falling back"):
        assert load_latest(tmp_path) is None


HELD_WRITE = """
import json, sys, threading, time
import numpy as np
from hpc_unet.cli import main
from hpc_unet.train import callbacks, checkpoint

began, seen, live = threading.Event(), {}, {}
real_begin, real_save = callbacks.EpochRecorder.on_epoch_begin, checkpoint.save_bundle

def on_epoch_begin(self, epoch, logs=None):
    live["model"] = self.model
    if epoch == 1:
        began.set()
    real_begin(self, epoch, logs)

def held_save(directory, b):
    if b.epoch == 1:
        before = [np.array(a) for a in b.model]
        seen["training went on"] = began.wait(20)
        deadline = time.monotonic() + 60
        while seen["training went on"] and time.monotonic() < deadline:  # until a step changed the model
            now = [np.asarray(v) for v in live["model"].variables]
            if any(not np.array_equal(n, x) for n, x in zip(now, before)):
                seen["model changed"] = True
                break
            time.sleep(0.05)
        seen["snapshot unchanged"] = all(np.array_equal(np.asarray(a), x) for a, x in zip(b.model, before))
    return real_save(directory, b)

callbacks.EpochRecorder.on_epoch_begin = on_epoch_begin
checkpoint.save_bundle = held_save
rc = main(["train", "--study", sys.argv[1], "--experiment", sys.argv[2]])
print("SEEN", json.dumps(seen))
sys.exit(rc)
"""


def test_training_goes_on_while_a_bundle_is_written_and_the_snapshot_stays_put(tiny_study):
    """Real training (2 epochs, in a fresh process like a task): epoch 1's bundle write is held until
    epoch 2 has begun and changed the model's variables. That can only happen when the write runs beside
    training (with the writer on the training thread the hold times out), and the bundle being written
    must still hold epoch 1's values."""
    import json
    import subprocess
    import sys

    from hpc_unet.manifest import read_manifest

    exp = read_manifest(tiny_study)["exp_id"].iloc[0]
    proc = subprocess.run([sys.executable, "-c", HELD_WRITE, str(tiny_study.root), exp], capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads(proc.stdout.rsplit("SEEN", 1)[1])
    assert seen == {"training went on": True, "model changed": True, "snapshot unchanged": True}
