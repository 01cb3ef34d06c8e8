"""Augmentation and masks: OFA's RandomAugment, the image-infilling mask, and a wrapper for third-party transforms
that draw from the global RNGs."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .base import Transform, _apply, _pair, image_size

#: OFA's op list for RandomAugment (pre-training image-text rows and ImageNet fine-tuning)
OFA_AUGMENT_OPS = (
    "Identity",
    "AutoContrast",
    "Equalize",
    "Brightness",
    "Sharpness",
    "ShearX",
    "ShearY",
    "TranslateX",
    "TranslateY",
    "Rotate",
)
_GEOMETRIC_OPS = frozenset({"ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate"})

_BILINEAR = InterpolationMode.BILINEAR


class RandomAugment(Transform):
    """OFA's RandomAugment (``RandomAugment(2, 7, augs=[...10 ops])``).

    ``n`` ops are drawn with replacement (all draws first), then each is applied with probability ``p`` (0.5) at
    magnitude ``m`` of 10:

    ==============  =====================================================  ===============================
    op              effect at magnitude m                                   boxes
    ==============  =====================================================  ===============================
    Identity        none
    AutoContrast    per-channel min/max stretch (PIL ``autocontrast``)
    Equalize        per-channel histogram equalisation (PIL ``equalize``)
    Brightness      factor ``m/10 * 1.8 + 0.1`` (1.36 at m=7)
    Sharpness       factor ``m/10 * 1.8 + 0.1``
    ShearX / ShearY ``x' = x ± (m/10 * 0.3) y`` about the top-left corner     moved (enclosing box)
    TranslateX/Y    ``± m/10 * 10`` pixels (7 px at m=7)                    moved
    Rotate          ``± m/10 * 30`` degrees about the centre                moved (enclosing box)
    ==============  =====================================================  ===============================

    Geometric ops fill with grey 128 and use bilinear interpolation (as OFA's cv2 ops). With ``boxes="move"``
    (default) torchvision moves the boxes with the image; with ``boxes="disable"`` geometric ops are skipped
    whenever the target holds boxes. Signs are drawn with ``rng`` (50/50).
    """

    def __init__(
        self,
        n: int = 2,
        m: float = 7,
        ops: Sequence[str] = OFA_AUGMENT_OPS,
        p: float = 0.5,
        fill: int = 128,
        boxes: str = "move",
    ):
        unknown = sorted(set(ops) - set(OFA_AUGMENT_OPS))
        if unknown:
            raise ValueError(f"unknown RandomAugment ops {unknown}; known: {', '.join(OFA_AUGMENT_OPS)}")
        if boxes not in ("move", "disable"):
            raise ValueError(f"boxes must be 'move' or 'disable', got {boxes!r}")
        self.n, self.m, self.ops, self.p, self.fill, self.boxes = int(n), float(m), tuple(ops), float(p), fill, boxes

    def sample_ops(self, rng) -> list[tuple[str, float]]:
        """The ops that will run, with their signed magnitude argument (OFA's order of random draws)."""
        names = [rng.choice(self.ops) for _ in range(self.n)]
        chosen = []
        for name in names:
            if rng.random() > self.p:
                continue
            chosen.append((name, self._arg(name, rng)))
        return chosen

    def _arg(self, name: str, rng) -> float:
        level = self.m / 10.0
        if name in ("Brightness", "Sharpness"):
            return level * 1.8 + 0.1
        if name in ("ShearX", "ShearY"):
            value = level * 0.3
        elif name in ("TranslateX", "TranslateY"):
            value = level * 10.0
        elif name == "Rotate":
            value = level * 30.0
        else:
            return 0.0
        return -value if rng.random() > 0.5 else value

    def apply(self, image, target, rng):
        has_boxes = target.get("boxes") is not None and len(target["boxes"]) > 0
        for name, arg in self.sample_ops(rng):
            if name in _GEOMETRIC_OPS and has_boxes and self.boxes == "disable":
                continue
            image, target = self.apply_op(name, arg, image, target)
        return image, target

    def apply_op(self, name: str, arg: float, image, target) -> tuple[Any, dict[str, Any]]:
        """Applies one op with an explicit argument (factor, shear factor, pixels or degrees)."""
        fill = [float(self.fill)] * 3
        if name == "Identity":
            return image, target
        if name == "AutoContrast":
            return F.autocontrast(image), target
        if name == "Equalize":
            return F.equalize(image), target
        if name == "Brightness":
            return F.adjust_brightness(image, arg), target
        if name == "Sharpness":
            return F.adjust_sharpness(image, arg), target
        common = dict(interpolation=_BILINEAR, fill=fill)
        if name == "ShearX":  # x' = x + arg * y  (torchvision's shear angle has the opposite sign)
            return _apply(
                F.affine,
                image,
                target,
                angle=0.0,
                translate=[0.0, 0.0],
                scale=1.0,
                shear=[-math.degrees(math.atan(arg)), 0.0],
                center=[0, 0],
                **common,
            )
        if name == "ShearY":  # y' = y + arg * x
            return _apply(
                F.affine,
                image,
                target,
                angle=0.0,
                translate=[0.0, 0.0],
                scale=1.0,
                shear=[0.0, -math.degrees(math.atan(arg))],
                center=[0, 0],
                **common,
            )
        if name in ("TranslateX", "TranslateY"):  # x' = x - arg (OFA's cv2 matrix [[1, 0, -offset], [0, 1, 0]])
            shift = [-arg, 0.0] if name == "TranslateX" else [0.0, -arg]
            if target.get("boxes") is None and _is_whole_shift(image, shift):
                return _shift_pil(image, shift, fill), target
            return _apply(F.affine, image, target, angle=0.0, translate=shift, scale=1.0, shear=[0.0, 0.0], **common)
        if name == "Rotate":  # counter-clockwise degrees about the centre
            return _apply(F.rotate, image, target, angle=arg, **common)
        raise ValueError(f"unknown op {name!r}")


def _is_whole_shift(image: Any, shift: Sequence[float]) -> bool:
    return isinstance(image, Image.Image) and image.mode == "RGB" and all(float(v).is_integer() for v in shift)


def _shift_pil(image: Image.Image, shift: Sequence[float], fill: Any) -> Image.Image:
    """``F.affine(image, translate=shift, interpolation=BILINEAR, fill=fill)`` for a whole-pixel shift of an RGB
    PIL image, as a crop and a paste onto a ``fill`` canvas: ``out[y, x] = image[y - dy, x - dx]``.

    Same pixels as the affine (bilinear weights are exactly 0/1 at whole-pixel offsets; samples outside the image
    take the fill, which PIL truncates to int), about 20x faster than PIL's generic per-pixel transform. OFA's
    TranslateX/Y at magnitude 7 move by exactly 7 px, so this is the path RandomAugment takes for them."""
    dx, dy = (int(v) for v in shift)
    fills = list(fill) if isinstance(fill, (list, tuple)) else [fill]
    out = Image.new("RGB", image.size, tuple(int(v) for v in (fills * 3 if len(fills) == 1 else fills)))
    w, h = image.size
    if abs(dx) < w and abs(dy) < h:
        out.paste(image.crop((max(0, -dx), max(0, -dy), min(w, w - dx), min(h, h - dy))), (max(0, dx), max(0, dy)))
    return out


class ImageInfillingMask(Transform):
    """Image infilling input (OFA pre-training): the central ``mask_size²`` square of the normalised tensor is
    set to ``value`` (0 = mid grey after mean=std=0.5). Default ``mask_size`` = half the image side, i.e. pixels
    64..191 of a 256² image. The target records ``infill_region = (top, left, bottom, right)`` (exclusive)."""

    def __init__(self, mask_size: int | Sequence[int] | None = None, value: float = 0.0):
        self.mask_size = None if mask_size is None else _pair(mask_size)
        self.value = float(value)

    def region(self, h: int, w: int) -> tuple[int, int, int, int]:
        mh, mw = self.mask_size if self.mask_size is not None else (h // 2, w // 2)
        top, left = (h - mh) // 2, (w - mw) // 2
        return top, left, top + mh, left + mw

    def apply(self, image, target, rng):
        if not isinstance(image, torch.Tensor):
            raise TypeError("ImageInfillingMask expects a tensor: put ToTensor()/Normalize() before it")
        top, left, bottom, right = self.region(*image_size(image))
        image = image.clone()
        image[..., top:bottom, left:right] = self.value
        return image, dict(target, infill_region=(top, left, bottom, right))


# ---------------------------------------------------------------------------------------------------------------
# third-party transforms that draw from the global RNGs (timm's ImageNet training transform)
# ---------------------------------------------------------------------------------------------------------------
@contextmanager
def _seeded_globals(seed: int) -> Iterator[None]:
    py_state, np_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % (2**32))
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class WithGlobalSeed(Transform):
    """Runs an ``image -> image`` callable that uses the global ``random``/``numpy``/``torch`` RNGs (e.g. timm's
    ``create_transform``) with all three seeded from ``rng`` and restored afterwards, so the result is still a
    function of the task's rng. Not for images with boxes (the callable cannot move them)."""

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn

    def apply(self, image, target, rng):
        if target.get("boxes") is not None and len(target["boxes"]) > 0:
            raise ValueError("WithGlobalSeed cannot move boxes")
        with _seeded_globals(rng.getrandbits(63)):
            image = self.fn(image)
        return image, dict(target, size=image_size(image))
