"""Checkpoint import: fairseq names, EMA, vocabulary growth, shape errors, the CLI, safe loading."""

from __future__ import annotations

import argparse

import pytest
import torch
from docs_standins import fairseq_layout as fairseq_style

from ofa_lightning.cli.convert import main as convert_main
from ofa_lightning.model import OFAConfig, OFAModel
from ofa_lightning.weights.convert import (
    from_fairseq_checkpoint,
    from_state_dict,
    load_converted,
    load_state_dict_into,
    to_ofa_names,
)


def small(**kw) -> OFAModel:
    return OFAModel(OFAConfig.from_name("tiny", encoder_layers=1, decoder_layers=2, vocab_size=400, **kw)).eval()


def same_outputs(a: OFAModel, b: OFAModel) -> bool:
    ids, prev = torch.tensor([[0, 5, 6, 2]]), torch.tensor([[0, 9, 10]])
    img = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        return torch.allclose(a(ids, prev, img), b(ids, prev, img), atol=1e-6)


def test_fairseq_checkpoint_roundtrip_accounts_for_every_key(tmp_path):
    src = small()
    path = tmp_path / "ofa.pt"
    torch.save({"model": fairseq_style(src), "args": argparse.Namespace(arch="ofa_tiny")}, path)
    model, report = from_fairseq_checkpoint(path)
    assert report.ok and report.loaded == len(src.state_dict()) and not report.missing
    assert "decoder.output_projection.weight" in report.ignored and "encoder.version" in report.ignored
    assert same_outputs(src.eval(), model.eval())


def test_ema_weights_are_taken_when_asked(tmp_path):
    main, ema = small(), small()
    path = tmp_path / "vqa.pt"
    torch.save({"model": fairseq_style(main), "extra_state": {"ema": fairseq_style(ema)}}, path)
    model, _ = from_fairseq_checkpoint(path, use_ema=True)
    assert same_outputs(ema, model.eval()) and not same_outputs(main, model.eval())


def test_smaller_checkpoint_vocabulary_is_grown():
    src = small()
    cfg = OFAConfig.from_name("tiny", encoder_layers=1, decoder_layers=2, vocab_size=450)
    model, report = from_state_dict(fairseq_style(src), cfg)
    assert report.resized["encoder.embed_tokens.weight"] == ((400, 256), (450, 256))
    assert torch.equal(model.embed_tokens.weight[:400], src.embed_tokens.weight)


def test_larger_checkpoint_vocabulary_and_wrong_shapes_are_named():
    src = small()
    with pytest.raises(ValueError, match="larger than the model's 300"):
        from_state_dict(
            fairseq_style(src), OFAConfig.from_name("tiny", encoder_layers=1, decoder_layers=2, vocab_size=300)
        )
    with pytest.raises(ValueError, match=r"encoder\.layers\.0\.fc1\.weight: checkpoint \(1024, 256\) vs model"):
        from_state_dict(
            fairseq_style(src),
            OFAConfig.from_name("tiny", encoder_layers=1, decoder_layers=2, vocab_size=400, encoder_ffn_dim=512),
        )


def test_missing_and_unexpected_keys_are_reported():
    sd = fairseq_style(small())
    del sd["decoder.layers.1.fc2.bias"]
    sd["decoder.layers.1.mystery.weight"] = torch.zeros(2)
    model = small()
    with pytest.raises(ValueError, match="MISSING.*decoder.layers.1.fc2.bias"):
        load_state_dict_into(model, sd)
    report = load_state_dict_into(model, sd, strict=False)
    assert report.missing == ["decoder.layers.1.fc2.bias"]
    assert report.unexpected == ["decoder.layers.1.mystery.weight"]


def test_port_names_are_mapped():
    names = to_ofa_names(
        {
            "model.decoder.layers.0.cross_attn.k_proj.weight": 0,
            "decoder.layers.0.cross_attn_mid_layer_norm.bias": 0,
            "encoder.layers.3.self_attn_mid_layer_norm.weight": 0,
            "decoder.layers.0.self_attn_mid_layer_norm.weight": 0,
            "decoder.layers.2.cross_attn_layer_norm.weight": 0,
            "encoder.layers.1.ffn_layer_norm.weight": 0,
        }
    )
    assert set(names) == {
        "decoder.layers.0.encoder_attn.k_proj.weight",
        "decoder.layers.0.cross_attn_ln.bias",
        "encoder.layers.3.attn_ln.weight",
        "decoder.layers.0.self_attn_ln.weight",
        "decoder.layers.2.encoder_attn_layer_norm.weight",
        "encoder.layers.1.ffn_layernorm.weight",
    }


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_unsafe_pickles_are_refused_unless_trusted(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"model": fairseq_style(small()), "payload": Evil()}, path)
    with pytest.raises(RuntimeError, match="trust_checkpoint=True"):
        from_fairseq_checkpoint(path)
    assert "pwned" not in capsys.readouterr().out


def test_cli_converts_and_reports(tmp_path, capsys):
    src = small()
    raw, out = tmp_path / "ofa.pt", tmp_path / "converted.pt"
    torch.save({"model": fairseq_style(src)}, raw)
    assert convert_main([str(raw), str(out)]) == 0
    assert "loaded" in capsys.readouterr().out
    assert same_outputs(src, load_converted(out).eval())
    assert convert_main([str(tmp_path / "nope.pt"), str(out)]) == 2
    assert "checkpoint not found" in capsys.readouterr().err


def test_fairseq_arch_options_come_from_the_checkpoint_arguments():
    """Options that change the computation but not the shapes (entangled positions, buckets) are read from the
    arguments fairseq records, as cfg['model'] (a dict) or args (a Namespace); nothing recorded, nothing set."""
    from argparse import Namespace

    from ofa_lightning.weights.convert import fairseq_arch_options

    assert fairseq_arch_options({"model": {}, "cfg": {"model": {"entangle_position_embedding": True, "lr": 1}}}) == {
        "entangle_position_embedding": True
    }
    assert fairseq_arch_options(
        {"model": {}, "args": Namespace(token_bucket_size=128, image_bucket_size=42, arch="ofa_large")}
    ) == {"token_bucket_size": 128, "image_bucket_size": 42}
    assert fairseq_arch_options({"model": {}}) == {}
