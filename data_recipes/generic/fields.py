"""From one raw record (a dict from a table row, a COCO entry, a folder, a HF dataset row) to one shard sample.

`--task` picks a profile: the fields the kit's task reads from a sample's JSON, each with a kind that says how a
raw value is checked and converted. `--map OUT=IN` names the record's column for each output field; unmapped
profile fields are looked up under their own name (and their aliases). Fields mapped beyond the profile are
copied as they are (the template task reads any field); an output name `box` / `*_box` is converted as a box,
`boxes` / `*_boxes` as a list of boxes.

Kinds: text (a non-empty UTF-8 string; numbers become text), texts (a list of them; a plain string is one item;
a string holding a JSON list is parsed; with --list-sep a string is split), box (4 numbers in --box-format,
converted to pixel [x0, y0, x1, y1] and checked against the image size), boxes (a list of boxes), number(s), int.

VQA answers become `answers` (the raw list) and `answer_conf` ({answer: weight}, what the VQA task trains on):
with `answer_weights` (one number per answer) the weights as given; with a list of human answers the VQA
agreement score 0.3 / 0.6 / 0.9 / 1.0 for 1 / 2 / 3 / 4+ equal answers; a single `answer` weighs 1.0.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from data_recipes.common.checks import check_image, require_int, require_number, require_text
from data_recipes.common.errors import BadSample
from data_recipes.common.sample import Sample
from data_recipes.generic.images import read_image_value

#: Weight of an answer given by n of the human answers (VQA's min(1, n / 3) accuracy, as OFA's VQA data).
VQA_AGREEMENT_SCORE = {1: 0.3, 2: 0.6, 3: 0.9}
BOX_FORMATS = ("xyxy", "xywh", "cxcywh", "xyxy-norm", "xywh-norm", "cxcywh-norm")
#: A box may overhang the image by this many pixels (rounding in annotation tools); it is then clipped.
BOX_TOLERANCE_PX = 1.0


@dataclass(frozen=True)
class Profile:
    """What one task reads: required and optional fields with their kinds; whether samples carry an image."""

    description: str
    required: dict[str, str]
    optional: dict[str, str] = field(default_factory=dict)
    image: bool = True


_VQA_OPTIONAL = {"answer": "text", "answers": "texts", "answer_weights": "numbers", "objects": "texts"}
_BOX_PROFILE = {"expression": "text", "box": "box"}

TASKS: dict[str, Profile] = {
    "caption": Profile("captioning: captions (one or a list per image)", {"captions": "texts"}),
    "vqa": Profile(
        "VQA: question + answer, or answers (+ answer_weights per answer); none for test rows",
        {"question": "text"},
        _VQA_OPTIONAL,
    ),
    "grounding": Profile("visual grounding / referring expressions: expression + box", _BOX_PROFILE),
    "grounded_caption": Profile("grounded captioning: expression (the region's caption) + box", _BOX_PROFILE),
    "detection": Profile("detection: boxes + labels (lists of equal length)", {"boxes": "boxes", "labels": "texts"}),
    "image_classification": Profile(
        "classification: class_name (+ label, an index)", {"class_name": "text"}, {"label": "int"}
    ),
    "image_text_matching": Profile(
        "image-text matching: captions (+ negative_captions)", {"captions": "texts"}, {"negative_captions": "texts"}
    ),
    "text": Profile(
        "text-only tasks (gigaword: article + summary; text_infilling: text; glue: sentence1, "
        "sentence2, label): the mapped fields, no image",
        {},
        image=False,
    ),
    "fields": Profile("any fields with an image (the YAML template task): the mapped fields", {}),
}
TASK_ALIASES = {
    "classification": "image_classification",
    "itm": "image_text_matching",
    "refexp": "grounding",
    "refcoco": "grounding",
    "template": "fields",
    "text_only": "text",
}
#: Other names a user may write on the left of --map (or that a record may use) for a profile field.
FIELD_ALIASES = {
    "captions": ("caption",),
    "expression": ("sentence", "phrase", "referring_expression"),
    "class_name": ("class", "category"),
    "labels": ("categories",),
    "boxes": ("bboxes",),
    "box": ("bbox",),
    "answers": (),
    "answer": (),
    "question": (),
}
_ALIAS_TO_FIELD = {alias: name for name, aliases in FIELD_ALIASES.items() for alias in aliases}


def task_profile(task: str) -> tuple[str, Profile]:
    name = TASK_ALIASES.get(task, task)
    if name not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return name, TASKS[name]


def canonical_field(task: str, name: str) -> str:
    """'caption' -> 'captions' etc. where the task reads the canonical name; other names stay."""
    profile = TASKS[task]
    known = {**profile.required, **profile.optional}
    if name not in known and _ALIAS_TO_FIELD.get(name) in known:
        return _ALIAS_TO_FIELD[name]
    return name


def kind_of(task: str, name: str) -> str:
    profile = TASKS[task]
    known = {**profile.required, **profile.optional}
    if name in known:
        return known[name]
    if name == "box" or name.endswith("_box"):
        return "box"
    if name == "boxes" or name.endswith("_boxes"):
        return "boxes"
    return "any"


@dataclass(frozen=True)
class Spec:
    """Everything a worker needs to turn a record into a sample (picklable, no open files)."""

    task: str
    field_map: tuple[tuple[str, str], ...]  # (output field, record column)
    image_column: str | None  # None: the first of IMAGE_COLUMNS present
    image_roots: tuple[Path, ...]
    box_format: str | None
    list_sep: str | None
    max_text_chars: int
    full_decode: bool
    needs_image: bool


def _parse_json_list(value: str, name: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise BadSample(f"bad value: {name!r} looks like JSON but is not ({exc.msg})") from None


def as_text(value: Any, name: str, max_chars: int) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(int(value)) if float(value).is_integer() else str(value)
    return require_text(value, name, max_chars=max_chars)


def as_list(value: Any, name: str, list_sep: str | None) -> list:
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = _parse_json_list(text, name)
        elif list_sep:
            value = [part for part in text.split(list_sep)]
        else:
            value = [value]
    if hasattr(value, "tolist"):  # numpy arrays from Parquet / datasets
        value = value.tolist()
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise BadSample(f"bad type: {name!r} is {type(value).__name__}, expected a list")
    return value


def as_texts(value: Any, name: str, spec: Spec) -> list[str]:
    items = [
        as_text(v, name, spec.max_text_chars)
        for v in as_list(value, name, spec.list_sep)
        if not (isinstance(v, str) and not v.strip())
    ]
    if not items:
        raise BadSample(f"empty text: {name!r} holds no text")
    return items


def _box_numbers(value: Any, name: str) -> list[float]:
    if isinstance(value, str):
        text = value.strip()
        value = _parse_json_list(text, name) if text.startswith("[") else text.replace(",", " ").split()
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, dict) and all(k in value for k in ("x", "y", "w", "h")):
        value = [value["x"], value["y"], value["w"], value["h"]]
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise BadSample(f"bad box: {name!r} is {str(value)[:80]!r}, expected 4 numbers")
    return [require_number(v, name) for v in value]


def convert_box(value: Any, name: str, box_format: str | None, width: int, height: int) -> list[float]:
    """A raw box in `box_format` -> pixel [x0, y0, x1, y1] inside the image (1 px overhang clipped)."""
    if box_format is None:
        raise BadSample(f"bad box: {name!r} needs --box-format ({' | '.join(BOX_FORMATS)})")
    a, b, c, d = _box_numbers(value, name)
    base, normalised = box_format.split("-")[0], box_format.endswith("-norm")
    if normalised:
        if min(a, b, c, d) < -1e-6 or max(a, b, c, d) > 1 + 1e-6:
            raise BadSample(
                f"box outside image: {name!r} {[a, b, c, d]} is not normalised to [0, 1] (--box-format {box_format})"
            )
    if base == "xywh":
        a, b, c, d = a, b, a + c, b + d
    elif base == "cxcywh":
        a, b, c, d = a - c / 2, b - d / 2, a + c / 2, b + d / 2
    if normalised:
        a, b, c, d = a * width, b * height, c * width, d * height
    if not all(math.isfinite(v) for v in (a, b, c, d)) or c <= a or d <= b:
        raise BadSample(
            f"bad box: {name!r} {[round(v, 3) for v in (a, b, c, d)]} is inverted or empty (as {box_format})"
        )
    tol = BOX_TOLERANCE_PX
    if a < -tol or b < -tol or c > width + tol or d > height + tol:
        raise BadSample(
            f"box outside image: {name!r} {[round(v, 3) for v in (a, b, c, d)]} (as {box_format}) "
            f"leaves the {width}x{height} image"
        )
    return [round(min(max(v, 0.0), lim), 3) for v, lim in ((a, width), (b, height), (c, width), (d, height))]


def _lookup(record: dict, spec: Spec, out: str) -> Any:
    mapped = dict(spec.field_map)
    if out in mapped:
        return record.get(mapped[out])
    for name in (out, *FIELD_ALIASES.get(out, ())):
        if name in record:
            return record[name]
    return None


def convert(kind: str, value: Any, name: str, spec: Spec, size: tuple[int, int] | None) -> Any:
    if kind == "text":
        return as_text(value, name, spec.max_text_chars)
    if kind == "texts":
        return as_texts(value, name, spec)
    if kind in ("box", "boxes"):
        if size is None:
            raise BadSample(f"bad box: {name!r} needs an image")
        if kind == "box":
            return convert_box(value, name, spec.box_format, *size)
        return [
            convert_box(v, f"{name}[{i}]", spec.box_format, *size) for i, v in enumerate(as_list(value, name, None))
        ]
    if kind == "int":
        return require_int(value, name)
    if kind == "numbers":
        return [require_number(v, name) for v in as_list(value, name, spec.list_sep)]
    return _plain(value, name)


def _plain(value: Any, name: str) -> Any:
    """Any JSON-able value; strings must be valid UTF-8 (numpy values become Python ones)."""
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadSample(f"non-UTF-8 text: {name!r} holds undecodable bytes") from None
    elif isinstance(value, (bytes, bytearray)):
        raise BadSample(f"bad type: {name!r} holds bytes; map only text, number and list columns")
    elif isinstance(value, dict):
        return {str(k): _plain(v, name) for k, v in value.items()}
    elif isinstance(value, (list, tuple)):
        return [_plain(v, name) for v in value]
    return value


def _vqa_answers(fields: dict) -> None:
    """answer / answers (+ answer_weights) -> answers (raw) and answer_conf ({answer: weight})."""
    answer, answers, weights = fields.pop("answer", None), fields.get("answers"), fields.pop("answer_weights", None)
    if weights is not None:
        if answers is None or len(weights) != len(answers):
            raise BadSample(f"bad answers: {len(weights)} answer_weights for {len(answers) if answers else 0} answers")
        if any(w < 0 for w in weights):
            raise BadSample("bad answers: a negative answer weight")
        conf: dict[str, float] = {}
        for a, w in zip(answers, weights):
            conf[a] = max(conf.get(a, 0.0), w)
    elif answers is not None:
        counts = Counter(" ".join(a.split()) for a in answers)
        conf = {a: VQA_AGREEMENT_SCORE.get(n, 1.0) for a, n in counts.most_common()}
    elif answer is not None:
        fields["answers"] = [answer]
        conf = {answer: 1.0}
    else:
        fields["answers"], conf = [], {}
    fields["answer_conf"] = conf


def build_sample(spec: Spec, record: dict, key: str, row: int, image_id: str | None = None) -> Sample:
    """One record -> Sample, or BadSample naming the first problem. Picklable (runs in worker processes)."""
    if not isinstance(record, dict):
        raise BadSample(f"bad record: expected an object, got {type(record).__name__}")
    profile = TASKS[spec.task]
    fields: dict[str, Any] = {"row": row}
    image = None
    size = None
    if spec.needs_image:
        data, file_name = read_image_value(record, spec.image_column, spec.image_roots)
        image = check_image(data, full_decode=spec.full_decode)
        size = (image.width, image.height)
        fields.update(width=image.width, height=image.height)
        if file_name:
            fields["file_name"] = file_name
        fields["image_id"] = image_id or (Path(file_name).stem if file_name else key)
    mapped = dict(spec.field_map)
    names = (
        list(profile.required)
        + [n for n in profile.optional]
        + [n for n in mapped if n not in profile.required and n not in profile.optional]
    )
    for name in names:
        value = _lookup(record, spec, name)
        if value is None:
            if name in profile.optional:
                continue
            if name in mapped:
                raise BadSample(f"missing field: {name!r} (column {mapped[name]!r} is absent or empty)")
            if name in profile.required:
                raise BadSample(f"missing field: {name!r} (no column of that name; map one with --map {name}=COLUMN)")
        fields[name] = convert(kind_of(spec.task, name), value, name, spec, size)
    if spec.task == "vqa":
        _vqa_answers(fields)
    if spec.task == "detection" and len(fields["boxes"]) != len(fields["labels"]):
        raise BadSample(f"bad value: {len(fields['labels'])} labels for {len(fields['boxes'])} boxes")
    if spec.task == "detection" and not fields["boxes"]:
        raise BadSample("no boxes: the image has no box")
    if spec.task in ("text", "fields") and not mapped:
        raise BadSample("missing field: nothing mapped (use --map NAME=COLUMN)")
    if image is None:
        return Sample(key, fields)
    return Sample(key, fields, image.data, image.ext)
