"""The batch keys training reads, in one place, and small helpers over batch dicts.

The batches come from ``ofa_lightning.data.collate`` (its module doc is the reference for shapes and meanings).
If a key is renamed there, change it here only.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["K", "iter_loss_groups", "select_rows", "decoder_prompts", "row_example"]


class K:
    """Batch key names (``ofa_lightning/data/collate.py``)."""

    INPUT_IDS = "input_ids"  # long (B, S)
    PATCH_IMAGES = "patch_images"  # float (B, 3, H, W) or None
    PATCH_MASKS = "patch_masks"  # bool (B,)
    PREV_OUTPUT = "prev_output_tokens"  # long (B, T)
    TARGET = "target"  # long (B, T), PAD = no loss
    WEIGHTS = "weights"  # float (B,), OFA's "conf"
    CODE_MASKS = "code_masks"  # bool (B,)
    IS_PAD = "is_pad"  # bool (B,), padding duplicates of evaluation
    SIZE = "size"  # int B
    IDS = "ids"  # list[str]
    TASKS = "tasks"  # list[str] task names
    CONSTRAINTS = "constraints"  # list[str | None]: "trie" | "codes" | "bins" | None
    METAS = "metas"  # list[dict]
    SOURCE = "source"  # str, evaluation batches: the mixture source name
    GROUPS = "groups"  # grouped (pre-training) batches: {group name: sub-batch}
    SAMPLE_PATCHES = "sample_patches"  # bool, sub-batch of the image-text group
    DECODER_PROMPTS = "decoder_prompts"  # optional list[list[int]]; inferred from the target when absent


TENSOR_KEYS = (K.INPUT_IDS, K.PATCH_IMAGES, K.PATCH_MASKS, K.PREV_OUTPUT, K.TARGET, K.WEIGHTS, K.CODE_MASKS, K.IS_PAD)
LIST_KEYS = (K.IDS, K.TASKS, K.CONSTRAINTS, K.METAS, K.DECODER_PROMPTS)


def iter_loss_groups(batch: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(group name, sub-batch) of a grouped batch (OFA's two pre-training groups), or ``("all", batch)``."""
    if K.GROUPS in batch:
        yield from batch[K.GROUPS].items()
    else:
        yield "all", batch


def batch_size(batch: Mapping[str, Any]) -> int:
    if K.GROUPS in batch:
        return int(batch.get(K.SIZE) or sum(batch_size(sub) for sub in batch[K.GROUPS].values()))
    if K.SIZE in batch:
        return int(batch[K.SIZE])
    return int(batch[K.INPUT_IDS].size(0))


def select_rows(batch: Mapping[str, Any], rows: Sequence[int] | Tensor) -> dict[str, Any]:
    """The sub-batch of the given rows (tensors indexed, lists picked, other keys copied)."""
    index = torch.as_tensor(rows, dtype=torch.long)
    picks = index.tolist()
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, Tensor) and value.dim() > 0 and key in TENSOR_KEYS:
            out[key] = value.index_select(0, index.to(value.device))
        elif key in LIST_KEYS and isinstance(value, (list, tuple)):
            out[key] = [value[i] for i in picks]
        else:
            out[key] = value
    out[K.SIZE] = len(picks)
    return out


def decoder_prompts(batch: Mapping[str, Any], pad_id: int) -> list[list[int]]:
    """Per row, the given (not predicted) head of ``prev_output_tokens``, starting with BOS (``Example.decoder_prompt``).

    Taken from ``batch["decoder_prompts"]`` when the collate provides it; otherwise inferred: the tasks set the
    target to PAD at every prompt position but the last, so the prompt is ``prev_output[: leading_pads + 1]``
    (capped at the row's unpadded length, for unlabelled rows whose target is all PAD).
    """
    given = batch.get(K.DECODER_PROMPTS)
    if given is not None:
        return [list(map(int, p)) or [int(batch[K.PREV_OUTPUT][i, 0])] for i, p in enumerate(given)]
    prev, target = batch[K.PREV_OUTPUT], batch[K.TARGET]
    prev_len = prev.ne(pad_id).sum(1)
    not_pad = target.ne(pad_id)
    has_any = not_pad.any(1)
    first = torch.where(has_any, not_pad.float().argmax(1), torch.full_like(prev_len, target.size(1)))
    length = torch.minimum(first + 1, prev_len).clamp(min=1)
    prev_rows = prev.tolist()
    return [row[: int(n)] for row, n in zip(prev_rows, length.tolist())]


def row_example(batch: Mapping[str, Any], i: int, pad_id: int, prompt: list[int] | None = None):
    """A light ``Example`` rebuilt from row ``i`` (for ``Task.parse_prediction``, which takes one)."""
    from ofa_lightning.tasks.base import Example

    def unpadded(key: str) -> list[int]:
        row = batch[key][i].tolist()
        return [t for t in row if t != pad_id]

    metas = batch.get(K.METAS) or [{}] * batch_size(batch)
    return Example(
        id=str(batch[K.IDS][i]) if batch.get(K.IDS) else str(i),
        task=batch[K.TASKS][i] if batch.get(K.TASKS) else "",
        source=unpadded(K.INPUT_IDS),
        prev_output=unpadded(K.PREV_OUTPUT),
        target=batch[K.TARGET][i].tolist(),
        weight=float(batch[K.WEIGHTS][i]) if batch.get(K.WEIGHTS) is not None else 1.0,
        code_mask=bool(batch[K.CODE_MASKS][i]) if batch.get(K.CODE_MASKS) is not None else False,
        constraint=(batch.get(K.CONSTRAINTS) or [None] * batch_size(batch))[i],
        meta=dict(metas[i] or {}),
        decoder_prompt=list(prompt) if prompt is not None else [],
    )
