"""Reading a raw sample's fields for a task: each helper returns a checked value or raises :class:`SkipSample`, which
``Task.build_example`` counts (or turns into :class:`BadSampleError` in strict mode)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from PIL import Image

__all__ = ["SkipSample", "BadSampleError", "SampleAccess"]


class SkipSample(Exception):
    """Raised inside ``Task._build`` for bad input; :meth:`Task.build_example` counts it (or raises
    :class:`BadSampleError` in strict mode)."""

    def __init__(self, reason: str, field: str | None = None, detail: str = ""):
        self.reason, self.field, self.detail = reason, field, detail
        super().__init__(f"{reason}" + (f": {field}" if field else "") + (f" ({detail})" if detail else ""))

    @property
    def key(self) -> str:
        return self.reason + (f": {self.field}" if self.field else "")


class BadSampleError(RuntimeError):
    """Strict mode: a sample the task cannot use. Deliberately not a ``ValueError`` so that pipelines that turn
    ``ValueError`` into counted skips still stop on it."""

    def __init__(self, task: str, sample_id: str, skip: SkipSample):
        self.task, self.sample_id, self.field, self.reason = task, sample_id, skip.field, skip.reason
        where = f", field {skip.field!r}" if skip.field else ""
        detail = f" ({skip.detail})" if skip.detail else ""
        super().__init__(f"task {task!r}: sample {sample_id!r}{where}: {skip.reason}{detail}")


class SampleAccess:
    """The sample helpers of :class:`~ofa_lightning.tasks.base.Task` (``self.cfg["max_text_chars"]`` bounds texts)."""

    @staticmethod
    def sample_id(sample: Mapping[str, Any]) -> str:
        return str(sample.get("id", "?"))

    def field(
        self,
        sample: Mapping[str, Any],
        name: str,
        types: type | tuple[type, ...] | None = None,
        required: bool = True,
        default: Any = None,
    ) -> Any:
        """``sample[name]`` (dotted paths walk nested dicts/lists); missing/None → skip (or ``default`` when not
        required); an instance of the wrong type → skip ``"bad type"``. ``bool`` never passes as a number."""
        value: Any = sample
        for part in [name] if name in sample else name.split("."):
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            elif (
                isinstance(value, (list, tuple))
                and part.lstrip("-").isdigit()
                and -len(value) <= int(part) < len(value)
            ):
                value = value[int(part)]
            else:
                value = None
                break
        if value is None:
            if required:
                raise SkipSample("missing field", name)
            return default
        if types is not None:
            tys = types if isinstance(types, tuple) else (types,)
            if (isinstance(value, bool) and bool not in tys) or not isinstance(value, tys):
                names = "/".join(t.__name__ for t in tys)
                raise SkipSample("bad type", name, f"expected {names}, got {type(value).__name__}")
        return value

    def check_text(self, value: str, name: str) -> str:
        if not value.strip():
            raise SkipSample("empty text", name)
        if len(value) > int(self.cfg["max_text_chars"]):
            raise SkipSample("text too long", name, f"{len(value)} > {self.cfg['max_text_chars']} characters")
        return value

    def text(self, sample: Mapping[str, Any], name: str, required: bool = True, numbers: bool = False) -> str | None:
        """A non-empty text field within ``max_text_chars`` (``numbers=True`` also accepts ints/floats)."""
        types = (str, int, float) if numbers else str
        value = self.field(sample, name, types, required=required)
        if value is None:
            return None
        return self.check_text(str(value), name)

    def text_list(self, sample: Mapping[str, Any], name: str) -> list[str]:
        """A list of strings (a bare string counts as a one-element list); blank entries are dropped; an empty
        result is a skip."""
        value = self.field(sample, name, (list, tuple, str))
        items = [value] if isinstance(value, str) else list(value)
        for item in items:
            if not isinstance(item, str):
                raise SkipSample("bad type", name, f"expected a list of strings, found {type(item).__name__}")
        items = [s for s in items if s.strip()]
        if not items:
            raise SkipSample("empty text", name)
        for s in items:
            self.check_text(s, name)
        return items

    def number(self, sample: Mapping[str, Any], name: str, required: bool = True) -> float | None:
        value = self.field(sample, name, (int, float), required=required)
        if value is None:
            return None
        if not math.isfinite(float(value)):
            raise SkipSample("bad value", name, "not finite")
        return float(value)

    @staticmethod
    def check_box(
        box: Any, name: str, width: float | None = None, height: float | None = None, tolerance: float = 1.0
    ) -> list[float]:
        """4 finite numbers ``x0, y0, x1, y1`` with ``x0 < x1``, ``y0 < y1`` and (when the image size is given)
        inside ``[-tolerance, size + tolerance]``; else a skip ("bad box", "inverted box", "box outside image")."""
        if not isinstance(box, (list, tuple)) or len(box) != 4:
            raise SkipSample("bad box", name, f"expected [x0, y0, x1, y1], got {box!r}"[:200])
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in box):
            raise SkipSample("bad box", name, "coordinates must be numbers")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
            raise SkipSample("bad box", name, "non-finite coordinate")
        if x1 <= x0 or y1 <= y0:
            raise SkipSample("inverted box", name, f"{[x0, y0, x1, y1]}")
        if width is not None and height is not None:
            if x0 < -tolerance or y0 < -tolerance or x1 > width + tolerance or y1 > height + tolerance:
                raise SkipSample("box outside image", name, f"{[x0, y0, x1, y1]} in a {width:g}x{height:g} image")
        return [x0, y0, x1, y1]

    @staticmethod
    def require_image(image: Image.Image | None) -> Image.Image:
        if image is None:
            raise SkipSample("missing image", "image")
        if not isinstance(image, Image.Image):
            raise SkipSample("bad type", "image", f"expected a PIL image, got {type(image).__name__}")
        return image if image.mode == "RGB" else image.convert("RGB")
