"""OFA's training criterion: adjusted label-smoothed cross-entropy (OFA-Sys/OFA
``criterions/label_smoothed_cross_entropy.py``).

Per kept target token ``t`` with allowed set ``A_t`` (the whole vocabulary, a trie's next tokens, or the specials
plus a token range) and example weight ``w`` (OFA's "conf", multiplying the log-probs)::

    lp      = log_softmax(logits restricted to A_t)          (−inf outside A_t)
    nll_t   = −w · lp[target]
    smooth_t = −w · Σ_{a ∈ A_t} lp[a]
    eps_t   = ε / (|A_t| − 1)
    loss_t  = (1 − ε − eps_t) · nll_t + eps_t · smooth_t

Padding targets are dropped *before* the vocabulary projection (the decoder's hidden states are gathered at the
non-pad positions, then projected), so no logits are computed for padding. After ``drop_worst_after`` updates the
``drop_worst_ratio`` fraction of tokens with the largest loss is dropped (training only). A batch's loss is the
sum over kept tokens divided by their number; OFA's grouped pre-training batches are normalised per group and
summed: ``loss_v1 / ntok_v1 + loss_v2 / ntok_v2``.

Deviations, on purpose: ``|A_t| − 1`` is clamped at 1 instead of OFA's ``+ 1e-6`` (identical unless a single token
is allowed, where both give a zero loss), and the target token is always counted as allowed, so an answer outside
the trie gives a large but finite loss rather than ``inf``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..speed.fused_ce import fused_smoothed_ce
from .batch import K, iter_loss_groups
from .options import Options

__all__ = [
    "LossConfig",
    "LossOutput",
    "adjusted_label_smoothed_ce",
    "allowed_token_mask",
    "seq2seq_loss",
    "grouped_loss",
    "is_finite",
]


@dataclass
class LossConfig(Options):
    section = "loss"
    """Criterion options (OFA's ``--label-smoothing``, ``--drop-worst-ratio``, ``--drop-worst-after``)."""

    label_smoothing: float = 0.1
    drop_worst_ratio: float = 0.0
    drop_worst_after: int = 0
    constrained: bool = True  # apply the examples' constraints ("trie", "codes", "bins") to the training logits
    # fused, chunked criterion (speed/fused_ce.py): no fp32 (N, V) copies; False = reference path; None = the
    # model's speed config (model.speed: fused_loss, on in the default profile)
    fused: bool | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if not 0.0 <= self.drop_worst_ratio < 1.0:
            raise ValueError(f"drop_worst_ratio must be in [0, 1), got {self.drop_worst_ratio}")


@dataclass
class LossOutput:
    """Loss of one batch plus the sums to log.

    ``loss`` is normalised (per group by its token count, groups summed); the other fields are sums over kept
    tokens (``nll_sum`` unsmoothed, weighted) and counts. ``per_task[name] = (loss_sum, ntokens)``.
    """

    loss: Tensor
    loss_sum: Tensor
    nll_sum: Tensor
    ntokens: int
    per_task: dict[str, tuple[Tensor, int]] = field(default_factory=dict)
    per_group: dict[str, tuple[Tensor, int]] = field(default_factory=dict)

    @property
    def nll(self) -> Tensor:
        return self.nll_sum / max(self.ntokens, 1)


def is_finite(loss: Tensor) -> bool:
    """False when the loss is NaN or ±inf (the module then skips the step and counts it)."""
    return bool(torch.isfinite(loss.detach()).all())


# ---------------------------------------------------------------------------------------------------------------
# token level
# ---------------------------------------------------------------------------------------------------------------
def adjusted_label_smoothed_ce(
    logits: Tensor,
    target: Tensor,
    epsilon: float = 0.0,
    weights: Tensor | None = None,
    allowed: Tensor | None = None,
    drop_worst_ratio: float = 0.0,
    fused: bool = True,
) -> tuple[Tensor, Tensor, Tensor]:
    """OFA's criterion on already-selected (non-pad) positions.

    Args:
        logits: (N, V) logits of the N kept target positions.
        target: (N,) target ids.
        epsilon: label smoothing ε.
        weights: (N,) per-token weight (the example's confidence), multiplying the log-probs; None = 1.
        allowed: (N, V) bool, True where a token may be predicted; None = the whole vocabulary.
        drop_worst_ratio: drop this fraction of tokens with the largest loss (caller decides when it applies).
        fused: compute it with :func:`~ofa_lightning.speed.fused_ce.fused_smoothed_ce` (one autograd node, row
            chunks in fp32, the gradient written in the logits' dtype; the same values to fp32 rounding) instead
            of the reference composition below, which keeps two fp32 (N, V) tensors for backward.

    Returns:
        ``(loss, nll, kept)``: per-token losses and weighted NLLs of the kept tokens, and the kept indices into N.
    """
    n, vocab = logits.shape
    target = target.long()
    if allowed is not None:
        allowed = allowed.clone()
        allowed[torch.arange(n, device=allowed.device), target] = True
    if fused:
        loss, nll = fused_smoothed_ce(logits, target, epsilon, weights, allowed)
        return _drop_worst(loss, nll, drop_worst_ratio)
    logits = logits.float()
    if allowed is not None:
        logits = logits.masked_fill(~allowed, float("-inf"))
    lprobs = F.log_softmax(logits, dim=-1)
    nll = -lprobs.gather(-1, target[:, None]).squeeze(-1)
    if allowed is None:
        smooth = -lprobs.sum(-1)
        eps_i = torch.full_like(nll, epsilon / max(vocab - 1, 1))
    else:
        smooth = -lprobs.masked_fill(~allowed, 0.0).sum(-1)
        eps_i = epsilon / (allowed.sum(-1).to(nll.dtype) - 1).clamp(min=1)
    if weights is not None:
        w = weights.to(nll.dtype)
        nll, smooth = nll * w, smooth * w
    loss = (1.0 - epsilon - eps_i) * nll + eps_i * smooth
    return _drop_worst(loss, nll, drop_worst_ratio)


def _drop_worst(loss: Tensor, nll: Tensor, ratio: float) -> tuple[Tensor, Tensor, Tensor]:
    """Keep the ``1 − ratio`` fraction of tokens with the smallest loss: ``(loss, nll, kept indices)``."""
    n = loss.numel()
    kept = torch.arange(n, device=loss.device)
    if ratio > 0 and n > 0:
        k = int(n * (1.0 - ratio))
        loss, kept = torch.topk(loss, k=k, largest=False)
        nll = nll[kept]
    return loss, nll, kept


def allowed_token_mask(
    answers: Tensor,
    valid: Tensor,
    constraints: Sequence[Any],
    vocab_size: int,
) -> Tensor | None:
    """(N, V) allowed tokens of the kept positions (row-major order of ``valid``), or None if no row is constrained.

    Args:
        answers: (B, T) target ids.
        valid: (B, T) bool, the kept (non-pad) positions.
        constraints: per row None, a ``Trie`` (walked along the row's kept target tokens from its root: OFA's
            constrained training) or an allowed-token bool mask (V,) (a token range plus the specials).
        vocab_size: V.
    """
    if all(c is None for c in constraints):
        return None
    device = answers.device
    counts = valid.sum(1).tolist()
    offsets = [0]
    for c in counts:
        offsets.append(offsets[-1] + c)
    mask = torch.ones(offsets[-1], vocab_size, dtype=torch.bool, device=device)
    tries: dict[int, tuple[Any, list[int]]] = {}
    for row, con in enumerate(constraints):
        if con is None or counts[row] == 0:
            continue
        if isinstance(con, Tensor):
            mask[offsets[row] : offsets[row + 1]] = con.to(device=device, dtype=torch.bool)[None]
        else:
            tries.setdefault(id(con), (con, []))[1].append(row)
    for trie, rows in tries.values():
        seqs = [answers[r][valid[r]] for r in rows]
        width = max(s.numel() for s in seqs)
        padded = torch.full((len(rows), width), -1, dtype=torch.long, device=device)
        for j, s in enumerate(seqs):
            padded[j, : s.numel()] = s
        states = trie.states_for(padded, pad=-1)  # walking -1 leaves the trie; those columns are ignored
        allowed = trie.allowed_mask(states, vocab_size)  # (R, width, V)
        for j, r in enumerate(rows):
            mask[offsets[r] : offsets[r + 1]] = allowed[j, : counts[r]]
    return mask


# ---------------------------------------------------------------------------------------------------------------
# batch level
# ---------------------------------------------------------------------------------------------------------------
ConstraintFn = Callable[[Mapping[str, Any]], Sequence[Any]]


def seq2seq_loss(
    model,
    batch: Mapping[str, Any],
    config: LossConfig,
    pad_id: int,
    *,
    constraints: Sequence[Any] | None = None,
    drop_worst: bool = False,
    sample_patch_num: int | None = None,
    encode: Callable | None = None,
    decode_hidden: Callable | None = None,
) -> LossOutput:
    """Encode, decode hidden states, project only the non-pad target positions, apply the criterion.

    ``constraints`` is one entry per row as for :func:`allowed_token_mask` (None = unconstrained).
    ``encode`` / ``decode_hidden`` default to the model's methods (pass compiled versions to use them).
    Rows flagged ``is_pad`` (evaluation padding duplicates) carry no loss.
    """
    encode = encode or model.encode
    decode_hidden = decode_hidden or model.decode_hidden
    target = batch[K.TARGET]
    enc = encode(batch[K.INPUT_IDS], batch.get(K.PATCH_IMAGES), batch.get(K.PATCH_MASKS), sample_patch_num)
    hidden = decode_hidden(batch[K.PREV_OUTPUT], enc, batch.get(K.CODE_MASKS))
    valid = target.ne(pad_id)
    is_pad = batch.get(K.IS_PAD)
    if is_pad is not None and bool(is_pad.any()):
        valid = valid & ~is_pad.to(valid.device)[:, None]
    logits = model.project(hidden[valid])  # (N, V): padding is never projected
    tokens = target[valid]
    rows = torch.arange(target.size(0), device=target.device)[:, None].expand_as(target)[valid]
    weights = batch.get(K.WEIGHTS)
    token_w = weights.to(logits.device)[rows] if weights is not None else None
    allowed = None
    if config.constrained and constraints is not None:
        allowed = allowed_token_mask(target, valid, constraints, logits.size(-1))
    ratio = config.drop_worst_ratio if drop_worst else 0.0
    loss, nll, kept = adjusted_label_smoothed_ce(
        logits, tokens, config.label_smoothing, token_w, allowed, ratio, fused=config.fused
    )
    ntok = int(loss.numel())
    loss_sum = loss.sum()
    per_task: dict[str, tuple[Tensor, int]] = {}
    names = batch.get(K.TASKS)
    if names:
        kept_rows = rows[kept]
        detached = loss.detach()
        for name in sorted(set(names)):
            sel = torch.tensor([n == name for n in names], dtype=torch.bool, device=kept_rows.device)[kept_rows]
            count = int(sel.sum())
            if count:
                per_task[name] = (detached[sel].sum(), count)
    return LossOutput(
        loss=loss_sum / max(ntok, 1), loss_sum=loss_sum, nll_sum=nll.sum(), ntokens=ntok, per_task=per_task
    )


def grouped_loss(
    model,
    batch: Mapping[str, Any],
    config: LossConfig,
    pad_id: int,
    *,
    constraints_fn: ConstraintFn | None = None,
    drop_worst: bool = False,
    sample_patch_num_fn: Callable[[Mapping[str, Any]], int | None] | None = None,
    encode: Callable | None = None,
    decode_hidden: Callable | None = None,
) -> LossOutput:
    """Loss of a plain batch, or of OFA's grouped batch (``batch["groups"]``): Σ_groups loss_g / ntokens_g."""
    outs: dict[str, LossOutput] = {}
    for name, sub in iter_loss_groups(batch):
        outs[name] = seq2seq_loss(
            model,
            sub,
            config,
            pad_id,
            constraints=constraints_fn(sub) if constraints_fn is not None else None,
            drop_worst=drop_worst,
            sample_patch_num=sample_patch_num_fn(sub) if sample_patch_num_fn is not None else None,
            encode=encode,
            decode_hidden=decode_hidden,
        )
    if not outs:
        raise ValueError("the batch has no group to compute a loss on")
    if len(outs) == 1:
        ((name, out),) = outs.items()
        out.per_group = {name: (out.loss_sum.detach(), out.ntokens)}
        return out
    loss = sum(o.loss for o in outs.values())  # each group token-averaged (a group with no token adds 0)
    per_task: dict[str, tuple[Tensor, int]] = {}
    for o in outs.values():
        for task, (s, n) in o.per_task.items():
            prev = per_task.get(task)
            per_task[task] = (s, n) if prev is None else (prev[0] + s, prev[1] + n)
    return LossOutput(
        loss=loss,
        loss_sum=sum(o.loss_sum for o in outs.values()),
        nll_sum=sum(o.nll_sum for o in outs.values()),
        ntokens=sum(o.ntokens for o in outs.values()),
        per_task=per_task,
        per_group={name: (o.loss_sum.detach(), o.ntokens) for name, o in outs.items()},
    )
