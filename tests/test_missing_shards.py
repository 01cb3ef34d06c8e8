"""A mixture pointing at shards that do not exist fails at set-up with one line: the missing path and the
``ofa-prepare`` command that writes it."""

from __future__ import annotations

import pytest

from ofa_lightning.data import OFADataModule
from ofa_lightning.data.shards import resolve_shards


def test_missing_shard_folder_names_the_prepare_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "shards").mkdir(parents=True)
    dm = OFADataModule(
        mixture={"caption": {"task": "caption", "shards": "coco_caption"}},
        shards_root=str(tmp_path / "data" / "shards"),
        tasks={"caption": object()},
    )
    with pytest.raises(FileNotFoundError) as err:
        dm.setup("fit")
    message = str(err.value)
    assert "\n" not in message
    assert f"shard not found: {tmp_path / 'data' / 'shards' / 'coco_caption'}" in message
    assert "ofa-prepare coco_caption --out data/shards/coco_caption" in message


def test_missing_shards_of_a_folder_not_named_after_a_recipe(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ofa-prepare <recipe> --out .*my_set.*ofa-prepare --list"):
        resolve_shards(str(tmp_path / "my_set" / "train-{000..001}.tar"))
    with pytest.raises(FileNotFoundError, match=r"train-000\.tar \(and 1 more\).*ofa-prepare vqav2 --out "):
        resolve_shards(str(tmp_path / "vqav2" / "train-{000..001}.tar"))
