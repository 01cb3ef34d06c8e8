"""The speed seam (``ofa_lightning/speed``): the plain model is plain PyTorch; ``apply_speed`` puts every fast path in
without changing parameters or the computed function, and takes them out again; ``model.speed`` selects them."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from ofa_lightning.model import OFAConfig, OFAModel
from ofa_lightning.speed import PROFILES, SWITCHES, SpeedConfig, apply_speed, build_model, plain, speed_of
from ofa_lightning.speed.seam import PLAIN_CLASS

SMALL = dict(
    d_model=32,
    encoder_layers=1,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    vocab_size=300,
    max_source_positions=64,
    max_target_positions=64,
    dropout=0.0,
)


def batch():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 300, (2, 7), generator=g)
    return ids, ids.clone(), torch.randn(2, 3, 64, 64, generator=g), torch.ones(2, dtype=torch.bool)


def plain_types(model: torch.nn.Module) -> set[str]:
    return {type(m).__module__.split(".")[1] for m in model.modules() if type(m).__module__.startswith("ofa_")}


def test_plain_model_has_no_fast_class_and_fast_profile_changes_no_parameter(one_thread):
    torch.manual_seed(0)
    model = OFAModel(OFAConfig.from_name("tiny", **SMALL))
    assert plain_types(model) == {"model"}
    assert not any(type(m) in PLAIN_CLASS for m in model.modules())
    assert {type(m) for m in model.modules() if isinstance(m, torch.nn.Linear)} == {torch.nn.Linear}
    names = {k: v.clone() for k, v in model.state_dict().items()}
    apply_speed(model)
    assert "speed" in plain_types(model) and speed_of(model).profile == "fast"
    assert list(model.state_dict()) == list(names)
    assert all(torch.equal(names[k], v) for k, v in model.state_dict().items())
    plain(model)
    assert plain_types(model) == {"model"} and speed_of(model).profile == "plain"


@pytest.mark.parametrize("train", [False, True])
def test_fast_profile_computes_the_plain_models_function(one_thread, train):
    torch.manual_seed(0)
    cfg = OFAConfig.from_name("tiny", **SMALL)
    # training in fp64: BatchNorm over a 2-image batch amplifies fp32 summation-order differences in the gradients
    dtype = torch.float64 if train else torch.float32
    slow = build_model(cfg, "plain").train(train).to(dtype)
    fast = build_model(cfg).train(train).to(dtype)
    fast.load_state_dict(slow.state_dict())
    ids, prev, images, masks = batch()
    images = images.to(dtype)
    outs = []
    for m in (slow, fast):
        with torch.set_grad_enabled(train):
            logits = m(ids, prev, images, masks)
        if train:
            logits.float().logsumexp(-1).mean().backward()
        outs.append(logits.detach())
    torch.testing.assert_close(outs[1], outs[0], atol=1e-4, rtol=1e-4)
    if train:
        grads = dict(slow.named_parameters())
        for name, p in fast.named_parameters():
            if p.grad is not None or grads[name].grad is not None:
                torch.testing.assert_close(p.grad, grads[name].grad, atol=1e-9, rtol=1e-6, msg=name)


def test_activation_checkpointing_keeps_loss_and_gradients(one_thread):
    torch.manual_seed(0)
    cfg = OFAConfig.from_name("tiny", **SMALL)
    a = build_model(cfg).train()
    b = build_model(cfg, SpeedConfig(activation_checkpointing=True)).train()
    b.load_state_dict(a.state_dict())
    ids, prev, images, masks = batch()
    losses = []
    for m in (a, b):
        loss = m(ids, prev, images, masks).logsumexp(-1).mean()
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[0], losses[1])
    ga = dict(a.named_parameters())
    for name, p in b.named_parameters():
        torch.testing.assert_close(p.grad, ga[name].grad, atol=1e-5, rtol=1e-4, msg=name)
    assert type(b.encoder.layers[0]).__name__ == "CheckpointedEncoderLayer"


def test_transposed_projection_equals_f_linear(one_thread, monkeypatch):
    from ofa_lightning.speed import lookups

    monkeypatch.setattr(lookups, "transposed_projection_helps", lambda: True)  # as on an AMD CPU
    torch.manual_seed(0)
    model = build_model(OFAConfig.from_name("tiny", **SMALL)).eval()
    hidden = torch.randn(3, 5, 32)
    ids = torch.tensor([4, 9, 100])
    with torch.no_grad():
        got, got_ids = model.project(hidden), model.project(hidden, ids)
    weight = model.embed_tokens.weight
    assert got.stride()[-1] != 1  # the transposed orientation ran
    torch.testing.assert_close(got, F.linear(hidden, weight))
    torch.testing.assert_close(got_ids, F.linear(hidden, weight[ids]))


def test_profiles_switches_and_reapplying(one_thread):
    assert set(PROFILES) == {"fast", "plain"} and all(PROFILES["fast"][s] for s in SWITCHES)
    cfg = SpeedConfig(profile="plain", prepacked_linears=True)
    assert cfg.on("prepacked_linears") and not cfg.on("fold_batchnorm")
    assert (
        SpeedConfig.from_any("plain") == SpeedConfig(profile="plain") and SpeedConfig.from_any(None).profile == "fast"
    )
    with pytest.raises(ValueError, match="profile must be one of"):
        SpeedConfig(profile="turbo")
    with pytest.raises(ValueError, match="unknown model.speed fields"):
        SpeedConfig.from_any({"fold_bn": True})
    model = build_model(OFAConfig.from_name("tiny", **SMALL), cfg)
    linears = {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Linear)}
    assert linears == {"PrepackedLinear"} and type(model.encoder.embed_images).__name__ == "OFAResNet"
    apply_speed(model, SpeedConfig(channels_last=True, profile="plain"))  # replaces the previous config
    assert {type(m).__name__ for m in model.modules() if isinstance(m, torch.nn.Linear)} == {"Linear"}
    trunk = model.encoder.embed_images
    assert type(trunk).__name__ == "FastResNet" and trunk.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    clone = copy.deepcopy(model)
    assert type(clone.encoder.embed_images).__name__ == "FastResNet" and speed_of(clone) == speed_of(model)


def test_model_config_group_holds_only_differences_and_speed(tmp_path):
    from ofa_lightning.training.run import build_model_config, compose_config, model_speed

    cfg = compose_config(["model=medium", "model.dropout=0.0", "model.speed.profile=plain"], tmp_path, tmp_path)
    tokenizer = type("T", (), {"vocab_size": 59457})()
    assert build_model_config(cfg, tokenizer) == OFAConfig.from_name("medium", dropout=0.0)
    assert SpeedConfig.from_any(model_speed(cfg)) == SpeedConfig(profile="plain")
    default = compose_config([], tmp_path, tmp_path)
    assert SpeedConfig.from_any(model_speed(default)) == SpeedConfig()  # the fast profile by default
    from ofa_lightning.paths import CONF_DIR

    lines = [line for line in (CONF_DIR / "model" / "large.yaml").read_text().splitlines() if line[:1] not in "# "]
    keys = {line.split(":")[0] for line in lines if ":" in line}
    assert "- ofa_config_schema" in (CONF_DIR / "model" / "large.yaml").read_text()
    assert keys == {"defaults", "size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads"} | {
        "decoder_attention_heads",
        "encoder_ffn_dim",
        "decoder_ffn_dim",
        "resnet_type",
    }


def test_saved_configs_with_speed_options_at_the_model_level_still_load():
    """Configs and checkpoints written with the speed options inside the model config: the options are read as
    model.speed, and a saved model config drops them (with a log line) instead of refusing the checkpoint."""
    from ofa_lightning.speed.config import split_model_node
    from ofa_lightning.training.resume import _shapes

    legacy = {"channels_last": False, "fold_batchnorm_inference": True, "checkpoint_resnet": False}
    arch, speed = split_model_node({"size": "tiny", **legacy, "speed": {"profile": "plain", "channels_last": True}})
    assert arch == {"size": "tiny"}
    assert speed == {"profile": "plain", "channels_last": True, "fold_batchnorm": True, "checkpoint_resnet": False}
    assert SpeedConfig.from_any(speed).on("fold_batchnorm") and SpeedConfig.from_any(speed).checkpoint_resnet is False
    saved = {**OFAConfig.from_name("tiny", **SMALL).to_dict(), **legacy, "attention_kernel": "sdpa"}
    assert OFAConfig.from_saved(saved) == OFAConfig.from_name("tiny", **SMALL)
    assert _shapes(saved) == _shapes(OFAConfig.from_name("tiny", **SMALL).to_dict())
