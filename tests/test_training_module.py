"""OFALitModule end to end on a tiny OFA: overfitting, non-finite steps, evaluation modes, EMA in checkpoints."""

from __future__ import annotations

import math
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from ofa_lightning.data.collate import collate_examples, collate_grouped
from ofa_lightning.generation import GenerationConfig
from ofa_lightning.model import OFAConfig
from ofa_lightning.tasks.base import Example, Task
from ofa_lightning.training import OFALitModule, lr_at

V = 48
BOS, PAD, EOS = 0, 1, 2

warnings.filterwarnings("ignore", ".*does not have many workers.*")
warnings.filterwarnings("ignore", ".*GPU available but not used.*")


pytestmark = pytest.mark.usefixtures("one_thread")


class WordTokenizer:
    """Words ``w4 .. w47`` are ids 4..47."""

    bos_id, pad_id, eos_id = BOS, PAD, EOS
    code_range, bin_range = (40, 44), (44, 48)

    def encode(self, text: str) -> list[int]:
        return [int(w[1:]) for w in text.split()]

    def encode_batch(self, texts):
        return [self.encode(t) for t in texts]

    def decode(self, ids, skip_special: bool = True) -> str:
        return " ".join(f"w{i}" for i in ids if i >= 4)


class WordTask(Task):
    name = "words"
    metrics = ("accuracy",)
    inference = "generate"

    def generation_config(self):
        return GenerationConfig(beam_size=2, max_len_b=4, min_len=1)

    def parse_prediction(self, tokens, example=None):
        return self.decode_text(tokens)


class ChoiceTask(WordTask):
    name = "choice"
    inference = "candidates"


class LabelTask(WordTask):
    name = "label"
    inference = "last_token"


def tiny_config(**overrides) -> OFAConfig:
    base = dict(
        encoder_layers=1,
        decoder_layers=1,
        d_model=64,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=128,
        decoder_ffn_dim=128,
        vocab_size=V,
        dropout=0.0,
    )
    base.update(overrides)
    return OFAConfig.from_name("tiny", **base)


def example(i: int, src: list[int], ans: list[int], task: str = "words", weight: float = 1.0, **kw) -> Example:
    return Example(
        id=f"{task}-{i}",
        task=task,
        source=[BOS, *src, EOS],
        prev_output=[BOS, *ans],
        target=[*ans, EOS],
        weight=weight,
        meta={"reference": " ".join(f"w{a}" for a in ans)},
        **kw,
    )


EXAMPLES = [
    example(0, [10, 11], [20, 21]),
    example(1, [12], [22]),
    example(2, [13, 14, 15], [23, 24, 25]),
    example(3, [16], [26, 27]),
]


class Repeat(Dataset):
    def __init__(self, batches, n):
        self.batches, self.n = batches, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return self.batches[i % len(self.batches)]


def loader(batches, n=None):
    return DataLoader(Repeat(batches, n or len(batches)), batch_size=None, shuffle=False)


def trainer(**kw) -> pl.Trainer:
    args = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    args.update(kw)
    return pl.Trainer(**args)


def make_module(**kw) -> OFALitModule:
    tok = WordTokenizer()
    kw.setdefault("optim", {"lr": 3e-3, "warmup_steps": 2, "max_steps": 100})
    kw.setdefault("loss", {"label_smoothing": 0.1})
    return OFALitModule(tiny_config(), tokenizer=tok, tasks={"words": WordTask(tok)}, **kw)


def batch_loss(module, batch) -> float:
    was_training = module.training
    module.eval()
    with torch.no_grad():
        value = float(module.compute_loss(batch, train=False).loss)
    module.train(was_training)
    return value


def test_fit_on_a_repeated_batch_overfits_and_uses_configured_schedule(monkeypatch):
    def forbidden(self):
        raise AssertionError("estimated_stepping_batches must not be used (it drops the dataloader state on resume)")

    monkeypatch.setattr(pl.Trainer, "estimated_stepping_batches", property(forbidden))
    torch.manual_seed(0)
    module = make_module()
    batch = collate_examples(EXAMPLES, PAD)
    before = batch_loss(module, batch)
    t = trainer(max_steps=20)
    t.fit(module, train_dataloaders=loader([batch], 40))
    after = batch_loss(module, batch)
    assert t.global_step == 20
    assert after < 0.5 * before, (before, after)
    lr = t.optimizers[0].param_groups[0]["lr"]
    assert lr == pytest.approx(lr_at(20, module.optim_cfg, 100))  # schedule length from optim.max_steps, not 20
    logged = t.callback_metrics
    for key in ("train/loss", "train/nll", "train/ntokens", "train/lr", "train/words/loss"):
        assert key in logged, key
    assert float(logged["train/ntokens"]) == 12  # answer + EOS tokens (3+2+4+3), never padding
    assert module.samples_seen == 20 * 4 and module.skipped_nonfinite == 0


def test_nonfinite_loss_is_skipped_counted_and_leaves_weights_alone():
    torch.manual_seed(0)
    module = make_module(ema={"decay": 0.5})
    good = collate_examples(EXAMPLES, PAD)
    bad = collate_examples(EXAMPLES, PAD)
    bad["weights"] = torch.tensor([1.0, float("nan"), 1.0, 1.0])
    weights = {k: v.clone() for k, v in module.model.state_dict().items()}
    ema = {k: v.clone() for k, v in module.ema.shadow.items()}
    t = trainer(max_epochs=1)
    t.fit(module, train_dataloaders=loader([bad], 3))
    assert module.skipped_nonfinite == 3
    for k, v in module.model.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for k, v in module.ema.shadow.items():
        assert torch.equal(v, ema[k]), k
    assert float(t.callback_metrics["train/skipped_nonfinite"]) == 3
    t2 = trainer(max_epochs=1)
    t2.fit(module, train_dataloaders=loader([bad, good], 4))
    assert module.skipped_nonfinite == 5
    assert any(not torch.equal(v, weights[k]) for k, v in module.model.state_dict().items())


def test_grouped_pretraining_batch_trains():
    torch.manual_seed(0)
    module = make_module()
    batch = collate_grouped(EXAMPLES, ["image-text", "image-text", "other", "other"], PAD)
    before = batch_loss(module, batch)
    out = module.compute_loss(batch)
    groups = out.per_group
    assert set(groups) == {"image-text", "other"}
    expected = sum(float(s) / n for s, n in groups.values())
    assert float(out.loss.detach()) == pytest.approx(expected, rel=1e-5)
    trainer(max_steps=10).fit(module, train_dataloaders=loader([batch], 10))
    assert batch_loss(module, batch) < before


def test_validation_decodes_each_inference_mode_and_logs_metrics(tmp_path):
    torch.manual_seed(0)
    tok = WordTokenizer()
    choice = ChoiceTask(tok)
    choice.set_candidates(["w20 w21", "w22", "w30"])
    label = LabelTask(tok)
    words = WordTask(tok)
    module = OFALitModule(
        tiny_config(),
        tokenizer=tok,
        tasks={"words": words, "choice": choice, "label": label},
        optim={"lr": 3e-3, "warmup_steps": 2, "max_steps": 100},
        loss={"label_smoothing": 0.0},
        predictions_dir=str(tmp_path),
    )
    train = [collate_examples(EXAMPLES, PAD)]
    trainer(max_steps=40).fit(module, train_dataloaders=loader(train, 40))

    gen = collate_examples(EXAMPLES, PAD)
    gen["source"] = "words"
    cand = collate_examples(
        [example(i, e.source[1:-1], e.prev_output[1:], task="choice") for i, e in enumerate(EXAMPLES[:2])], PAD
    )
    cand["source"] = "choice"
    lab_ex = []
    for i, (src, ans) in enumerate([([10, 11], 20), ([12], 22)]):
        source = [BOS, *src, EOS]
        lab_ex.append(
            Example(
                id=f"l{i}",
                task="label",
                source=source,
                prev_output=list(source),
                target=[PAD] * (len(source) - 1) + [ans],
                meta={"reference": f"w{ans}", "candidate_ids": [20, 22, 30]},
                decoder_prompt=list(source),
            )
        )
    lab = collate_examples(lab_ex, PAD)
    lab["source"] = "label"
    padded = collate_examples(EXAMPLES[:1] + [EXAMPLES[0]], PAD)
    padded["is_pad"] = torch.tensor([False, True])
    padded["source"] = "words"

    t = trainer()
    t.validate(module, dataloaders=[loader([gen, padded]), loader([cand]), loader([lab])], verbose=False)
    preds = module.last_predictions["val"]
    assert [r["id"] for r in preds["words"]] == ["words-0", "words-1", "words-2", "words-3"]  # padding dropped
    assert {r["prediction"] for r in preds["choice"]} <= {"w20 w21", "w22", "w30"}
    assert all(r["prediction"] in {"w20", "w22", "w30"} for r in preds["label"])
    metrics = t.callback_metrics
    for source in ("words", "choice", "label"):
        records = preds[source]
        acc = sum(r["prediction"] == r["reference"] for r in records) / len(records)
        assert float(metrics[f"val/{source}/accuracy"]) == pytest.approx(acc)
        assert f"val/{source}/loss" in metrics
    assert float(metrics["val/words/accuracy"]) == 1.0  # 40 steps on the same 4 examples: memorised
    written = list(tmp_path.glob("val_words_step*.jsonl"))
    assert len(written) == 1 and len(written[0].read_text().splitlines()) == 4


def test_ema_evaluation_and_checkpoint(tmp_path):
    torch.manual_seed(0)
    module = make_module(ema={"decay": 0.9})
    batch = collate_examples(EXAMPLES, PAD)
    t = trainer(max_steps=5)
    t.fit(module, train_dataloaders=loader([batch], 5))
    assert module.ema.num_updates == 5
    trained = {k: v.clone() for k, v in module.model.state_dict().items()}
    seen = {}

    class Spy(pl.Callback):
        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            seen["w"] = pl_module.model.embed_tokens.weight.detach().clone()

    val = dict(batch, source="words")
    pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[Spy()]).validate(
        module, dataloaders=loader([val]), verbose=False
    )
    ema_w = module.ema.shadow["encoder.embed_tokens.weight"]
    assert torch.allclose(seen["w"], ema_w) and not torch.allclose(seen["w"], trained["encoder.embed_tokens.weight"])
    for k, v in module.model.state_dict().items():  # trained weights are back
        assert torch.equal(v, trained[k]), k

    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    ckpt = torch.load(path, weights_only=False)
    assert "ema" in ckpt and ckpt["ofa_training"]["samples_seen"] == 20
    assert torch.equal(ckpt["state_dict"]["model.encoder.embed_tokens.weight"], trained["encoder.embed_tokens.weight"])
    fresh = make_module(ema={"decay": 0.9})
    fresh.load_state_dict(ckpt["state_dict"])
    fresh.on_load_checkpoint(ckpt)
    for k, v in module.ema.shadow.items():
        assert torch.equal(fresh.ema.shadow[k], v), k
    assert fresh.samples_seen == 20


def test_training_constraints_resolve_from_tasks():
    tok = WordTokenizer()
    choice = ChoiceTask(tok)
    choice.set_candidates(["w20 w21", "w22"])
    module = OFALitModule(tiny_config(), tokenizer=tok, tasks=[choice], optim={"max_steps": 10})
    ex = [
        example(0, [10], [20, 21], task="choice", constraint="trie"),
        example(1, [11], [40, 41], task="choice", constraint="codes"),
        example(2, [12], [30], task="choice"),
    ]
    batch = collate_examples(ex, PAD)
    cons = module.row_constraints(batch)
    assert cons[0] is choice.constraint_trie() and cons[2] is None
    assert cons[1].tolist() == [i < 4 or 40 <= i < 44 for i in range(V)]
    constrained = batch_loss(module, batch)
    module.loss_cfg.constrained = False
    assert constrained < batch_loss(module, batch)
    assert math.isfinite(constrained)
