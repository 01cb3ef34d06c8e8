"""Config errors knowable before data and model set-up are raised before it, within seconds: image size vs the
position grid, tasks and task options vs the mixture, a checkpoint vocabulary larger than the tokenizer's. The
shards named by the config do not exist, so an error raised at data set-up instead would name them."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from ofa_lightning.errors import UserError
from ofa_lightning.training.run import compose_config, train

REPO = Path(__file__).resolve().parents[1]
BASE = ["experiment=demo", "logger=none", "data.shards_root=/nonexistent/shards", "run_name=pre"]


def _refused(tmp_path, overrides: list[str], match: str) -> None:
    cfg = compose_config([*BASE, *overrides], tmp_path / "run", tmp_path)
    start = time.perf_counter()
    with pytest.raises(UserError, match=match):
        train(cfg)
    assert time.perf_counter() - start < 10
    assert not (tmp_path / "run" / "tokenizer").exists()  # nothing set up


def test_image_size_beyond_the_position_grid(tmp_path):
    _refused(
        tmp_path,
        ["data.task_options.image_size=800"],
        r"image_size=800 gives 50×50 patches.*at most 42×42 .*model.interpolate_position=true",
    )
    _refused(tmp_path, ["+mixture.caption.options.image_size=1024"], r"'caption': image_size=1024")


def test_unknown_task_and_option_in_the_mixture(tmp_path):
    _refused(tmp_path, ["mixture.caption.task=captioning_typo"], r"mixture entry 'caption': unknown task")
    _refused(tmp_path, ["+data.task_options.image_sise=64"], r"unknown option\(s\) \['image_sise'\]")


def test_a_larger_checkpoint_vocabulary_than_the_tokenizer(tmp_path):
    bpe = REPO.parent / "shared" / "ofa_bpe"
    if not (bpe / "encoder.json").is_file():
        pytest.skip("OFA's BPE files are not here")
    ckpt = tmp_path / "big.ckpt"
    torch.save({"model_config": {"vocab_size": 70000}, "state_dict": {}}, ckpt)
    _refused(
        tmp_path,
        ["tokenizer=ofa_bpe", f"tokenizer.path={bpe}", f"module.init_from={ckpt}"],
        r"vocabulary of 70000 ids.*cannot be loaded",
    )


def test_a_good_config_passes(tmp_path):
    from ofa_lightning.training.preflight import check_config

    check_config(compose_config(["experiment=demo"], tmp_path / "ok", tmp_path))
    check_config(
        compose_config(
            ["experiment=demo", "model.interpolate_position=true", "data.task_options.image_size=800"],
            tmp_path / "ok",
            tmp_path,
        )
    )
