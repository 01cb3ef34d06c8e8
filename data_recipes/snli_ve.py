"""SNLI-VE (jsonl in the official layout + Flickr30k images) -> one sample per (image, hypothesis) pair.

Inputs
  --jsonl-dir  folder with snli_ve_<split>.jsonl (official: train, dev, test); each line holds
               Flikr30kID (sic, e.g. "3416050480.jpg"), sentence1 (premise, a Flickr30k caption),
               sentence2 (hypothesis), gold_label, pairID
  --images     roots holding the Flikr30kID file names (flickr30k_images/)
Fields: image_id (file name without extension), premise, hypothesis, label (entailment | neutral |
contradiction), pair_id, width, height; image under jpg/png. Lines that are not UTF-8 or not JSON are skips.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path

from data_recipes.common import BadSample, Candidate, PrepareError, Sample, make_key
from data_recipes.common.checks import check_image, decode_utf8, require_field, require_text
from data_recipes.common.files import iter_raw_lines, require_dir, run_cache
from data_recipes.common.image_source import ImageSource
from data_recipes.common.splits import order_splits

NAME = "snli_ve"
DESCRIPTION = "SNLI-VE (snli_ve_<split>.jsonl + Flickr30k images) -> one sample per image/hypothesis pair"
LABELS = ("entailment", "neutral", "contradiction")
_FILE = re.compile(r"^snli_ve_(?P<split>[A-Za-z0-9_+\-]+)\.jsonl$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jsonl-dir", type=Path, required=True, help="folder with snli_ve_<split>.jsonl")
    parser.add_argument("--images", type=Path, nargs="+", required=True, help="Flickr30k image roots")


def _files(args: argparse.Namespace) -> dict[str, Path]:
    folder = require_dir(args.jsonl_dir, "the SNLI-VE folder (holding snli_ve_train.jsonl ...)")
    files = {m["split"]: p for p in sorted(folder.iterdir()) if (m := _FILE.match(p.name))}
    if not files:
        raise PrepareError(f"expected snli_ve_<split>.jsonl files (e.g. snli_ve_train.jsonl) in {folder}, found none")
    return files


def available_splits(args: argparse.Namespace) -> list[str]:
    return order_splits(_files(args))


@run_cache(maxsize=16)
def _image(source: ImageSource, name: str, full_decode: bool):
    return check_image(source.read(name), full_decode=full_decode)


def _build(raw: bytes, key: str, source: ImageSource, args: argparse.Namespace) -> Sample:
    try:
        record = json.loads(decode_utf8(raw, "line"))
    except json.JSONDecodeError as exc:
        raise BadSample(f"bad json: {exc}") from None
    image_name = require_text(require_field(record, "Flikr30kID"), "Flikr30kID")
    label = require_text(require_field(record, "gold_label"), "gold_label")
    if label not in LABELS:
        raise BadSample(f"bad label: gold_label {label!r} is not one of {', '.join(LABELS)}")
    fields = {
        "image_id": image_name.rsplit("/", 1)[-1].rsplit(".", 1)[0],
        "premise": require_text(require_field(record, "sentence1"), "sentence1", max_chars=args.max_text_chars),
        "hypothesis": require_text(require_field(record, "sentence2"), "sentence2", max_chars=args.max_text_chars),
        "label": label,
        "pair_id": record.get("pairID"),
    }
    image = _image(source, image_name, args.full_decode)
    fields.update(width=image.width, height=image.height)
    return Sample(key, fields, image.data, image.ext)


def _pair_id(raw: bytes) -> str | None:
    """The pairID without a full parse of a possibly bad line (the key must exist before building)."""
    match = re.search(rb'"pairID"\s*:\s*"([^"]{1,200})"', raw)
    return match.group(1).decode("utf-8", "replace") if match else None


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    path = _files(args)[split]
    source = ImageSource(args.images)
    for number, _, raw in iter_raw_lines(path):
        if not raw.strip():
            continue
        pair_id = _pair_id(raw)
        key = make_key(NAME, pair_id) if pair_id else make_key(NAME, split, f"line{number}")
        yield Candidate(key, f"{path}:{number}", functools.partial(_build, raw, key, source, args))
