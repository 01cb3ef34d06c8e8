"""Cheap validation of raw fields: images, text, numbers, boxes. Every failure raises `BadSample(reason)`.

Reasons start with a short category before the first colon ("corrupt image: ...", "bad box: ..."); the
manifest counts skips per category.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image, UnidentifiedImageError

from data_recipes.common.errors import BadSample

#: Formats whose original bytes are kept; anything else is re-encoded once to PNG (lossless).
_KEPT_FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png"}  # MPO: phone JPEGs with extra frames

DEFAULT_MAX_TEXT_CHARS = 4096


@dataclass(frozen=True)
class CheckedImage:
    """Image bytes ready for the shard, with the extension WebDataset decoders key on."""

    data: bytes
    ext: str
    width: int
    height: int
    reencoded_from: str | None = None


def _jpeg_looks_complete(data: bytes) -> bool:
    """A JPEG ends with the EOI marker; a truncated download usually does not (trailing zero padding allowed)."""
    return data.rstrip(b"\x00").endswith(b"\xff\xd9")


def check_image(data: bytes, *, full_decode: bool = False) -> CheckedImage:
    """Verifies image bytes cheaply (header + PIL verify) and returns them with size and extension.

    PIL's verify() does not decode JPEG scan data, so a JPEG without its end marker is fully decoded to
    tell a truncated file from one with harmless trailing bytes. `full_decode` always decodes.
    """
    if not data:
        raise BadSample("corrupt image: empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                fmt = probe.format or "?"
                width, height = probe.size
                probe.verify()
            if full_decode or (fmt in ("JPEG", "MPO") and not _jpeg_looks_complete(data)) or fmt not in _KEPT_FORMATS:
                with Image.open(io.BytesIO(data)) as img:
                    img.load()
                    if fmt not in _KEPT_FORMATS:
                        out = io.BytesIO()
                        img.save(out, format="PNG")
                        return CheckedImage(out.getvalue(), "png", width, height, reencoded_from=fmt)
    except (
        UnidentifiedImageError,
        OSError,
        SyntaxError,
        ValueError,
        Image.DecompressionBombError,
        Image.DecompressionBombWarning,
    ) as exc:
        raise BadSample(f"corrupt image: {exc}") from None
    if width <= 0 or height <= 0:
        raise BadSample(f"corrupt image: size {width}x{height}")
    return CheckedImage(data, _KEPT_FORMATS[fmt], width, height)


def require_field(record: Any, name: str) -> Any:
    """Returns record[name] or raises a 'missing field' skip (also when record is not a dict)."""
    if not isinstance(record, dict):
        raise BadSample(f"bad record: expected a JSON object, got {type(record).__name__}")
    if name not in record or record[name] is None:
        raise BadSample(f"missing field: {name!r}")
    return record[name]


def require_text(value: Any, name: str, *, max_chars: int = DEFAULT_MAX_TEXT_CHARS) -> str:
    """A non-empty, valid-Unicode string of at most `max_chars` characters (surrounding whitespace removed)."""
    if value is None:
        raise BadSample(f"missing field: {name!r}")
    if not isinstance(value, str):
        raise BadSample(f"bad type: {name!r} is {type(value).__name__}, expected a string")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BadSample(f"non-UTF-8 text: {name!r} holds undecodable bytes") from None
    text = value.strip()
    if not text:
        raise BadSample(f"empty text: {name!r}")
    if len(text) > max_chars:
        raise BadSample(f"text too long: {name!r} has {len(text)} characters (limit {max_chars})")
    return text


def decode_utf8(raw: bytes, what: str) -> str:
    """Strict UTF-8 decoding of one raw line/record; failure is a skip naming the byte offset."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadSample(f"non-UTF-8 text: {what} has an invalid byte at offset {exc.start}") from None


def require_int(value: Any, name: str) -> int:
    """An integer (bools and floats with a fraction are refused; digit strings are accepted)."""
    if isinstance(value, bool):
        raise BadSample(f"bad type: {name!r} is a bool, expected an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise BadSample(f"bad type: {name!r} is {value!r}, expected an integer")


def require_number(value: Any, name: str) -> float:
    """A finite float (ints and numeric strings accepted)."""
    if isinstance(value, bool):
        raise BadSample(f"bad type: {name!r} is a bool, expected a number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadSample(f"bad type: {name!r} is {value!r}, expected a number") from None
    if not math.isfinite(number):
        raise BadSample(f"bad number: {name!r} is {value!r}")
    return number


def xywh_to_xyxy(box: Sequence[Any], name: str = "bbox") -> list[float]:
    """COCO [x, y, w, h] -> [x0, y0, x1, y1]."""
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise BadSample(f"bad box: {name!r} is {box!r}, expected 4 numbers")
    x, y, w, h = (require_number(v, name) for v in box)
    return [x, y, x + w, y + h]


def clip_box(box: Sequence[Any], width: int, height: int, name: str = "box") -> list[float]:
    """Pixel xyxy box clipped to the image; inverted, empty or fully outside boxes are refused.

    Coordinates are rounded to 1/1000 px to drop float noise from x + w.
    """
    if not isinstance(box, (list, tuple)) or len(box) != 4:
        raise BadSample(f"bad box: {name!r} is {box!r}, expected 4 numbers")
    x0, y0, x1, y1 = (require_number(v, name) for v in box)
    if x1 <= x0 or y1 <= y0:
        raise BadSample(f"bad box: {name!r} {[x0, y0, x1, y1]} is inverted or empty")
    cx0, cy0 = min(max(x0, 0.0), width), min(max(y0, 0.0), height)
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    if cx1 <= cx0 or cy1 <= cy0:
        raise BadSample(f"bad box: {name!r} {[x0, y0, x1, y1]} lies outside the {width}x{height} image")
    return [round(c, 3) for c in (cx0, cy0, cx1, cy1)]
