"""OFA's image transforms, box-aware (OFA-Sys/OFA ``utils/transforms.py``), and JPEG decoding.

==============  ==============================================================================================
``base``        the ``Transform`` protocol and the target dict helpers
``pixels``      uint8 fast paths, ``ToTensor``, ``Normalize``, deferred normalisation (``PendingImage``)
``geometry``    ``SquashResize``, ``RandomResize``, ``CenterCrop``, ``ObjectCenterCrop``, ``LargeScaleJitter``, flip
``augment``     ``RandomAugment``, ``ImageInfillingMask``, ``WithGlobalSeed``
``compose``     ``Compose`` and the fast paths between neighbouring steps
``jpeg``        libjpeg-turbo decoding behind a PIL image (the loaders)
==============  ==============================================================================================

This package sits below ``tasks`` and ``data`` (both use it) and imports neither.

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

from .augment import OFA_AUGMENT_OPS, ImageInfillingMask, RandomAugment, WithGlobalSeed
from .base import BOX_FIELDS, Transform, image_size, make_target
from .compose import Compose
from .geometry import (
    CenterCrop,
    LargeScaleJitter,
    ObjectCenterCrop,
    RandomHorizontalFlip,
    RandomResize,
    SquashResize,
    ofa_resize_size,
)
from .pixels import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    NORMALIZATIONS,
    OFA_MEAN,
    OFA_STD,
    Normalize,
    PendingImage,
    ToTensor,
    deferred_normalization,
    image_tensor,
)

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
