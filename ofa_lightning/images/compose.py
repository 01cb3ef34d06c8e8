"""``Compose``: runs a list of transforms, with the fast paths between neighbours (SquashResize → ToTensor keeps
uint8 pixels, ToTensor → Normalize works in place, and inside ``deferred_normalization`` the last two steps become a
``PendingImage``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from .base import Transform, _prepare, image_size
from .geometry import SquashResize
from .pixels import _DEFER_NORMALIZATION, Normalize, PendingImage, ToTensor


class Compose(Transform):
    """Applies transforms in order, threading ``(image, target)`` and the rng through them.

    ``Compose([...])(image)`` returns ``(image, target)`` even without an input target (the target then holds
    ``size``/``orig_size``/``w_ratio``/``h_ratio``). Plain callables ``image -> image`` (e.g. a torchvision
    transform) are accepted too; they must not change the geometry of an image that has boxes.
    """

    def __init__(self, transforms: Sequence[Callable[..., Any]]):
        self.transforms = list(transforms)

    def apply(self, image, target, rng):
        steps, i = self.transforms, 0
        own_pixels = False  # ``image`` is a uint8 pixel tensor made here (SquashResize's fast path), held nowhere else
        while i < len(steps):
            t = steps[i]
            if isinstance(t, Transform):
                fresh = type(t) is ToTensor and (isinstance(image, Image.Image) or own_pixels)
                own_pixels = False
                if (
                    type(t) is ToTensor
                    and i + 2 == len(steps)
                    and type(steps[i + 1]) is Normalize
                    and _DEFER_NORMALIZATION.get()
                ):
                    pending = PendingImage.of(image, steps[i + 1])
                    if pending is not None:  # the collate does ToTensor + Normalize (see deferred_normalization)
                        return pending, target
                if (
                    type(t) is SquashResize
                    and isinstance(image, Image.Image)
                    and i + 1 < len(steps)
                    and type(steps[i + 1]) is ToTensor
                ):
                    # ToTensor comes next: take the resized pixels as a uint8 tensor (no PIL round trip)
                    image, target = t.resize(image, _prepare(image, target), pixels=True)
                    own_pixels = isinstance(image, torch.Tensor)
                    i += 1
                    continue
                image, target = t(image, target, rng)
                if fresh and i + 1 < len(steps) and type(steps[i + 1]) is Normalize:
                    # ToTensor just made this tensor and nobody else holds it: normalise it in place (same values
                    # as Normalize, without allocating a second float image)
                    image = steps[i + 1].normalize_(image)
                    i += 1
            else:
                image = t(image)
                target = dict(target, size=image_size(image))
            i += 1
        return image, target

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])"
