"""Checkpoint integrity: a sha256 sidecar written with every checkpoint and checked before every load (else the
zip CRCs), damage refused naming the file and the member, the last K checkpoints kept, the newest picked by the
global step inside (never by name or time), and a full disk said in plain words from any layer."""

from __future__ import annotations

import errno
import json
import os
import time

import pytest
import torch

from ofa_lightning.errors import disk_full_message
from ofa_lightning.training.checkpointing import AtomicCheckpointIO, CheckpointWriteError, atomic_torch_save
from ofa_lightning.weights.integrity import (
    DamagedCheckpointError,
    sidecar_path,
    verify_checkpoint,
)


def _checkpoint(step: int) -> dict:
    torch.manual_seed(step)
    return {"global_step": step, "state_dict": {"w": torch.randn(4096), "b": torch.randn(64)}}


def _garbage_in_the_middle(path, size=1024):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + size] = os.urandom(size)
    path.write_bytes(bytes(data))


def test_sidecar_is_written_and_verified(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save(_checkpoint(7), path)
    record = json.loads(sidecar_path(path).read_text())
    assert record["global_step"] == 7 and record["bytes"] == path.stat().st_size and len(record["sha256"]) == 64
    info = verify_checkpoint(path)
    assert (info.method, info.global_step) == ("sha256", 7)


@pytest.mark.parametrize("with_sidecar", [True, False])
def test_garbage_in_the_middle_is_refused_naming_file_and_member(tmp_path, with_sidecar):
    path = tmp_path / "last.ckpt"
    atomic_torch_save(_checkpoint(3), path)
    if not with_sidecar:
        sidecar_path(path).unlink()
    _garbage_in_the_middle(path)
    with pytest.raises(DamagedCheckpointError, match=r"last\.ckpt is damaged: member archive/data/\d+ fails its CRC"):
        verify_checkpoint(path)
    io = AtomicCheckpointIO()
    with pytest.raises(DamagedCheckpointError, match="last.ckpt"):
        io.load_checkpoint(path)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save(_checkpoint(3), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DamagedCheckpointError, match=r"last\.ckpt is damaged: not a readable zip archive"):
        verify_checkpoint(path)


def test_foreign_checkpoints_without_sidecar_are_accepted(tmp_path):
    zipped, legacy = tmp_path / "zip.pt", tmp_path / "legacy.pt"
    torch.save(_checkpoint(1), zipped)
    torch.save(_checkpoint(1), legacy, _use_new_zipfile_serialization=False)  # older OFA .pt files
    assert verify_checkpoint(zipped).method == "zip-crc"
    assert verify_checkpoint(legacy).method == "zip-crc"


def test_sidecar_left_from_an_interrupted_write_does_not_refuse_an_intact_file(tmp_path, caplog):
    path = tmp_path / "last.ckpt"
    atomic_torch_save(_checkpoint(3), path)
    old_sidecar = sidecar_path(path).read_text()
    atomic_torch_save(_checkpoint(4), path)
    sidecar_path(path).write_text(old_sidecar)  # killed between the rename and the sidecar's
    with caplog.at_level("WARNING"):
        assert verify_checkpoint(path).method == "zip-crc"
    assert "CRC is intact" in caplog.text


def test_keep_last_keeps_the_previous_checkpoints_and_drops_older_ones(tmp_path):
    path = tmp_path / "last.ckpt"
    for step in (1, 2, 3, 4):
        atomic_torch_save(_checkpoint(step), path, keep_last=3)
    names = sorted(p.name for p in tmp_path.glob("*.ckpt"))
    assert names == ["last-step00000002.ckpt", "last-step00000003.ckpt", "last.ckpt"]
    for name, step in (("last.ckpt", 4), ("last-step00000003.ckpt", 3), ("last-step00000002.ckpt", 2)):
        assert verify_checkpoint(tmp_path / name).global_step == step
        assert torch.load(tmp_path / name, weights_only=True)["global_step"] == step
    assert not (tmp_path / "last-step00000001.ckpt.sha256.json").exists()


def test_a_damaged_previous_checkpoint_is_not_kept(tmp_path, caplog):
    path = tmp_path / "last.ckpt"
    atomic_torch_save(_checkpoint(1), path, keep_last=2)
    _garbage_in_the_middle(path)
    with caplog.at_level("WARNING"):
        atomic_torch_save(_checkpoint(2), path, keep_last=2)
    assert sorted(p.name for p in tmp_path.glob("*.ckpt")) == ["last.ckpt"]
    assert "not keeping the previous last.ckpt" in caplog.text


def test_newest_is_picked_by_the_step_inside_not_by_name_or_time(tmp_path):
    """A moved run dir: Lightning's last-v1.ckpt (step 6) beside a stale last.ckpt (step 3) that was touched
    later: the step-6 one is newest."""
    from ofa_lightning.training.resume import newest_first

    atomic_torch_save(_checkpoint(6), tmp_path / "last-v1.ckpt")
    atomic_torch_save(_checkpoint(3), tmp_path / "last.ckpt")
    torch.save(_checkpoint(5), tmp_path / "foreign.ckpt")  # no sidecar: the step is read from the file
    later = time.time() + 100
    os.utime(tmp_path / "last.ckpt", (later, later))
    assert [(s, p.name) for s, p in newest_first(tmp_path)] == [
        (6, "last-v1.ckpt"),
        (5, "foreign.ckpt"),
        (3, "last.ckpt"),
    ]


def test_full_disk_is_named_from_any_layer(tmp_path, monkeypatch):
    inner = OSError(errno.ENOSPC, "No space left on device")
    try:
        try:
            raise inner
        except OSError as exc:
            raise RuntimeError("could not flush metrics") from exc
    except RuntimeError as outer:
        assert disk_full_message(outer).startswith("the disk is full")
    # torch's zip writer: "[Errno 5] ... unexpected pos", with the disk nearly full
    torch_error = RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4480 vs 4374")
    import shutil

    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=1 << 20))
    assert "the disk is full (1 MiB free" in disk_full_message(torch_error, str(tmp_path))
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=100 << 30))
    assert disk_full_message(torch_error, str(tmp_path)) is None

    def failing_save(obj, f, *args, **kwargs):
        f.write(b"PK")
        raise torch_error

    monkeypatch.setattr(shutil, "disk_usage", lambda _p: usage._replace(free=0))
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CheckpointWriteError, match=r"last\.ckpt: the disk is full"):
        atomic_torch_save(_checkpoint(1), tmp_path / "last.ckpt")


def test_cli_says_the_disk_is_full_in_one_line():
    from ofa_lightning.cli._hydra import user_error_message

    message = user_error_message(RuntimeError("write failed").with_traceback(None))
    assert message is None  # a bug keeps its traceback
    exc = OSError(errno.ENOSPC, "No space left on device")
    assert user_error_message(exc).startswith("the disk is full")


def test_every_checkpoint_reader_verifies_first(tmp_path):
    """The model card reader (ofa-eval, the API), load_checkpoint_file (init_from, ofa-predict, ofa-convert)."""
    from ofa_lightning.training.model_card import read_model_card
    from ofa_lightning.weights.convert import load_checkpoint_file

    path = tmp_path / "last.ckpt"
    atomic_torch_save(_checkpoint(5), path)
    _garbage_in_the_middle(path)
    for reader in (read_model_card, load_checkpoint_file):
        with pytest.raises(DamagedCheckpointError, match="fails its CRC check"):
            reader(path)
