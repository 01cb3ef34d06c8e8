"""Trivial baselines that a trained model must beat, computed on the same test shards with the same metrics.

* caption:   the most frequent training caption, predicted for every test image (CIDEr-D);
* vqa:       the majority training answer, predicted for every question (VQA soft accuracy, as OFA);
* grounding: the whole image as the box, for every expression (Acc@0.5).
"""

from __future__ import annotations

import logging
from collections import Counter

import torch

from ofa_lightning.data.shards import iter_json_samples, resolve_shards
from ofa_lightning.metrics import GroundingAccuracy, VQAAccuracy, build_metric
from ofa_lightning.tasks.text import pre_caption

log = logging.getLogger(__name__)


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# what each baseline reads from a row, and the check of its type
_NEEDS = {
    "captions": lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v) and bool(v),
    "answer_conf": lambda v: isinstance(v, dict) and bool(v) and all(_number(x) for x in v.values()),
    "box": lambda v: (
        isinstance(v, list) and len(v) == 4 and all(_number(x) for x in v) and v[2] >= v[0] and v[3] >= v[1]
    ),
    "width": _number,
    "height": _number,
}


def _records(spec: str, split: str, needs: tuple[str, ...] = ()) -> list[dict]:
    """The JSON rows of a split; a bad sample, a damaged shard or a row without the ``needs`` fields (or with a
    value of another type, an inverted box) is a counted skip, logged with the counts."""
    from ofa_lightning.data.samples import DataStats

    stats = DataStats()  # bad samples and damaged shards: counted, named skips
    rows = []
    for sample, fields in iter_json_samples(resolve_shards(spec, split), stats):
        bad = next((name for name in needs if not _NEEDS[name](fields.get(name))), None)
        if bad is None:
            rows.append(fields)
        else:
            reason = "missing field" if fields.get(bad) is None else "bad value"
            stats.skip(f"{reason}: {bad}", "", f"{sample['__key__']} in {sample['__url__']}")
    if stats.skipped:
        log.warning("baselines: %s %s: skipped %s", spec, split, stats.skipped)
    return rows


def caption_baseline(shards: str, train_split: str = "train", test_split: str = "test", metric: str = "cider") -> float:
    """``metric``: the caption task's CIDEr-D (``cider``, or ``cider_zh`` for Chinese captions)."""
    counts = Counter(pre_caption(c, 20) for r in _records(shards, train_split, ("captions",)) for c in r["captions"])
    guess = counts.most_common(1)[0][0]
    test = _records(shards, test_split, ("captions",))
    scorer = build_metric(metric)
    scorer.update([guess] * len(test), [r["captions"] for r in test], ids=list(range(len(test))))
    return float(scorer.compute())


def vqa_baseline(shards: str, train_split: str = "train", test_split: str = "test") -> float:
    counts = Counter(
        max(r["answer_conf"], key=r["answer_conf"].get) for r in _records(shards, train_split, ("answer_conf",))
    )
    guess = counts.most_common(1)[0][0]
    test = _records(shards, test_split, ("answer_conf",))
    metric = VQAAccuracy()
    # OFA's soft score, as the VQA task's metric: the guess's confidence in each row's {answer: conf}
    metric.update([guess] * len(test), [r["answer_conf"] for r in test], ids=list(range(len(test))))
    return float(metric.compute())


def grounding_baseline(shards: str, test_split: str = "test") -> float:
    test = _records(shards, test_split, ("box", "width", "height"))
    whole = torch.tensor([[0.0, 0.0, r["width"], r["height"]] for r in test])
    boxes = torch.tensor([r["box"] for r in test], dtype=torch.float32)
    metric = GroundingAccuracy()
    metric.update(whole, boxes, ids=list(range(len(test))))
    return float(metric.compute()["acc"])
