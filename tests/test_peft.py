"""LoRA through peft (``module.peft``): only the adapter moves, merged == base + adapter, adapter-only checkpoints
(resume with EMA, load on the right base, refuse the wrong one), bf16."""

from __future__ import annotations

import pytest
import torch
from test_training_module import EXAMPLES, PAD, WordTask, WordTokenizer, loader, tiny_config, trainer

from ofa_lightning.data.collate import collate_examples
from ofa_lightning.errors import UserError
from ofa_lightning.model import OFAModel
from ofa_lightning.training import OFALitModule
from ofa_lightning.training.peft import ADAPTER_KEY, PEFTConfig, load_adapted_model, merge_adapter

pytestmark = pytest.mark.usefixtures("one_thread")


def write_base(path, **overrides) -> OFAModel:
    torch.manual_seed(1)
    model = OFAModel(tiny_config(**overrides))
    torch.save({"model": model.state_dict()}, path)
    return model


def lora_module(base, peft=None, **kw) -> OFALitModule:
    tok = WordTokenizer()
    kw.setdefault("optim", {"lr": 1e-2, "warmup_steps": 0, "max_steps": 100})
    return OFALitModule(
        tiny_config(), tokenizer=tok, tasks={"words": WordTask(tok)}, init_from=str(base), peft=peft or "lora", **kw
    )


def logits(model, batch) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(batch["input_ids"], batch["prev_output_tokens"])


def test_lora_moves_only_adapter_weights_and_merges_exactly(tmp_path):
    base = write_base(tmp_path / "base.pt")
    module = lora_module(tmp_path / "base.pt", {"r": 4, "alpha": 8, "dropout": 0.0})
    trainable = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert any("encoder_attn.q_proj" in n for n in trainable) and any(".fc2." in n for n in trainable)
    before = {k: v.clone() for k, v in module.model.state_dict().items()}
    batch = collate_examples(EXAMPLES, PAD)
    trainer(max_steps=6).fit(module, train_dataloaders=loader([batch], 6))
    after = module.model.state_dict()
    moved = {k for k in after if not torch.equal(after[k], before[k])}
    assert moved and all("lora_" in k for k in moved), sorted(moved)[:5]
    assert any("lora_B" in k for k in moved)  # B starts at zero: it moved, so the adapter does something

    adapted = logits(module.model, batch)
    assert not torch.allclose(adapted, logits(base, batch), atol=1e-4)  # the adapter changed the function
    merged = merge_adapter(module.model)
    plain = {k for k in base.state_dict() if not k.endswith("num_batches_tracked")}  # frozen BN keeps no counter
    assert set(merged.state_dict()) == plain  # the plain model's names again
    assert torch.allclose(logits(merged, batch), adapted, atol=1e-5, rtol=0)


def test_adapter_only_checkpoint_small_resumable_and_loadable(tmp_path):
    base_path = tmp_path / "base.pt"
    write_base(base_path)
    module = lora_module(base_path, ema={"decay": 0.9})
    batch = collate_examples(EXAMPLES, PAD)
    t = trainer(max_steps=3)
    t.fit(module, train_dataloaders=loader([batch], 3))
    path = tmp_path / "adapter.ckpt"
    t.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    info = ckpt[ADAPTER_KEY]
    assert info["adapter_only"] and info["base"] == str(base_path.resolve()) and len(info["base_sha256"]) == 64
    stored = {k for k in ckpt["state_dict"] if k.startswith("model.")}
    assert stored and all("lora_" in k for k in stored)
    assert set(ckpt["ema"]["shadow"]) == {k[len("model.") :] for k in stored}
    n_adapter = sum(v.numel() for k, v in ckpt["state_dict"].items() if k.startswith("model."))
    assert n_adapter < 0.2 * sum(p.numel() for p in module.model.parameters())

    # resume: the base comes from init_from, the adapter and its EMA from the checkpoint
    resumed = lora_module(base_path, ema={"decay": 0.9})
    t2 = trainer(max_steps=5)
    t2.fit(resumed, train_dataloaders=loader([batch], 5), ckpt_path=str(path))
    assert t2.global_step == 5 and resumed.ema.num_updates == 5

    # inference: base + adapter, merged, equals the trained module's LoRA model
    merged = load_adapted_model(ckpt)
    assert torch.allclose(logits(merged, batch), logits(module.model, batch), atol=1e-5, rtol=0)


def test_adapter_refuses_a_changed_base_and_names_mismatching_shapes(tmp_path):
    base_path = tmp_path / "base.pt"
    write_base(base_path)
    module = lora_module(base_path)
    t = trainer(max_steps=1)
    t.fit(module, train_dataloaders=loader([collate_examples(EXAMPLES, PAD)], 1))
    t.save_checkpoint(tmp_path / "a.ckpt")
    ckpt = torch.load(tmp_path / "a.ckpt", weights_only=True)
    other = tmp_path / "other.pt"
    write_base(other, d_model=32, encoder_ffn_dim=64, decoder_ffn_dim=64)
    with pytest.raises(UserError, match="SHA-256"):
        load_adapted_model(ckpt, base=other)
    with pytest.raises(UserError, match=r"embed_tokens.weight: checkpoint \(48, 32\) vs model \(48, 64\)"):
        load_adapted_model({**ckpt, ADAPTER_KEY: {**ckpt[ADAPTER_KEY], "base": str(other), "base_sha256": None}})
    with pytest.raises(UserError, match="needs the base weights"):
        OFALitModule(tiny_config(), tokenizer=WordTokenizer(), peft="lora")


def test_peft_options():
    assert PEFTConfig.parse(None) is None and PEFTConfig.parse("none") is None
    cfg = PEFTConfig.parse({"r": 2, "targets": ["attention"], "train_layer_norms": True})
    assert cfg.r == 2 and "fc" not in cfg.pattern()
    with pytest.raises(UserError, match="known"):
        PEFTConfig.parse({"targets": ["everything"]})
    with pytest.raises(UserError, match="only 'lora'"):
        PEFTConfig.parse({"method": "ia3"})


def test_lora_unfreeze_options_and_resnet_targets(tmp_path):
    write_base(tmp_path / "base.pt")
    module = lora_module(
        tmp_path / "base.pt", {"targets": ["attention", "resnet"], "train_layer_norms": True, "train_embeddings": True}
    )
    trainable = [n for n, p in module.model.named_parameters() if p.requires_grad]
    assert any("embed_images.layer1.0.conv1.lora_A" in n for n in trainable)
    assert any(n.endswith("final_layer_norm.weight") for n in trainable)
    assert "encoder.embed_tokens.weight" in trainable
    assert not any(".fc1." in n for n in trainable)


def test_lora_bf16_step(tmp_path):
    write_base(tmp_path / "base.pt")
    module = lora_module(tmp_path / "base.pt")
    trainer(max_steps=2, precision="bf16-mixed").fit(
        module, train_dataloaders=loader([collate_examples(EXAMPLES, PAD)], 2)
    )
    assert module.skipped_nonfinite == 0
