"""``model.speed.attention_kernel=flex``: the encoder's scores formed inside FlexAttention (speed/flex.py).

The fused kernel is GPU-only (and measured by ``benchmarks/suites/gpu.py``); here the same ``score_mod`` and augmented
q/k run through PyTorch's eager FlexAttention reference, so these tests check the maths of the path: outputs equal
the dense SDPA path's, and so do all gradients (PyTorch refuses a CPU backward, so that test lifts the two CPU
guards to run the reference's backward, which has the semantics the GPU kernel implements).
"""

from __future__ import annotations

import pytest
import torch

import ofa_lightning.tasks  # noqa: F401  (the tasks register their decoding presets)
from ofa_lightning.generation import GenerationConfig, generate
from ofa_lightning.model import OFAConfig
from ofa_lightning.speed import SpeedConfig, build_model
from ofa_lightning.speed import flex as flex_module

PAD = 1
SMALL = dict(
    d_model=32,
    encoder_layers=2,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    vocab_size=300,
    max_source_positions=64,
    max_target_positions=64,
    dropout=0.0,
)


def pair(dtype=torch.float64, **extra):
    torch.manual_seed(0)
    cfg = OFAConfig.from_name("tiny", **SMALL, **extra)
    dense = build_model(cfg).to(dtype)
    flex = build_model(cfg, SpeedConfig(attention_kernel="flex")).to(dtype)
    flex.load_state_dict(dense.state_dict())
    return dense, flex


def batch(dtype=torch.float64):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 300, (3, 7), generator=g)
    ids[2, -2:] = PAD  # padded text
    images = torch.randn(3, 3, 64, 64, generator=g).to(dtype)
    masks = torch.tensor([True, True, False])  # the third sample has no image: all its patches are padding
    return ids, images, masks


@pytest.mark.parametrize("sample_patch_num", [None, 9])
def test_flex_encoder_equals_dense_encoder(one_thread, sample_patch_num):
    dense, flex = pair()
    ids, images, masks = batch()
    dense.train(), flex.train()  # BatchNorm in batch statistics: both see the same batch
    with torch.no_grad():
        torch.manual_seed(3)
        a = dense.encode(ids, images, masks, sample_patch_num=sample_patch_num)
        torch.manual_seed(3)  # the same patch sample (one index per image: the (B, S, S) bucket index)
        b = flex.encode(ids, images, masks, sample_patch_num=sample_patch_num)
    assert torch.equal(a.padding_mask, b.padding_mask)
    real = ~a.padding_mask
    assert real.sum() > 0 and (~real).sum() > 0
    scale = a.hidden.abs().max()
    assert (a.hidden - b.hidden)[real].abs().max() <= 1e-12 * scale
    # padded positions: uniform attention over the batch row in both (the most negative value at every key)
    assert (a.hidden - b.hidden).abs().max() <= 1e-10 * scale


def test_flex_encoder_gradients_equal_dense_gradients(one_thread, monkeypatch):
    import torch.nn.attention.flex_attention as fa

    dense, flex = pair()
    ids, images, masks = batch()
    # PyTorch's FlexAttention has no CPU backward; its eager reference does (the GPU kernel's semantics)
    monkeypatch.setattr(fa, "_validate_device", lambda *a, **k: None)
    monkeypatch.setattr(flex_module, "refuse_cpu_backward", lambda q: None)
    dense.train(), flex.train()
    out_a = dense.encode(ids, images, masks)
    real = ~out_a.padding_mask
    target = torch.randn_like(out_a.hidden[real])
    (out_a.hidden[real] * target).sum().backward()
    (flex.encode(ids, images, masks).hidden[real] * target).sum().backward()
    grads_a = {n: p.grad for n, p in dense.named_parameters()}
    scale = max(g.abs().max() for g in grads_a.values() if g is not None)
    checked = 0
    for name, p in flex.named_parameters():
        ga = grads_a[name]
        assert (ga is None) == (p.grad is None), name
        if ga is None:
            continue
        # k-bias gradients are zero in exact arithmetic (softmax ignores a per-row constant): compare absolutely
        assert (p.grad - ga).abs().max() <= 1e-10 * scale, name
        checked += 1
    # the learned position pieces the kernel now handles all received their gradients
    for name in (
        "encoder.pos_q_linear.weight",
        "encoder.image_rel_pos_table_list.0.weight",
        "encoder.token_rel_pos_table_list.1.weight",
        "encoder.embed_image_positions.weight",
    ):
        assert dict(flex.named_parameters())[name].grad.abs().max() > 0, name
    assert checked > 50


def test_flex_encoder_under_bf16_autocast_is_close_to_dense(one_thread):
    dense, flex = pair(torch.float32)
    ids, images, masks = batch(torch.float32)
    dense.eval(), flex.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        a, b = dense.encode(ids, images, masks), flex.encode(ids, images, masks)
    real = ~a.padding_mask
    assert b.hidden.dtype == a.hidden.dtype
    # bf16 rounding: the dense path forms the absolute bias in bf16 first, the kernel in fp32
    assert torch.allclose(a.hidden[real].float(), b.hidden[real].float(), atol=0.1, rtol=0.05)


def test_flex_model_generates_the_dense_models_captions(one_thread):
    dense, flex = pair(torch.float32)
    ids, images, masks = batch(torch.float32)
    cfg = GenerationConfig.preset("caption", beam_size=2, max_len_a=0.0, max_len_b=4, min_len=1)
    b = dict(input_ids=ids[:2], patch_images=images[:2], patch_masks=masks[:2])
    with torch.no_grad():
        got, want = generate(flex.eval(), b, cfg), generate(dense.eval(), b, cfg)
    assert [[h.tokens.tolist() for h in hyps] for hyps in got] == [[h.tokens.tolist() for h in hyps] for hyps in want]
    assert all(len(hyps) > 0 for hyps in got)


def test_flex_refuses_cpu_training_and_attention_dropout_with_a_reason(one_thread):
    _, flex = pair(torch.float32)
    ids, images, masks = batch(torch.float32)
    flex.train()
    with pytest.raises(NotImplementedError, match="attention_kernel=sdpa"):
        flex.encode(ids, images, masks)
    _, flex = pair(torch.float32, attention_dropout=0.1)
    flex.train()
    with torch.no_grad(), pytest.raises(ValueError, match="attention_dropout"):
        flex.encode(ids, images, masks)
    with torch.no_grad():  # eval: no dropout, so the kernel runs
        assert flex.eval().encode(ids, images, masks).hidden.isfinite().all()
    with pytest.raises(ValueError, match="attention_kernel must be one of"):
        SpeedConfig(attention_kernel="flash")
