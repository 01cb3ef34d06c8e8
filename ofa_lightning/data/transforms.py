"""OFA's image transforms, box-aware (OFA-Sys/OFA ``utils/transforms.py``).

Every transform is called as ``image, target = t(image, target, rng)`` and :class:`Compose` threads the pair
through a list of them. ``image`` is a PIL image until :class:`ToTensor`, a float tensor ``(3, H, W)`` after.
Inside :func:`deferred_normalization` (the data loaders' workers) a ``Compose`` that ends in ``ToTensor,
Normalize`` returns a :class:`PendingImage` instead: the uint8 pixels and the normalisation, which the collate
applies while writing the batch (the same float values, without a per-sample float image and its copy).
``rng`` is a ``random.Random`` (the task's, so an example is a pure function of the sample and the rng); ``None``
uses the ``random`` module.

The target dict
---------------
``boxes``        float tensor ``(N, 4)``, ``x0, y0, x1, y1`` in pixels of the *current* image (optional)
``labels`` ...   per-box fields (:data:`BOX_FIELDS`, plus any names in ``target["box_fields"]``): lists, tuples,
                 tensors or arrays of length N, filtered together with the boxes when a crop drops some
``size``         ``(h, w)`` of the current image
``orig_size``    ``(h, w)`` of the image given to :class:`Compose`
``w_ratio``      product of the horizontal resize ratios applied so far (new width / old width) ...
``h_ratio``      ... and the vertical ones: OFA's ``w_resize_ratio``/``h_resize_ratio``, used to map predicted
                 boxes back to the original image (``bins_to_box(..., w_ratio, h_ratio)``)

Boxes stay in pixels here; quantisation (``bin = round(c / 512 * (num_bins - 1))``) is the task's job
(``ofa_lightning.tokenizer.box_to_bins``), so OFA's ``Normalize(max_image_size=512)`` box division is not
repeated in :class:`Normalize`.

Geometry is done by ``torchvision.transforms.v2.functional``, which moves ``tv_tensors.BoundingBoxes`` with the
image (and clamps them to the canvas); what OFA does differently from torchvision's own transforms is computed
here and handed to those functionals:

* :class:`RandomResize`: OFA caps *each* side at ``max_size`` (aspect ratio not kept when capped), torchvision
  keeps the ratio.
* :class:`SquashResize`: ``(h, w)`` resize ignoring aspect ratio (caption/VQA/SNLI-VE 480², RefCOCO's 512²).
* :class:`ObjectCenterCrop`, :class:`LargeScaleJitter`: OFA-specific crops.
* :class:`RandomAugment`: OFA's RandAugment variant (``utils/vision_helper.py``): N ops drawn with replacement from
  10, each applied with probability 0.5 at magnitude M (of 10); fill grey 128 for geometric ops.

Crops drop boxes that end up with zero width or height (OFA ``crop(delete=True)``), except
:class:`ObjectCenterCrop` (OFA ``delete=False``: the referred box is clamped, never dropped).
"""

from __future__ import annotations

import contextvars
import math
import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2 import functional as F

from ofa_lightning.data.jpeg import DecodedJpeg

__all__ = [
    "OFA_MEAN",
    "OFA_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NORMALIZATIONS",
    "OFA_AUGMENT_OPS",
    "BOX_FIELDS",
    "Compose",
    "Transform",
    "SquashResize",
    "RandomResize",
    "CenterCrop",
    "ObjectCenterCrop",
    "LargeScaleJitter",
    "RandomHorizontalFlip",
    "RandomAugment",
    "ToTensor",
    "Normalize",
    "ImageInfillingMask",
    "PendingImage",
    "deferred_normalization",
    "image_tensor",
    "WithGlobalSeed",
    "make_target",
    "image_size",
    "ofa_resize_size",
]

OFA_MEAN = (0.5, 0.5, 0.5)
OFA_STD = (0.5, 0.5, 0.5)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: ``normalization`` option values of the tasks -> (mean, std)
NORMALIZATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "ofa": (OFA_MEAN, OFA_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}

#: per-box target fields filtered together with ``boxes``
BOX_FIELDS = ("labels", "category_ids", "area")

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

_BICUBIC = InterpolationMode.BICUBIC
_BILINEAR = InterpolationMode.BILINEAR


# ---------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------
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


_FAST_RESIZE_MODES = {InterpolationMode.BICUBIC: "bicubic", InterpolationMode.BILINEAR: "bilinear"}


def _resize_functional(
    inpt: Any, size: list[int], interpolation: InterpolationMode, antialias: bool = True, pixels: bool = False
) -> Any:
    """``F.resize``, except when an RGB PIL image is *shrunk* (no side grows) with a bicubic/bilinear filter: then
    it is resized as a uint8 channels-last tensor by torch's antialiased kernel and handed back as a PIL image.

    Why: torch's uint8 AVX2 resampler is about 20 % faster than Pillow's on this path, which is the largest cost
    of a 480 px caption sample after JPEG decoding (benchmarks/data_pipeline.py). It uses Pillow's filters
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
    a JPEG's decoded pixels when PIL has not loaded it (``data/jpeg.py``; not to be written into, like the copy is
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


def _rng(rng: random.Random | None):
    return rng if rng is not None else random


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    h, w = size
    return int(h), int(w)


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


# ---------------------------------------------------------------------------------------------------------------
# composition
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# deferred normalisation (data loaders)
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# tensor conversion
# ---------------------------------------------------------------------------------------------------------------
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
            image = image.decoded_pixels()  # a JPEG PIL has not loaded (data/jpeg.py): its pixels, read once below
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
