"""Precomputed VQ(-GAN) image codes (for image infilling / text-to-image) -> one sample per coded image.

Inputs
  --codes   [SPLIT=]FILE (repeatable; bare FILE = train), either
            .jsonl: {"id": ..., "codes": [ints] or "1 2 3 ...", "caption": optional, "image": optional path}
            .tsv:   id \t codes (space separated) \t caption (optional), like OFA's image_gen TSV
  --images  optional roots; then each sample also carries its image, looked up as the record's "image"
            path or <id>.jpg / <id>.png
  --codebook-size  codes must lie in [0, N) (default 8192, OFA's VQGAN)
  --code-lengths   allowed numbers of codes, e.g. 256,1024 (default: any perfect square)
Fields: codes, code_grid (side of the square code grid), caption (when given), image_id, and width, height
with the image.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_recipes.common import BadSample, Candidate, Sample, make_key
from data_recipes.common.checks import check_image, decode_utf8, require_field, require_int, require_text
from data_recipes.common.files import iter_raw_lines, parse_split_paths, require_file
from data_recipes.common.image_source import ImageSource
from data_recipes.common.splits import order_splits

NAME = "vq_codes"
DESCRIPTION = "precomputed VQGAN codes (jsonl/tsv, optional images) for image infilling and text-to-image"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--codes",
        action="append",
        required=True,
        metavar="[SPLIT=]FILE",
        help="a .jsonl or .tsv file of codes for one split (repeatable; bare FILE = train)",
    )
    parser.add_argument("--images", type=Path, nargs="+", default=None, help="optional image roots")
    parser.add_argument("--codebook-size", type=int, default=8192)
    parser.add_argument("--code-lengths", default=None, help="comma-separated allowed code counts, e.g. 256,1024")


def _files(args: argparse.Namespace) -> dict[str, Path]:
    return {
        split: require_file(path, f"the {split} codes file (.jsonl or .tsv)")
        for split, path in parse_split_paths(args.codes, "train", "--codes").items()
    }


def available_splits(args: argparse.Namespace) -> list[str]:
    return order_splits(_files(args))


def parse_codes(value: Any, codebook_size: int, lengths: set[int] | None) -> list[int]:
    """A list of ints or a space-separated string -> checked codes."""
    if isinstance(value, str):
        items: list[Any] = value.split()
    elif isinstance(value, list):
        items = value
    else:
        raise BadSample(f"bad codes: expected a list or a string, got {type(value).__name__}")
    codes = [require_int(v, "codes") for v in items]
    if not codes:
        raise BadSample("bad codes: empty")
    if any(c < 0 or c >= codebook_size for c in codes):
        raise BadSample(f"bad codes: values outside [0, {codebook_size})")
    if lengths is not None and len(codes) not in lengths:
        raise BadSample(f"bad codes: {len(codes)} codes, expected one of {sorted(lengths)}")
    if lengths is None and math.isqrt(len(codes)) ** 2 != len(codes):
        raise BadSample(f"bad codes: {len(codes)} codes do not form a square grid")
    return codes


def _record(raw: bytes, tsv: bool) -> dict:
    text = decode_utf8(raw, "record")
    if tsv:
        cells = text.split("\t")
        if len(cells) < 2:
            raise BadSample("bad row: expected id \\t codes [\\t caption]")
        record = {"id": cells[0], "codes": cells[1]}
        if len(cells) > 2 and cells[2].strip():
            record["caption"] = cells[2]
        return record
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadSample(f"bad json: {exc}") from None
    if not isinstance(record, dict):
        raise BadSample("bad record: expected a JSON object")
    return record


def _build(raw: bytes, tsv: bool, key: str, source: ImageSource | None, args: argparse.Namespace) -> Sample:
    record = _record(raw, tsv)
    image_id = str(require_field(record, "id"))
    lengths = {int(v) for v in args.code_lengths.split(",")} if args.code_lengths else None
    codes = parse_codes(require_field(record, "codes"), args.codebook_size, lengths)
    fields: dict[str, Any] = {"image_id": image_id, "codes": codes}
    if math.isqrt(len(codes)) ** 2 == len(codes):
        fields["code_grid"] = math.isqrt(len(codes))
    if record.get("caption") is not None:
        fields["caption"] = require_text(record["caption"], "caption", max_chars=args.max_text_chars)
    if source is None:
        return Sample(key, fields)
    names = [record["image"]] if isinstance(record.get("image"), str) else [f"{image_id}.jpg", f"{image_id}.png"]
    image = check_image(source.read(*names), full_decode=args.full_decode)
    fields.update(width=image.width, height=image.height)
    return Sample(key, fields, image.data, image.ext)


def _id_hint(raw: bytes, tsv: bool, fallback: str) -> str:
    """The record id for the key, read without validating the record (that happens in _build)."""
    try:
        if tsv:
            return raw.split(b"\t", 1)[0].decode("utf-8").strip() or fallback
        value = json.loads(raw.decode("utf-8")).get("id")
        return str(value) if value is not None else fallback
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return fallback


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    path = _files(args)[split]
    tsv = path.suffix.lower() == ".tsv"
    source = ImageSource(args.images) if args.images else None
    for number, _, raw in iter_raw_lines(path):
        if not raw.strip():
            continue
        key = make_key(NAME, _id_hint(raw, tsv, f"{split}_line{number}"))
        yield Candidate(key, f"{path}:{number}", functools.partial(_build, raw, tsv, key, source, args))
