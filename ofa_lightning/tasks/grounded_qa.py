"""Grounded question answering: an *unseen-task* prompt that composes two things OFA learnt separately — a VQA
question and a region given as location bins (as in grounded captioning) — following the OFA blog post's example
(a question about "the region", the region written as four ``<bin_i>`` tokens after ``region:``).

    grounded_qa_prompt("what color is the car in the region?", box=(30, 40, 200, 180), image_size=(640, 480))
    -> " what color is the car in the region? region: <bin_47> <bin_83> <bin_312> <bin_375>"

Bins are ``round(coord / side * (num_bins - 1))`` of the *input image's* width / height: the fraction of the image
that a fine-tuned grounding model (512x512 squash, boxes / 512) and ``OFA.generate``'s box de-quantisation use.
``ofa-predict ... region=[x0,y0,x1,y1]`` fills ``{region}`` in the prompt (or appends `` region: ...``) with
:func:`fill_region`; notebooks import the same helpers from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "REGION_PLACEHOLDER",
    "region_to_bins",
    "region_tokens",
    "grounded_qa_prompt",
    "fill_region",
    "image_size_of",
]

REGION_PLACEHOLDER = "{region}"


def region_to_bins(box: Sequence[float], image_size: Sequence[int], num_bins: int = 1000) -> list[int]:
    """Pixel box ``[x0, y0, x1, y1]`` of an image of ``(width, height)`` → four bin indices in ``[0, num_bins)``."""
    if len(box) != 4:
        raise ValueError(f"a region is [x0, y0, x1, y1], got {list(box)!r}")
    width, height = (float(v) for v in image_size)
    if width <= 0 or height <= 0:
        raise ValueError(f"image size must be positive, got {tuple(image_size)}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if x1 < x0 or y1 < y0:
        raise ValueError(f"region {list(box)!r} has x1 < x0 or y1 < y0")
    top = num_bins - 1
    out = []
    for value, side in ((x0, width), (y0, height), (x1, width), (y1, height)):
        frac = min(max(value / side, 0.0), 1.0)
        out.append(int(round(frac * top)))
    return out


def region_tokens(box: Sequence[float], image_size: Sequence[int], num_bins: int = 1000) -> str:
    """``"<bin_a> <bin_b> <bin_c> <bin_d>"`` for a pixel box."""
    return " ".join(f"<bin_{b}>" for b in region_to_bins(box, image_size, num_bins))


def grounded_qa_prompt(question: str, box: Sequence[float], image_size: Sequence[int], num_bins: int = 1000) -> str:
    """OFA-style instruction (leading space, lower case) asking ``question`` about the region ``box``."""
    q = " ".join(question.strip().lower().split())
    if not q.endswith("?"):
        q += "?"
    return f" {q} region: {region_tokens(box, image_size, num_bins)}"


def image_size_of(image: Any) -> tuple[int, int]:
    """(width, height) of a PIL image, a path to one, or a ``(width, height)`` pair."""
    if isinstance(image, (str, Path)):
        from PIL import Image

        with Image.open(image) as im:
            return im.size
    if hasattr(image, "size") and not isinstance(image, (tuple, list)):
        return tuple(image.size)  # PIL
    width, height = image
    return int(width), int(height)


def fill_region(prompt: str, box: Sequence[float], image: Any, num_bins: int = 1000) -> str:
    """Put the region's bins into ``prompt``: at ``{region}`` when present, else appended as `` region: ...``."""
    tokens = region_tokens(box, image_size_of(image), num_bins)
    if REGION_PLACEHOLDER in prompt:
        return prompt.replace(REGION_PLACEHOLDER, tokens)
    return f"{prompt.rstrip()} region: {tokens}"
