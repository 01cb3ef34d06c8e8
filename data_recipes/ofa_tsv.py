"""OFA's released TSV files (images as base64) -> the same sample schemas as the matching source recipes.

Inputs
  --tsv        [SPLIT=]FILE (repeatable; bare FILE = train), e.g. train=caption_stage1_train.tsv
  --kind       which OFA file layout (columns, tab separated):
    caption        uniq_id, image_id, caption(s, "&&"-joined), objects, image_b64
    vqa            question_id, image_id, question, refs ("conf|!+answer&&..."), objects, image_b64
    refcoco        uniq_id, image_id, expression, "x0,y0,x1,y1", image_b64
    snli_ve        uniq_id, image_id, image_b64, hypothesis, premise, label
    pretrain_vl    uniq_id, image_b64, caption, question, refs, gt_objects, dataset_name, type
                   (type caption -> caption fields, qa -> vqa fields, visual_grounding -> refcoco fields)
    detection      uniq_id, image_b64, "x0,y0,x1,y1,cat_id,cat_name&&..."
    imagenet       image_b64, label_id (1-based), synset_words
    image_gen      uniq_id, codes (space separated), caption
    pretrain_image uniq_id, image_b64, codes
    pretrain_text  uniq_id, text
    gigaword       article, summary
    glue           OFA's GLUE columns for --glue-task (see `ofa-prepare glue --help`)
Base64 (standard or URL-safe alphabet) is decoded back to the original encoded image bytes, which are kept
as they are. Every sample also has "kind" and, where the row has one, "uniq_id". Files are read by byte
offset, so --shuffle does not hold the (large) rows in memory.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

from data_recipes import glue
from data_recipes.common import BadSample, Candidate, PrepareError, Sample, make_key
from data_recipes.common.checks import check_image, clip_box, decode_utf8, require_int, require_number, require_text
from data_recipes.common.files import iter_raw_lines, parse_split_paths, require_file
from data_recipes.common.splits import order_splits
from data_recipes.common.vqa_answers import format_ofa_refs, parse_ofa_refs
from data_recipes.vq_codes import parse_codes

NAME = "ofa_tsv"
DESCRIPTION = "OFA's released TSV files (base64 images; --kind caption|vqa|refcoco|...) -> the same schemas"
_B64_URLSAFE = str.maketrans("-_", "+/")


def decode_base64_image(text: str) -> bytes:
    """Base64 in either alphabet, padding optional -> raw bytes; anything else is a skip."""
    cleaned = "".join(text.split()).translate(_B64_URLSAFE)
    try:
        return base64.b64decode(cleaned + "=" * (-len(cleaned) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadSample(f"bad base64: {exc}") from None


def _cells(row: list[str], count: int) -> list[str]:
    if len(row) < count:
        raise BadSample(f"bad row: {len(row)} columns, expected {count}")
    return row


def _image_fields(b64: str, args: argparse.Namespace) -> tuple[dict, bytes, str]:
    image = check_image(decode_base64_image(b64), full_decode=args.full_decode)
    return {"width": image.width, "height": image.height}, image.data, image.ext


def _int_or_text(value: str) -> int | str:
    value = value.strip()
    return int(value) if value.lstrip("-").isdigit() else value


def _box(text: str, width: int, height: int) -> list[float]:
    parts = text.split(",")
    if len(parts) != 4:
        raise BadSample(f"bad box: {text!r} is not x0,y0,x1,y1")
    return clip_box([require_number(p, "box") for p in parts], width, height)


def _answers(refs: str) -> dict:
    conf = parse_ofa_refs(refs)
    return {
        "answers": [],
        "answer_conf": conf,
        "ofa_refs": format_ofa_refs(conf),
        "multiple_choice_answer": max(sorted(conf), key=conf.get),
        "answer_type": None,
        "question_type": None,
    }


def _objects(text: str) -> list[str]:
    return [o.strip() for o in text.split("&&") if o.strip()]


def _caption_row(row, args):
    uniq_id, image_id, captions, _, b64 = _cells(row, 5)[:5]
    fields, data, ext = _image_fields(b64, args)
    refs = [require_text(c, "caption", max_chars=args.max_text_chars) for c in captions.split("&&") if c.strip()]
    if not refs:
        raise BadSample("empty text: no caption")
    fields.update(uniq_id=_int_or_text(uniq_id), image_id=_int_or_text(image_id), captions=refs)
    return fields, data, ext


def _vqa_row(row, args):
    question_id, image_id, question, refs, objects, b64 = _cells(row, 6)[:6]
    fields, data, ext = _image_fields(b64, args)
    fields.update(
        question_id=_int_or_text(question_id),
        image_id=_int_or_text(image_id),
        question=require_text(question, "question", max_chars=args.max_text_chars),
        objects=_objects(objects),
        **_answers(refs),
    )
    return fields, data, ext


def _refcoco_row(row, args):
    uniq_id, image_id, expression, box, b64 = _cells(row, 5)[:5]
    fields, data, ext = _image_fields(b64, args)
    fields.update(
        ref_id=_int_or_text(uniq_id),
        uniq_id=_int_or_text(uniq_id),
        image_id=_int_or_text(image_id),
        expression=require_text(expression, "expression", max_chars=args.max_text_chars),
        box=_box(box, fields["width"], fields["height"]),
        category_id=None,
    )
    return fields, data, ext


def _snli_ve_row(row, args):
    uniq_id, image_id, b64, hypothesis, premise, label = _cells(row, 6)[:6]
    label = label.strip()
    if label not in ("entailment", "neutral", "contradiction"):
        raise BadSample(f"bad label: {label!r}")
    fields, data, ext = _image_fields(b64, args)
    fields.update(
        uniq_id=_int_or_text(uniq_id),
        image_id=_int_or_text(image_id),
        label=label,
        hypothesis=require_text(hypothesis, "hypothesis", max_chars=args.max_text_chars),
        premise=require_text(premise, "premise", max_chars=args.max_text_chars),
    )
    return fields, data, ext


def _pretrain_vl_row(row, args):
    uniq_id, b64, caption, question, refs, gt_objects, dataset_name, row_type = _cells(row, 8)[:8]
    fields, data, ext = _image_fields(b64, args)
    row_type = row_type.strip()
    fields.update(
        uniq_id=_int_or_text(uniq_id), task=row_type, dataset_name=dataset_name.strip(), gt_objects=_objects(gt_objects)
    )
    if row_type == "caption":
        fields["captions"] = [require_text(caption, "caption", max_chars=args.max_text_chars)]
    elif row_type == "qa":
        fields.update(question=require_text(question, "question", max_chars=args.max_text_chars), **_answers(refs))
    elif row_type == "visual_grounding":
        fields.update(
            expression=require_text(caption, "caption", max_chars=args.max_text_chars),
            box=_box(refs, fields["width"], fields["height"]),
        )
    else:
        raise BadSample(f"bad type: {row_type!r} is not caption, qa or visual_grounding")
    return fields, data, ext


def _detection_row(row, args):
    uniq_id, b64, objects = _cells(row, 3)[:3]
    fields, data, ext = _image_fields(b64, args)
    boxes, labels, category_ids, warnings = [], [], [], []
    for item in _objects(objects):
        parts = item.split(",", 5)
        try:
            if len(parts) != 6:
                raise BadSample(f"bad box: {item!r} is not x0,y0,x1,y1,cat_id,cat_name")
            box = clip_box([require_number(p, "box") for p in parts[:4]], fields["width"], fields["height"])
            category_id = require_int(parts[4], "cat_id")
            label = require_text(parts[5], "cat_name")
        except BadSample as exc:
            warnings.append(f"box dropped: {str(exc).split(':', 1)[0]}")
            continue
        boxes.append(box)
        labels.append(label)
        category_ids.append(category_id)
    if not boxes:
        raise BadSample("no boxes: the row has no valid box")
    fields.update(uniq_id=_int_or_text(uniq_id), boxes=boxes, labels=labels, category_ids=category_ids)
    return fields, data, ext, warnings


def _imagenet_row(row, args):
    b64, label_id, words = _cells(row, 3)[:3]
    fields, data, ext = _image_fields(b64, args)
    label = require_int(label_id, "label_id") - 1
    if label < 0:
        raise BadSample(f"bad label: {label_id!r} (OFA's ImageNet TSV counts from 1)")
    words = require_text(words, "synset_words")
    fields.update(label=label, class_name=words.split(",")[0].strip(), synset_words=words)
    return fields, data, ext


def _image_gen_row(row, args):
    uniq_id, codes, caption = _cells(row, 3)[:3]
    codes = parse_codes(codes, args.codebook_size, None)
    return (
        {
            "uniq_id": _int_or_text(uniq_id),
            "image_id": uniq_id.strip(),
            "codes": codes,
            "code_grid": int(len(codes) ** 0.5),
            "caption": require_text(caption, "caption", max_chars=args.max_text_chars),
        },
        None,
        None,
    )


def _pretrain_image_row(row, args):
    uniq_id, b64, codes = _cells(row, 3)[:3]
    fields, data, ext = _image_fields(b64, args)
    codes = parse_codes(codes, args.codebook_size, None)
    fields.update(
        uniq_id=_int_or_text(uniq_id), image_id=uniq_id.strip(), codes=codes, code_grid=int(len(codes) ** 0.5)
    )
    return fields, data, ext


def _pretrain_text_row(row, args):
    uniq_id, text = _cells(row, 2)[:2]
    return (
        {"uniq_id": _int_or_text(uniq_id), "text": require_text(text, "text", max_chars=args.max_text_chars)},
        None,
        None,
    )


def _gigaword_row(row, args):
    article, summary = _cells(row, 2)[:2]
    return (
        {
            "article": require_text(article, "article", max_chars=args.max_text_chars),
            "summary": require_text(summary, "summary", max_chars=args.max_text_chars),
        },
        None,
        None,
    )


ROW_PARSERS: dict[str, Callable[[list[str], argparse.Namespace], tuple]] = {
    "caption": _caption_row,
    "vqa": _vqa_row,
    "refcoco": _refcoco_row,
    "snli_ve": _snli_ve_row,
    "pretrain_vl": _pretrain_vl_row,
    "detection": _detection_row,
    "imagenet": _imagenet_row,
    "image_gen": _image_gen_row,
    "pretrain_image": _pretrain_image_row,
    "pretrain_text": _pretrain_text_row,
    "gigaword": _gigaword_row,
}
KINDS = sorted(ROW_PARSERS) + ["glue"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tsv",
        action="append",
        required=True,
        metavar="[SPLIT=]FILE",
        help="an OFA TSV file for one split (repeatable; bare FILE = train)",
    )
    parser.add_argument("--kind", choices=KINDS, required=True, help="the file's column layout")
    parser.add_argument("--glue-task", choices=sorted(glue.TASKS), default=None, help="with --kind glue")
    parser.add_argument("--codebook-size", type=int, default=8192, help="for image_gen / pretrain_image codes")


def split_files(args: argparse.Namespace, what: str) -> dict[str, Path]:
    """``{split: file}`` of the ``--tsv [SPLIT=]FILE`` options (bare FILE = train), each checked to exist."""
    return {
        split: require_file(path, f"{what} for split {split}")
        for split, path in parse_split_paths(args.tsv, "train", "--tsv").items()
    }


def _files(args: argparse.Namespace) -> dict[str, Path]:
    return split_files(args, f"the OFA {args.kind} TSV")


def available_splits(args: argparse.Namespace) -> list[str]:
    if args.kind == "glue" and not args.glue_task:
        raise PrepareError("--kind glue needs --glue-task")
    return order_splits(_files(args))


class _RowReader:
    """Reads one line by byte offset; the file is opened once, on first use."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = None

    def read(self, offset: int, length: int) -> bytes:
        if self._handle is None:
            self._handle = open(self.path, "rb")
        self._handle.seek(offset)
        return self._handle.read(length)


def _build(reader: _RowReader, offset: int, length: int, key: str, args: argparse.Namespace) -> Sample:
    raw = reader.read(offset, length)
    if args.kind == "glue":
        spec = glue.TASKS[args.glue_task]
        glue_args = argparse.Namespace(**{**vars(args), "task": args.glue_task, "layout": "ofa"})
        columns = (spec.ofa_columns[0], spec.ofa_columns[1] if spec.text2 else None, spec.ofa_columns[-1])
        sample = glue._build(raw, key, columns, glue_args)
        sample.fields["kind"] = "glue"
        return sample
    row = decode_utf8(raw, "row").split("\t")
    result = ROW_PARSERS[args.kind](row, args)
    fields, data, ext = result[:3]
    warnings = result[3] if len(result) > 3 else []
    fields["kind"] = args.kind
    return Sample(key, fields, data, ext, warnings)


def row_candidates(path: Path, prefix: str, split: str, build, args: argparse.Namespace) -> Iterator[Candidate]:
    """One candidate per non-empty line of a TSV, built in a worker by ``build(reader, offset, length, key, args)``
    from the line's byte range (the file is read there, not here)."""
    reader = _RowReader(path)
    for number, offset, raw in iter_raw_lines(path):
        if raw.strip():
            key = make_key(prefix, split, number)
            yield Candidate(key, f"{path}:{number}", functools.partial(build, reader, offset, len(raw), key, args))


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    return row_candidates(_files(args)[split], f"ofa_{args.kind}", split, _build, args)
