"""JPEG decoding for the loaders: libjpeg-turbo straight to a uint8 tensor, behind a PIL image.

Why: on the 480 px caption path the JPEG decode is the largest single cost, and PIL adds a second one on top:
getting its pixels out as an array (``np.array(image)``, ~0.4 ms for 640x480, PIL keeps RGB as 4-byte pixels and
repacks them). ``torchvision.io.decode_jpeg`` decodes the same bytes with the same library straight into a uint8
``(3, H, W)`` tensor (a channels-last view, which is what torch's uint8 resize kernel wants), ~1.3 ms against PIL's
~1.8 ms decode + copy. The pixels are equal to PIL's, bit for bit, for baseline, progressive,
optimised and 4:4:4 / 4:2:2 / 4:2:0 JPEGs (tests/test_jpeg.py checks them).

The tasks' contract stays "a PIL image": :func:`open_image` returns a :class:`DecodedJpeg`, a real
``PIL.Image.Image`` whose own storage is made from the tensor only when PIL first needs it (``load``: a crop, a
PIL transform, ``np.array`` ...). Until then :meth:`DecodedJpeg.decoded_pixels` hands the tensor to the transforms'
fast path (``transforms._rgb_pixels``); once PIL has loaded the image (it may then be changed in place) the tensor
is dropped and the transforms read PIL's pixels as for any other image.

The decode is eager, as PIL's was: a corrupt or truncated JPEG fails inside :func:`open_image`, so the loaders
count it as a "corrupt image" skip just as before. Only JPEGs whose header says RGB (YCbCr or RGB coded) take this
route; greyscale, CMYK, PNG ... and any JPEG when torchvision's image library cannot be loaded go through PIL.

torchvision 0.29 deprecates its image decoders in favour of TorchCodec (a further dependency, built around FFmpeg)
and warns on every call; :func:`_decode` silences that warning around each call (a global filter would not hold
under pytest or ``-W error``, where the warning would turn every JPEG into a "corrupt image" skip). When a
torchvision release drops ``decode_jpeg``, the import fails and every image goes through PIL again: slower,
never different.
"""

from __future__ import annotations

import io
import warnings
from typing import Any

import torch
from PIL import Image

__all__ = ["DecodedJpeg", "open_image", "fast_jpeg_available", "set_fast_jpeg"]

_decode_jpeg: Any = None  # torchvision.io.decode_jpeg once imported; False when it cannot be used
_enabled = True


def fast_jpeg_available() -> bool:
    """True when JPEGs are decoded by torchvision (importable, and not switched off by :func:`set_fast_jpeg`)."""
    global _decode_jpeg
    if not _enabled:
        return False
    if _decode_jpeg is None:
        try:
            from torchvision.io import decode_jpeg

            probe = io.BytesIO()
            Image.new("RGB", (8, 8), (200, 30, 90)).save(probe, "JPEG")
            _decode_jpeg = decode_jpeg
            _decode(probe.getvalue())  # the image extension loads and works
        except Exception:  # noqa: BLE001 - no torchvision, or its image extension failed to load: PIL decodes
            _decode_jpeg = False
    return _decode_jpeg is not False


def set_fast_jpeg(enabled: bool) -> bool:
    """Switch the torchvision route on or off for this process (benchmarks and tests compare the two); returns the
    previous setting."""
    global _enabled
    before, _enabled = _enabled, bool(enabled)
    return before


def _decode(data: bytes) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # a copy: torch.frombuffer on immutable bytes warns, and the decoder must not see a buffer that may change
        return _decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8))


class DecodedJpeg(Image.Image):
    """An RGB PIL image decoded by libjpeg-turbo into a uint8 ``(3, H, W)`` tensor (see the module doc).

    It behaves as the ``JpegImageFile`` PIL would have returned (``size``, ``mode``, ``format``, ``info``, every
    method); its PIL storage is built from the tensor on the first ``load`` (which every PIL operation calls).
    """

    format = "JPEG"
    format_description = "JPEG (decoded by torchvision.io.decode_jpeg)"

    def __init__(self, pixels: torch.Tensor, info: dict[Any, Any] | None = None):
        super().__init__()
        if pixels.dtype != torch.uint8 or pixels.ndim != 3 or pixels.shape[0] != 3:
            raise ValueError(f"expected uint8 (3, H, W) pixels, got {pixels.dtype} {tuple(pixels.shape)}")
        # PIL >= 10 keeps mode and size in these two fields behind read-only properties (there is no public way to
        # make an image without allocating its storage); tests/test_jpeg.py checks the image behaves as PIL's own
        self._mode = "RGB"
        self._size = (int(pixels.shape[2]), int(pixels.shape[1]))
        self.info = dict(info or {})
        self._pixels: torch.Tensor | None = pixels

    def decoded_pixels(self) -> torch.Tensor | None:
        """The decoded uint8 ``(3, H, W)`` pixels (a channels-last view; read-only: do not write into it), or None
        once PIL has loaded the image, after which only PIL's storage is authoritative."""
        return getattr(self, "_pixels", None)

    def load(self):
        if getattr(self, "_pixels", None) is not None:
            # Image.fromarray copies RGB pixels into PIL's 4-byte layout; the tensor is dropped so that in-place PIL
            # edits (paste, ImageDraw ...) can never leave a stale copy behind
            self.im = Image.fromarray(self._pixels.permute(1, 2, 0).numpy(), "RGB").im
            self._pixels = None
        return super().load()

    def copy(self) -> Image.Image:
        """Shares the decoded pixels while PIL has not loaded them (neither image writes into them: a PIL edit
        loads first, into storage of its own)."""
        pixels = self.decoded_pixels()
        return DecodedJpeg(pixels, self.info) if pixels is not None else super().copy()

    def crop(self, box=None) -> Image.Image:
        """An integer box inside the image is a view of the decoded pixels (PIL's crop copies); anything else, or a
        loaded image, is PIL's crop."""
        pixels = self.decoded_pixels()
        if pixels is None or box is None:
            return super().crop(box) if pixels is None else self.copy()
        x0, y0, x1, y1 = box
        ints = all(isinstance(v, int) or (isinstance(v, float) and v.is_integer()) for v in box)
        if not ints or not (0 <= x0 < x1 <= self.width and 0 <= y0 < y1 <= self.height):
            return super().crop(box)
        return DecodedJpeg(pixels[:, int(y0) : int(y1), int(x0) : int(x1)], self.info)

    def __getstate__(self):  # pickles as a plain image (Image's state is built from tobytes, which loads)
        self.load()
        return super().__getstate__()


def open_image(data: bytes) -> Image.Image:
    """Encoded image bytes -> an RGB PIL image (a :class:`DecodedJpeg` for RGB JPEGs when the fast route is on).

    Raises what PIL or torchvision raise on bad bytes (``UnidentifiedImageError``, ``OSError``, ``RuntimeError``
    for a truncated JPEG ...), and ``DecompressionBombWarning`` as an error, so callers can count a skip.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data))  # reads the header only
        if img.format == "JPEG" and img.mode == "RGB" and fast_jpeg_available():
            pixels = _decode(data)
            if tuple(pixels.shape) == (3, img.height, img.width):
                return DecodedJpeg(pixels, img.info)
        img.load()
    # convert() copies even when the mode already is RGB (JPEG photos): skip that copy, the pixels are the same
    return img if img.mode == "RGB" else img.convert("RGB")
