"""Optimiser groups, the warm-up + linear-decay schedule, freezing, and the EMA (ofa_lightning/training)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ofa_lightning.model import OFAConfig, OFAModel
from ofa_lightning.training.ema import EMA, EMAConfig
from ofa_lightning.training.optim import (
    OptimConfig,
    apply_freezing,
    build_optimizer,
    build_scheduler,
    lr_at,
    param_groups,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_schedule_values_at_chosen_steps():
    cfg = OptimConfig(lr=1e-3, end_lr=1e-5, warmup_ratio=0.1)
    max_steps = 200  # warm-up int(0.1 * 200) = 20 updates
    assert lr_at(0, cfg, max_steps) == pytest.approx(1e-3 / 20)  # fairseq: the first update runs at lr / warmup
    assert lr_at(10, cfg, max_steps) == pytest.approx(0.5e-3)
    assert lr_at(20, cfg, max_steps) == pytest.approx(1e-3)  # warm-up end = peak
    assert lr_at(110, cfg, max_steps) == pytest.approx((1e-3 - 1e-5) * 0.5 + 1e-5)  # half-way through the decay
    assert lr_at(200, cfg, max_steps) == pytest.approx(1e-5)  # end
    assert lr_at(500, cfg, max_steps) == pytest.approx(1e-5)
    steps = OptimConfig(lr=1e-3, warmup_steps=5)
    assert lr_at(5, steps, 105) == pytest.approx(1e-3) and lr_at(55, steps, 105) == pytest.approx(0.5e-3)
    none = OptimConfig(lr=2e-4)
    assert lr_at(0, none, 10) == pytest.approx(2e-4) and lr_at(5, none, 10) == pytest.approx(1e-4)


def test_scheduler_follows_lr_at_and_needs_configured_max_steps():
    model = nn.Linear(3, 3)
    cfg = OptimConfig(lr=1e-3, end_lr=0.0, warmup_steps=4)
    opt = build_optimizer(model, cfg)
    sched = build_scheduler(opt, cfg, max_steps=12)
    seen = []
    for s in range(14):
        seen.append(opt.param_groups[0]["lr"])
        assert seen[-1] == pytest.approx(lr_at(s, cfg, 12))
        opt.step()
        sched.step()
    assert seen[4] == pytest.approx(1e-3) and seen[8] == pytest.approx(0.5e-3) and seen[12] == 0.0
    with pytest.raises(ValueError, match="max_steps"):
        build_scheduler(opt, cfg, max_steps=None)


def test_adamw_settings_and_decay_groups():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    opt = build_optimizer(model, OptimConfig())
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["weight_decay"] == 0.01  # OFA: decay on all params
    assert opt.param_groups[0]["betas"] == (0.9, 0.999) and opt.param_groups[0]["eps"] == 1e-8
    groups = param_groups(model, 0.01, exclude_norm_bias=True)
    assert [len(g["params"]) for g in groups] == [1, 3]  # linear weight | linear bias, LN weight, LN bias
    assert groups[1]["weight_decay"] == 0.0
    assert OptimConfig.from_any({"betas": [0.9, 0.98]}).betas == (0.9, 0.98)
    with pytest.raises(ValueError, match="unknown optim options"):
        OptimConfig.from_any({"learning_rate": 1.0})


def test_freezing_embeddings_and_resnet_bn():
    cfg = OFAConfig.from_name(
        "tiny",
        encoder_layers=1,
        decoder_layers=1,
        d_model=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        vocab_size=30,
    )
    model = OFAModel(cfg)
    report = apply_freezing(model, OptimConfig(freeze_embeddings=True, freeze_resnet_bn=True))
    assert not model.embed_tokens.weight.requires_grad
    assert report["embeddings"] == 30 * 32 and report["resnet_bn"] > 0
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.encoder.embed_images.modules())
    trainable = {id(p) for g in param_groups(model, 0.01) for p in g["params"]}
    assert id(model.embed_tokens.weight) not in trainable
    assert id(model.encoder.embed_images.conv1.weight) in trainable  # convolutions still train


def test_ema_arithmetic_start_and_every():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        model[0].weight.fill_(1.0)
    ema = EMA(model, decay=0.9, start_step=2, update_every=1)
    with torch.no_grad():
        model[0].weight.fill_(3.0)
    ema.update(model, step=1)  # before start_step: copy
    assert torch.allclose(ema.shadow["0.weight"], torch.full((2, 2), 3.0))
    with torch.no_grad():
        model[0].weight.fill_(5.0)
        model[1].running_mean.fill_(1.0)
        model[1].num_batches_tracked.fill_(7)
    ema.update(model, step=2)
    assert torch.allclose(ema.shadow["0.weight"], torch.full((2, 2), 0.9 * 3.0 + 0.1 * 5.0))
    assert torch.allclose(ema.shadow["1.running_mean"], torch.full((2,), 0.1))  # float buffers are averaged
    assert int(ema.shadow["1.num_batches_tracked"]) == 7  # integer buffers copied
    sparse = EMA(model, decay=0.5, update_every=2)
    assert not sparse.update(model, step=3) and sparse.update(model, step=4)


def test_ema_fp32_shadow_swap_and_checkpoint_round_trip():
    model = nn.Linear(3, 2).to(torch.bfloat16)
    ema = EMA(model, decay=0.99)
    assert all(v.dtype == torch.float32 for v in ema.shadow.values())
    trained = model.weight.detach().clone()
    with torch.no_grad():
        ema.shadow["weight"].fill_(0.25)
    with ema.swapped(model):
        assert torch.all(model.weight == 0.25)
    assert torch.equal(model.weight, trained)
    ema.update(model, step=1)
    state = ema.state_dict()
    other = EMA(nn.Linear(3, 2).to(torch.bfloat16), decay=0.99)
    other.load_state_dict(state)
    assert other.num_updates == 1
    for k in state["shadow"]:
        assert torch.equal(other.shadow[k], ema.shadow[k])
    with pytest.raises(KeyError):
        EMA(nn.Linear(3, 3, bias=False)).load_state_dict(state)
    assert EMAConfig.from_any(True).enabled and EMAConfig.from_any({"decay": 0.999}).enabled
    assert not EMAConfig.from_any(None).enabled
