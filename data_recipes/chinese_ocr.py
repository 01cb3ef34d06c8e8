"""Chinese text recognition (OFA-CN's OCR fine-tuning: a text-line image read as a caption) -> one sample per line.

Inputs (OFA's OCR TSV, as ``run_scripts/ocr/evaluate_ocr_base.sh`` reads it with ``selected_cols=0,1,2``)
  --tsv        [SPLIT=]FILE (repeatable; bare FILE = train), e.g. val=ocr_scene_val.tsv; columns (tab separated):
               uniq_id, base64 image of the text line, the line's text
Fields: uniq_id, text, width, height. Train the ``ocr`` task with tokenizer=ofa_bert_cn (OFA-CN's instruction
"图片上的文字是什么?").
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from pathlib import Path

from data_recipes.common import BadSample, Candidate, Sample, make_key
from data_recipes.common.checks import check_image, decode_utf8, require_text
from data_recipes.common.files import iter_raw_lines, parse_split_paths, require_file
from data_recipes.common.splits import order_splits
from data_recipes.ofa_tsv import _RowReader, decode_base64_image

NAME = "chinese_ocr"
DESCRIPTION = "Chinese OCR lines, OFA's OCR TSV (uniq_id, base64 image, text) -> ocr samples"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tsv", action="append", required=True, metavar="[SPLIT=]FILE", help="one split's TSV (repeatable)"
    )


def _files(args: argparse.Namespace) -> dict[str, Path]:
    return {
        split: require_file(path, f"the OCR TSV for split {split}")
        for split, path in parse_split_paths(args.tsv, "train", "--tsv").items()
    }


def available_splits(args: argparse.Namespace) -> list[str]:
    return order_splits(_files(args))


def _build(reader: _RowReader, offset: int, length: int, key: str, args: argparse.Namespace) -> Sample:
    row = decode_utf8(reader.read(offset, length), "row").rstrip("\r").split("\t")
    if len(row) < 3:
        raise BadSample(f"bad row: {len(row)} columns, expected 3 (uniq_id, image, text)")
    uniq_id, b64, text = row[:3]
    image = check_image(decode_base64_image(b64), full_decode=args.full_decode)
    uid = int(uniq_id) if uniq_id.strip().isdigit() else uniq_id.strip()
    fields = {
        "uniq_id": uid,
        "text": require_text(text, "text", max_chars=args.max_text_chars),
        "width": image.width,
        "height": image.height,
    }
    return Sample(key, fields, image.data, image.ext, [])


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    path = _files(args)[split]
    reader = _RowReader(path)
    for number, offset, raw in iter_raw_lines(path):
        if raw.strip():
            key = make_key("chinese_ocr", split, number)
            yield Candidate(key, f"{path}:{number}", functools.partial(_build, reader, offset, len(raw), key, args))
