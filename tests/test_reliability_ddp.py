"""DDP without hangs (2 CPU ranks, gloo, through ``conf/trainer/ddp.yaml``'s strategy with its process-group
timeout): uneven data finishes training and evaluation; an exception on one rank ends the job with that rank's
message; a rank that blocks makes the others fail after the timeout instead of hanging.

Uneven evaluation shards and per-rank streams are also covered by ``test_data_ddp.py``; a non-finite loss on one
rank by ``test_training_ddp.py``."""

from __future__ import annotations

import datetime
import time
import warnings

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import DDPStrategy
from test_data_ddp import _datamodule, _write_data

from ofa_lightning.training.checkpointing import AtomicCheckpointIO
from ofa_lightning.training.run import compose_config, trainer_arguments

warnings.filterwarnings("ignore", ".*does not have many workers.*")
pytestmark = pytest.mark.usefixtures("one_thread")


def _strategy(tmp_path, timeout_s: int) -> dict:
    """Trainer arguments from the real config: trainer=ddp on CPU, forked ranks (inside pytest)."""
    cfg = compose_config(
        [
            "trainer=ddp",
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "trainer.precision=32-true",
            f"trainer.strategy.timeout.seconds={timeout_s}",
            "+trainer.strategy.start_method=fork",
        ],
        tmp_path,
        tmp_path,
    )
    kwargs = trainer_arguments(cfg)
    return {k: kwargs[k] for k in ("accelerator", "devices", "strategy", "plugins")}


def test_ddp_config_sets_a_process_group_timeout(tmp_path):
    cfg = compose_config(["trainer=ddp"], tmp_path, tmp_path)
    kwargs = trainer_arguments(cfg)
    strategy = kwargs["strategy"]
    assert isinstance(strategy, DDPStrategy)
    assert strategy._timeout == datetime.timedelta(seconds=1800)
    assert any(isinstance(p, AtomicCheckpointIO) for p in kwargs["plugins"])


class _Module(pl.LightningModule):
    """Logs a synced validation metric (the all-reduce that hangs when ranks run different batch counts)."""

    def __init__(self, fail_rank: int | None = None, sleep_rank: int | None = None, at_step: int = 1):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.fail_rank, self.sleep_rank, self.at_step = fail_rank, sleep_rank, at_step

    def training_step(self, batch, batch_idx):
        if self.global_step == self.at_step and self.global_rank == self.fail_rank:
            raise ValueError(f"bad thing on rank {self.global_rank} at step {self.global_step}")
        if self.global_step == self.at_step and self.global_rank == self.sleep_rank:
            time.sleep(120)
        return self.layer(batch["weights"].unsqueeze(1)).sum()

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        value = self.layer(batch["weights"].unsqueeze(1)).sum()
        self.log("val/sum", value, sync_dist=True, batch_size=len(batch["ids"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _trainer(tmp_path, timeout_s: int = 60, **kw) -> pl.Trainer:
    return pl.Trainer(
        **_strategy(tmp_path, timeout_s),
        max_steps=3,
        val_check_interval=3,
        check_val_every_n_epoch=None,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **kw,
    )


@pytest.mark.timeout(300)
def test_uneven_data_finishes_training_and_evaluation(tmp_path):
    _write_data(tmp_path / "data")  # val: 13 + 3 samples over 2 ranks, uneven shard sizes, one corrupt sample
    trainer = _trainer(tmp_path)
    trainer.fit(_Module(), datamodule=_datamodule(tmp_path / "data", "map", 0))
    # forked ranks: the parent gets rank 0's callback metrics back (logged after the synced validation)
    assert {"val/sum/dataloader_idx_0", "val/sum/dataloader_idx_1"} <= set(trainer.callback_metrics)
    # split mode: 3 shards of 7, 2 and 5 samples over 2 ranks (the 1-shard source would fail fast: not here)
    trainer.validate(
        _Module(), datamodule=_datamodule(tmp_path / "data", "split", 0, eval_split_txt=None), verbose=False
    )
    assert "val/sum" in trainer.callback_metrics


@pytest.mark.timeout(300)
def test_exception_on_one_rank_ends_the_job_with_its_message(tmp_path):
    _write_data(tmp_path / "data")
    start = time.monotonic()
    with pytest.raises(Exception, match="bad thing on rank 1 at step 1"):
        _trainer(tmp_path).fit(_Module(fail_rank=1), datamodule=_datamodule(tmp_path / "data", "map", 0))
    assert time.monotonic() - start < 120


@pytest.mark.timeout(300)
def test_a_blocked_rank_times_out_instead_of_hanging(tmp_path):
    """Rank 1 sleeps 120 s inside a step; rank 0 waits in the gradient all-reduce and fails after the 5 s timeout."""
    _write_data(tmp_path / "data")
    start = time.monotonic()
    with pytest.raises(Exception, match="(?i)timed? ?out|timeout") as info:
        _trainer(tmp_path, timeout_s=5).fit(_Module(sleep_rank=1), datamodule=_datamodule(tmp_path / "data", "map", 0))
    assert time.monotonic() - start < 100
    assert "Process 0" in str(info.value)  # the waiting rank's error ends the job; the sleeping rank is terminated
