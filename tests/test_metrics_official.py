"""official_caption_scores: clear error without Java; optional real run (slow) for parity."""

from __future__ import annotations

import shutil

import pytest

from ofa_lightning.metrics import BLEU, CIDErD, official_caption_scores
from ofa_lightning.metrics import official as official_mod


def test_missing_java_raises_clear_error(monkeypatch):
    monkeypatch.setattr(official_mod.shutil, "which", lambda name: None)
    with pytest.raises(RuntimeError, match="java"):
        official_caption_scores(["a dog"], [["a dog"]])


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("java") is None, reason="needs java")
def test_official_matches_java_free_metrics_on_plain_captions():
    preds = ["a man riding a bike", "two dogs in a park", "a cat on a table"]
    refs = [
        ["a man rides a bike", "a person riding a bicycle", "man on a bike in the street"],
        ["two dogs playing in the park", "dogs running on grass", "two dogs in a park"],
        ["a cat sitting on a table", "a cat on the kitchen table", "a small cat on a wooden table"],
    ]
    out = official_caption_scores(preds, refs)
    assert set(out) == {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "meteor", "rouge_l", "cider"}
    assert 0 < out["meteor"] <= 1
    cider, bleu = CIDErD(), BLEU()
    for m in (cider, bleu):
        m.update(preds, refs, [0, 1, 2])
    assert abs(out["cider"] - float(cider.compute())) <= 1e-6
    assert abs(out["bleu_4"] - float(bleu.compute()["bleu_4"])) <= 1e-6
