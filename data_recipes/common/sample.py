"""What a recipe hands to the writer: lazily built samples with stable keys."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

_UNSAFE_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-]")


def make_key(prefix: str, *parts: Any) -> str:
    """Joins a prefix and id parts into a WebDataset-safe key.

    WebDataset splits a tar member name at its first dot into key and extension, and keys end up in file
    names and URLs, so anything but letters, digits, `_` and `-` becomes `_` ("refcoco+" -> "refcocoplus").
    """
    text = "-".join([prefix.replace("+", "plus")] + [str(p) for p in parts])
    return _UNSAFE_KEY_CHARS.sub("_", text)


@dataclass
class Sample:
    """One output sample: task fields (JSON-able), optional original image bytes and their extension.

    The runner adds "id", "source" and "split" to the fields. `warnings` are counted in the manifest
    (e.g. a dropped box) without skipping the sample.
    """

    key: str
    fields: dict[str, Any]
    image: bytes | None = None
    image_ext: str | None = None
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Candidate:
    """A raw record not yet converted: its key, where it came from, and how to build it.

    Keeping the build step lazy lets the runner shuffle, skip the already-written part of a resumed run
    and detect duplicate keys without reading images.
    """

    key: str
    origin: str
    build: Callable[[], Sample]
