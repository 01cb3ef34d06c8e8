"""OFA's adjusted label-smoothed cross-entropy against hand-computed values (ofa_lightning/training/loss.py)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ofa_lightning.generation import Trie
from ofa_lightning.model import OFAConfig, OFAModel
from ofa_lightning.training.loss import (
    LossConfig,
    adjusted_label_smoothed_ce,
    allowed_token_mask,
    grouped_loss,
    is_finite,
    seq2seq_loss,
)

PAD = 1


pytestmark = pytest.mark.usefixtures("one_thread")


def ref_token_loss(logits, target, eps, allowed=None, weight=1.0):
    """Plain-Python OFA criterion for one position."""
    ids = list(range(len(logits))) if allowed is None else sorted(set(allowed) | {target})
    z = math.log(sum(math.exp(logits[i]) for i in ids))
    lp = {i: logits[i] - z for i in ids}
    nll = -lp[target] * weight
    smooth = -sum(lp.values()) * weight
    eps_i = eps / max(len(ids) - 1, 1)
    return (1 - eps - eps_i) * nll + eps_i * smooth, nll


class TableModel(nn.Module):
    """Logits at a position = table[previous token]; counts the rows given to ``project``."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = nn.Parameter(table.clone())
        self.projected_rows = 0

    def encode(self, input_ids, patch_images=None, patch_masks=None, sample_patch_num=None):
        return None

    def decode_hidden(self, prev_output_tokens, encoder_out, code_masks=None):
        return self.table[prev_output_tokens]

    def project(self, hidden):
        self.projected_rows += hidden.shape[0]
        return hidden


def table(v=6, seed=0):
    return torch.randn(v, v, generator=torch.Generator().manual_seed(seed))


def make_batch(prev, target, weights=None, tasks=None, constraints=None):
    prev, target = torch.tensor(prev), torch.tensor(target)
    b = prev.size(0)
    return {
        "input_ids": torch.zeros(b, 2, dtype=torch.long),
        "prev_output_tokens": prev,
        "target": target,
        "weights": torch.tensor(weights if weights is not None else [1.0] * b),
        "tasks": tasks or ["t"] * b,
        "constraints": constraints or [None] * b,
    }


def test_uniform_logits_give_log_v_for_any_smoothing():
    logits = torch.zeros(3, 4)
    for eps in (0.0, 0.1, 0.3):
        loss, nll, _ = adjusted_label_smoothed_ce(logits, torch.tensor([0, 2, 3]), eps)
        assert torch.allclose(loss, torch.full((3,), math.log(4.0)))
        assert torch.allclose(nll, torch.full((3,), math.log(4.0)))


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_token_loss_matches_hand_computation(eps):
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0], [0.3, 0.2, -2.0, 1.5]])
    target = torch.tensor([2, 3])
    loss, nll, _ = adjusted_label_smoothed_ce(logits, target, eps)
    for i in range(2):
        ref, ref_nll = ref_token_loss(logits[i].tolist(), int(target[i]), eps)
        assert loss[i].item() == pytest.approx(ref, abs=1e-6)
        assert nll[i].item() == pytest.approx(ref_nll, abs=1e-6)
    if eps == 0.0:
        assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, target, reduction="none"))


def test_constraint_mask_restricts_softmax_and_smoothing():
    logits = torch.tensor([[2.0, -1.0, 0.5, 0.0, 1.0]])
    allowed = torch.tensor([[True, False, True, False, True]])
    loss, nll, _ = adjusted_label_smoothed_ce(logits, torch.tensor([2]), 0.1, allowed=allowed)
    ref, ref_nll = ref_token_loss(logits[0].tolist(), 2, 0.1, allowed=[0, 2, 4])
    assert loss.item() == pytest.approx(ref, abs=1e-6)
    assert nll.item() == pytest.approx(ref_nll, abs=1e-6)
    # a single allowed token: probability 1, zero loss (not NaN)
    single = torch.zeros(1, 5, dtype=torch.bool)
    single[0, 3] = True
    loss1, _, _ = adjusted_label_smoothed_ce(logits, torch.tensor([3]), 0.1, allowed=single)
    assert loss1.item() == pytest.approx(0.0, abs=1e-7)


def test_weights_multiply_log_probs():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 0.2, -2.0]])
    target = torch.tensor([1, 0])
    loss, nll, _ = adjusted_label_smoothed_ce(logits, target, 0.1, weights=torch.tensor([0.3, 2.0]))
    for i, w in enumerate((0.3, 2.0)):
        ref, ref_nll = ref_token_loss(logits[i].tolist(), int(target[i]), 0.1, weight=w)
        assert loss[i].item() == pytest.approx(ref, abs=1e-6)
        assert nll[i].item() == pytest.approx(ref_nll, abs=1e-6)


def test_drop_worst_keeps_the_smallest_losses():
    logits = torch.zeros(4, 3)
    logits[0, 0] = 5.0  # target 0: small loss
    logits[1, 0] = -5.0  # large
    logits[2, 0] = 1.0
    logits[3, 0] = -1.0
    target = torch.zeros(4, dtype=torch.long)
    full, _, _ = adjusted_label_smoothed_ce(logits, target, 0.0)
    kept_loss, kept_nll, kept = adjusted_label_smoothed_ce(logits, target, 0.0, drop_worst_ratio=0.5)
    assert sorted(kept.tolist()) == [0, 2]
    assert kept_loss.sum().item() == pytest.approx(full[[0, 2]].sum().item(), abs=1e-6)
    assert kept_nll.numel() == 2


def test_seq2seq_loss_projects_only_non_pad_positions_and_normalises_by_tokens():
    model = TableModel(table())
    prev = [[0, 4, 5, 3], [0, 3, PAD, PAD]]
    target = [[4, 5, 3, 2], [PAD, 2, PAD, PAD]]  # 5 loss tokens (row 2: a prompt position and padding are PAD)
    batch = make_batch(prev, target, weights=[1.0, 0.5], tasks=["a", "b"])
    out = seq2seq_loss(model, batch, LossConfig(label_smoothing=0.1), PAD)
    assert model.projected_rows == 5
    assert out.ntokens == 5
    t = model.table.detach()
    pairs = [(0, 0, 4, 1.0), (0, 4, 5, 1.0), (0, 5, 3, 1.0), (0, 3, 2, 1.0), (1, 3, 2, 0.5)]
    refs = [ref_token_loss(t[p].tolist(), y, 0.1, weight=w) for _, p, y, w in pairs]
    total = sum(r[0] for r in refs)
    assert out.loss_sum.item() == pytest.approx(total, abs=1e-5)
    assert out.loss.item() == pytest.approx(total / 5, abs=1e-6)
    assert out.nll_sum.item() == pytest.approx(sum(r[1] for r in refs), abs=1e-5)
    assert out.per_task["a"][1] == 4 and out.per_task["b"][1] == 1
    assert out.per_task["b"][0].item() == pytest.approx(refs[4][0], abs=1e-6)
    out.loss.backward()
    assert model.table.grad is not None


def test_evaluation_padding_rows_carry_no_loss():
    model = TableModel(table())
    batch = make_batch([[0, 4], [0, 5]], [[4, 2], [5, 2]])
    batch["is_pad"] = torch.tensor([False, True])
    out = seq2seq_loss(model, batch, LossConfig(label_smoothing=0.0), PAD)
    assert out.ntokens == 2 and model.projected_rows == 2


def test_real_model_projects_only_non_pad_rows_and_matches_full_logits():
    cfg = OFAConfig.from_name(
        "tiny",
        encoder_layers=1,
        decoder_layers=1,
        d_model=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        vocab_size=40,
        dropout=0.0,
    )
    model = OFAModel(cfg).eval()
    calls = []
    project = model.project

    def counting_project(hidden):
        calls.append(hidden.shape[0])
        return project(hidden)

    model.project = counting_project
    prev = [[0, 10, 11, 12, 13], [0, 20, 21, PAD, PAD]]
    target = [[10, 11, 12, 13, 2], [PAD, 21, 2, PAD, PAD]]
    batch = make_batch(prev, target)
    batch["input_ids"] = torch.tensor([[0, 5, 6, 2], [0, 7, 2, PAD]])
    out = seq2seq_loss(model, batch, LossConfig(label_smoothing=0.1), PAD)
    assert calls == [7]
    with torch.no_grad():
        logits = project(model.decode_hidden(batch["prev_output_tokens"], model.encode(batch["input_ids"]))).float()
    tgt = batch["target"]
    mask = tgt.ne(PAD)
    ref, _, _ = adjusted_label_smoothed_ce(logits[mask], tgt[mask], 0.1)
    assert out.loss.item() == pytest.approx(ref.mean().item(), rel=1e-5)


def test_trie_constraint_walks_the_answer():
    trie = Trie([[5, 2], [6, 7, 2], [6, 4, 2]], eos=2)
    answers = torch.tensor([[PAD, 6, 7, 2], [5, 2, PAD, PAD]])
    valid = answers.ne(PAD)
    mask = allowed_token_mask(answers, valid, [trie, None], 8)
    assert mask.shape == (5, 8)
    allowed = [set(torch.nonzero(r).flatten().tolist()) for r in mask]
    assert allowed[:3] == [{5, 6}, {7, 4}, {2}]
    assert allowed[3] == allowed[4] == set(range(8))  # unconstrained row
    assert allowed_token_mask(answers, valid, [None, None], 8) is None


def test_constrained_batch_loss_matches_hand_computation():
    model = TableModel(table(8, seed=3))
    trie = Trie([[5, 2], [6, 7, 2], [6, 4, 2]], eos=2)
    codes = torch.zeros(8, dtype=torch.bool)
    codes[[0, 1, 2, 3, 6, 7]] = True  # specials + a "code range" 6..8
    batch = make_batch([[0, 0, 6, 7], [0, 7, 6, PAD]], [[PAD, 6, 7, 2], [7, 6, 2, PAD]])
    out = seq2seq_loss(model, batch, LossConfig(label_smoothing=0.1), PAD, constraints=[trie, codes])
    t = model.table.detach()
    refs = [
        ref_token_loss(t[0].tolist(), 6, 0.1, allowed=[5, 6]),
        ref_token_loss(t[6].tolist(), 7, 0.1, allowed=[7, 4]),
        ref_token_loss(t[7].tolist(), 2, 0.1, allowed=[2]),
        ref_token_loss(t[0].tolist(), 7, 0.1, allowed=[0, 1, 2, 3, 6, 7]),
        ref_token_loss(t[7].tolist(), 6, 0.1, allowed=[0, 1, 2, 3, 6, 7]),
        ref_token_loss(t[6].tolist(), 2, 0.1, allowed=[0, 1, 2, 3, 6, 7]),
    ]
    assert out.loss_sum.item() == pytest.approx(sum(r[0] for r in refs), abs=1e-5)
    off = seq2seq_loss(model, batch, LossConfig(label_smoothing=0.1, constrained=False), PAD, constraints=[trie, codes])
    assert off.loss_sum.item() > out.loss_sum.item()


def test_two_groups_are_normalised_separately():
    model = TableModel(table())
    g1 = make_batch([[0, 4, 5]], [[4, 5, 2]], tasks=["caption"])  # 3 tokens
    g2 = make_batch([[0, 3]], [[3, 2]], weights=[2.0], tasks=["text"])  # 2 tokens
    cfg = LossConfig(label_smoothing=0.1)
    a, b = seq2seq_loss(model, g1, cfg, PAD), seq2seq_loss(model, g2, cfg, PAD)
    out = grouped_loss(model, {"groups": {"image-text": g1, "other": g2}, "size": 2}, cfg, PAD)
    assert out.loss.item() == pytest.approx(a.loss_sum.item() / 3 + b.loss_sum.item() / 2, abs=1e-6)
    assert out.loss.item() != pytest.approx((a.loss_sum.item() + b.loss_sum.item()) / 5, abs=1e-4)
    assert out.ntokens == 5 and set(out.per_task) == {"caption", "text"}
    assert set(out.per_group) == {"image-text", "other"}
    plain = grouped_loss(model, g1, cfg, PAD)
    assert plain.loss.item() == pytest.approx(a.loss.item())


def test_drop_worst_in_batch_loss_and_nonfinite_flag():
    model = TableModel(table())
    batch = make_batch([[0, 4, 5, 3]], [[4, 5, 3, 2]])
    full = seq2seq_loss(model, batch, LossConfig(label_smoothing=0.0, drop_worst_ratio=0.5), PAD)
    dropped = seq2seq_loss(model, batch, LossConfig(label_smoothing=0.0, drop_worst_ratio=0.5), PAD, drop_worst=True)
    assert full.ntokens == 4 and dropped.ntokens == 2
    assert dropped.loss.item() < full.loss.item()
    assert is_finite(full.loss)
    batch["weights"] = torch.tensor([float("nan")])
    assert not is_finite(seq2seq_loss(model, batch, LossConfig(), PAD).loss)
