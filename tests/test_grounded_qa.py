"""Unseen-task prompts: grounded QA (a question about a region given as location bins) — the bins arithmetic, the
prompt's tokens, and the whole path through ``ofa-predict`` (``region=[x0,y0,x1,y1]``) and ``ofa_lightning.api``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from ofa_lightning.paths import CONF_DIR
from ofa_lightning.tasks.grounded_qa import fill_region, grounded_qa_prompt, image_size_of, region_to_bins

BPE = Path(os.environ.get("OFA_BPE_DIR", ""))
needs_bpe = pytest.mark.skipif(not (BPE / "encoder.json").is_file(), reason="OFA's BPE files ($OFA_BPE_DIR) absent")


def test_region_to_bins_by_hand():
    # 200x100 image: x / 200 * 999, y / 100 * 999, rounded
    assert region_to_bins([50, 25, 150, 75], (200, 100)) == [250, 250, 749, 749]  # 249.75, 249.75, 749.25, 749.25
    assert region_to_bins([0, 0, 200, 100], (200, 100)) == [0, 0, 999, 999]
    assert region_to_bins([-5, 0, 300, 100], (200, 100), num_bins=64) == [0, 0, 63, 63]  # clamped to the image
    with pytest.raises(ValueError):
        region_to_bins([10, 10, 5, 20], (100, 100))


def test_bins_round_trip_through_ofas_dequantisation():
    box, size = [31.0, 40.0, 201.0, 180.0], (640, 480)
    bins = region_to_bins(box, size)
    back = [bins[0] / 999 * size[0], bins[1] / 999 * size[1], bins[2] / 999 * size[0], bins[3] / 999 * size[1]]
    assert all(abs(a - b) <= 0.5 * max(size) / 999 for a, b in zip(box, back))


def test_prompt_and_fill_region(tmp_path):
    prompt = grounded_qa_prompt("What color is the shape in the region", [50, 25, 150, 75], (200, 100))
    assert prompt == " what color is the shape in the region? region: <bin_250> <bin_250> <bin_749> <bin_749>"
    from PIL import Image

    path = tmp_path / "im.png"
    Image.new("RGB", (200, 100)).save(path)
    assert image_size_of(path) == (200, 100)
    filled = fill_region(" what is in the region? region: {region}", [50, 25, 150, 75], path)
    assert filled.endswith("region: <bin_250> <bin_250> <bin_749> <bin_749>")
    assert fill_region(" what is it?", [50, 25, 150, 75], (200, 100)).endswith(
        "? region: <bin_250> <bin_250> <bin_749> <bin_749>"
    )


@needs_bpe
def test_prompt_encodes_the_region_as_four_bin_tokens():
    from ofa_lightning.tokenizer import OFATokenizer

    tok = OFATokenizer.from_ofa_files(BPE)
    ids = tok.encode(grounded_qa_prompt("what color is it?", [50, 25, 150, 75], (200, 100)))
    assert ids[-4:] == tok.bins_to_ids([250, 250, 749, 749])
    assert all(i < tok.bin_offset for i in ids[:-4])


@needs_bpe
def test_grounded_qa_through_ofa_predict(tmp_path, monkeypatch):
    import pytorch_lightning as pl
    from PIL import Image

    from ofa_lightning.api import OFA
    from ofa_lightning.cli.predict import run
    from ofa_lightning.model import OFAConfig
    from ofa_lightning.tokenizer import OFATokenizer
    from ofa_lightning.training import OFALitModule

    torch.manual_seed(0)
    tok = OFATokenizer.from_ofa_files(BPE)
    run_dir = tmp_path / "run"
    tok.save(run_dir / "tokenizer")
    config = OFAConfig.from_name(
        "tiny",
        encoder_layers=1,
        decoder_layers=1,
        d_model=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        vocab_size=tok.vocab_size,
        dropout=0.0,
    )
    module = OFALitModule(config, tokenizer=tok)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.strategy.connect(module)
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(ckpt)
    image = tmp_path / "scene.png"
    Image.new("RGB", (200, 100), "white").save(image)

    seen = {}
    real = OFA.generate

    def spy(self, img, prompt, task="caption", **kw):
        seen["prompt"], seen["task"] = prompt, task
        return real(self, img, prompt, task, max_len_b=3, beam_size=2, **kw)

    monkeypatch.setattr(OFA, "generate", spy)
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "predict",
            overrides=[
                f"ckpt_path={ckpt}",
                f"image={image}",
                "image_size=64",
                "decoding=vqa",
                "region=[50,25,150,75]",
                "prompt='what color is the shape in the region? region: {region}'",
                f"paths.output_dir={tmp_path / 'out'}",
                f"paths.root_dir={tmp_path}",
            ],
        )
    result = run(cfg)
    expected = "what color is the shape in the region? region: <bin_250> <bin_250> <bin_749> <bin_749>"
    assert seen == {"prompt": expected, "task": "vqa"}
    assert result["prompt"] == expected and isinstance(result["text"], str)
    saved = json.loads((tmp_path / "out" / "prediction.json").read_text())
    assert saved["prompt"] == expected
