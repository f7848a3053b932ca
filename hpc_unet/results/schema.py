"""Shard schema: what one attempt of one experiment writes, and what collect and analyze read.

Every attempt writes two Parquet files under ``<study>/shards/``, history first, summary last:
``<attempt_id>.history.parquet`` (one row per epoch) and ``<attempt_id>.summary.parquet`` (one row).
The summary is the commit point: an attempt without a summary file does not exist for the collector.

``attempt_id`` = ``<exp_id>.a<NNN>.<8 hex>``: the attempt number (restarts of a Slurm task are the same
attempt; a resubmission is a new one) plus a random suffix so two racing writers never collide.
"""

from __future__ import annotations

SHARD_SCHEMA_VERSION = 2

# Spelling rule: the Keras metric and its history columns keep the seed's name (`jacard_coef`,
# `val_jacard_coef`, what EarlyStopping monitors); every other column and all prose say "jaccard".
# Version 1 shards spelt two summary columns the seed's way; readers rename them on read.
RENAMED_COLUMNS_V1 = {"best_val_jacard": "best_val_jaccard", "test_jacard": "test_jaccard"}

STATUSES = ("completed", "failed", "oom", "diverged", "skipped")

# Summary columns beyond the manifest row (which is copied in whole, so results carry every setting).
SUMMARY_COLUMNS: dict[str, str] = {
    "exp_id": "experiment id (manifest)",
    "attempt_id": "unique id of this attempt",
    "attempt": "1-based attempt number (resubmissions)",
    "status": "completed | failed | oom | diverged | skipped (OOM policy skipped a larger batch)",
    "error_type": "exception class name, '' when completed",
    "error_message": "exception message",
    "error_traceback": "last lines of the traceback",
    "diverged_epoch": "epoch whose loss was NaN/inf (0 if none)",
    "best_val_jaccard": "max over epochs of val_jacard_coef (stateful, whole validation set)",
    "best_val_iou": "val_iou at the best epoch (thresholded at 0.5)",
    "best_val_dice": "val_dice at the best epoch",
    "best_epoch": "1-based epoch of best_val_jaccard (convergence speed)",
    "epochs_run": "epochs trained",
    "stopped_early": "EarlyStopping ended the run before `epochs`",
    "val_loss_std": "population std of val_loss over all epochs run (stability)",
    "val_loss_std_detrended": "std of val_loss residuals after a least-squares line over epochs (oscillation)",
    "overfit_gap_best": "val_loss - loss at the best epoch",
    "overfit_gap_end": "val_loss - loss at the last epoch",
    "final_loss": "training loss at the last epoch",
    "final_val_loss": "validation loss at the last epoch",
    "mean_epoch_seconds": "mean wall seconds per epoch (excluding the first, which includes tracing, when >1)",
    "total_train_seconds": "wall seconds of training over all restarts",
    "peak_gpu_bytes": "TensorFlow GPU peak memory (0 on CPU)",
    "max_rss_bytes": "process max resident set size",
    "param_count": "trainable + non-trainable parameters",
    "model_bytes": "size of the saved best model (.keras)",
    "device": "the device the run used: GPU name or 'CPU' (the manifest's setting of that name is device_setting)",
    "device_setting": "the train setting device (auto | gpu | cpu) the run was asked to use",
    "tf_version": "TensorFlow version",
    "package_version": "hpc-unet version",
    "git_commit": "git commit of the hpc-unet checkout, '' if unknown",
    "data_provenance": "JSON: paths, sha256, counts, patch size, split",
    "restarts": "interruptions of this experiment before this result, over all attempts and arrays (runs/<exp_id>/restarts.json)",
    "resumed_from_epoch": "epoch the last restart resumed after (0 if never resumed)",
    "resumed_from_attempt": "attempt_id whose checkpoint the last restart resumed from ('' if never resumed)",
    "job_id": "Slurm/submitit job id, '' locally in-process",
    "host": "node name",
    "started_at": "ISO time the attempt first started",
    "finished_at": "ISO time the shard was written",
    "test_jaccard": "test-set Jaccard with the best weights (NaN without a test set)",
    "test_iou": "test-set IoU at 0.5",
    "test_dice": "test-set dice",
    "val_mask_fraction": "foreground share of the validation masks",
    "trivial_val_jaccard": "best soft Jaccard of an image-blind predictor (all 0, all 1, constant mask fraction)",
    "trivial_val_iou": "best thresholded IoU of those image-blind predictors",
    "learned_skill": "share of the headroom above the trivial score the run closes (max over Jaccard and IoU)",
    "learned": "learned_skill >= 0.10 (docs/analysis.md); null when unknown",
    "examples": "path of the run's example patches (image, mask, prediction) for overlays, '' if none",
    "val_patch_intersection": "list: per validation patch sum(t*p) with the best weights (for bootstraps)",
    "val_patch_union": "list: per validation patch sum(t)+sum(p)-sum(t*p)",
    "test_patch_intersection": "list: per test patch sum(t*p) with p thresholded at 0.5 (empty without a test set)",
    "test_patch_union": "list: per test patch sum(t)+sum(p)-sum(t*p), p thresholded at 0.5",
    "init_source": "JSON: the source model a fine-tuned run started from (path, sha256, its run and study, the "
                   "source's normalisation, recorded not used); null for runs from scratch",
    "phase_seconds": "JSON: wall seconds per task phase (import, data, build, restore, first_epoch, train, finalize)",
    "schema_version": "shard schema version",
}

HISTORY_COLUMNS: dict[str, str] = {
    "exp_id": "experiment id",
    "attempt_id": "attempt id",
    "epoch": "1-based epoch",
    "loss": "training loss",
    "val_loss": "validation loss",
    "jacard_coef": "training Jaccard (stateful over the epoch)",
    "val_jacard_coef": "validation Jaccard over the whole validation set",
    "iou": "training IoU at 0.5",
    "val_iou": "validation IoU at 0.5",
    "dice": "training dice",
    "val_dice": "validation dice",
    "lr": "learning rate used in this epoch",
    "epoch_seconds": "wall seconds of the epoch",
}


def migrate_summary(table):  # noqa: ANN001, ANN201 (pyarrow is imported by callers, not here)
    """A summary table of any schema version with today's column names (version 1 -> 2 renames)."""
    names = [RENAMED_COLUMNS_V1.get(n, n) for n in table.column_names]
    return table.rename_columns(names) if names != table.column_names else table
