"""Box geometry: a pixel box as OFA's 4 location bins and back.

OFA-Sys/OFA ``data/mm_data/refcoco_dataset.py``: ``bin = round(c / max_image_size * (num_bins - 1))``, order
x0 y0 x1 y1; the bins are written as ``<bin_a> <bin_b> <bin_c> <bin_d>``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from ofa_lightning.tokenizer.vocabulary import as_int_list


def _check_box(box_xyxy: Any) -> list[float]:
    if hasattr(box_xyxy, "tolist"):
        box_xyxy = box_xyxy.tolist()
    try:
        vals = [float(v) for v in box_xyxy]
    except (TypeError, ValueError) as e:
        raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1), got {box_xyxy!r}") from e
    if len(vals) != 4:
        raise ValueError(f"box must be 4 numbers (x0, y0, x1, y1), got {len(vals)}: {box_xyxy!r}")
    if not all(math.isfinite(v) for v in vals):
        raise ValueError(f"box has a NaN/infinite coordinate: {box_xyxy!r}")
    x0, y0, x1, y1 = vals
    if x1 < x0 or y1 < y0:
        raise ValueError(f"box must satisfy x0 <= x1 and y0 <= y1 (xyxy order), got {box_xyxy!r}")
    return vals


def _check_quant_args(max_image_size: float, num_bins: int) -> None:
    if not (isinstance(num_bins, int) and num_bins >= 2):
        raise ValueError(f"num_bins must be an int >= 2, got {num_bins!r}")
    if not (max_image_size > 0 and math.isfinite(max_image_size)):
        raise ValueError(f"max_image_size must be a positive number, got {max_image_size!r}")


def box_to_bins(box_xyxy: Sequence[float], max_image_size: float = 512, num_bins: int = 1000) -> list[int]:
    """Quantise a pixel box (x0, y0, x1, y1) to 4 bin numbers: ``round(c / max_image_size * (num_bins - 1))``,
    clamped to ``[0, num_bins - 1]``. Rounding is half-to-even like OFA's ``torch.round`` (computed in float64;
    OFA uses float32, which can differ only for values within float32 precision of a .5 boundary)."""
    _check_quant_args(max_image_size, num_bins)
    vals = _check_box(box_xyxy)
    return [min(max(int(round(v / max_image_size * (num_bins - 1))), 0), num_bins - 1) for v in vals]


def bins_to_box(
    bins: Sequence[int],
    max_image_size: float = 512,
    num_bins: int = 1000,
    w_ratio: float = 1.0,
    h_ratio: float = 1.0,
) -> list[float]:
    """Inverse of :func:`box_to_bins`: ``c = bin / (num_bins - 1) * max_image_size / ratio`` (``w_ratio`` for x,
    ``h_ratio`` for y: the resize ratio of the transformed image, to map back to original pixels)."""
    _check_quant_args(max_image_size, num_bins)
    if not (w_ratio > 0 and h_ratio > 0):
        raise ValueError(f"w_ratio and h_ratio must be positive, got {w_ratio!r}, {h_ratio!r}")
    b = as_int_list(bins)
    if len(b) != 4:
        raise ValueError(f"expected 4 bins (x0, y0, x1, y1), got {len(b)}: {bins!r}")
    for v in b:
        if not 0 <= v < num_bins:
            raise ValueError(f"bin {v} out of range [0, {num_bins})")
    scale = max_image_size / (num_bins - 1)
    return [b[0] * scale / w_ratio, b[1] * scale / h_ratio, b[2] * scale / w_ratio, b[3] * scale / h_ratio]


def box_to_tokens(box_xyxy: Sequence[float], max_image_size: float = 512, num_bins: int = 1000) -> str:
    """Box -> ``"<bin_a> <bin_b> <bin_c> <bin_d>"`` (OFA's region string)."""
    return " ".join(f"<bin_{b}>" for b in box_to_bins(box_xyxy, max_image_size, num_bins))


_BIN_TOKEN_RE = re.compile(r"^<bin_(0|[1-9][0-9]*)>$")


def tokens_to_box(
    tokens: str | Sequence[str],
    max_image_size: float = 512,
    num_bins: int = 1000,
    w_ratio: float = 1.0,
    h_ratio: float = 1.0,
) -> list[float]:
    """``"<bin_a> <bin_b> <bin_c> <bin_d>"`` (or a list of 4 such strings) -> pixel box, see :func:`bins_to_box`."""
    toks = tokens.split() if isinstance(tokens, str) else list(tokens)
    if len(toks) != 4:
        raise ValueError(f"expected 4 bin tokens '<bin_a> <bin_b> <bin_c> <bin_d>', got {len(toks)}: {tokens!r}")
    bins = []
    for t in toks:
        m = _BIN_TOKEN_RE.match(str(t))
        if not m:
            raise ValueError(f"not a bin token: {t!r} (expected '<bin_N>')")
        bins.append(int(m.group(1)))
    return bins_to_box(bins, max_image_size, num_bins, w_ratio, h_ratio)
