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


def _ofa_calculate_ap_score(hyps, refs, thresh=0.5):
    """OFA-Sys/OFA utils/eval_utils.py, eval_refcoco._calculate_ap_score (Apache-2.0), verbatim."""
    interacts = torch.cat(
        [
            torch.where(hyps[:, :2] < refs[:, :2], refs[:, :2], hyps[:, :2]),
            torch.where(hyps[:, 2:] < refs[:, 2:], hyps[:, 2:], refs[:, 2:]),
        ],
        dim=1,
    )
    area_predictions = (hyps[:, 2] - hyps[:, 0]) * (hyps[:, 3] - hyps[:, 1])
    area_targets = (refs[:, 2] - refs[:, 0]) * (refs[:, 3] - refs[:, 1])
    interacts_w = interacts[:, 2] - interacts[:, 0]
    interacts_h = interacts[:, 3] - interacts[:, 1]
    area_interacts = interacts_w * interacts_h
    ious = area_interacts / (area_predictions + area_targets - area_interacts + 1e-6)
    return ((ious >= thresh) & (interacts_w > 0) & (interacts_h > 0)).float()


def _boundary_boxes():
    """Pairs at IoU exactly 0.5 over many scales (sub-pixel to large), touching, zero-size and nested boxes."""
    preds, tgts = [], []
    for s in [0.25, 0.5, 1, 2, 3, 4, 5, 6, 8, 10, 16, 33, 100, 640]:
        preds += [[0, 0, s, s], [0, 0, s, s], [0, 0, s, s], [0, 0, s, 0], [s, s, s, s]]
        tgts += [[0, 0, s, 2 * s], [0, 0, s, 2 * s + 1e-3], [s, 0, 2 * s, s], [0, 0, s, s], [0, 0, s, s]]
    return torch.tensor(preds, dtype=torch.float32), torch.tensor(tgts, dtype=torch.float32)


def test_acc_equals_ofa_on_boundary_and_degenerate_boxes():
    p, t = _boundary_boxes()
    ofa = _ofa_calculate_ap_score(p, t).bool()
    assert ofa.tolist() == grounding_iou(p, t)[1].tolist()
    # OFA's "+ 1e-6" fails an exact 0.5 on tiny unions only; ">=" accepts it otherwise
    exact_half = ofa[0::5].tolist()
    assert exact_half[0] is False and exact_half[-1] is True


def test_acc_equals_ofa_on_random_boxes_including_inverted():
    g = torch.Generator().manual_seed(36)
    p = torch.rand(20000, 4, generator=g) * 600
    t = torch.rand(20000, 4, generator=g) * 600
    t = torch.cat([torch.minimum(t[:, :2], t[:, 2:]), torch.maximum(t[:, :2], t[:, 2:])], 1)
    near = torch.rand(20000, 1, generator=g) < 0.5  # half the predictions jitter around the target
    p = torch.where(near, t + torch.randn(20000, 4, generator=g) * 15, p)
    _, correct, invalid = grounding_iou(p, t)
    assert invalid.any() and correct.float().mean() > 0.2  # inverted predictions and many hits
    assert correct.tolist() == _ofa_calculate_ap_score(p, t).bool().tolist()


def test_dequantised_bins_give_ofa_decisions():
    # OFA: hyps = bins / (num_bins - 1) * max_image_size, then / w_resize_ratio (x) and / h_resize_ratio (y),
    # in float32; the kit's tokenizer.bins_to_box does the same in float64.
    from ofa_lightning.tokenizer import bins_to_box

    g = torch.Generator().manual_seed(7)
    n, num_bins, size = 5000, 1000, 512
    bins = torch.randint(0, num_bins, (n, 4), generator=g)
    bins = torch.cat([torch.minimum(bins[:, :2], bins[:, 2:]), torch.maximum(bins[:, :2], bins[:, 2:])], 1)
    w_ratio = size / (torch.rand(n, generator=g) * 500 + 100)
    h_ratio = size / (torch.rand(n, generator=g) * 500 + 100)
    hyps = bins / (num_bins - 1) * size
    hyps[:, ::2] /= w_ratio.unsqueeze(1)
    hyps[:, 1::2] /= h_ratio.unsqueeze(1)
    kit = torch.tensor(
        [bins_to_box(b, size, num_bins, float(w), float(h)) for b, w, h in zip(bins.tolist(), w_ratio, h_ratio)]
    )
    torch.testing.assert_close(kit.float(), hyps, rtol=1e-6, atol=1e-4)
    targets = hyps + torch.randn(n, 4, generator=g) * 20
    targets = torch.cat(
        [torch.minimum(targets[:, :2], targets[:, 2:]), torch.maximum(targets[:, :2], targets[:, 2:])], 1
    )
    ofa = _ofa_calculate_ap_score(hyps, targets).bool()
    assert grounding_iou(kit, targets)[1].tolist() == ofa.tolist()
    m = GroundingAccuracy()
    m.update(kit, targets)
    assert float(m.compute()["acc"]) == ofa.double().mean().item()
