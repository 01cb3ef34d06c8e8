"""Examples -> a batch: a plain dict of tensors and lists.

Batch keys (one micro-batch of B examples; token tensors right-padded with ``pad_id``):

=====================  ==============================  =======================================================
key                    type / shape                    meaning
=====================  ==============================  =======================================================
``input_ids``          long (B, S)                     ``Example.source`` (encoder tokens)
``src_lengths``        long (B,)                       unpadded source lengths
``prev_output_tokens`` long (B, T)                     ``Example.prev_output`` (decoder input, BOS first)
``target``             long (B, T)                     ``Example.target`` (PAD where no loss)
``patch_images``       float (B, 3, H, W) or None      images; text-only rows get zeros. None when no row of the
                                                       batch has an image and ``text_image_size`` is None
``patch_masks``        bool (B,)                       True where the row has a real image (OFA's patch_masks)
``code_masks``         bool (B,)                       ``Example.code_mask`` (decoder in image-code mode)
``weights``            float (B,)                      ``Example.weight`` (OFA's per-example "conf")
``is_pad``             bool (B,)                       True for padding duplicates (evaluation only: skip them
                                                       in metrics; never True in training)
``ntokens``            int                             non-PAD target tokens of the non-padding rows
``size``               int                             B
``ids``                list[str]                       sample ids (``Example.id``)
``tasks``              list[str]                       ``Example.task``
``constraints``        list[str | None]                ``Example.constraint``
``metas``              list[dict]                      ``Example.meta`` (references, gold boxes, ratios ...)
``decoder_prompts``    list[list[int]]                 ``Example.decoder_prompt`` ([] means [BOS])
``source``             str                             evaluation batches only: the mixture source name
``stats``              dict                            added by the datasets: ``{"skipped": {reason: n},
                                                       "mix": {source: n}, "padded": n}`` since the previous
                                                       batch of the same worker (see ``DataStats``)
=====================  ==============================  =======================================================

Grouped batches (OFA pre-training, ``group_batches=True``): ``{"groups": {"image-text": batch, "other": batch},
"size": B, "stats": {...}}`` where each sub-batch has the keys above plus ``sample_patches`` (True for the
image-text group: OFA samples patches there only). Empty groups are left out. ``iter_groups(batch)`` walks both forms.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import get_worker_info

from ofa_lightning.images import PendingImage
from ofa_lightning.tasks.base import IMAGE_TEXT_GROUP, OTHER_GROUP, Example

__all__ = [
    "collate_examples",
    "collate_grouped",
    "iter_groups",
    "mark_padding",
    "length_key",
    "IMAGE_TEXT_GROUP",
    "OTHER_GROUP",
    "group_of",
]


def group_of(task_group: str) -> str:
    """OFA's two pre-training groups: the image-text group, and everything else (text, image, detection)."""
    return IMAGE_TEXT_GROUP if task_group == IMAGE_TEXT_GROUP else OTHER_GROUP


def mark_padding(example: Example) -> Example:
    """A copy of ``example`` flagged as a padding duplicate (``batch["is_pad"]`` True)."""
    return dataclasses.replace(example, meta={**example.meta, "is_pad": True})


def length_key(example: Example) -> tuple[int, int]:
    """Bucketing order: source length, then decoder length (fairseq-style lexicographic order)."""
    return len(example.source), len(example.prev_output)


def _pad(rows: Sequence[Sequence[int]], pad_id: int, length: int | None = None) -> torch.Tensor:
    width = max([len(r) for r in rows] + [length or 0, 1])
    out = torch.full((len(rows), width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        if len(row):
            out[i, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
    return out


def _batch_buffer(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor for the batch's images; in a DataLoader worker it is made in shared memory, as
    ``default_collate`` does, because the worker moves every tensor it sends into shared memory: allocated there,
    the (B, 3, H, W) float images (22 MB for 8 x 480 px) are written once instead of being copied again."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(math.prod(shape))
    return torch.empty(0, dtype=dtype).new(storage).view(shape)


def _images(examples: Sequence[Example], text_image_size: int | None) -> tuple[torch.Tensor | None, torch.Tensor]:
    masks = torch.tensor([ex.image is not None for ex in examples], dtype=torch.bool)
    shapes = {tuple(ex.image.shape) for ex in examples if ex.image is not None}
    if len(shapes) > 1:
        by_task: dict[str, set] = {}
        for ex in examples:
            if ex.image is not None:
                by_task.setdefault(ex.task, set()).add(tuple(ex.image.shape))
        raise ValueError(
            f"images of one batch must share a size (resizing is the task's job); got {by_task}. "
            "Give the mixed tasks the same image size, or set group_batches so OFA's two groups "
            "are collated apart"
        )
    if shapes:
        shape = shapes.pop()
        dtype = next(ex.image.dtype for ex in examples if ex.image is not None)
    elif text_image_size:
        shape, dtype = (3, text_image_size, text_image_size), torch.float32
    else:
        return None, masks
    if len(shape) != 3:
        raise ValueError(f"Example.image must be (C, H, W), got {shape}")
    out = _batch_buffer((len(examples), *shape), dtype)
    if not bool(masks.all()):  # every row is overwritten when all rows have an image: skip zero-filling then
        out.zero_()
    for i, ex in enumerate(examples):
        if isinstance(ex.image, PendingImage):
            ex.image.to_tensor(out=out[i])  # converted and normalised straight into the batch
        elif ex.image is not None:
            out[i] = ex.image
    return out, masks


def collate_examples(
    examples: Sequence[Example], pad_id: int = 1, text_image_size: int | None = None
) -> dict[str, Any]:
    """Pads and stacks examples into one batch dict (keys in the module doc)."""
    for ex in examples:
        if len(ex.prev_output) != len(ex.target):
            raise ValueError(
                f"example {ex.id} ({ex.task}): prev_output has {len(ex.prev_output)} tokens, "
                f"target {len(ex.target)}; they must align"
            )
    images, patch_masks = _images(examples, text_image_size)
    width = max([len(ex.target) for ex in examples] + [1])
    target = _pad([ex.target for ex in examples], pad_id, width)
    is_pad = torch.tensor([bool(ex.meta.get("is_pad")) for ex in examples], dtype=torch.bool)
    return {
        "input_ids": _pad([ex.source for ex in examples], pad_id),
        "src_lengths": torch.tensor([len(ex.source) for ex in examples], dtype=torch.long),
        "prev_output_tokens": _pad([ex.prev_output for ex in examples], pad_id, width),
        "target": target,
        "patch_images": images,
        "patch_masks": patch_masks,
        "code_masks": torch.tensor([bool(ex.code_mask) for ex in examples], dtype=torch.bool),
        "weights": torch.tensor([float(ex.weight) for ex in examples], dtype=torch.float32),
        "is_pad": is_pad,
        "ntokens": int((target[~is_pad] != pad_id).sum()) if len(examples) else 0,
        "size": len(examples),
        "ids": [ex.id for ex in examples],
        "tasks": [ex.task for ex in examples],
        "constraints": [ex.constraint for ex in examples],
        "metas": [ex.meta for ex in examples],
        "decoder_prompts": [list(getattr(ex, "decoder_prompt", None) or []) for ex in examples],
    }


def collate_grouped(
    examples: Sequence[Example], groups: Sequence[str], pad_id: int = 1, text_image_size: int | None = None
) -> dict[str, Any]:
    """OFA pre-training batch: examples split into the image-text group and the other group, collated apart.

    ``groups[i]`` is the task group of ``examples[i]`` (``Task.group``).
    """
    if len(groups) != len(examples):
        raise ValueError("one group per example")
    parts: dict[str, list[Example]] = {IMAGE_TEXT_GROUP: [], OTHER_GROUP: []}
    for ex, grp in zip(examples, groups):
        parts[group_of(grp)].append(ex)
    out: dict[str, Any] = {"groups": {}, "size": len(examples)}
    for name, members in parts.items():
        if members:
            sub = collate_examples(members, pad_id, text_image_size)
            sub["sample_patches"] = name == IMAGE_TEXT_GROUP
            out["groups"][name] = sub
    return out


def iter_groups(batch: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(group name, sub-batch) pairs of a grouped batch, or ``("all", batch)`` for a plain one."""
    if "groups" in batch:
        yield from batch["groups"].items()
    else:
        yield "all", batch
