"""VQA accuracy equals the official GT-Vision-Lab/VQA ``vqaEval.py`` (current master) case for case.

``tests/data/metrics/vqa_official_cases.jsonl``: 644 crafted (prediction, answers) cases and the accuracy
that the official ``VQAEval.evaluate`` gives for each (the script run unchanged apart from Python 3
``print`` calls, on in-memory annotation objects whose answers carry distinct ``answer_id`` values as in the
annotation files). The cases cover case, articles, number words, every contraction key and value,
punctuation next to spaces, digit-comma-digit, periods before digits and more than 32 periods, whitespace,
ten identical answers, and 0..5 matching humans.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from ofa_lightning.metrics import VQAAccuracy, vqa_official_accuracy
from ofa_lightning.metrics.vqa import CONTRACTIONS

CASES = [
    json.loads(line)
    for line in (Path(__file__).parent / "data" / "metrics" / "vqa_official_cases.jsonl").open(encoding="utf-8")
]


def test_case_set_is_varied():
    assert len(CASES) >= 500
    values = Counter(round(c["expected"], 6) for c in CASES)
    assert all(values[v] >= 20 for v in (0.0, 0.3, 0.6, 0.9, 1.0))
    assert sum(len(set(c["answers"])) == 1 for c in CASES) >= 50  # the all-identical shortcut
    text = " ".join(c["pred"] + " " + " ".join(c["answers"]) for c in CASES)
    assert sum(k in text for k in CONTRACTIONS) >= 100 and "\n" in text and "\t" in text


def test_every_case_equals_the_official_script():
    diffs = [c for c in CASES if vqa_official_accuracy(c["pred"], c["answers"]) != c["expected"]]
    assert not diffs, f"{len(diffs)} differences, first: {diffs[:3]}"


def test_metric_default_mode_is_the_official_script():
    m = VQAAccuracy()
    m.update([c["pred"] for c in CASES], [c["answers"] for c in CASES], ids=list(range(len(CASES))))
    assert float(m.compute()) == pytest.approx(sum(c["expected"] for c in CASES) / len(CASES), abs=1e-12)


def test_full_mode_differs_only_on_identical_answers():
    for c in CASES:
        if len({a.replace("\n", " ").replace("\t", " ").strip() for a in c["answers"]}) > 1:
            assert vqa_official_accuracy(c["pred"], c["answers"], "full") == c["expected"]
    assert vqa_official_accuracy("Yes", ["yes"] * 10) == 0.0
    assert vqa_official_accuracy("Yes", ["yes"] * 10, "full") == 1.0
