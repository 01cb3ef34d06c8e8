"""Your own COCO-format annotation JSON (captions, or instances with boxes and categories) + an image folder.

Inputs
  --input   [SPLIT=]FILE (repeatable): {"images": [{id, file_name, width?, height?}], "annotations": [{image_id,
            caption? | bbox? category_id? ...}], "categories"?: [{id, name}]} as written by COCO, CVAT, Label
            Studio, Roboflow ... (bare files: --split-column / --split-ratio / all `train`, as `table`)
  --images  the folder holding the file_name paths (default: the JSON's folder; same as --image-root)
  --task    per image: caption / image_text_matching (captions = every caption of the image), detection
            (boxes = every bbox, labels = their category names), image_classification (class_name = the first
            annotation's category); per annotation: grounding / grounded_caption (box = its bbox, expression =
            its caption, or --map expression=FIELD, else its category name), vqa and fields (any annotation
            field via --map, e.g. question=question)
Records: per image {file_name, image_id, width, height, captions, bboxes, categories}; per annotation the
annotation's own fields plus file_name, image_id, width, height, category. Boxes are COCO's xywh in pixels
unless --box-format says otherwise; crowd annotations (iscrowd=1) are left out of detection. The JSON is read as a
stream into an on-disk index (data_recipes.common.disk_index), so memory does not grow with the file.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_recipes.common.disk_index import CocoIndex
from data_recipes.common.files import file_stamp, require_file, run_cache
from data_recipes.generic import engine
from data_recipes.generic.engine import Part
from data_recipes.generic.options import add_generic_arguments, settings

NAME = "coco_json"
DESCRIPTION = "your COCO-format JSON (captions / instances) + image folder -> samples for any task"
PARALLEL_BUILD = True
PER_IMAGE_TASKS = {"caption", "image_text_matching", "detection", "image_classification"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="[SPLIT=]FILE",
        help="a COCO-format annotation JSON (repeatable); SPLIT=FILE gives the file's split",
    )
    parser.add_argument("--images", type=Path, default=None, help="folder holding the images' file_name paths")
    add_generic_arguments(parser)


@run_cache(maxsize=4)
def _load(stamp: tuple) -> CocoIndex:
    """The file streamed once into an on-disk index (memory stays flat however many rows it has)."""
    return CocoIndex(require_file(Path(stamp[0]), CocoIndex.WHAT))


def _image_fields(info: dict) -> dict[str, Any]:
    return {
        "file_name": info.get("file_name"),
        "image_id": info.get("id"),
        "width": info.get("width"),
        "height": info.get("height"),
    }


class CocoSource:
    default_box_format = "xywh"

    def parts(self, args: argparse.Namespace) -> list[Part]:
        parts = []
        for value in args.input:
            split, sep, path = value.partition("=")
            if not sep or "/" in split or not split:
                split, path = None, value
            path = require_file(Path(path), "a COCO-format annotation JSON")
            root = args.images if args.images is not None else path.parent
            parts.append(Part(label=path.stem, split=split, default_root=root, handle=path))
        return parts

    def records(self, args: argparse.Namespace, part: Part) -> Iterator[tuple[int, str, Any]]:
        index = _load(file_stamp(part.handle))
        cats = index.categories
        task = settings(args).task
        number = 0
        for position, info in index.images():
            if not isinstance(info, dict):
                continue
            anns = index.annotations(info.get("id"))
            if task in PER_IMAGE_TASKS:
                number += 1
                kept = [a for a in anns if not a.get("iscrowd")]
                boxed = [a for a in kept if a.get("bbox") is not None]
                record = {
                    **_image_fields(info),
                    "captions": [a["caption"] for a in kept if isinstance(a.get("caption"), str)],
                    "bboxes": [a["bbox"] for a in boxed],
                    "categories": [cats.get(a.get("category_id"), a.get("category_id")) for a in boxed],
                }
                if task == "image_classification" and record["categories"]:
                    record["class_name"] = record["categories"][0]
                yield number, f"{part.handle} images[{position}]", record
                continue
            for ann_position, ann in enumerate(anns):
                number += 1
                record = {**ann, **_image_fields(info), "category": cats.get(ann.get("category_id"))}
                if "expression" not in record:
                    record["expression"] = ann.get("caption") or record["category"]
                yield number, f"{part.handle} images[{position}] annotation {ann_position}", record


SOURCE = CocoSource()

available_splits, candidates, write_extras = engine.recipe_hooks(SOURCE)
