"""OFA-CN: the cn_base / cn_large sizes and numerical parity with ModelScope's port under the Chinese
configuration (OFA-CN's 30,325-token vocabulary, a Chinese prompt from the Chinese tokenizer).

ModelScope's ``OFAModel`` is built at a small size with OFA-CN's vocabulary, every float tensor perturbed away from
its init, converted into ours; encoder states and decoder logits agree to 1e-4 and beam search under OFA-CN's
caption settings (beam 8, no-repeat 3) returns the same tokens.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from modelscope_ref import build_ms_model, ms_generate, ms_sequence_generator, perturbed_reference

from ofa_lightning.generation import GenerationConfig, generate
from ofa_lightning.model import CATALOGUE, OFAModel
from ofa_lightning.model.config import OFA_CN_VOCAB_SIZE, REFERENCE_PARAM_COUNTS
from ofa_lightning.weights.convert import from_modelscope_state_dict, infer_config

TOL = 1e-4
REPO_ROOT = Path(__file__).resolve().parents[1]
BERT_CN_DIR = Path(os.environ.get("OFA_BERT_CN_DIR", REPO_ROOT.parent / "shared" / "ofa_bert_cn"))

# cn_base's trunk (ResNet-101) and vocabulary, narrower and shallower so that it runs in seconds
SMALL_CN = dict(
    vocab_size=OFA_CN_VOCAB_SIZE,
    d_model=128,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=512,
    decoder_ffn_dim=512,
    resnet_type="resnet101",
)


@pytest.mark.parametrize(
    "name, checkpoints_cn_md",
    [("cn_base", (160e6, "resnet101", 768, 6, 6)), ("cn_large", (443e6, "resnet152", 1024, 12, 12))],
)
def test_cn_sizes_follow_checkpoints_cn_md(name, checkpoints_cn_md):
    params, resnet, hidden, enc, dec = checkpoints_cn_md
    cfg = CATALOGUE[name]
    assert (cfg.resnet_type, cfg.d_model, cfg.encoder_layers, cfg.decoder_layers) == (resnet, hidden, enc, dec)
    assert cfg.vocab_size == OFA_CN_VOCAB_SIZE and cfg.encoder_ffn_dim == 4 * hidden
    with torch.device("meta"):  # no memory for the weights
        ours = OFAModel.from_name(name).num_parameters()["total"]
    accelerate = pytest.importorskip("accelerate")
    with accelerate.init_empty_weights():  # ModelScope's init calls .item() on plain tensors: meta parameters only
        ms, _ = build_ms_model(
            dict(
                vocab_size=cfg.vocab_size,
                d_model=cfg.d_model,
                encoder_layers=cfg.encoder_layers,
                decoder_layers=cfg.decoder_layers,
                encoder_attention_heads=cfg.encoder_attention_heads,
                decoder_attention_heads=cfg.decoder_attention_heads,
                encoder_ffn_dim=cfg.encoder_ffn_dim,
                decoder_ffn_dim=cfg.decoder_ffn_dim,
                resnet_type=cfg.resnet_type,
            )
        )
    # the output projection is the shared embedding (share_decoder_input_output_embed); init_empty_weights unties it
    assert ms.config.share_decoder_input_output_embed
    theirs = sum(p.numel() for n, p in ms.named_parameters() if n != "decoder.output_projection.weight")
    assert theirs == REFERENCE_PARAM_COUNTS[name]
    assert abs(ours - theirs) / theirs <= 0.005
    assert abs(ours - params) / params < 0.005  # "160M" / "443M"


@pytest.fixture(scope="module")
def pair():
    ms = perturbed_reference(SMALL_CN)
    ours = from_modelscope_state_dict(ms.state_dict(), infer_config(ms.state_dict(), dropout=0.0)).eval()
    return ms, ours


def _chinese_batch():
    if (BERT_CN_DIR / "vocab.txt").is_file():
        from ofa_lightning.tokenizer import OFATokenizer

        tok = OFATokenizer.from_bert_files(BERT_CN_DIR)
        rows = tok.encode_batch(["图片描述了什么内容?", '这段文字" 一只白色的猫 "描述的是哪个区域？'], True, True)
    else:  # the same ids, written out
        rows = [[0, 1749, 4279, 2993, 6839, 753, 788, 724, 1083, 2163, 140, 2]]
        rows.append([0, 6825, 3671, 3156, 2103, 111, 677, 1383, 4640, 4348, 111, 2])
    width = max(map(len, rows))
    ids = torch.tensor([r + [1] * (width - len(r)) for r in rows])
    images = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(3))
    return ids, images


def test_converted_config_is_chinese(pair):
    ms, ours = pair
    assert ours.config.vocab_size == OFA_CN_VOCAB_SIZE == ms.config.vocab_size
    assert ours.num_parameters()["total"] == sum(p.numel() for p in ms.parameters())


@torch.no_grad()
def test_encoder_states_and_decoder_logits_match(pair):
    ms, ours = pair
    ids, images = _chinese_batch()
    masks = torch.tensor([True, True])
    prev = torch.tensor([[0, 2225, 4281, 4638, 4344], [0, 29325, 29800, 30000, 30324]])  # text; 4 bins
    ref_enc = ms.encoder(input_ids=ids, patch_images=images, patch_masks=masks)
    enc = ours.encode(ids, images, masks)
    assert (enc.hidden - ref_enc.last_hidden_state).abs().max() <= TOL
    ref = ms(input_ids=ids, patch_images=images, patch_masks=masks, decoder_input_ids=prev)
    logits = ours.decode(prev, enc)
    assert logits.shape == ref.logits.shape == (2, 5, OFA_CN_VOCAB_SIZE)
    assert (logits - ref.logits).abs().max() <= TOL


@torch.no_grad()
def test_beam_search_matches_under_ofa_cn_caption_settings(pair):
    ms, ours = pair
    ids, images = _chinese_batch()
    masks = torch.tensor([True, True])
    # OFA-Sys/OFA run_scripts/caption/generate_caption_cn.sh: --beam=8 --no-repeat-ngram-size=3 (max_len_b
    # shortened from 128 for a random model)
    cfg = GenerationConfig(beam_size=8, max_len_b=12, min_len=1, no_repeat_ngram_size=3)
    gen = ms_sequence_generator(
        OFA_CN_VOCAB_SIZE,
        beam_size=8,
        max_len_a=0,
        max_len_b=12,
        min_len=1,
        no_repeat_ngram_size=3,
        normalize_scores=True,
        len_penalty=1.0,
        unk_penalty=0.0,
        temperature=1.0,
    )
    ref = ms_generate(gen, ms, ids, images, masks)
    hyps = generate(ours, {"input_ids": ids, "patch_images": images, "patch_masks": masks}, cfg)
    assert all(len(h[0].tokens) > 3 for h in hyps)  # real sequences, not an immediate </s>
    for mine, theirs in zip(hyps, ref):
        assert [h.tokens.tolist() for h in mine[:3]] == [r["tokens"].tolist() for r in theirs[:3]]
        assert abs(mine[0].score - float(theirs[0]["score"])) <= 1e-4


# ---------------------------------------------------------------------------------------------------------------
# ofa-convert: OFA-CN fairseq checkpoints and ModelScope Chinese state dicts
# ---------------------------------------------------------------------------------------------------------------
def test_ofa_convert_imports_an_ofa_cn_fairseq_checkpoint(tmp_path, capsys):
    import argparse

    from docs_standins import fairseq_layout

    from ofa_lightning.cli.convert import main as convert_main
    from ofa_lightning.model import OFAConfig
    from ofa_lightning.weights.convert import load_converted

    small = dict(d_model=96, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=192, decoder_ffn_dim=192)
    src = OFAModel(OFAConfig.from_name("cn_base", **small)).eval()
    raw, out = tmp_path / "ofa_cn.pt", tmp_path / "converted.pt"
    # OFA-CN's checkpoints record bpe=bert (OFA-Sys/OFA README: "bpe=bert", bpe_dir=utils/BERT_CN_dict)
    torch.save({"model": fairseq_layout(src), "args": argparse.Namespace(arch="ofa_base", bpe="bert")}, raw)
    assert convert_main([str(raw), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tokenizer=ofa_bert_cn" in printed and "BERT_CN_dict" in printed
    model = load_converted(out).eval()
    assert model.config.vocab_size == OFA_CN_VOCAB_SIZE and model.config.resnet_type == "resnet101"
    ids, prev, img = torch.tensor([[0, 1749, 4279, 2]]), torch.tensor([[0, 29325, 29400]]), torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(ids, prev, img), src(ids, prev, img), atol=1e-6)


@torch.no_grad()
def test_ofa_convert_imports_a_modelscope_chinese_state_dict(pair, tmp_path, capsys):
    from ofa_lightning.cli.convert import main as convert_main
    from ofa_lightning.weights.convert import load_converted

    ms, _ = pair
    raw, out = tmp_path / "pytorch_model.bin", tmp_path / "converted.pt"
    torch.save(ms.state_dict(), raw)  # a ModelScope model folder's weights file
    assert convert_main([str(raw), str(out)]) == 0
    assert "tokenizer=ofa_bert_cn" in capsys.readouterr().out  # known by its vocabulary size
    model = load_converted(out).eval()
    ids, images = _chinese_batch()
    prev = torch.tensor([[0, 2225, 4281], [0, 29325, 29800]])
    masks = torch.tensor([True, True])
    ref = ms(input_ids=ids, patch_images=images, patch_masks=masks, decoder_input_ids=prev).logits
    assert (model.decode(prev, model.encode(ids, images, masks)) - ref).abs().max() <= TOL
