"""CLIP-SCST (text-to-image stage 2): the loss's pieces, and that a few optimiser steps on it raise the CLIP score of
sampled images for held-out captions over the starting ("stage 1") model. The CLIP is tiny and randomly
initialised (no weights can be downloaded): this checks that the reward is optimised and generalises across
captions, not that the images get better to a human eye."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("transformers")

from test_text_to_image import tiny_parts  # noqa: E402

from ofa_lightning.errors import UserError  # noqa: E402
from ofa_lightning.generation.rerank import ClipReranker  # noqa: E402
from ofa_lightning.training.clip_scst import CLIPSCST  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TRAIN = ["a red circle", "two blue squares on a dark background"]
HELD_OUT = ["a green star and a yellow triangle"]


def setup(seed: int = 0):
    tok, model, vq = tiny_parts(seed)
    vq.eval()
    task = SimpleNamespace(name="text_to_image", tokenizer=tok, num_codes=16, vq=lambda: vq)
    module = SimpleNamespace(model=model, task_for=lambda name: task, _trainer=None)
    return tok, model, vq, task, module


def batch_of(tok, captions):
    ids = [tok.encode(f" what is the complete image? caption: {c}", add_bos=True, add_eos=True) for c in captions]
    width = max(map(len, ids))
    input_ids = torch.tensor([i + [tok.pad_id] * (width - len(i)) for i in ids])
    return {
        "input_ids": input_ids,
        "tasks": ["text_to_image"] * len(captions),
        "metas": [{"caption": c} for c in captions],
    }


def mean_clip(scst, model, tok, vq, task, captions, rounds: int = 4) -> float:
    torch.manual_seed(123)
    values = []
    for _ in range(rounds):
        samples = scst.sample(model, batch_of(tok, captions), task, vq)
        values.append(scst.rewards(samples, captions, tok.code_range[0], vq).mean())
    return float(torch.stack(values).mean())


def test_clip_scst_loss_pieces():
    tok, model, vq, task, module = setup()
    scst = CLIPSCST({"num_samples": 4, "top_k": 8}, clip=ClipReranker.random_init(seed=0, image_size=32))
    out = scst.loss(module, batch_of(tok, TRAIN))
    assert torch.isfinite(out.loss) and out.ntokens == 2 * 4 * 17  # 16 codes + EOS per sample
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    with pytest.raises(UserError, match="num_samples >= 2"):
        CLIPSCST({"num_samples": 1})
    with pytest.raises(UserError, match="clip_path"):
        CLIPSCST({}).reranker()


@pytest.mark.slow
def test_clip_scst_raises_held_out_clip_score():
    tok, model, vq, task, module = setup()
    clip = ClipReranker.random_init(seed=0, image_size=32)
    scst = CLIPSCST({"num_samples": 6, "top_k": 12}, clip=clip)
    before_train = mean_clip(scst, model, tok, vq, task, TRAIN)
    before = mean_clip(scst, model, tok, vq, task, HELD_OUT)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(30):
        out = scst.loss(module, batch_of(tok, TRAIN))
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    model.eval()
    after_train = mean_clip(scst, model, tok, vq, task, TRAIN)
    after = mean_clip(scst, model, tok, vq, task, HELD_OUT)
    assert after_train > before_train, (before_train, after_train)
    assert after > before, (before, after)
