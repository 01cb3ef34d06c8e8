"""ofa-export: the HF / ModelScope layout loads in ModelScope's port with the same logits (text and image-code
decoding), imports back bit for bit, carries a tokenizer the port reads as ours; safetensors kit checkpoints load
without pickle; what the layout cannot hold is refused with the reason."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from modelscope_ref import perturbed_reference
from safetensors.torch import load_file
from test_parity_modelscope import batch

from ofa_lightning.cli.export import main as export_main
from ofa_lightning.errors import UserError
from ofa_lightning.export.hf import export_hf
from ofa_lightning.export.safetensors_checkpoint import load_safetensors_checkpoint, save_safetensors_checkpoint
from ofa_lightning.tokenizer import OFATokenizer
from ofa_lightning.weights.convert import from_modelscope_state_dict, infer_config

TOL = 1e-4
SMALL = dict(encoder_layers=2, decoder_layers=2)


@pytest.fixture(scope="module")
def ours():
    ms = perturbed_reference(SMALL)
    return from_modelscope_state_dict(ms.state_dict(), infer_config(ms.state_dict(), dropout=0.0)).eval()


@pytest.fixture(scope="module")
def bpe():
    return OFATokenizer.from_ofa_files(os.environ["OFA_BPE_DIR"])


def load_port(folder: Path):
    from modelscope_ref import load_ms_ofa

    return load_ms_ofa().OFAModel.from_pretrained(str(folder)).eval()


@torch.no_grad()
def test_hf_export_loads_in_modelscope_with_our_logits(ours, bpe, tmp_path):
    out = export_hf(ours, tmp_path / "hf", bpe)
    assert {p.name for p in out.iterdir()} >= {"config.json", "model.safetensors", "vocab.json", "merges.txt"}
    port = load_port(out)
    ids, images, prev = batch()
    masks = torch.tensor([True, False])
    ref = port(input_ids=ids, patch_images=images, patch_masks=masks, decoder_input_ids=prev).logits
    assert (ours.decode(prev, ours.encode(ids, images, masks)) - ref).abs().max() <= TOL
    code_masks = torch.tensor([True, True])
    ref = port(
        input_ids=ids,
        patch_images=images,
        patch_masks=torch.tensor([True, True]),
        decoder_input_ids=prev,
        code_masks=code_masks,
    ).logits
    enc = ours.encode(ids, images, torch.tensor([True, True]))
    assert (ours.decode(prev, enc, code_masks=code_masks) - ref).abs().max() <= TOL


def test_hf_export_round_trip_is_bit_identical(ours, tmp_path):
    export_hf(ours, tmp_path / "hf")
    back = from_modelscope_state_dict(load_file(str(tmp_path / "hf" / "model.safetensors")), ours.config)
    mine, theirs = ours.state_dict(), back.state_dict()
    assert set(mine) == set(theirs)
    for key, value in mine.items():
        assert torch.equal(value, theirs[key]), key


def test_exported_tokenizer_reads_as_ours_in_the_port(bpe, ours, tmp_path):
    from transformers import BartTokenizer

    export_hf(ours, tmp_path / "hf", bpe)
    port_tok = BartTokenizer.from_pretrained(str(tmp_path / "hf"))  # ModelScope's OFATokenizer is BART's
    port_tok.add_tokens([f"<code_{i}>" for i in range(8192)])  # what ModelScope's OFA preprocessor appends
    port_tok.add_tokens([f"<bin_{i}>" for i in range(1000)])
    text = " what does the image describe? A man riding a horse."
    assert port_tok(text, add_special_tokens=False)["input_ids"] == bpe.encode(text)
    assert port_tok.convert_tokens_to_ids(["<code_0>", "<bin_999>"]) == [bpe.code_range[0], bpe.bin_range[1] - 1]
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["vocab_size"] == bpe.vocab_size


def test_hf_export_refuses_what_the_layout_cannot_hold(ours, tmp_path):
    small = OFATokenizer.train_bpe(
        ["a red square and a blue circle"] * 10, bpe_vocab_size=300, num_codes=8, num_bins=16
    )
    with pytest.raises(UserError, match="8192 <code_i> then 1000 <bin_i>"):
        export_hf(ours, tmp_path / "x", small)
    ours.config.max_target_positions, saved = 512, ours.config.max_target_positions
    try:
        with pytest.raises(UserError, match="one max_position_embeddings"):
            export_hf(ours, tmp_path / "y")
    finally:
        ours.config.max_target_positions = saved


def test_safetensors_checkpoint_round_trip_without_pickle(ours, tmp_path):
    card = {"format": "x", "config": {"module": {"peft": None}}}
    path = save_safetensors_checkpoint(ours, tmp_path / "m.safetensors", card)
    assert path.read_bytes()[:8] != b"PK\x03\x04"  # not a torch zip/pickle
    back, back_card = load_safetensors_checkpoint(path)
    assert back_card == card
    for key, value in ours.state_dict().items():
        assert torch.equal(value, back.state_dict()[key]), key
    assert back.decoder.embed_tokens.weight is back.encoder.embed_tokens.weight  # the tie is restored


def test_cli_exports_a_converted_checkpoint(ours, tmp_path, capsys):
    from dataclasses import asdict

    src = tmp_path / "conv.pt"
    torch.save({"state_dict": ours.state_dict(), "model_config": asdict(ours.config)}, src)
    assert export_main([str(src), str(tmp_path / "m.safetensors"), "--format", "safetensors"]) == 0
    back, _ = load_safetensors_checkpoint(tmp_path / "m.safetensors")
    assert torch.equal(back.encoder.embed_tokens.weight, ours.encoder.embed_tokens.weight)
    assert export_main([str(tmp_path / "missing.pt"), str(tmp_path / "o"), "--format", "hf"]) == 2
    assert "not found" in capsys.readouterr().err
