"""Evaluation inside the LightningModule: decode a batch the way its task says, parse, feed the metrics.

Three inference modes (``Task.inference``):

``generate``    beam search / sampling with ``task.generation_config()``; the decoder prompt after BOS is forced as
                ``prefix_tokens`` (VQA's ``prev_output`` prompt) and ``task.constraint_trie()`` (if any) constrains the
                answer;
``candidates``  all-candidate scoring of ``task.candidate_sequences()`` (trie-renormalised log-likelihood), OFA's
                protocol for VQA, SNLI-VE, ImageNet, ITM;
``last_token``  one teacher-forced pass, argmax over the candidate label tokens at the last prompt position (GLUE).

Then ``task.parse_prediction(tokens, example)`` per row. Metrics get ``update(preds, references, ids)`` with the
``meta["reference"]`` of each row; evaluation padding duplicates (``is_pad``) and rows without a reference are left
out, and the string sample ids are hashed to stable non-negative ints so the metrics can also de-duplicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from ofa_lightning.generation import generate, pad_sequences, score_candidates

from .batch import K, batch_size, decoder_prompts, row_example

__all__ = ["predict_batch", "metric_inputs", "stable_id", "TokenLoss", "metric_results"]


def stable_id(sample_id: Any) -> int:
    """A process-independent non-negative 56-bit int for a sample id (Python's ``hash`` is salted per process)."""
    digest = hashlib.blake2b(str(sample_id).encode("utf-8"), digest_size=7).digest()
    return int.from_bytes(digest, "big")


@torch.no_grad()
def predict_batch(model, task, batch: Mapping[str, Any], pad_id: int, *, chunk_size: int = 20) -> list[dict[str, Any]]:
    """Predictions of one single-task batch: ``[{"id", "task", "tokens", "prediction", "is_pad"}]`` per row."""
    n = batch_size(batch)
    if n == 0:
        return []
    prompts = decoder_prompts(batch, pad_id)
    mode = getattr(task, "inference", "generate")
    if mode == "candidates" and task.candidate_sequences() is None:
        mode = "generate"
    if mode == "last_token":
        tokens = _last_token(model, task, batch, prompts, pad_id)
    elif mode == "candidates":
        tokens = _best_candidates(model, task, batch, prompts, pad_id, chunk_size)
    else:
        tokens = _generate(model, task, batch, prompts, pad_id)
    is_pad = batch.get(K.IS_PAD)
    out = []
    for i in range(n):
        example = row_example(batch, i, pad_id, prompts[i])
        out.append(
            {
                "id": example.id,
                "task": example.task or task.name,
                "tokens": tokens[i],
                "prediction": task.parse_prediction(tokens[i], example),
                "reference": example.meta.get("reference"),
                "is_pad": bool(is_pad[i]) if is_pad is not None else False,
            }
        )
    return out


def _encode(model, batch: Mapping[str, Any]):
    return model.encode(batch[K.INPUT_IDS], batch.get(K.PATCH_IMAGES), batch.get(K.PATCH_MASKS))


def _generate(model, task, batch, prompts: list[list[int]], pad_id: int) -> list[list[int]]:
    config = task.generation_config()
    prefixes = [p[1:] for p in prompts]
    prefix = pad_sequences(prefixes, pad_id, batch[K.INPUT_IDS].device) if any(prefixes) else None
    trie = task.constraint_trie() if hasattr(task, "constraint_trie") else None
    inputs = {key: batch.get(key) for key in (K.INPUT_IDS, K.PATCH_IMAGES, K.PATCH_MASKS)}
    hyps = generate(
        model, inputs, config, prefix_tokens=prefix, constraint_trie=trie, code_masks=batch.get(K.CODE_MASKS)
    )
    return [h[0].tokens.tolist() if h else [] for h in hyps]


def _best_candidates(model, task, batch, prompts, pad_id: int, chunk_size: int) -> list[list[int]]:
    seqs = task.candidate_sequences()
    scores = score_candidates(
        model,
        _encode(model, batch),
        seqs,
        trie=task.constraint_trie(),
        prompts=prompts,
        chunk_size=chunk_size,
        code_masks=batch.get(K.CODE_MASKS),
    )
    return [list(seqs[int(b)]) for b in scores.best.tolist()]


def _last_token(model, task, batch, prompts, pad_id: int) -> list[list[int]]:
    enc = _encode(model, batch)
    prev = batch[K.PREV_OUTPUT]
    hidden = model.decode_hidden(prev, enc, batch.get(K.CODE_MASKS))
    last = torch.tensor([len(p) - 1 for p in prompts], device=prev.device)
    logits = model.project(hidden[torch.arange(prev.size(0), device=prev.device), last]).float()  # (B, V)
    metas = batch.get(K.METAS) or [{}] * prev.size(0)
    default = None
    out = []
    for i in range(prev.size(0)):
        ids = (metas[i] or {}).get("candidate_ids")
        if ids is None:
            if default is None:
                seqs = task.candidate_sequences() or []
                default = sorted({s[0] for s in seqs if s})
            ids = default
        if not ids:  # no label set: plain argmax
            out.append([int(logits[i].argmax())])
            continue
        cand = torch.as_tensor(list(ids), device=logits.device)
        out.append([int(cand[logits[i, cand].argmax()])])
    return out


def metric_inputs(records: Sequence[Mapping[str, Any]]) -> tuple[list[Any], list[Any], list[int]]:
    """(predictions, references, ids) of the records a metric should see (no padding, reference present)."""
    preds, refs, ids = [], [], []
    for r in records:
        ref = r.get("reference")
        if r.get("is_pad") or ref is None or (isinstance(ref, (str, list, tuple, dict)) and len(ref) == 0):
            continue
        preds.append(r["prediction"])
        refs.append(ref)
        ids.append(stable_id(r["id"]))
    return preds, refs, ids


def metric_results(name: str, value: Any) -> dict[str, Tensor]:
    """A metric's ``compute()`` as ``{key: scalar}``: a scalar under the metric's name, a dict under its keys."""
    if isinstance(value, Mapping):
        return {str(k): torch.as_tensor(v, dtype=torch.float32) for k, v in value.items()}
    return {name: torch.as_tensor(value, dtype=torch.float32)}


class TokenLoss(Metric):
    """Token-averaged loss over an evaluation run (sum and count states, summed across ranks)."""

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("loss_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("nll_sum", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("ntokens", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, loss_sum: Tensor, nll_sum: Tensor, ntokens: int) -> None:
        self.loss_sum += loss_sum.detach().to(self.loss_sum)
        self.nll_sum += nll_sum.detach().to(self.nll_sum)
        self.ntokens += int(ntokens)

    def compute(self) -> dict[str, Tensor]:
        n = self.ntokens.clamp(min=1).to(torch.float64)
        return {"loss": self.loss_sum / n, "nll": self.nll_sum / n, "ntokens": self.ntokens.to(torch.float64)}
