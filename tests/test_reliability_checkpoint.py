"""Atomic checkpoints: a failure mid-write (full disk) leaves the previous file loadable and says so; a killed write
leaves only a temporary file, removed at the next start; loads are weights_only."""

from __future__ import annotations

import errno
import os
import warnings

import pytest
import pytorch_lightning as pl
import torch

from ofa_lightning.training import checkpointing
from ofa_lightning.training.checkpointing import (
    AtomicCheckpointIO,
    CheckpointWriteError,
    atomic_torch_save,
    remove_stale_temporaries,
)

warnings.filterwarnings("ignore", ".*does not have many workers.*")


def _half_write_then_enospc(obj, f, *args, **kwargs):
    f.write(b"PK\x03\x04 partial checkpoint bytes")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_full_disk_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpts" / "last.ckpt"
    atomic_torch_save({"step": 1, "w": torch.ones(3)}, path)
    monkeypatch.setattr(checkpointing.torch, "save", _half_write_then_enospc)
    with pytest.raises(
        CheckpointWriteError, match=r"last\.ckpt: the disk is full.*previous last\.ckpt is untouched"
    ) as info:
        atomic_torch_save({"step": 2, "w": torch.zeros(3)}, path)
    assert info.value.errno == errno.ENOSPC
    monkeypatch.undo()
    loaded = torch.load(path, weights_only=True)
    assert loaded["step"] == 1 and torch.equal(loaded["w"], torch.ones(3))
    # no partial file left behind: the checkpoint and its checksum sidecar
    assert sorted(os.listdir(path.parent)) == ["last.ckpt", "last.ckpt.sha256.json"]


def test_first_write_failing_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpointing.torch, "save", _half_write_then_enospc)
    with pytest.raises(CheckpointWriteError, match="no new.ckpt existed before"):
        atomic_torch_save({"x": 1}, tmp_path / "new.ckpt")
    assert os.listdir(tmp_path) == []


def test_stale_temporaries_of_a_killed_write_are_removed(tmp_path):
    atomic_torch_save({"step": 3}, tmp_path / "last.ckpt")
    stale = tmp_path / ".last.ckpt.tmp-999-abcd"
    stale.write_bytes(b"cut short")
    assert remove_stale_temporaries(tmp_path) == [stale]
    assert sorted(os.listdir(tmp_path)) == ["last.ckpt", "last.ckpt.sha256.json"]
    assert remove_stale_temporaries(tmp_path / "missing") == []


class _Tiny(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _trainer(tmp_path, max_steps):
    return pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(tmp_path),
        callbacks=[
            pl.callbacks.ModelCheckpoint(
                dirpath=tmp_path / "checkpoints", save_last=True, save_top_k=0, every_n_train_steps=2
            )
        ],
    )


def test_trainer_failure_mid_write_leaves_last_ckpt_complete(tmp_path, monkeypatch):
    """Through Lightning: step-2 checkpoint written, the step-4 write hits a full disk -> clear error, last.ckpt is
    still the complete step-2 checkpoint and a run resumes from it."""
    data = torch.utils.data.DataLoader(torch.randn(16, 2), batch_size=2)
    calls = {"n": 0}
    real_save = torch.save

    def flaky(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            return _half_write_then_enospc(obj, f)
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(checkpointing.torch, "save", flaky)
    with pytest.raises(CheckpointWriteError, match="disk is full"):
        _trainer(tmp_path, 6).fit(_Tiny(), data)
    monkeypatch.undo()
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert sorted(os.listdir(last.parent)) == ["last.ckpt", "last.ckpt.sha256.json"]
    ckpt = AtomicCheckpointIO().load_checkpoint(last)
    assert ckpt["global_step"] == 2
    trainer = _trainer(tmp_path, 6)
    trainer.fit(_Tiny(), data, ckpt_path=str(last))
    assert trainer.global_step == 6
    assert torch.load(last, weights_only=True)["global_step"] == 6


def test_checkpoint_io_loads_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > /dev/null",))

    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Evil()}, path)
    with pytest.raises(Exception, match="(?i)weights.only|unpickl|not an allowed global"):
        AtomicCheckpointIO().load_checkpoint(path)


def test_amp_grad_scaler_state_survives_a_resume(tmp_path):
    """fp16 AMP (GradScaler, on CPU): the scaler's scale and growth tracker after a resume equal an uninterrupted
    run's (Lightning stores the precision plugin's state in the checkpoint; AtomicCheckpointIO writes and reads it)."""
    from pytorch_lightning.plugins.precision import MixedPrecision

    # identical batches: the plain DataLoader restarts its epoch on resume, the scaler must not care
    data = torch.utils.data.DataLoader(torch.full((12, 2), 300.0), batch_size=2)

    def trainer(path, max_steps):
        return pl.Trainer(
            accelerator="cpu",
            max_steps=max_steps,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            default_root_dir=str(path),
            plugins=[AtomicCheckpointIO(), MixedPrecision("16-mixed", "cpu")],
            callbacks=[pl.callbacks.ModelCheckpoint(dirpath=path / "ck", save_top_k=-1, every_n_train_steps=2)],
        )

    torch.manual_seed(0)
    whole = trainer(tmp_path / "a", 5)
    whole.fit(_Tiny(), data)
    torch.manual_seed(0)
    trainer(tmp_path / "b", 3).fit(_Tiny(), data)
    saved = torch.load(next((tmp_path / "b" / "ck").glob("*step=2.ckpt")), weights_only=True)
    assert saved["MixedPrecision"]["scale"] < 65536.0  # fp16 overflowed: the scaler backed off, its state is saved
    resumed = trainer(tmp_path / "c", 5)
    resumed.fit(_Tiny(), data, ckpt_path=str(next((tmp_path / "b" / "ck").glob("*step=2.ckpt"))))
    assert resumed.precision_plugin.scaler.state_dict() == whole.precision_plugin.scaler.state_dict()
