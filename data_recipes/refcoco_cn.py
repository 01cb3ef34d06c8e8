"""RefCOCO-CN, RefCOCO+-CN, RefCOCOg-CN (OFA-CN's Chinese referring expressions) -> one sample per expression.

Inputs (OFA-CN's release format, as ``run_scripts/refcoco/evaluate_refcoco_cn.sh`` reads it with
``selected_cols=0,3,1,2``: "id, image, text, box")
  --tsv        [SPLIT=]FILE (repeatable; bare FILE = train), e.g. val=refcoco_val.tsv; columns (tab separated):
               uniq_id, expression, "x0,y0,x1,y1" (pixels), base64 image
Fields: the refcoco recipe's (ref_id, uniq_id, image_id, expression, box, category_id, width, height); image_id is
the uniq_id (the file has none). Train with tokenizer=ofa_bert_cn: the grounding task uses OFA-CN's instruction.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

from data_recipes.common import BadSample, Candidate, Sample
from data_recipes.common.checks import check_image, clip_box, decode_utf8, require_number, require_text
from data_recipes.common.splits import order_splits
from data_recipes.ofa_tsv import _RowReader, decode_base64_image, row_candidates, split_files

NAME = "refcoco_cn"
DESCRIPTION = "RefCOCO/+/g-CN, OFA-CN's TSV (uniq_id, expression, x0,y0,x1,y1, base64 image) -> refcoco samples"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tsv", action="append", required=True, metavar="[SPLIT=]FILE", help="one split's TSV (repeatable)"
    )


def _files(args: argparse.Namespace) -> dict[str, Path]:
    return split_files(args, "the RefCOCO-CN TSV")


def available_splits(args: argparse.Namespace) -> list[str]:
    return order_splits(_files(args))


def _build(reader: _RowReader, offset: int, length: int, key: str, args: argparse.Namespace) -> Sample:
    row = decode_utf8(reader.read(offset, length), "row").rstrip("\r").split("\t")
    if len(row) < 4:
        raise BadSample(f"bad row: {len(row)} columns, expected 4 (uniq_id, expression, box, image)")
    uniq_id, expression, box, b64 = row[:4]
    image = check_image(decode_base64_image(b64), full_decode=args.full_decode)
    parts = box.split(",")
    if len(parts) != 4:
        raise BadSample(f"bad box: {box!r} is not x0,y0,x1,y1")
    uid = int(uniq_id) if uniq_id.strip().isdigit() else uniq_id.strip()
    fields = {
        "ref_id": uid,
        "uniq_id": uid,
        "image_id": uid,
        "expression": require_text(expression, "expression", max_chars=args.max_text_chars),
        "box": clip_box([require_number(p, "box") for p in parts], image.width, image.height),
        "category_id": None,
        "width": image.width,
        "height": image.height,
    }
    return Sample(key, fields, image.data, image.ext, [])


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    return row_candidates(_files(args)[split], "refcoco_cn", split, _build, args)
