"""Helpers shared by tests/test_metrics_*.py: random captions and a simulated multi-rank sync."""

from __future__ import annotations

import copy
import random

from ofa_lightning.metrics import simple_tokenize

WORDS = (
    "a an the man woman dog cat sits on of with red blue small large table street park "
    "riding bike holding umbrella two people standing near water eating pizza white black"
).split()
PUNCT = ["", "", "", ".", ",", "!", "'s"]


def random_caption(rng: random.Random, max_len: int = 12) -> str:
    n = rng.choice([0, 1, 2] + list(range(3, max_len + 1)) * 3)
    words = [rng.choice(WORDS) + rng.choice(PUNCT) for _ in range(n)]
    if words and rng.random() < 0.3:
        words[0] = words[0].capitalize()
    return " ".join(words)


def random_caption_sets(n_images: int, seed: int = 0, n_refs: int = 5):
    """(preds, refs) with duplicates (pred copied from a ref, repeated refs) and empty-ish captions."""
    rng = random.Random(seed)
    preds, refs = [], []
    for _ in range(n_images):
        rs = [random_caption(rng) for _ in range(n_refs)]
        if rng.random() < 0.2:
            rs[1] = rs[0]  # duplicate reference
        if rng.random() < 0.05:
            rs[2] = "."  # tokenizes to an empty caption
        r = rng.random()
        if r < 0.15:
            pred = rs[rng.randrange(n_refs)]  # exact copy of a reference
        elif r < 0.2:
            pred = rng.choice(["", ".", "dog"])  # empty-ish prediction
        else:
            pred = random_caption(rng)
        preds.append(pred)
        refs.append(rs)
    return preds, refs


def coco_dicts(preds, refs):
    """pycocoevalcap inputs ({id: [caption]}, {id: [refs]}) tokenized with simple_tokenize."""
    res = {i: [simple_tokenize(p)] for i, p in enumerate(preds)}
    gts = {i: [simple_tokenize(x) for x in r] for i, r in enumerate(refs)}
    return gts, res


def simulated_sync(metrics):
    """Make every metric in ``metrics`` (one per simulated rank) hold the all-gathered state.

    Runs torchmetrics' own ``_sync_dist`` (including list pre-concatenation and the empty-rank path)
    with a fake all-gather that returns the tensors every rank would have sent, in rank order.
    """
    sent = []
    for m in metrics:
        probe, rec = copy.deepcopy(m), []
        probe._sync_dist(lambda t, group=None, rec=rec: (rec.append(t.clone()), [t])[1])
        sent.append(rec)
    for m in metrics:
        counter = iter(range(len(sent[0])))

        def gather(t, group=None):
            i = next(counter)
            return [rank[i] for rank in sent]

        m._sync_dist(gather)
