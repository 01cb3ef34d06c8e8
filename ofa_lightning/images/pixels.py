"""Pixels: uint8 fast paths (resize, PIL → tensor), ``ToTensor``, ``Normalize`` and the deferred normalisation
that lets the collate write each image's floats straight into the batch."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from .base import Transform
from .jpeg import DecodedJpeg

OFA_MEAN = (0.5, 0.5, 0.5)
OFA_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``normalization`` option values of the tasks -> (mean, std)
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "ofa": (OFA_MEAN, OFA_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}


_FAST_RESIZE_MODES = {InterpolationMode.BICUBIC: "bicubic", InterpolationMode.BILINEAR: "bilinear"}


def _resize_functional(
    inpt: Any, size: list[int], interpolation: InterpolationMode, antialias: bool = True, pixels: bool = False
) -> Any:
    """``F.resize``, except when an RGB PIL image is *shrunk* (no side grows) with a bicubic/bilinear filter: then
    it is resized as a uint8 channels-last tensor by torch's antialiased kernel and handed back as a PIL image.

    Why: torch's uint8 AVX2 resampler is about 20 % faster than Pillow's on this path, which is the largest cost
    of a 480 px caption sample after JPEG decoding (benchmarks/suites/data_pipeline.py). It uses Pillow's filters
    (bicubic a=-0.5, support scaled on downsampling) and rounds differently only in the last bit: about 0.2 % of
    the pixels differ from ``Image.resize`` by 1/255, none by more (tests/test_transforms.py checks this). When a
    side grows the two differ by up to 2/255, so upscaling stays with Pillow. Boxes and every other input type go
    through ``F.resize`` unchanged.

    ``pixels=True`` (``Compose``, when ``ToTensor`` comes next): on that fast path the resized pixels come back as
    the uint8 ``(3, h, w)`` channels-last tensor itself instead of a PIL image; ``ToTensor`` takes it as it is, so
    the round trip PIL -> numpy -> planes is skipped (same values)."""
    mode = _FAST_RESIZE_MODES.get(interpolation)
    if mode is None or not isinstance(inpt, Image.Image) or inpt.mode != "RGB" or not antialias:
        return F.resize(inpt, size=size, interpolation=interpolation, antialias=antialias)
    h, w = int(size[0]), int(size[1])
    if h > inpt.height or w > inpt.width:
        return F.resize(inpt, size=size, interpolation=interpolation, antialias=antialias)
    if (inpt.height, inpt.width) == (h, w) and not pixels:
        return inpt.copy()
    source = _rgb_pixels(inpt)
    if (inpt.height, inpt.width) == (h, w):
        return source
    # batch dim added first, so torch sees a channels-last NCHW tensor and keeps that layout in the output
    out = torch.nn.functional.interpolate(source[None], size=(h, w), mode=mode, antialias=True)
    if pixels:
        return out[0]
    return Image.fromarray(out[0].permute(1, 2, 0).contiguous().numpy(), "RGB")  # (contiguous: a no-op view)


def _rgb_pixels(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image's pixels as a uint8 ``(3, H, W)`` tensor: a channels-last view of an ``(H, W, 3)`` copy, or
    a JPEG's decoded pixels when PIL has not loaded it (``images/jpeg.py``; not to be written into, like the copy is
    not by any caller here)."""
    pixels = image.decoded_pixels() if isinstance(image, DecodedJpeg) else None
    if pixels is not None:
        return pixels
    return torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).permute(2, 0, 1)


def _scaled_float(pixels: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 ``(C, H, W)`` (any strides) -> float32 in ``[0, 1]`` (contiguous, or into ``out``), with the values of
    ``F.to_dtype(..., scale=True)``: ``copy_`` converts exactly, then F.to_dtype's own ``mul_(1 / 255)``."""
    if out is None:
        out = torch.empty(pixels.shape, dtype=torch.float32)
    return out.copy_(pixels).mul_(1.0 / 255)


class ToTensor(Transform):
    """PIL -> float32 ``(3, H, W)`` in ``[0, 1]``, contiguous.

    Values are exactly ``F.to_dtype(F.to_image(image), float32, scale=True)``; the layout is made contiguous while
    still uint8 (``F.to_image`` gives a channels-last *view*, on which the float conversion, ``Normalize``'s
    per-channel broadcast and the collate copy run 2-3x slower). RGB images are split into planes by PIL (``split``
    is much faster than a strided uint8 transpose); other modes go through ``F.to_image``.

    A uint8 ``(C, H, W)`` tensor (any strides; ``SquashResize`` hands one over inside ``Compose``) is scaled the
    same way, into a contiguous float tensor: the conversion reads the strided pixels once, with the values of
    ``F.to_dtype(..., scale=True)``.
    """

    def apply(self, image, target, rng):
        if isinstance(image, DecodedJpeg) and image.decoded_pixels() is not None:
            image = image.decoded_pixels()  # a JPEG PIL has not loaded (images/jpeg.py): its pixels, read once below
        if isinstance(image, Image.Image):
            if image.mode == "RGB":
                planes = torch.from_numpy(np.stack([np.asarray(band) for band in image.split()]))
            else:
                planes = F.to_image(image).as_subclass(torch.Tensor).contiguous()
            image = F.to_dtype(planes, torch.float32, scale=True)
        elif isinstance(image, torch.Tensor) and image.dtype == torch.uint8:
            if image.ndim != 3:
                raise ValueError(f"ToTensor expects a uint8 (C, H, W) tensor, got shape {tuple(image.shape)}")
            image = _scaled_float(image)
        return image.as_subclass(torch.Tensor) if isinstance(image, torch.Tensor) else image, target


class Normalize(Transform):
    """``(x - mean) / std`` per channel. ``Normalize.named("ofa")`` (mean = std = 0.5, OFA's default, maps to
    [-1, 1]) or ``Normalize.named("imagenet")`` (ImageNet mean/std, OFA's ``--imagenet-default-mean-and-std``).
    Boxes are left in pixels (see the module doc)."""

    def __init__(self, mean: Sequence[float] = OFA_MEAN, std: Sequence[float] = OFA_STD):
        self.mean, self.std = list(mean), list(std)

    @classmethod
    def named(cls, name: str) -> Normalize:
        if name not in NORMALIZATIONS:
            raise ValueError(f"unknown normalization {name!r}; known: {', '.join(NORMALIZATIONS)}")
        mean, std = NORMALIZATIONS[name]
        return cls(mean, std)

    def apply(self, image, target, rng):
        if not isinstance(image, torch.Tensor):
            raise TypeError("Normalize expects a tensor: put ToTensor() before it")
        return F.normalize(image, mean=self.mean, std=self.std), target

    def normalize_(self, image: torch.Tensor) -> torch.Tensor:
        """The same normalisation in place, for a float tensor nobody else holds (``Compose`` uses it right after
        ``ToTensor``)."""
        return F.normalize(image, mean=self.mean, std=self.std, inplace=True)


_DEFER_NORMALIZATION: contextvars.ContextVar[bool] = contextvars.ContextVar("ofa_defer_normalization", default=False)


@contextmanager
def deferred_normalization() -> Iterator[None]:
    """Within this block, a :class:`Compose` whose last two steps are ``ToTensor(), Normalize(...)`` returns a
    :class:`PendingImage` (uint8 pixels + mean/std) for an RGB image instead of the float tensor.

    Why: the data loaders (``samples.build_example``) collate examples right after building them. Converting in the
    collate writes each image's floats once, straight into the batch buffer, instead of allocating a float image
    per sample (3 MB at 480 px) and copying it into the batch; buffered examples hold a quarter of the bytes. The
    batch is the same to the bit (``PendingImage.to_tensor`` runs ``ToTensor`` and ``Normalize``'s own operations).
    Outside the block (tasks called directly, the API, tests) transforms return float tensors as always."""
    token = _DEFER_NORMALIZATION.set(True)
    try:
        yield
    finally:
        _DEFER_NORMALIZATION.reset(token)


@dataclass(frozen=True)
class PendingImage:
    """An image whose ``ToTensor`` + ``Normalize`` is still to be done: uint8 ``pixels`` ``(C, H, W)`` (any strides,
    usually a channels-last view) and the ``Normalize`` to apply. ``shape``/``dtype`` are those of the float
    image it becomes; :meth:`to_tensor` makes it (into ``out`` when given, e.g. a row of the batch)."""

    pixels: torch.Tensor
    normalize: Normalize

    @classmethod
    def of(cls, image: Any, normalize: Normalize) -> PendingImage | None:
        """For what ``ToTensor`` would get: an RGB PIL image or a uint8 ``(3, H, W)`` tensor; None otherwise."""
        if isinstance(image, Image.Image):
            if image.mode != "RGB":
                return None
            image = _rgb_pixels(image)
        if not (isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.ndim == 3):
            return None
        return cls(image, normalize)

    @property
    def shape(self) -> torch.Size:
        return self.pixels.shape

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def to_tensor(self, out: torch.Tensor | None = None) -> torch.Tensor:
        """The normalised float image: ``ToTensor`` then ``Normalize``, the same operations in the same order."""
        return self.normalize.normalize_(_scaled_float(self.pixels, out))


def image_tensor(image: Any) -> Any:
    """``image`` as the float tensor it stands for (a :class:`PendingImage` is converted; anything else is returned
    as it is). For code that reads ``Example.image`` of examples made by the data loaders."""
    return image.to_tensor() if isinstance(image, PendingImage) else image
