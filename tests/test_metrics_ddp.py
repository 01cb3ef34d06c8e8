"""Real 2-process torch.distributed (gloo, CPU) sync of every metric, with a padded duplicate sample.

This exercises torchmetrics' actual all-gather path (uneven list states, uint8 byte states, a rank
whose id list is empty) rather than a simulation.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp
from _metrics_helpers import random_caption_sets

from ofa_lightning.metrics import BLEU, ROUGEL, CIDErD, GroundingAccuracy, TextAccuracy, VQAAccuracy

N = 40


def _data():
    preds, refs = random_caption_sets(N, seed=3)
    vqa_preds = ["dog", "two", "yes.", "cat"] * (N // 4)
    vqa_refs = [["dog"] * 2 + ["cat"] * 8, ["2"] * 10, ["yes"] * 3 + ["no"] * 7, {"cat": 0.6}] * (N // 4)
    boxes = [[float(i), 0.0, float(i) + 10, 10.0] for i in range(N)]
    tgt = [[float(i) + (i % 7), 0.0, float(i) + 10 + (i % 7), 10.0] for i in range(N)]
    labels = ["dog", "2", "yes", "x"] * (N // 4)
    return preds, refs, vqa_preds, vqa_refs, boxes, tgt, labels


def _run(metric_sets, idx, rank=0):
    preds, refs, vqa_preds, vqa_refs, boxes, tgt, labels = _data()
    ids = list(idx)
    out = {}
    sel = lambda xs: [xs[i] for i in ids]  # noqa: E731
    for name, m in metric_sets.items():
        if name in ("cider", "bleu", "rouge_l"):
            m.update(sel(preds), sel(refs), ids)
        elif name == "vqa":
            m.update(sel(vqa_preds), sel(vqa_refs), ids)
        elif name == "vqa_noids":
            if ids:
                m.update(sel(vqa_preds), sel(vqa_refs))
        elif name == "grounding":
            m.update(sel(boxes), sel(tgt), ids)
        elif name == "accuracy":
            m.update(sel(vqa_preds), sel(labels), ids)
        elif name == "bleu_rank0_only" and rank == 0:  # rank 1 never updates: empty list states
            m.update(preds, refs, list(range(N)))
    for name, m in metric_sets.items():
        v = m.compute()
        out[name] = {k: float(x) for k, x in v.items()} if isinstance(v, dict) else float(v)
    return out


def _metrics():
    return {
        "cider": CIDErD(),
        "bleu": BLEU(),
        "rouge_l": ROUGEL(),
        "vqa": VQAAccuracy(),
        "vqa_noids": VQAAccuracy(),
        "grounding": GroundingAccuracy(),
        "accuracy": TextAccuracy(),
        "bleu_rank0_only": BLEU(),
    }


def _worker(rank, world, port, path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        half = N // 2
        # DistributedSampler-style padding: rank 1 repeats sample 0 at the end
        idx = range(0, half) if rank == 0 else list(range(half, N)) + [0]
        out = _run(_metrics(), idx, rank)
        with open(f"{path}.{rank}", "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(120)
def test_gloo_two_process_sync(tmp_path):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed gloo backend unavailable")
    path = str(tmp_path / "out")
    mp.spawn(_worker, args=(2, _free_port(), path), nprocs=2, join=True)
    single = _run(_metrics(), range(N))
    for rank in range(2):
        with open(f"{path}.{rank}") as f:
            got = json.load(f)
        for name in ("cider", "bleu", "rouge_l", "vqa", "grounding", "accuracy"):
            assert got[name] == pytest.approx(single[name], abs=1e-9), (rank, name)
        assert got["bleu_rank0_only"] == pytest.approx(single["bleu"], abs=1e-9)
    # without ids the padded duplicate (sample 0: acc 0.6) is counted: (sum + 0.6) / (N + 1)
    expected = (single["vqa_noids"] * N + 0.6) / (N + 1)
    assert got["vqa_noids"] == pytest.approx(expected, abs=1e-9)
    assert got["vqa_noids"] != pytest.approx(single["vqa_noids"], abs=1e-6)
