"""Grounding Acc@0.5 / mIoU with hand-computed IoUs, OFA's positive-intersection rule and bad boxes."""

from __future__ import annotations

import math

import pytest
import torch
from _metrics_helpers import simulated_sync
from torchvision.ops import box_iou

from ofa_lightning.metrics import GroundingAccuracy, grounding_iou

GT = [0.0, 0.0, 10.0, 10.0]
CASES = [  # pred, target, IoU by hand, correct
    ([0, 0, 10, 10], GT, 1.0, True),
    ([0, 0, 10, 10], [5, 0, 15, 10], 50 / 150, False),
    ([0, 0, 10, 10], [0, 0, 10, 20], 100 / 200, True),  # exactly 0.5 counts (>=)
    ([0, 0, 10, 10], [10, 0, 20, 10], 0.0, False),  # touching: zero-width intersection
    ([0, 0, 10, 10], [1, 1, 11, 11], 81 / 119, True),
    ([0, 0, 10, 10], [2, 2, 12, 12], 64 / 136, False),
    ([5, 5, 5, 5], GT, 0.0, False),  # degenerate but valid prediction
    ([10, 10, 0, 0], GT, 0.0, False),  # inverted -> invalid
    ([math.nan, 0, 1, 1], GT, 0.0, False),  # NaN -> invalid
    ([0, 0, math.inf, 10], GT, 0.0, False),  # inf -> invalid
]


def test_hand_computed_ious():
    preds = torch.tensor([c[0] for c in CASES], dtype=torch.float32)
    tgts = torch.tensor([c[1] for c in CASES], dtype=torch.float32)
    iou, correct, invalid = grounding_iou(preds, tgts)
    assert iou.tolist() == pytest.approx([c[2] for c in CASES], abs=1e-12)
    assert correct.tolist() == [c[3] for c in CASES]
    assert invalid.tolist() == [False] * 7 + [True] * 3


def test_metric_values():
    m = GroundingAccuracy()
    m.update(torch.tensor([c[0] for c in CASES[:5]]), torch.tensor([c[1] for c in CASES[:5]]))
    m.update([c[0] for c in CASES[5:]], [c[1] for c in CASES[5:]])  # python lists work too
    out = m.compute()
    assert float(out["acc"]) == pytest.approx(3 / 10)
    assert float(out["miou"]) == pytest.approx((1 + 1 / 3 + 0.5 + 81 / 119 + 64 / 136) / 10)
    assert float(out["invalid"]) == 3 and float(m.invalid) == 3


def test_positive_intersection_rule_with_lower_threshold():
    # threshold 0 would accept everything by IoU alone; the width/height > 0 rule still rejects touching boxes
    _, correct, _ = grounding_iou([[0, 0, 10, 10], [0, 0, 10, 10]], [[10, 0, 20, 10], [9, 0, 20, 10]], threshold=0.0)
    assert correct.tolist() == [False, True]


def test_agrees_with_torchvision_box_iou_on_valid_boxes():
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 100
    wh = torch.rand(200, 2, generator=g) * 60 + 1
    p = torch.cat([xy, xy + wh], 1).double()
    xy2 = xy + torch.randn(200, 2, generator=g) * 10
    t = torch.cat([xy2, xy2 + wh * (0.5 + torch.rand(200, 2, generator=g))], 1).double()
    iou, _, invalid = grounding_iou(p, t)
    assert not invalid.any()
    torch.testing.assert_close(iou, box_iou(p, t).diagonal(), atol=1e-12, rtol=0)


def test_invalid_targets_and_shapes_raise():
    with pytest.raises(ValueError, match="target"):
        grounding_iou([GT], [[10, 10, 0, 0]])
    with pytest.raises(ValueError, match="shape"):
        grounding_iou([[0, 0, 1]], [[0, 0, 1]])
    with pytest.raises(ValueError):
        grounding_iou([GT, GT], [GT])


def test_two_ranks_dedupe_by_id():
    preds = [c[0] for c in CASES]
    tgts = [c[1] for c in CASES]
    ranks = [GroundingAccuracy(), GroundingAccuracy()]
    ranks[0].update(preds[:5], tgts[:5], ids=list(range(5)))
    ranks[1].update(preds[4:], tgts[4:], ids=list(range(4, 10)))  # sample 4 duplicated
    simulated_sync(ranks)
    out = ranks[1].compute()
    assert float(out["acc"]) == pytest.approx(3 / 10)
    assert float(out["invalid"]) == 3
