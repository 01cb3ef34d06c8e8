"""Raw shard sample -> (json fields, PIL image) -> task Example, with every failure counted by reason.

Nothing is dropped silently: each skip increments ``DataStats.skipped[reason]``, the reason being a short category:
"missing json", "bad json", "corrupt image", "<task>: <reason>" (``build_example`` returned None; the reason is the
key the task counted in ``task.skips``, e.g. "caption: missing field: captions", else "rejected"),
"<task>: <ExceptionName>" (the task raised on a malformed sample), "unreadable shard" (a tar that is missing,
truncated or whose pipe failed: the rest of that shard is lost). The detail (exception text, sample id) goes to the log, rate-limited. Stats travel to the main process inside every batch (``batch["stats"]``,
the counts since the previous batch of the same worker), so workers need no shared memory for them.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from ofa_lightning.images import deferred_normalization
from ofa_lightning.images.jpeg import open_image
from ofa_lightning.tasks.base import Example, Task

__all__ = ["DataStats", "Skip", "decode_sample", "build_example", "IMAGE_EXTS"]

log = logging.getLogger(__name__)

#: member extensions read as the sample's image, in order of preference
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm")

#: exceptions a task may raise on a malformed sample (a missing key, a wrongly typed or out-of-range value); they
#: become counted skips "<task>: <ExceptionName>". Anything else (AttributeError, RuntimeError such as the tasks'
#: strict-mode BadSampleError ...) is a bug or a deliberate stop and propagates.
TASK_SAMPLE_ERRORS = (KeyError, ValueError, TypeError, IndexError)

_MAX_LOGGED = 20  # per process
_logged = 0


@dataclass
class Skip:
    """A sample that could not become an Example (returned instead of it by the eval dataset)."""

    reason: str
    detail: str = ""
    id: str = ""


@dataclass
class DataStats:
    """Counters of one data stream: skips by reason, yielded examples per source, padding examples."""

    skipped: dict[str, int] = field(default_factory=dict)
    mix: dict[str, int] = field(default_factory=dict)
    padded: int = 0

    def skip(self, reason: str, detail: str = "", sample_id: str = "") -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        global _logged
        if _logged < _MAX_LOGGED:
            _logged += 1
            log.warning("skipped sample %s: %s%s", sample_id or "?", reason, f" ({detail})" if detail else "")

    def skip_record(self, skip: Skip) -> None:
        self.skip(skip.reason, skip.detail, skip.id)

    def count(self, source: str, n: int = 1) -> None:
        self.mix[source] = self.mix.get(source, 0) + n

    @property
    def num_skipped(self) -> int:
        return sum(self.skipped.values())

    @property
    def num_examples(self) -> int:
        return sum(self.mix.values())

    def update(self, other: DataStats | Mapping[str, Any] | None) -> DataStats:
        if other is None:
            return self
        if isinstance(other, DataStats):
            other = other.as_dict()
        for reason, n in (other.get("skipped") or {}).items():
            self.skipped[reason] = self.skipped.get(reason, 0) + int(n)
        for source, n in (other.get("mix") or {}).items():
            self.mix[source] = self.mix.get(source, 0) + int(n)
        self.padded += int(other.get("padded", 0))
        return self

    def as_dict(self) -> dict[str, Any]:
        return {"skipped": dict(self.skipped), "mix": dict(self.mix), "padded": self.padded}

    def take(self) -> dict[str, Any]:
        """The counts so far as a dict, resetting them (the delta a batch carries)."""
        out = self.as_dict()
        self.skipped, self.mix, self.padded = {}, {}, 0
        return out

    def mix_fractions(self) -> dict[str, float]:
        total = self.num_examples
        return {k: v / total for k, v in sorted(self.mix.items())} if total else {}

    def log_dict(self, prefix: str = "data/") -> dict[str, float]:
        """Flat floats for ``LightningModule.log_dict``: skip counts by reason, realised mix counts and fractions."""
        out: dict[str, float] = {
            f"{prefix}skipped": float(self.num_skipped),
            f"{prefix}examples": float(self.num_examples),
        }
        for reason, n in sorted(self.skipped.items()):
            key = f"{prefix}skipped/{_metric_name(reason)}"
            out[key] = out.get(key, 0.0) + float(n)
        for source, n in sorted(self.mix.items()):
            out[f"{prefix}mix_count/{source}"] = float(n)
        for source, frac in self.mix_fractions().items():
            out[f"{prefix}mix/{source}"] = frac
        return out


def _metric_name(reason: str) -> str:
    """ "caption: missing field: captions" -> "caption/missing_field/captions" (safe for every logger)."""
    return re.sub(r"[^A-Za-z0-9_/.\-]+", "_", reason.replace(": ", "/")).strip("_")


def _decode_image(data: bytes) -> Image.Image:
    return open_image(data)  # RGB JPEGs: libjpeg-turbo straight to a tensor behind a PIL image (images/jpeg.py)


def decode_sample(raw: Mapping[str, Any]) -> tuple[dict[str, Any], Image.Image | None] | Skip:
    """Raw grouped members -> (json fields, RGB image or None), or a ``Skip`` with the reason."""
    key = str(raw.get("__key__", ""))
    if "json" not in raw:
        return Skip("missing json", "sample has no .json member", key)
    try:
        fields = json.loads(raw["json"].decode("utf-8") if isinstance(raw["json"], (bytes, bytearray)) else raw["json"])
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
        return Skip("bad json", f"{type(exc).__name__}: {exc}", key)
    if not isinstance(fields, dict):
        return Skip("bad json", f"expected an object, got {type(fields).__name__}", key)
    fields.setdefault("id", key)
    image = None
    for ext in IMAGE_EXTS:
        if ext in raw:
            try:
                image = _decode_image(raw[ext])
            except Exception as exc:  # PIL raises a zoo of types on bad bytes
                return Skip("corrupt image", f"{ext}: {type(exc).__name__}: {exc}", str(fields["id"]))
            break
    return fields, image


def build_example(task: Task, raw: Mapping[str, Any], *, train: bool, rng: random.Random) -> Example | Skip:
    """Decodes one raw sample and builds its Example through the task; failures become a ``Skip``."""
    decoded = decode_sample(raw)
    if isinstance(decoded, Skip):
        return decoded
    fields, image = decoded
    sample_id = str(fields["id"])
    counted = getattr(task, "skips", None)  # the task's own Counter of skip reasons, when it keeps one
    before = dict(counted) if counted is not None else None
    try:
        with deferred_normalization():  # the collate normalises the pixels into the batch (transforms module doc)
            example = task.build_example(fields, image, train, rng)
    except TASK_SAMPLE_ERRORS as exc:
        return Skip(f"{task.name}: {type(exc).__name__}", str(exc), sample_id)
    if example is None:
        reasons = [k for k, v in counted.items() if v != before.get(k, 0)] if counted is not None else []
        return Skip(f"{task.name}: {reasons[0] if reasons else 'rejected'}", "", sample_id)
    if not isinstance(example, Example):
        raise TypeError(f"{type(task).__name__}.build_example returned {type(example).__name__}, expected Example")
    return example
