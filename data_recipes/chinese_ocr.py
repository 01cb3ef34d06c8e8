"""Chinese text recognition (OFA-CN's OCR fine-tuning: a text-line image read as a caption) -> one sample per line.

Inputs (OFA's OCR TSV, as ``run_scripts/ocr/evaluate_ocr_base.sh`` reads it with ``selected_cols=0,1,2``)
  --tsv        [SPLIT=]FILE (repeatable; bare FILE = train), e.g. val=ocr_scene_val.tsv; columns (tab separated):
               uniq_id, base64 image of the text line, the line's text
Fields: uniq_id, text, width, height. Train the ``ocr`` task with tokenizer=ofa_bert_cn (OFA-CN's instruction
"图片上的文字是什么?").
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from data_recipes.common import BadSample, Candidate, Sample
from data_recipes.common.checks import check_image, decode_utf8, require_text
from data_recipes.common.splits import order_splits
from data_recipes.ofa_tsv import _RowReader, decode_base64_image, row_candidates, split_files

NAME = "chinese_ocr"
DESCRIPTION = "Chinese OCR lines, OFA's OCR TSV (uniq_id, base64 image, text) -> ocr samples"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tsv", action="append", required=True, metavar="[SPLIT=]FILE", help="one split's TSV (repeatable)"
    )


def _files(args: argparse.Namespace) -> dict[str, Path]:
    return split_files(args, "the OCR TSV")


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
    return row_candidates(_files(args)[split], "chinese_ocr", split, _build, args)
