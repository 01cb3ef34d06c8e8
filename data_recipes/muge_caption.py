"""MUGE Caption (E-commerce IC; OFA-CN's MUGE caption fine-tuning) -> one sample per image, all its captions.

Inputs (MUGE's release, read as MUGE-2021/image-caption-baseline reads it)
  --root       folder with IC_{train,valid,test}.jsonl ({"image_id": ..., "text": [caption, ...]} per line) and
               IC_{train,valid,test}.tsv ("image_id<TAB>base64 image" per line); the ``valid`` split is written
               as ``val``. An image without captions in the jsonl (MUGE's test set) is a counted skip.
Fields: image_id, captions, width, height. Train with tokenizer=ofa_bert_cn (the caption task then uses OFA-CN's
Chinese instruction, MUGE decoding and the Chinese caption metrics).
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Iterator
from pathlib import Path

from data_recipes.common import BadSample, Candidate, PrepareError, Sample, make_key
from data_recipes.common.checks import check_image, decode_utf8, require_text
from data_recipes.common.files import iter_raw_lines, require_dir, run_cache
from data_recipes.common.splits import order_splits
from data_recipes.ofa_tsv import _RowReader, decode_base64_image

NAME = "muge_caption"
DESCRIPTION = "MUGE Caption (IC_{split}.jsonl captions + IC_{split}.tsv base64 images) -> all captions per image"
SPLITS = {"train": "train", "valid": "val", "test": "test"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True, help="folder with MUGE's IC_{split}.jsonl and .tsv files")


def _files(args: argparse.Namespace, muge_split: str) -> tuple[Path, Path]:
    root = require_dir(args.root, "the MUGE Caption folder (IC_train.jsonl, IC_train.tsv, ...)")
    return root / f"IC_{muge_split}.jsonl", root / f"IC_{muge_split}.tsv"


def available_splits(args: argparse.Namespace) -> list[str]:
    found = [ours for muge, ours in SPLITS.items() if all(p.is_file() for p in _files(args, muge))]
    if not found:
        raise PrepareError(f"no IC_<split>.jsonl + IC_<split>.tsv pair in {args.root}")
    return order_splits(found)


@run_cache()
def _captions(path: Path) -> dict[str, list[str]]:
    """image_id -> captions of a MUGE jsonl (a line without a usable ``text`` list gives none)."""
    out: dict[str, list[str]] = {}
    for _, _, raw in iter_raw_lines(path):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        texts = item.get("text") if isinstance(item, dict) else None
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(item, dict) and "image_id" in item:
            out[str(item["image_id"])] = [t for t in texts or [] if isinstance(t, str) and t.strip()]
    return out


def _build(reader: _RowReader, offset: int, length: int, key: str, jsonl: Path, args) -> Sample:
    row = decode_utf8(reader.read(offset, length), "row").rstrip("\r").split("\t")
    if len(row) < 2:
        raise BadSample(f"bad row: {len(row)} columns, expected image_id and base64 image")
    image_id = row[0].strip()
    captions = [require_text(c, "caption", max_chars=args.max_text_chars) for c in _captions(jsonl).get(image_id, [])]
    if not captions:
        raise BadSample("empty text: no caption for this image")
    image = check_image(decode_base64_image(row[1]), full_decode=args.full_decode)
    fields = {"image_id": image_id, "captions": captions, "width": image.width, "height": image.height}
    return Sample(key, fields, image.data, image.ext, [])


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    muge = next(m for m, ours in SPLITS.items() if ours == split)
    jsonl, tsv = _files(args, muge)
    reader = _RowReader(tsv)
    for number, offset, raw in iter_raw_lines(tsv):
        if not raw.strip():
            continue
        key = make_key("muge", split, number)
        yield Candidate(key, f"{tsv}:{number}", functools.partial(_build, reader, offset, len(raw), key, jsonl, args))
