"""COCO-style instances JSON (COCO, Objects365, Visual Genome converted to COCO format) -> one sample per image.

Inputs
  --ann-dir      folder with instances_<split>.json (COCO naming), and/or
  --annotations  SPLIT=FILE (repeatable) for other names, e.g. train=zhiyuan_objv2_train.json
  --images       roots holding each image's file_name (e.g. coco/train2017 coco/val2017)
Crowd annotations are left out unless --keep-crowd; a box that is inverted, empty or outside the image is
dropped (counted as a warning) and one partly outside is clipped; an image left without boxes is skipped
unless --keep-empty.
--label-attributes FIELD ...  annotation fields whose values precede the category name in the label, as
               attribute + object labels (Visual Genome style): with `color`, {"category_id": diamond, "color": "red"}
               is labelled "red diamond". A box whose annotation lacks one of them is dropped (a counted warning).
Fields: image_id, file_name, boxes ([[x0, y0, x1, y1], ...] pixels, annotation order), labels (category
names, with --label-attributes prefixed), category_ids, dataset, width, height; image under jpg/png.
"""

from __future__ import annotations

import argparse
import functools
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from data_recipes.common import BadSample, Candidate, PrepareError, Sample, make_key
from data_recipes.common.checks import check_image, clip_box, require_field, require_int, require_text, xywh_to_xyxy
from data_recipes.common.files import file_stamp, load_json_file, parse_split_paths, require_dir, run_cache
from data_recipes.common.image_source import ImageSource
from data_recipes.common.splits import order_splits

NAME = "detection"
DESCRIPTION = "COCO-style detection (instances_<split>.json: COCO/Objects365/VG + images) -> one sample per image"
_FILE = re.compile(r"^instances_(?P<split>[A-Za-z0-9_+\-]+)\.json$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ann-dir", type=Path, default=None, help="folder with instances_<split>.json")
    parser.add_argument(
        "--annotations",
        action="append",
        default=None,
        metavar="SPLIT=FILE",
        help="a COCO-format annotation file for one split (repeatable)",
    )
    parser.add_argument("--images", type=Path, nargs="+", required=True, help="image roots (folders/.zip/.tar)")
    parser.add_argument("--dataset-name", default="coco", help="dataset tag, also the sample key prefix")
    parser.add_argument("--keep-crowd", action="store_true", help="keep iscrowd=1 annotations")
    parser.add_argument("--keep-empty", action="store_true", help="keep images without any valid box")
    parser.add_argument(
        "--label-attributes",
        nargs="+",
        default=[],
        metavar="FIELD",
        help="annotation fields put before the category name in each label (e.g. color -> 'red diamond')",
    )


def _files(args: argparse.Namespace) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if args.ann_dir is not None:
        folder = require_dir(args.ann_dir, "the annotation folder (holding instances_<split>.json)")
        files.update({m["split"]: p for p in sorted(folder.iterdir()) if (m := _FILE.match(p.name))})
    files.update(parse_split_paths(args.annotations, "train", "--annotations"))
    if not files:
        where = f"in {args.ann_dir}" if args.ann_dir is not None else "(no --ann-dir or --annotations given)"
        raise PrepareError(f"expected COCO-format instances_<split>.json files {where}")
    return files


def available_splits(args: argparse.Namespace) -> list[str]:
    return order_splits(_files(args))


@run_cache(maxsize=2)
def _load(stamp: tuple) -> tuple[list, dict, dict]:
    path = stamp[0]
    data = load_json_file(Path(path), "COCO-format instances file")
    if not isinstance(data, dict) or not all(
        isinstance(data.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise PrepareError(f"{path} lacks images/annotations/categories lists (COCO format)")
    by_image: dict = defaultdict(list)
    for ann in data["annotations"]:
        if isinstance(ann, dict):
            by_image[ann.get("image_id")].append(ann)
    cats = {c.get("id"): c.get("name") for c in data["categories"] if isinstance(c, dict)}
    return data["images"], dict(by_image), cats


def _build(info: dict, anns: list, cats: dict, key: str, source: ImageSource, args: argparse.Namespace) -> Sample:
    image_id = require_int(require_field(info, "id"), "id")
    file_name = require_text(require_field(info, "file_name"), "file_name")
    image = check_image(source.read(file_name), full_decode=args.full_decode)
    boxes, labels, category_ids, warnings = [], [], [], []
    for ann in anns:
        if ann.get("iscrowd") and not args.keep_crowd:
            continue
        try:
            category_id = require_int(require_field(ann, "category_id"), "category_id")
            if category_id not in cats:
                raise BadSample(f"bad category: {category_id} is not in categories")
            box = clip_box(xywh_to_xyxy(require_field(ann, "bbox")), image.width, image.height)
            attributes = [require_text(require_field(ann, f), f) for f in args.label_attributes]
        except BadSample as exc:
            warnings.append(f"box dropped: {str(exc).split(':', 1)[0]}")
            continue
        boxes.append(box)
        labels.append(" ".join([*attributes, cats[category_id]]))
        category_ids.append(category_id)
    if not boxes and not args.keep_empty:
        raise BadSample("no boxes: the image has no valid (non-crowd) box")
    fields = {
        "image_id": image_id,
        "file_name": file_name,
        "boxes": boxes,
        "labels": labels,
        "category_ids": category_ids,
        "dataset": args.dataset_name,
        "width": image.width,
        "height": image.height,
    }
    return Sample(key, fields, image.data, image.ext, warnings)


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    path = _files(args)[split]
    images, by_image, cats = _load(file_stamp(path))
    source = ImageSource(args.images)
    for position, info in enumerate(images):
        image_id = info.get("id", f"pos{position}") if isinstance(info, dict) else f"pos{position}"
        key = make_key(args.dataset_name, image_id)
        yield Candidate(
            key,
            f"{path} images[{position}]",
            functools.partial(_build, info, by_image.get(image_id, []), cats, key, source, args),
        )
