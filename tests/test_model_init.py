"""From-scratch initialisations (model/init.py): the shared sin/cos coordinate code and xavier Linears."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ofa_lightning.model import OFAConfig, OFAModel
from ofa_lightning.model.init import apply_model_init, encoder_branch_gain, sincos_location_init, xavier_linears
from ofa_lightning.training import OFALitModule

BINS = 32
VOCAB = 200
BIN_RANGE = (VOCAB - BINS, VOCAB)


def tiny_model() -> OFAModel:
    torch.manual_seed(0)
    return OFAModel(OFAConfig.from_name("tiny", vocab_size=VOCAB, encoder_layers=1, decoder_layers=1))


def test_sincos_bins_are_ordinal_and_patches_point_at_their_own_bin():
    model = tiny_model()
    sincos_location_init(model, BIN_RANGE, image_size=96)
    block = model.config.d_model // 4
    bins = model.encoder.embed_tokens.weight[BIN_RANGE[0] : BIN_RANGE[1]].detach()
    x_code = bins[:, :block]
    # an ordinal prior: each bin is closer to its neighbour than to a bin 8 away
    near = F.cosine_similarity(x_code[:-8], x_code[1:-7])
    far = F.cosine_similarity(x_code[:-8], x_code[8:])
    assert bool((near > far).all())
    assert torch.equal(bins[:, :block], bins[:, block : 2 * block])  # the same bin scores x and y

    table = model.encoder.embed_image_positions.weight.detach()
    grid = model.config.image_bucket_size
    for r, c in [(0, 0), (2, 5), (5, 3)]:  # 96 px = 6x6 patches of 16 px
        row = table[1 + r * grid + c]
        best_x = int((x_code @ row[:block]).argmax())
        best_y = int((x_code @ row[block : 2 * block]).argmax())
        assert best_x == round((c + 0.5) * 16 * (BINS - 1) / 96)  # the bin at the column centre
        assert best_y == round((r + 0.5) * 16 * (BINS - 1) / 96)
    # the second half of the width keeps OFA's random init
    assert 0.01 < float(bins[:, 2 * block :].std()) < 0.03


def test_xavier_touches_the_transformer_but_not_the_resnet():
    model = tiny_model()
    conv = next(p for n, p in model.encoder.embed_images.named_parameters() if p.ndim == 4).detach().clone()
    q = model.encoder.layers[0].self_attn.q_proj.weight.detach()
    assert abs(float(q.std()) - 0.02) < 0.003  # OFA's BERT init
    count = xavier_linears(model)
    assert count > 10
    fan_in, fan_out = q.shape[1], q.shape[0]
    assert abs(float(q.std()) - (2 / (fan_in + fan_out)) ** 0.5) < 0.01  # xavier's std
    assert torch.equal(next(p for n, p in model.encoder.embed_images.named_parameters() if p.ndim == 4), conv)


def test_branch_gain_shrinks_what_each_encoder_sublayer_adds_to_the_stream():
    torch.manual_seed(0)
    model = OFAModel(OFAConfig.from_name("tiny", vocab_size=VOCAB, encoder_layers=2, decoder_layers=1)).eval()
    xavier_linears(model)
    ids = torch.randint(3, VOCAB - BINS, (2, 7))

    def first_layer_update(m: OFAModel) -> float:
        seen = {}
        layer = m.encoder.layers[0]
        hook = layer.register_forward_hook(lambda mod, inp, out: seen.update(x=inp[0], y=out))
        with torch.no_grad():
            m.encoder(ids)
        hook.remove()
        return float((seen["y"] - seen["x"]).norm() / seen["x"].norm())

    before = first_layer_update(model)
    assert encoder_branch_gain(model, 0.25) == 2 * 2  # attn_ln + ffn_layernorm per layer
    after = first_layer_update(model)
    assert before > 1.0  # gain 1: each sub-layer adds a whole stream
    assert after < 0.4 * before
    assert all(float(layer.attn_ln.weight.detach().mean()) == 0.25 for layer in model.encoder.layers)
    assert float(model.decoder.layers[0].cross_attn_ln.weight.detach().mean()) == 1.0  # the decoder is left as it is
    assert model.encoder.layers[0].attn_ln.weight.requires_grad
    with pytest.raises(ValueError, match="branch_gain"):
        apply_model_init(model, branch_gain=0.0)


def test_bad_init_names_and_missing_inputs_are_reported():
    model = tiny_model()
    with pytest.raises(ValueError, match="bert.*xavier"):
        apply_model_init(model, linear="kaiming")
    with pytest.raises(ValueError, match="none.*sincos"):
        apply_model_init(model, location="learned")
    with pytest.raises(ValueError, match="location_image_size"):
        apply_model_init(model, location="sincos", bin_range=BIN_RANGE)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        sincos_location_init(model, (VOCAB, VOCAB + BINS), image_size=96)


class _Tok:
    bos_id, pad_id, eos_id = 0, 1, 2
    code_range, bin_range = (VOCAB - BINS - 8, VOCAB - BINS), BIN_RANGE


def test_lit_module_applies_model_init_only_from_scratch(tmp_path):
    cfg = OFAConfig.from_name("tiny", vocab_size=VOCAB, encoder_layers=1, decoder_layers=1)
    init = {"linear": "xavier", "location": "sincos", "location_image_size": 96}
    module = OFALitModule(cfg, tokenizer=_Tok(), model_init=init)
    bins = module.model.encoder.embed_tokens.weight[BIN_RANGE[0] : BIN_RANGE[1]].detach()
    block = cfg.d_model // 4
    assert torch.equal(bins[:, :block], bins[:, block : 2 * block])
    with pytest.raises(ValueError, match="tokenizer"):
        OFALitModule(cfg, model_init=init)
    # init_from wins: the loaded weights are used as they are
    plain = OFAModel(cfg)
    torch.save({"model_config": cfg.to_dict(), "state_dict": plain.state_dict()}, tmp_path / "plain.pt")
    warm = OFALitModule(cfg, tokenizer=_Tok(), model_init=init, init_from=str(tmp_path / "plain.pt"))
    assert torch.equal(warm.model.encoder.embed_tokens.weight, plain.encoder.embed_tokens.weight)
