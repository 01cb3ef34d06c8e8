"""Geometry: OFA's resizes and crops (squash, random short-side resize, centre / object-centred crops, large
scale jitter, horizontal flip); boxes move with the image."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .base import Transform, _apply, _drop_empty_boxes, _pair, image_size
from .pixels import _resize_functional

_BICUBIC = InterpolationMode.BICUBIC


def _resize(
    image: Any, target: dict[str, Any], size: tuple[int, int], interpolation: InterpolationMode, pixels: bool = False
) -> tuple[Any, dict[str, Any]]:
    h0, w0 = image_size(image)
    image, target = _apply(
        _resize_functional,
        image,
        target,
        size=[int(size[0]), int(size[1])],
        interpolation=interpolation,
        antialias=True,
        pixels=pixels,
    )
    h1, w1 = image_size(image)
    target["w_ratio"] = float(target.get("w_ratio", 1.0)) * w1 / w0
    target["h_ratio"] = float(target.get("h_ratio", 1.0)) * h1 / h0
    return image, target


def ofa_resize_size(h: int, w: int, size: int, max_size: int | None = None) -> tuple[int, int]:
    """OFA's ``RandomResize`` output ``(h, w)``: the short side becomes ``size`` (long side scaled with
    ``int()`` truncation), then *each* side is capped at ``max_size`` independently (so an elongated image is
    squashed, not shrunk; e.g. RefCOCO's ``RandomResize([512], max_size=512)`` always gives 512×512)."""
    if (w <= h and w == size) or (h <= w and h == size):
        oh, ow = h, w
    elif w < h:
        ow, oh = size, int(size * h / w)
    else:
        oh, ow = size, int(size * w / h)
    if max_size is not None:
        oh, ow = min(oh, int(max_size)), min(ow, int(max_size))
    return oh, ow


class SquashResize(Transform):
    """Resize to exactly ``size`` = ``(h, w)`` (an int means square), ignoring the aspect ratio; bicubic.

    OFA's fine-tuning resize (``transforms.Resize((s, s), BICUBIC)`` for caption/VQA/SNLI-VE/ImageNet eval) and
    RefCOCO's 512×512 squash. Boxes are scaled by ``(w_ratio, h_ratio)``, which the target records.
    """

    def __init__(self, size: int | Sequence[int], interpolation: InterpolationMode = _BICUBIC):
        self.size = _pair(size)
        self.interpolation = interpolation

    def apply(self, image, target, rng):
        return self.resize(image, target)

    def resize(self, image, target, pixels: bool = False):
        """``pixels=True``: an RGB PIL image that is shrunk may come back as a uint8 ``(3, h, w)`` tensor (see
        ``_resize_functional``); only for a caller that converts it with ``ToTensor`` next."""
        return _resize(image, target, self.size, self.interpolation, pixels=pixels)


class RandomResize(Transform):
    """OFA's ``RandomResize(sizes, max_size)``: short side = ``rng.choice(sizes)``, each side capped at
    ``max_size`` (see :func:`ofa_resize_size`); bicubic. Pre-training uses ``sizes = range(384, 481)``,
    ``max_size = 672``."""

    def __init__(
        self, sizes: int | Sequence[int], max_size: int | None = None, interpolation: InterpolationMode = _BICUBIC
    ):
        self.sizes = [int(sizes)] if isinstance(sizes, int) else [int(s) for s in sizes]
        if not self.sizes:
            raise ValueError("RandomResize needs at least one size")
        self.max_size = max_size
        self.interpolation = interpolation

    def apply(self, image, target, rng):
        size = self.sizes[0] if len(self.sizes) == 1 else rng.choice(self.sizes)
        h, w = image_size(image)
        return _resize(image, target, ofa_resize_size(h, w, size, self.max_size), self.interpolation)


class CenterCrop(Transform):
    """Centre crop to ``size`` (``top = round((H - h) / 2)``, as OFA/torchvision; pads with 0 when the image is
    smaller). Boxes are shifted, clamped to the crop, and dropped when empty."""

    def __init__(self, size: int | Sequence[int]):
        self.size = _pair(size)

    def apply(self, image, target, rng):
        image, target = _apply(F.center_crop, image, target, output_size=list(self.size))
        return image, _drop_empty_boxes(target)


class ObjectCenterCrop(Transform):
    """Crop of ``size`` centred on box ``box_index`` (OFA's visual-grounding pre-training crop), shifted to stay
    inside the image and never starting before 0: ``left = max(cx - w/2 + min(W - cx - w/2, 0), 0)``, same for
    ``top``. Offsets are rounded to whole pixels for both the image and the boxes (OFA shifts the boxes by the
    unrounded offset, a sub-pixel mismatch). Boxes are clamped, never dropped."""

    def __init__(self, size: int | Sequence[int], box_index: int = 0):
        self.size = _pair(size)
        self.box_index = box_index

    def crop_region(self, image, target) -> tuple[int, int, int, int]:
        boxes = target.get("boxes")
        if boxes is None or len(boxes) <= self.box_index:
            raise ValueError("ObjectCenterCrop needs a target with at least one box")
        H, W = image_size(image)
        h, w = self.size
        x0, y0, x1, y1 = (float(v) for v in boxes[self.box_index])
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        left = max(cx - w / 2 + min(W - cx - w / 2, 0), 0)
        top = max(cy - h / 2 + min(H - cy - h / 2, 0), 0)
        return int(round(top)), int(round(left)), h, w

    def apply(self, image, target, rng):
        top, left, h, w = self.crop_region(image, target)
        return _apply(F.crop, image, target, top=top, left=left, height=h, width=w)


class LargeScaleJitter(Transform):
    """OFA's detection augmentation (``utils/transforms.py LargeScaleJitter``).

    ``s ~ U(scale_min, scale_max)``; the image is resized (bicubic) so that its *short* side is
    ``round(s * output_size)`` (both sides ``round(side * scale)``); then a random ``output_size²`` window is cut
    (offset ``floor(rand * (scaled - output))`` per axis, rows drawn first). OFA only supports ``s >= 1`` (it
    asserts otherwise); here a smaller image is padded with zeros at the bottom/right instead. Boxes follow;
    empty ones are dropped. Pre-training detection: ``output_size=256, scale 1.0-1.5``.
    """

    def __init__(self, output_size: int = 512, scale_min: float = 0.3, scale_max: float = 2.0):
        self.output_size = int(output_size)
        self.scale_min = float(scale_min)
        self.scale_max = float(scale_max)

    def apply(self, image, target, rng):
        out = self.output_size
        h, w = image_size(image)
        s = rng.random() * (self.scale_max - self.scale_min) + self.scale_min
        scaled = round(s * out)
        scale = max(scaled / h, scaled / w)
        new_h, new_w = int(round(h * scale)), int(round(w * scale))
        image, target = _resize(image, target, (new_h, new_w), _BICUBIC)
        off_h = math.floor(max(new_h - out, 0) * rng.random())
        off_w = math.floor(max(new_w - out, 0) * rng.random())
        # F.crop pads with zeros where the window leaves the image (the s < 1 case)
        image, target = _apply(F.crop, image, target, top=off_h, left=off_w, height=out, width=out)
        return image, _drop_empty_boxes(target)


class RandomHorizontalFlip(Transform):
    """Flip with probability ``p`` (``rng.random() < p``); boxes become ``(W - x1, y0, W - x0, y1)``."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def apply(self, image, target, rng):
        if rng.random() < self.p:
            return _apply(F.horizontal_flip, image, target)
        return image, target
