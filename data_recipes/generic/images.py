"""The image of a record: a path (relative to an image root, or absolute), inline bytes, base64 text, or the
`{"bytes": ..., "path": ...}` dict HF `datasets` stores for an Image column."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from data_recipes.common.errors import BadSample
from data_recipes.common.files import safe_relative_path

#: Columns tried, in order, when --image-column is not given.
IMAGE_COLUMNS = ("image", "image_path", "img", "file_name", "filename", "file", "path", "image_file")
_BASE64 = re.compile(r"^[A-Za-z0-9+/=\s]+$")
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"RIFF", b"BM", b"II*\x00", b"MM\x00*")


def image_column_of(record: dict, column: str | None) -> str:
    if column is not None:
        if column not in record:
            raise BadSample(f"missing image: column {column!r} is not in this record")
        return column
    for name in IMAGE_COLUMNS:
        if name in record:
            return name
    raise BadSample(f"missing image: no image column (tried {', '.join(IMAGE_COLUMNS)}; name it with --image-column)")


def _decode_base64(text: str) -> bytes | None:
    payload = text.split(",", 1)[1] if text.startswith("data:") else text
    if not _BASE64.match(payload[:4096]):
        return None
    try:
        data = base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError):
        return None
    return data if data.startswith(_MAGIC) else None


def read_path(name: str, roots: Sequence[Path]) -> bytes:
    path = Path(name).expanduser()
    if path.is_absolute():
        if path.is_file():
            return path.read_bytes()
        raise BadSample(f"missing image: {path} does not exist")
    clean = safe_relative_path(name, "image file")
    for root in roots:
        candidate = Path(root) / clean
        if candidate.is_file():
            try:
                return candidate.read_bytes()
            except OSError as exc:
                raise BadSample(f"unreadable image: {candidate}: {exc.strerror}") from None
    where = ", ".join(str(r) for r in roots) or "(no --image-root)"
    raise BadSample(f"missing image: {clean} not found under {where}")


def image_identity(record: dict, column: str | None) -> str | None:
    """A stable string naming the record's image (path, or a digest of inline bytes) for per-image splits."""
    try:
        value = record[image_column_of(record, column)]
    except BadSample:
        return None
    if isinstance(value, dict):
        value = value.get("path") or value.get("bytes")
    if isinstance(value, str) and len(value) < 1024:
        return value.replace("\\", "/").lstrip("./")
    if isinstance(value, (bytes, bytearray, memoryview, str)):
        import hashlib

        data = value.encode("utf-8", "surrogateescape") if isinstance(value, str) else bytes(value)
        return "sha1:" + hashlib.sha1(data).hexdigest()
    return None


def read_image_value(record: dict, column: str | None, roots: Sequence[Path]) -> tuple[bytes, str | None]:
    """(image bytes, file name or None for inline images); BadSample when there is none to read."""
    name = image_column_of(record, column)
    value: Any = record[name]
    if isinstance(value, dict):  # HF datasets Image(decode=False)
        if value.get("bytes"):
            return bytes(value["bytes"]), value.get("path")
        value = value.get("path")
    if value is None or (isinstance(value, str) and not value.strip()):
        raise BadSample(f"missing image: column {name!r} is empty")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), None
    if not isinstance(value, str):
        raise BadSample(f"missing image: column {name!r} holds a {type(value).__name__}, expected a path or bytes")
    text = value.strip()
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadSample(f"non-UTF-8 text: image path in column {name!r} holds undecodable bytes") from None
    if text.startswith("data:") or len(text) > 256:
        data = _decode_base64(text)
        if data is not None:
            return data, None
        if text.startswith("data:"):
            raise BadSample(f"corrupt image: column {name!r} holds a data: URI that is not base64 image data")
    return read_path(text, roots), text
