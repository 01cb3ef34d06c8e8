"""The transform protocol and the target dict (see :mod:`ofa_lightning.images`): ``Transform``, target helpers,
and the torchvision bridge that moves boxes with the image."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors

#: per-box target fields filtered together with ``boxes``
BOX_FIELDS = ("labels", "category_ids", "area")


def image_size(image: Any) -> tuple[int, int]:
    """``(h, w)`` of a PIL image or a ``(..., H, W)`` tensor."""
    if isinstance(image, Image.Image):
        return image.height, image.width
    if isinstance(image, torch.Tensor):
        return int(image.shape[-2]), int(image.shape[-1])
    raise TypeError(f"expected a PIL image or a tensor, got {type(image).__name__}")


def make_target(image: Any, boxes: Any = None, **fields: Any) -> dict[str, Any]:
    """A fresh target dict for ``image``: boxes as float ``(N, 4)``, size/orig_size, unit resize ratios."""
    h, w = image_size(image)
    target: dict[str, Any] = {"size": (h, w), "orig_size": (h, w), "w_ratio": 1.0, "h_ratio": 1.0}
    if boxes is not None:
        target["boxes"] = _as_boxes(boxes)
    target.update(fields)
    return target


def _as_boxes(boxes: Any) -> torch.Tensor:
    t = torch.as_tensor(boxes, dtype=torch.float32)
    if t.numel() == 0:
        return t.reshape(0, 4)
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2 or t.shape[1] != 4:
        raise ValueError(f"boxes must have shape (N, 4) (x0, y0, x1, y1), got {tuple(t.shape)}")
    return t.clone()


def _prepare(image: Any, target: dict[str, Any] | None) -> dict[str, Any]:
    """Copy of ``target`` with the bookkeeping keys filled in (never mutates the caller's dict)."""
    if target is None:
        return make_target(image)
    out = dict(target)
    h, w = image_size(image)
    out.setdefault("size", (h, w))
    out.setdefault("orig_size", (h, w))
    out.setdefault("w_ratio", 1.0)
    out.setdefault("h_ratio", 1.0)
    if out.get("boxes") is not None:
        out["boxes"] = _as_boxes(out["boxes"])
    return out


def _tv_boxes(target: dict[str, Any], image: Any) -> tv_tensors.BoundingBoxes | None:
    boxes = target.get("boxes")
    if boxes is None:
        return None
    return tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=image_size(image))


def _store_boxes(target: dict[str, Any], boxes: tv_tensors.BoundingBoxes | None) -> None:
    if boxes is not None:
        target["boxes"] = boxes.as_subclass(torch.Tensor).to(torch.float32).clone()


def _apply(fn: Callable[..., Any], image: Any, target: dict[str, Any], **kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """Runs one v2 functional on the image and on the target's boxes; updates ``size``."""
    boxes = _tv_boxes(target, image)
    image = fn(image, **kwargs)
    target = dict(target)
    if boxes is not None:
        _store_boxes(target, fn(boxes, **kwargs))
    target["size"] = image_size(image)
    return image, target


def _box_fields(target: dict[str, Any]) -> list[str]:
    names = list(BOX_FIELDS) + list(target.get("box_fields", ()))
    return [n for n in dict.fromkeys(names) if n in target]


def _drop_empty_boxes(target: dict[str, Any]) -> dict[str, Any]:
    """Removes boxes (and their per-box fields) with zero width or height, as OFA's ``crop(delete=True)``."""
    boxes = target.get("boxes")
    if boxes is None or len(boxes) == 0:
        return target
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if bool(keep.all()):
        return target
    target = dict(target)
    target["boxes"] = boxes[keep]
    idx = keep.nonzero().flatten().tolist()
    for name in _box_fields(target):
        value = target[name]
        if isinstance(value, (torch.Tensor, np.ndarray)):
            target[name] = value[keep.numpy() if isinstance(value, np.ndarray) else keep]
        else:
            target[name] = type(value)(value[i] for i in idx) if isinstance(value, tuple) else [value[i] for i in idx]
    return target


def _rng(rng: random.Random | None):
    return rng if rng is not None else random


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


class Transform:
    """Base: ``__call__(image, target, rng) -> (image, target)``; ``target`` is never mutated in place."""

    def __call__(
        self, image: Any, target: dict[str, Any] | None = None, rng: random.Random | None = None
    ) -> tuple[Any, dict[str, Any]]:
        target = _prepare(image, target)
        return self.apply(image, target, _rng(rng))

    def apply(self, image: Any, target: dict[str, Any], rng) -> tuple[Any, dict[str, Any]]:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({args})"
