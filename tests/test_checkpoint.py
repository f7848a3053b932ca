"""Checkpoint bundles: atomic, pruned to two, and a damaged newest one falls back to the previous."""

from __future__ import annotations

import numpy as np
import pytest

from hpc_unet.train.checkpoint import Bundle, bundles, load_latest, save_bundle


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
