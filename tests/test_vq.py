"""VQ image tokenizer: taming key layout, state-dict loading report, encode/decode, small-model training."""

from __future__ import annotations

import pytest
import torch
import yaml
from PIL import Image

from ofa_lightning.training.vq_train import train_vq
from ofa_lightning.vq import VQConfig, VQModel, preprocess, to_pil

# taming-transformers' published config of "VQGAN OpenImages (f=8), 8192 codes, GumbelQuantization", the tokenizer
# shipped with OFA's image_gen checkpoint (logs/vqgan_gumbel_f8/configs/model.yaml).
GUMBEL_F8_YAML = """
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.GumbelVQ
  params:
    kl_weight: 1.0e-08
    embed_dim: 256
    n_embed: 8192
    monitor: val/rec_loss
    temperature_scheduler_config:
      target: taming.lr_scheduler.LambdaWarmUpCosineScheduler
      params: {warm_up_steps: 0, max_decay_steps: 1000001, lr_start: 0.9, lr_max: 0.9, lr_min: 1.0e-06}
    ddconfig:
      double_z: false
      z_channels: 256
      resolution: 256
      in_channels: 3
      out_ch: 3
      ch: 128
      ch_mult: [1, 1, 2, 4]
      num_res_blocks: 2
      attn_resolutions: [32]
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.DummyLoss
"""


def taming_keys(params: dict) -> dict[str, tuple[int, ...]]:
    """Parameter names and shapes of taming's GumbelVQ / VQModel, derived from the config by taming's construction
    rules (written out here independently of ofa_lightning.vq)."""
    dd = params["ddconfig"]
    ch, mult, nrb, zc = dd["ch"], list(dd["ch_mult"]), dd["num_res_blocks"], dd["z_channels"]
    keys: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k):
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (c,), (c,)

    def resblock(name, cin, cout):
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for part in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{part}", c, c, 1)

    def mid(prefix, c):
        resblock(f"{prefix}.mid.block_1", c, c)
        attn(f"{prefix}.mid.attn_1", c)
        resblock(f"{prefix}.mid.block_2", c, c)

    conv("encoder.conv_in", dd["in_channels"], ch, 3)
    res, in_mult = dd["resolution"], [1] + mult
    for level in range(len(mult)):
        cin, cout = ch * in_mult[level], ch * mult[level]
        for i in range(nrb):
            resblock(f"encoder.down.{level}.block.{i}", cin, cout)
            cin = cout
            if res in dd["attn_resolutions"]:
                attn(f"encoder.down.{level}.attn.{i}", cout)
        if level != len(mult) - 1:
            conv(f"encoder.down.{level}.downsample.conv", cout, cout, 3)
            res //= 2
    mid("encoder", ch * mult[-1])
    norm("encoder.norm_out", ch * mult[-1])
    conv("encoder.conv_out", ch * mult[-1], zc, 3)

    cin = ch * mult[-1]
    conv("decoder.conv_in", zc, cin, 3)
    mid("decoder", cin)
    for level in reversed(range(len(mult))):
        cout = ch * mult[level]
        for i in range(nrb + 1):
            resblock(f"decoder.up.{level}.block.{i}", cin, cout)
            cin = cout
            if res in dd["attn_resolutions"]:
                attn(f"decoder.up.{level}.attn.{i}", cout)
        if level != 0:
            conv(f"decoder.up.{level}.upsample.conv", cout, cout, 3)
            res *= 2
    norm("decoder.norm_out", cin)
    conv("decoder.conv_out", cin, dd["out_ch"], 3)

    conv("quant_conv", zc, params["embed_dim"], 1)
    conv("post_quant_conv", params["embed_dim"], zc, 1)
    if params.get("target", "").endswith("GumbelVQ") or "temperature_scheduler_config" in params:
        conv("quantize.proj", zc, params["n_embed"], 1)
        keys["quantize.embed.weight"] = (params["n_embed"], params["embed_dim"])
    else:
        keys["quantize.embedding.weight"] = (params["n_embed"], params["embed_dim"])
    return keys


def small_gumbel_yaml() -> dict:
    cfg = yaml.safe_load(GUMBEL_F8_YAML)
    p = cfg["model"]["params"]
    p.update(embed_dim=16, n_embed=64)
    p["ddconfig"].update(z_channels=16, ch=32, resolution=32, num_res_blocks=1, attn_resolutions=[8])
    return cfg


def test_keys_match_the_published_gumbel_f8_config():
    cfg = yaml.safe_load(GUMBEL_F8_YAML)
    expected = taming_keys(cfg["model"]["params"])
    config = VQConfig.from_taming(cfg)
    assert config == VQConfig.preset("gumbel_f8_8192")
    assert (config.quantizer, config.n_embed, config.factor) == ("gumbel", 8192, 8)
    with torch.device("meta"):
        model = VQModel(config)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert sorted(ours) == sorted(expected)
    assert ours == expected
    assert {"quantize.proj.weight", "quantize.proj.bias", "quantize.embed.weight"} <= set(ours)


def test_taming_state_dict_round_trip_consumes_every_key(tmp_path):
    cfg = small_gumbel_yaml()
    torch.manual_seed(0)
    source = VQModel(VQConfig.from_taming(cfg)).eval()
    state = source.state_dict()
    assert set(state) == set(taming_keys(cfg["model"]["params"]))
    # taming's Lightning checkpoint: the weights under "state_dict", plus training-loss entries we ignore
    ckpt = {"state_dict": {**state, "loss.discriminator.main.0.weight": torch.zeros(4, 3, 4, 4)}}
    path = tmp_path / "last.ckpt"
    torch.save(ckpt, path)
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(cfg))

    torch.manual_seed(1)
    target = VQModel(VQConfig.from_taming(tmp_path / "model.yaml"))
    report = target.load_taming_state_dict(torch.load(path, weights_only=True))
    assert report.ok, report.summary()
    assert sorted(report.loaded) == sorted(state)
    assert report.missing == report.unexpected == report.mismatched == []
    assert report.ignored == ["loss.discriminator.main.0.weight"]
    for key, value in target.state_dict().items():
        assert torch.equal(value, state[key]), key

    loaded = VQModel.from_taming(path, tmp_path / "model.yaml")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    codes = loaded.encode(x)
    assert codes.shape == (2, 4, 4) and codes.dtype == torch.long
    assert torch.equal(codes, source.encode(x))
    assert torch.allclose(loaded.decode(codes), source.decode(codes))


def test_strict_loading_names_missing_unexpected_and_mismatched_keys():
    cfg = small_gumbel_yaml()
    model = VQModel(VQConfig.from_taming(cfg))
    state = dict(model.state_dict())
    del state["quantize.proj.bias"]
    state["quantize.extra"] = torch.zeros(1)
    state["post_quant_conv.bias"] = torch.zeros(3)
    with pytest.raises(ValueError, match="quantize.proj.bias") as err:
        model.load_taming_state_dict(state)
    assert "quantize.extra" in str(err.value) and "post_quant_conv.bias" in str(err.value)
    report = model.load_taming_state_dict(state, strict=False)
    assert report.missing == ["quantize.proj.bias"]
    assert report.unexpected == ["quantize.extra"]
    assert report.mismatched == ["post_quant_conv.bias: (3,) vs (16,)"]
    assert not report.ok


def test_encode_decode_shapes_and_pil_helpers():
    model = VQModel(VQConfig.preset("shapes_small", n_embed=32)).eval()
    image = Image.new("RGB", (100, 80), (200, 30, 30))
    codes = model.encode(image, image_size=64)
    assert codes.shape == (1, 8, 8) and 0 <= int(codes.min()) and int(codes.max()) < 32
    flat = codes.view(-1).tolist()
    assert model.decode(flat).shape == (1, 3, 64, 64)
    assert torch.equal(model.decode(codes), model.decode([flat]))
    out = model.decode_to_pil(codes)[0]
    assert out.size == (64, 64) and out.mode == "RGB"
    with pytest.raises(ValueError, match="square"):
        model.decode(list(range(10)))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        model.decode([40] * 64)
    pixels = preprocess(image, 64)
    assert pixels.shape == (3, 64, 64) and pixels.min() >= -1 and pixels.max() <= 1
    back = to_pil(pixels)
    assert back.getpixel((10, 10)) == (200, 30, 30)


def test_small_vq_training_learns_to_reconstruct_colours(tmp_path, one_thread):
    torch.manual_seed(0)
    colours = torch.tensor([[1.0, -0.8, -0.8], [-0.8, 1.0, -0.8], [-0.8, -0.8, 1.0], [1.0, 1.0, -0.8]])
    images = torch.full((24, 3, 32, 32), -0.6)
    for i in range(24):
        x, y = (i * 5) % 16, (i * 3) % 16
        images[i, :, y : y + 16, x : x + 16] = colours[i % 4].view(3, 1, 1)
    config = VQConfig.preset(
        "shapes_small", ch=8, norm_groups=4, n_embed=16, z_channels=8, embed_dim=8, ch_mult=(1, 2, 2, 2), resolution=32
    )
    model, stats = train_vq(images, config, steps=60, batch_size=8, lr=3e-3, restart_every=20, log_every=0)
    first = sum(e["rec"] for e in stats["losses"][:5]) / 5
    last = sum(e["rec"] for e in stats["losses"][-5:]) / 5
    assert last < 0.6 * first, (first, last)
    assert stats["codes_used"] >= 2
    path = model.save(tmp_path / "vq.pt")
    again = VQModel.load(path)
    assert again.config == model.config
    assert torch.equal(again.encode(images[:4]), model.encode(images[:4]))
