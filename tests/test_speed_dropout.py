"""The fast dropout (``ofa_lightning/speed/dropout.py``, speed switch ``fast_dropout``): a faster CPU mask that keeps
dropout's contract."""

from __future__ import annotations

import pytest
import torch

from ofa_lightning.model import OFAConfig, OFAModel
from ofa_lightning.speed import SpeedConfig, build_model
from ofa_lightning.speed.dropout import FastDropout as Dropout
from ofa_lightning.speed.dropout import dropout, keep_mask


def test_keep_mask_rate_scale_and_reproducibility():
    torch.manual_seed(0)
    keep, scale = keep_mask(torch.Size([1000, 2000]), 0.1)
    assert keep.dtype == torch.bool and keep.shape == (1000, 2000)
    p_rounded = round(0.1 * 2**15) / 2**15
    assert abs(p_rounded - 0.1) < 2**-16 and scale == pytest.approx(1 / (1 - p_rounded), rel=1e-12)
    n = keep.numel()
    sigma = (p_rounded * (1 - p_rounded) / n) ** 0.5
    assert abs((1 - keep.float().mean().item()) - p_rounded) < 5 * sigma
    # the 16-bit lanes are independent: neighbours (same 64-bit word and across words) are uncorrelated
    flat = keep.flatten().float()
    corr = torch.corrcoef(torch.stack([flat[:-1], flat[1:]]))[0, 1].item()
    assert abs(corr) < 5 / n**0.5
    torch.manual_seed(0)
    again, _ = keep_mask(torch.Size([1000, 2000]), 0.1)
    assert torch.equal(keep, again)  # torch.manual_seed reproduces the mask
    other, _ = keep_mask(torch.Size([1000, 2000]), 0.1)
    assert not torch.equal(keep, other)
    for p in (0.0, 0.3, 0.5, 0.9):
        k, s = keep_mask(torch.Size([200_000]), p)
        assert abs((1 - k.float().mean().item()) - p) < 0.01 and s == pytest.approx(1 / (1 - round(p * 2**15) / 2**15))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_forward_backward_share_the_mask_and_keep_one_byte(dtype):
    torch.manual_seed(1)
    x = torch.randn(8, 50, 64).to(dtype).requires_grad_()
    y = dropout(x, 0.25)
    assert y.dtype == dtype and y.shape == x.shape
    kept = y != 0
    scale = 1 / (1 - round(0.25 * 2**15) / 2**15)
    torch.testing.assert_close(y[kept], (x[kept].float() * scale).to(dtype))
    y.backward(torch.ones_like(y))
    torch.testing.assert_close(x.grad, (kept.to(dtype) * scale).to(dtype))  # same mask in the backward pass

    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        dropout(x, 0.25)
    assert [t.dtype for t in saved] == [torch.bool]  # F.dropout keeps the scaled mask in x's dtype


def test_dropout_edge_cases_follow_f_dropout():
    x = torch.randn(4, 5)
    assert dropout(x, 0.1, training=False) is x and dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))
    m = Dropout(0.5, inplace=True).train()
    y = x.clone()
    assert m(y) is y  # in-place keeps nn.Dropout's path
    assert Dropout(0.5).eval()(x) is x


def test_fast_profile_uses_the_fast_dropout_everywhere_and_plain_none():
    cfg = OFAConfig.from_name(
        "tiny",
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        vocab_size=300,
        max_source_positions=32,
        max_target_positions=32,
        dropout=0.1,
    )
    m = build_model(cfg)
    drops = [mod for mod in m.modules() if isinstance(mod, torch.nn.Dropout)]
    assert drops and all(isinstance(d, Dropout) for d in drops)
    assert {d.p for d in drops} >= {0.1}
    for model in (OFAModel(cfg), build_model(cfg, SpeedConfig(profile="plain"))):  # the plain model: nn.Dropout
        assert {type(mod) for mod in model.modules() if isinstance(mod, torch.nn.Dropout)} == {torch.nn.Dropout}
    # training with dropout changes the output between calls, eval is deterministic
    ids = torch.tensor([[0, 10, 11, 2]])
    m.train()
    a, b = m(ids, ids), m(ids, ids)
    assert not torch.equal(a, b)
    m.eval()
    assert torch.equal(m(ids, ids), m(ids, ids))
