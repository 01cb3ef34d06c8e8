"""TextAccuracy, RougeN (Gigaword) and the metric registry."""

from __future__ import annotations

import pytest
from _metrics_helpers import simulated_sync

from ofa_lightning.metrics import METRICS, RougeN, TextAccuracy, build_metric


def test_text_accuracy():
    m = TextAccuracy()
    m.update(["Entailment", " neutral ", "yes"], ["entailment", "contradiction", "yes"])
    m.update(["tabby cat"], [["tabby", "tabby cat"]])  # any synonym may match
    assert float(m.compute()) == pytest.approx(3 / 4)
    raw = TextAccuracy(normalize=None)
    raw.update(["Entailment"], ["entailment"])
    assert float(raw.compute()) == 0.0


def test_text_accuracy_two_ranks_dedupe():
    ranks = [TextAccuracy(), TextAccuracy()]
    ranks[0].update(["a", "b"], ["a", "x"], ids=[0, 1])
    ranks[1].update(["b", "c"], ["x", "c"], ids=[1, 2])  # id 1 is a padding duplicate
    simulated_sync(ranks)
    assert float(ranks[0].compute()) == pytest.approx(2 / 3)


def test_rouge_hand_computed():
    m = RougeN(use_stemmer=False)
    m.update(["the cat sat on the mat"], ["the cat is on the mat"])
    out = m.compute()
    # unigram overlap 5/6 both ways; bigrams the-cat, on-the, the-mat = 3/5; LCS "the cat on the mat" = 5/6
    assert float(out["rouge1"]) == pytest.approx(5 / 6)
    assert float(out["rouge2"]) == pytest.approx(3 / 5)
    assert float(out["rougeL"]) == pytest.approx(5 / 6)


def test_rouge_stemming():
    pytest.importorskip("nltk")
    stem, plain = RougeN(use_stemmer=True), RougeN(use_stemmer=False)
    for m in (stem, plain):
        m.update(["cats running"], ["cat runs"])
    assert float(stem.compute()["rouge1"]) == pytest.approx(1.0)
    assert float(plain.compute()["rouge1"]) == 0.0


def test_rouge_mean_and_dedupe():
    ranks = [RougeN(use_stemmer=False), RougeN(use_stemmer=False)]
    ranks[0].update(["a b", "c d"], ["a b", "x y"], ids=[0, 1])
    ranks[1].update(["c d"], ["x y"], ids=[1])
    simulated_sync(ranks)
    assert float(ranks[0].compute()["rouge1"]) == pytest.approx(0.5)
    pre = RougeN(use_stemmer=False, preprocess=lambda s: s.replace("1", "one"))
    pre.update(["1 cat"], ["one cat"])
    assert float(pre.compute()["rouge1"]) == pytest.approx(1.0)


def test_registry():
    assert set(METRICS) == {"cider", "bleu", "rouge_l", "vqa_acc", "grounding", "accuracy", "rouge"} | {
        "cider_zh",
        "bleu_zh",
        "rouge_l_zh",
        "ocr",
    }
    m = build_metric("grounding", threshold=0.7)
    assert type(m).__name__ == "GroundingAccuracy" and m.threshold == 0.7
    for name, cls in METRICS.items():
        assert isinstance(build_metric(name), cls)
    with pytest.raises(ValueError, match="known metrics: accuracy, bleu, bleu_zh, cider"):
        build_metric("meteor")
