"""`hpc-unet collect` on fabricated shards (no TensorFlow): leftovers of killed tasks are cleaned up."""

from __future__ import annotations

from conftest import cli
from test_reliability_helpers import fake_shard, make_study


def test_collect_prunes_checkpoints_of_completed_experiments(tmp_path, capsys):
    study = make_study(tmp_path / "s", "grid.batch_size=[8]", "grid.learning_rate=[1e-3]")
    done, running = study.run_dir("unet-lr1e-03-bs8-s0"), study.run_dir("attunet-lr1e-03-bs8-s0")
    for run in (done, running):
        (run / "checkpoint" / "e0003").mkdir(parents=True)
        (run / "checkpoint" / "e0003" / "model.npz").write_bytes(b"x" * 4096)
    fake_shard(study, "unet-lr1e-03-bs8-s0", 1)
    assert cli("collect", "--study", study.root) == 0
    assert "removed leftover checkpoints" in capsys.readouterr().out
    assert not (done / "checkpoint").exists()
    assert (running / "checkpoint" / "e0003" / "model.npz").exists()  # no result yet: its checkpoint stays
