"""VQA accuracy: hand-computed values from the official algorithm (min(1, matches among the other 9 / 3),
averaged over the 10 leave-one-out subsets) and the official answer normalisation."""

from __future__ import annotations

import pytest
import torch
from _metrics_helpers import simulated_sync

from ofa_lightning.metrics import VQAAccuracy, normalize_vqa_answer, vqa_official_accuracy


def _acc(pred, gts, **kw):
    m = VQAAccuracy(**kw)
    m.update([pred], [gts])
    return float(m.compute())


# m matching humans out of 10: m*min(1,(m-1)/3) + (10-m)*min(1,m/3), divided by 10
@pytest.mark.parametrize(
    "pred, gts, expected",
    [
        ("dog", ["dog"] * 2 + ["cat"] * 8, 0.6),  # (2*(1/3) + 8*(2/3)) / 10
        ("dog", ["dog"] * 1 + ["cat"] * 9, 0.3),  # (1*0 + 9*(1/3)) / 10
        ("dog", ["dog"] * 3 + ["cat"] * 7, 0.9),  # (3*(2/3) + 7*1) / 10
        ("dog", ["dog"] * 4 + ["cat"] * 6, 1.0),
        ("dog", ["cat"] * 10, 0.0),
        ("two", ["2"] * 3 + ["3"] * 7, 0.9),  # number word -> digit
        ("2", ["two"] * 3 + ["3"] * 7, 0.9),  # answers normalised too
        ("a dog", ["dog"] + ["cat"] * 9, 0.3),  # article dropped
        ("the dog", ["a dog"] * 2 + ["cat"] * 8, 0.6),
        ("dont", ["don't"] * 4 + ["no"] * 6, 1.0),  # contraction restored
        ("3.5", ["3.5"] * 3 + ["35"] * 7, 0.9),  # decimal point kept (else "35" would match 7 -> 1.0)
        ("yes.", ["yes"] * 2 + ["no"] * 8, 0.6),  # trailing period stripped
        ("Yes", ["yes"] * 2 + ["no"] * 8, 0.6),  # lower-cased
        ("black-and-white", ["black and white"] * 3 + ["gray"] * 7, 0.9),  # '-' -> ' '
        ("1,000", ["1000"] * 2 + ["100"] * 8, 0.6),  # digit,digit -> punctuation deleted
        ("  yes\n", ["yes"] * 10, 1.0),
    ],
)
def test_official_accuracy_hand_computed(pred, gts, expected):
    assert _acc(pred, gts) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "raw, norm",
    [
        ("Two", "2"),
        ("none", "0"),
        ("an apple", "apple"),
        ("isnt", "isn't"),
        ("couldnt've", "couldn't've"),
        ("its", "its"),  # ordinary words are not contractions
        ("were", "were"),
        ("yes!", "yes"),
        ("what? no", "what no"),  # '?' next to a space -> deleted
        ("a.m.", "am"),
        ("0.5", "0.5"),
        ("left/right", "left right"),
    ],
)
def test_normalisation(raw, norm):
    assert normalize_vqa_answer(raw) == norm


def test_identical_answers_shortcut():
    # Official script: with ten identical answers nothing is normalised (raw, case-sensitive comparison);
    # gt_processing="full" normalises there too.
    assert vqa_official_accuracy("two", ["2"] * 10) == 0.0
    assert vqa_official_accuracy("two", ["2"] * 10, "full") == 1.0
    assert vqa_official_accuracy("two", ["two"] * 3 + ["three"] * 7) == pytest.approx(0.9)
    assert vqa_official_accuracy("2", ["2"] * 10, "official") == 1.0
    with pytest.raises(ValueError):
        VQAAccuracy(gt_processing="bogus")


def test_soft_score_mode():
    m = VQAAccuracy()
    m.update(["no", "maybe", " yes ", "Yes."], [{"yes": 1.0, "no": 0.3}] * 4)
    # 0.3 + 0 + 1.0 + 0 (exact lookup as in OFA) = 1.3 over 4
    assert float(m.compute()) == pytest.approx(1.3 / 4)
    m2 = VQAAccuracy(normalize_soft=True)
    m2.update(["Yes.", "two"], [{"yes": 1.0}, {"2": 0.6, "two": 0.9}])
    assert float(m2.compute()) == pytest.approx((1.0 + 0.9) / 2)


def test_mixed_batch_mean_and_states():
    m = VQAAccuracy()
    m.update(["dog", "2"], [["dog"] * 2 + ["cat"] * 8, ["2"] * 10])
    m.update(["x"], [{"x": 0.3}])
    assert float(m.compute()) == pytest.approx((0.6 + 1.0 + 0.3) / 3)
    assert m.value_sum.dtype == torch.float64 and int(m.count) == 3


def test_two_ranks_merge_and_dedupe():
    preds = ["dog", "2", "cat", "yes"]
    refs = [["dog"] * 2 + ["cat"] * 8, ["2"] * 10, ["cat"] * 10, {"yes": 0.6}]
    # rank 1 repeats sample 1 (padding); expected mean over the 4 unique samples
    expected = (0.6 + 1.0 + 1.0 + 0.6) / 4
    ranks = [VQAAccuracy(), VQAAccuracy()]
    ranks[0].update(preds[:2], refs[:2], ids=[10, 11])
    ranks[1].update([preds[1]] + preds[2:], [refs[1]] + refs[2:], ids=[11, 12, 13])
    simulated_sync(ranks)
    for m in ranks:
        assert int(m.count) == 5
        assert float(m.compute()) == pytest.approx(expected)
    a, b = VQAAccuracy(), VQAAccuracy()
    a.update(preds[:2], refs[:2], ids=[10, 11])
    b.update([preds[1]] + preds[2:], [refs[1]] + refs[2:], ids=[11, 12, 13])
    a.merge_state(b)
    assert float(a.compute()) == pytest.approx(expected)
    # without ids: plain sum/count, the duplicate counts
    c, d = VQAAccuracy(), VQAAccuracy()
    c.update(preds[:2], refs[:2])
    d.update([preds[1]] + preds[2:], [refs[1]] + refs[2:])
    simulated_sync([c, d])
    assert float(c.compute()) == pytest.approx((0.6 + 1.0 + 1.0 + 1.0 + 0.6) / 5)


def test_mixing_updates_with_and_without_ids_is_rejected():
    m = VQAAccuracy()
    m.update(["a"], [["a"] * 10], ids=[1])
    m.update(["b"], [["b"] * 10])
    with pytest.raises(RuntimeError, match="ids"):
        m.compute()


def test_bad_inputs():
    m = VQAAccuracy()
    with pytest.raises(ValueError):
        m.update(["a"], ["a"])  # a bare string is not an answer list
    with pytest.raises(ValueError):
        m.update(["a", "b"], [["a"]])
