"""`resume=auto` through real (tiny) runs: a damaged newest checkpoint (1 KB of garbage in its middle, or cut short)
is refused by name and the run continues from the previous one with finite weights, optimiser moments and EMA;
a run dir copied elsewhere continues its own newest checkpoint and keeps writing `last.ckpt`."""

from __future__ import annotations

import logging
import os
import shutil

import pytest
import pytorch_lightning as pl
import torch

from data_recipes.shapes_pipeline import build_shapes_shards
from ofa_lightning.training.run import compose_config, train
from ofa_lightning.weights.integrity import verify_checkpoint

TINY = [
    "experiment=demo",
    "logger=none",
    "data.micro_batch_size=4",
    "data.task_options.image_size=64",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "data.num_workers=0",
    "data.shuffle_buffer=8",
    "data.eval.num_workers=0",
    "data.eval.max_samples=4",
    "trainer.limit_val_batches=1",
    "trainer.val_check_interval=100",
    "test_after_fit=false",
    "module.ema={decay: 0.9}",
    "checkpoint_every_n_steps=2",
    "tokenizer.max_samples=200",
    "+tracking.throughput.enabled=false",
    "+tracking.predictions.enabled=false",
    "run_name=fixed",
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("fallback_project")
    build_shapes_shards(root / "data" / "shapes", num_images=24, seed=2, image_size=64)
    return root


def _all_finite(checkpoint: dict) -> None:
    for name, value in checkpoint["state_dict"].items():
        assert torch.isfinite(value.float()).all(), name
    for state in checkpoint["optimizer_states"][0]["state"].values():
        for key, value in state.items():
            assert torch.isfinite(torch.as_tensor(value).float()).all(), key
    for name, value in checkpoint["ema"]["shadow"].items():
        assert torch.isfinite(value.float()).all(), name


def _damage(path, how: str) -> None:
    data = bytearray(path.read_bytes())
    if how == "middle":
        middle = len(data) // 2
        data[middle : middle + 1024] = os.urandom(1024)
    else:
        data = data[: len(data) - 4096]
    path.write_bytes(bytes(data))


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("how", ["middle", "end"])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(project, how, caplog):
    run = project / "runs" / f"damaged-{how}"
    train(compose_config([*TINY, "trainer.max_steps=4"], run, project))
    ckpts = run / "checkpoints"
    assert sorted(p.name for p in ckpts.glob("*.ckpt")) == ["last-step00000002.ckpt", "last.ckpt"]
    _damage(ckpts / "last.ckpt", how)
    with caplog.at_level(logging.WARNING):
        train(compose_config([*TINY, "trainer.max_steps=6", "resume=auto"], run, project))
    assert "last.ckpt is damaged" in caplog.text
    assert f"continuing from {ckpts / 'last-step00000002.ckpt'} (step 2) instead" in caplog.text
    final = torch.load(ckpts / "last.ckpt", weights_only=True)
    assert final["global_step"] == 6
    _all_finite(final)
    # the damaged file was not kept as a fallback; the good step-2 one was rotated away by step 4's and 6's writes
    kept = sorted(p.name for p in ckpts.glob("*.ckpt"))
    assert kept == ["last-step00000004.ckpt", "last.ckpt"]
    assert verify_checkpoint(ckpts / "last-step00000004.ckpt").global_step == 4


@pytest.mark.usefixtures("one_thread")
def test_a_copied_run_dir_resumes_its_own_newest_checkpoint(project, caplog):
    first = project / "runs" / "original"
    train(compose_config([*TINY, "trainer.max_steps=2"], first, project))
    copy = project / "elsewhere" / "moved"
    shutil.copytree(first, copy)
    train(compose_config([*TINY, "trainer.max_steps=4", "resume=auto"], copy, project))
    names = sorted(p.name for p in (copy / "checkpoints").glob("*.ckpt"))
    assert names == ["last-step00000002.ckpt", "last.ckpt"]  # never last-v1.ckpt beside a stale last.ckpt
    # a stale file with a newer-looking name and a later mtime is not preferred over the higher step
    stale = copy / "checkpoints" / "last-v1.ckpt"
    shutil.copy(copy / "checkpoints" / "last-step00000002.ckpt", stale)
    with caplog.at_level(logging.INFO):
        train(compose_config([*TINY, "trainer.max_steps=6", "resume=auto"], copy, project))
    assert f"continuing from {copy / 'checkpoints' / 'last.ckpt'} (step 4)" in caplog.text
    assert torch.load(copy / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


class _Crash(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 3:
            raise RuntimeError("simulated kill at step 3")


@pytest.mark.usefixtures("one_thread")
def test_metric_rows_and_wandb_values_of_replayed_steps_are_not_doubled(project, monkeypatch):
    """Checkpoint at step 2, killed during step 4 (after steps 3's rows were written), resumed: metrics.jsonl and
    metrics.csv hold one row per (step, key), and the W&B run is sent each (step, key) once."""
    from pytorch_lightning.loggers import WandbLogger

    from ofa_lightning.training import run as run_module
    from ofa_lightning.training.run_files import read_metrics_csv, read_metrics_jsonl

    sent: list[tuple[int, str]] = []
    real_log = WandbLogger.log_metrics
    monkeypatch.setattr(
        WandbLogger,
        "log_metrics",
        lambda self, metrics, step=None: (sent.extend((step, k) for k in metrics), real_log(self, metrics, step)),
    )
    overrides = [o for o in TINY if not o.startswith(("logger=", "+tracking.predictions"))] + [
        "logger.mode=offline",
        "trainer.log_every_n_steps=1",
        "trainer.max_steps=5",
    ]
    run = project / "runs" / "replayed"
    real_callbacks = run_module.build_callbacks
    monkeypatch.setattr(run_module, "build_callbacks", lambda c, d: [*real_callbacks(c, d), _Crash()])
    with pytest.raises(RuntimeError, match="simulated kill"):
        train(compose_config(overrides, run, project))
    monkeypatch.setattr(run_module, "build_callbacks", real_callbacks)
    before = {r["step"] for r in read_metrics_jsonl(run / "metrics.jsonl")}
    assert 3 in before  # step 3 was logged, then the run died before its next checkpoint
    train(compose_config([*overrides, "resume=auto"], run, project))
    rows = read_metrics_jsonl(run / "metrics.jsonl")
    pairs = [(r["step"], k) for r in rows for k in r if k not in ("step", "time")]
    assert len(pairs) == len(set(pairs)) and {2, 3, 4} <= {r["step"] for r in rows}
    csv_pairs = [(r["step"], r["key"]) for r in read_metrics_csv(run / "metrics.csv")]
    assert len(csv_pairs) == len(set(csv_pairs))
    assert sent and len(sent) == len(set(sent)), sorted(p for p in sent if sent.count(p) > 1)
