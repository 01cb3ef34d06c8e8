"""Numerical parity with ModelScope's OFA port (fp32, max |Δ| ≤ 1e-4).

Every floating parameter and buffer of the reference model is perturbed away
from its init (LayerNorm gains, head scales, BN statistics, relative tables...)
so that a mistake in any of them shows up in the outputs.
"""

from __future__ import annotations

import pytest
import torch
from modelscope_ref import perturbed_reference

from ofa_lightning.weights.convert import from_modelscope_state_dict, infer_config

TOL = 1e-4


def batch(seed: int = 3, size: int = 96):
    g = torch.Generator().manual_seed(seed)
    ids = torch.tensor([[0, 617, 473, 5, 2335, 21, 42, 2], [0, 99, 1000, 58457, 58999, 2, 1, 1]])
    images = torch.randn(2, 3, size, size, generator=g)
    prev = torch.tensor([[0, 10, 11, 12, 13, 14], [0, 58457, 58500, 1, 1, 1]])
    return ids, images, prev


SIZES = {
    "tiny": dict(
        d_model=256,
        encoder_layers=4,
        decoder_layers=4,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=1024,
        decoder_ffn_dim=1024,
        resnet_type="resnet50",
    ),
    # A non-default shape: Medium's width and ResNet-101, 2+3 layers, 8 heads.
    "medium-2x3": dict(
        d_model=512,
        encoder_layers=2,
        decoder_layers=3,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        resnet_type="resnet101",
    ),
}


@pytest.fixture(scope="module", params=list(SIZES))
def pair(request):
    ms = perturbed_reference(SIZES[request.param])
    ours = from_modelscope_state_dict(ms.state_dict(), infer_config(ms.state_dict(), dropout=0.0)).eval()
    return ms, ours


def test_inferred_config_matches(pair):
    ms, ours = pair
    assert ours.config.d_model == ms.config.d_model
    assert ours.config.encoder_layers == ms.config.encoder_layers
    assert ours.config.resnet_type == ms.config.resnet_type
    assert ours.num_parameters()["total"] == sum(p.numel() for p in ms.parameters())


@torch.no_grad()
def test_encoder_and_text_decoder_match(pair):
    ms, ours = pair
    ids, images, prev = batch()
    masks = torch.tensor([True, False])  # second sample: image present but masked (text-only sample)
    ref = ms(input_ids=ids, patch_images=images, patch_masks=masks, decoder_input_ids=prev)
    ref_enc = ms.encoder(input_ids=ids, patch_images=images, patch_masks=masks)
    enc = ours.encode(ids, images, masks)
    assert (enc.hidden - ref_enc.last_hidden_state).abs().max() <= TOL
    assert torch.equal(enc.padding_mask, ref_enc.padding_mask)
    logits = ours.decode(prev, enc)
    assert logits.shape == ref.logits.shape
    assert (logits - ref.logits).abs().max() <= TOL


@torch.no_grad()
@pytest.mark.parametrize("code", [(True, True), (True, False)])
def test_image_code_decoder_matches(pair, code):
    ms, ours = pair
    ids, images, prev = batch(seed=5)
    masks = torch.tensor([True, True])
    code_masks = torch.tensor(code)
    ref = ms(input_ids=ids, patch_images=images, patch_masks=masks, decoder_input_ids=prev, code_masks=code_masks)
    logits = ours.decode(prev, ours.encode(ids, images, masks), code_masks=code_masks)
    assert (logits - ref.logits).abs().max() <= TOL


@torch.no_grad()
def test_text_only_encoder_matches(pair):
    ms, ours = pair
    ids, _, prev = batch()
    ref = ms.encoder(input_ids=ids)
    enc = ours.encode(ids)
    assert (enc.hidden - ref.last_hidden_state).abs().max() <= TOL
    ref_logits = ms(input_ids=ids, decoder_input_ids=prev).logits
    assert (ours.decode(prev, enc) - ref_logits).abs().max() <= TOL


@torch.no_grad()
def test_cached_decoding_matches_full(pair):
    _, ours = pair
    ids, images, prev = batch()
    enc = ours.encode(ids, images)
    full = ours.decode(prev, enc)
    cache = ours.new_cache()
    steps = torch.cat([ours.decode(prev[:, : t + 1], enc, cache=cache) for t in range(prev.shape[1])], dim=1)
    assert (steps - full).abs().max() <= 1e-5
