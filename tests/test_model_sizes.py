"""The size catalogue: parameter counts, Hydra configs, bad size names, bad input shapes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ofa_lightning.model import CATALOGUE, OFAConfig, OFAModel
from ofa_lightning.model.config import REFERENCE_PARAM_COUNTS

CONF = Path(__file__).resolve().parents[1] / "conf"
RESNET_PART = {"tiny": 8_543_296, "medium": 27_535_424, "base": 27_535_424, "large": 43_179_072, "huge": 43_179_072}
RESNET_PART.update(cn_base=RESNET_PART["base"], cn_large=RESNET_PART["large"])


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_param_count_within_half_percent_of_modelscope(name):
    with torch.device("meta"):
        counts = OFAModel.from_name(name).num_parameters()
    ref = REFERENCE_PARAM_COUNTS[name]
    assert abs(counts["total"] - ref) / ref <= 0.005
    assert counts["resnet"] == RESNET_PART[name]


def test_unknown_size_lists_known_ones():
    with pytest.raises(ValueError, match="tiny, medium, base, large, huge"):
        OFAConfig.from_name("gigantic")


@pytest.mark.parametrize("name", list(CATALOGUE))
def test_hydra_model_config_selects_size_and_allows_overrides(name, tmp_path):
    from omegaconf import OmegaConf

    from ofa_lightning.training.run import compose_config

    def model_node(*overrides):
        cfg = compose_config([f"model={name}", *overrides], tmp_path, tmp_path)
        node = OmegaConf.to_container(cfg.model, resolve=True)
        node.pop("speed")  # how fast it runs (ofa_lightning.speed), not what it is
        return {**node, "vocab_size": node["vocab_size"] or CATALOGUE[name].vocab_size}

    built = OFAConfig.from_dict(model_node("model.dropout=0.0", "model.encoder_layers=2"))
    assert built.d_model == CATALOGUE[name].d_model and built.dropout == 0.0 and built.encoder_layers == 2
    # the yaml (over the schema's defaults) gives every field the catalogue's value
    assert OFAConfig.from_dict(model_node()) == CATALOGUE[name]
    assert OFAConfig(**{k: v for k, v in model_node().items() if k != "size"}) == CATALOGUE[name]


def test_unknown_config_field_is_refused():
    with pytest.raises(ValueError, match="unknown OFAConfig fields"):
        OFAConfig.from_dict({"size": "tiny", "d_modle": 3})


def test_ofa_info_sizes_json():
    out = subprocess.run(
        [sys.executable, "-m", "ofa_lightning.cli.info", "sizes", "--json"], check=True, capture_output=True, text=True
    ).stdout
    rows = {r["name"]: r for r in json.loads(out)}
    assert set(rows) == set(CATALOGUE)
    assert rows["base"]["params_total"] == 182_238_536
    assert rows["huge"]["settings"]["encoder_layers"] == 24 and rows["huge"]["params_resnet"] == 43_179_072


def tiny_model(**kw) -> OFAModel:
    cfg = OFAConfig.from_name("tiny", encoder_layers=1, decoder_layers=1, vocab_size=300, dropout=0.0, **kw)
    return OFAModel(cfg).eval()


def test_image_larger_than_position_grid_is_refused():
    model = tiny_model()
    with pytest.raises(ValueError, match="42×42 patches"):
        model.encode(torch.tensor([[0, 5, 2]]), torch.zeros(1, 3, 688, 64))


def test_interpolated_positions_allow_large_images():
    model = tiny_model(interpolate_position=True, orig_patch_image_size=64)
    out = model.encode(torch.tensor([[0, 5, 2]]), torch.zeros(1, 3, 704, 32))
    assert out.hidden.shape == (1, 44 * 2 + 3, 256) and torch.isfinite(out.hidden).all()


def test_overlong_text_refused_or_truncated():
    ids = torch.full((1, 1030), 5)
    with pytest.raises(ValueError, match="max_source_positions=1024"):
        tiny_model().encode(ids)
    out = tiny_model(overlong_text="truncate").encode(ids)
    assert out.hidden.shape[1] == 1024


def test_patch_sampling_keeps_k_patches():
    model = tiny_model()
    out = model.encode(torch.tensor([[0, 5, 2], [0, 6, 2]]), torch.randn(2, 3, 64, 64), sample_patch_num=7)
    assert out.hidden.shape == (2, 7 + 3, 256)


def test_drop_path_and_frozen_bn_options():
    from timm.layers import DropPath
    from torchvision.ops.misc import FrozenBatchNorm2d

    cfg = OFAConfig.from_name("tiny", encoder_drop_path_rate=0.2, resnet_drop_path_rate=0.1, freeze_resnet_bn=True)
    model = OFAModel(cfg)
    rates = [getattr(layer.drop_path, "drop_prob", 0.0) for layer in model.encoder.layers]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.2)  # linear ramp over layers
    assert model.encoder.embed_images.layer3[0].drop_path is None  # first block of a stage never drops
    assert isinstance(model.encoder.embed_images.layer3[-1].drop_path, DropPath)
    assert isinstance(model.encoder.embed_images.bn1, FrozenBatchNorm2d)


@pytest.mark.parametrize("resnet, blocks", [("resnet14", 1), ("resnet26", 2)])
def test_shallow_trunks_for_from_scratch_runs(resnet, blocks):
    """resnet14/26 (the demo's deviation from OFA-Tiny's resnet50): fewer blocks per stage, same output grid."""
    model = OFAModel(OFAConfig.from_name("tiny", resnet_type=resnet, encoder_layers=1, decoder_layers=1))
    trunk = model.encoder.embed_images
    assert [len(getattr(trunk, f"layer{i}")) for i in (1, 2, 3)] == [blocks] * 3
    assert trunk.forward_features(torch.randn(2, 3, 96, 96)).shape == (2, 1024, 6, 6)
    tiny = sum(
        p.numel()
        for p in OFAModel(
            OFAConfig.from_name("tiny", encoder_layers=1, decoder_layers=1)
        ).encoder.embed_images.parameters()
    )
    assert sum(p.numel() for p in trunk.parameters()) < tiny
    with pytest.raises(ValueError, match="resnet14"):
        OFAConfig.from_name("tiny", resnet_type="resnet18")


def test_embeddings_are_tied():
    model = tiny_model()
    assert model.encoder.embed_tokens is model.decoder.embed_tokens
    enc = model.encode(torch.tensor([[0, 5, 2]]))
    hidden = model.decode_hidden(torch.tensor([[0, 7]]), enc)
    assert torch.allclose(model.decode(torch.tensor([[0, 7]]), enc), hidden @ model.embed_tokens.weight.T, atol=1e-5)


def test_entangle_position_embedding_adds_positions_to_the_embeddings():
    """OFA's --entangle-position-embedding: off by default (released models), on it changes the encoder and
    decoder outputs without adding parameters, and image patches then differ by position even when identical."""
    import torch

    from ofa_lightning.model import OFAConfig, OFAModel

    torch.manual_seed(0)
    base = OFAConfig.from_name("tiny", vocab_size=300, encoder_layers=1, decoder_layers=1)
    assert base.entangle_position_embedding is False
    off = OFAModel(base).eval()
    on = OFAModel(
        OFAConfig.from_name(
            "tiny", vocab_size=300, encoder_layers=1, decoder_layers=1, entangle_position_embedding=True
        )
    ).eval()
    on.load_state_dict(off.state_dict())
    assert off.num_parameters() == on.num_parameters()
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    flat = torch.zeros(1, 3, 64, 64)  # every patch the same: only positions can tell them apart
    with torch.no_grad():
        e_off, e_on = off.encode(ids, flat, torch.tensor([True])), on.encode(ids, flat, torch.tensor([True]))
        assert not torch.allclose(e_off.hidden, e_on.hidden)
        img_on = e_on.hidden[0, :16]
        assert (img_on - img_on[:1]).abs().amax() > 1e-3
        prev = torch.tensor([[0, 5, 6]])
        assert not torch.allclose(off.decode(prev, e_off), on.decode(prev, e_on))
