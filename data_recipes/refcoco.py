"""RefCOCO / RefCOCO+ / RefCOCOg (the refer toolkit's files) -> one sample per (referring expression, box).

Inputs
  --refer-dir  folder with refs(<split-by>).p (a pickle: list of {ref_id, ann_id, image_id, split,
               sentences: [{sent, raw, sent_id}], category_id}) and instances.json (COCO format), e.g.
               refer/data/refcoco/. The pickle is read with a restricted unpickler (plain data only).
  --dataset    refcoco | refcoco+ | refcocog (default: the folder's name)
  --split-by   unc | umd | google (default unc for refcoco/refcoco+, umd for refcocog)
  --images     roots holding instances.json's file_name, e.g. coco/train2014
Splits: as in the pickle (refcoco unc: train, val, testA, testB; refcocog umd: train, val, test).
Fields: ref_id, ann_id, sent_id, image_id, expression, box ([x0, y0, x1, y1] pixels, from the xywh
annotation, clipped to the image), category_id, category, dataset, width, height; image under jpg/png.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from pathlib import Path

from data_recipes.common import BadSample, Candidate, PrepareError, Sample, make_key
from data_recipes.common.checks import check_image, clip_box, require_field, require_int, require_text, xywh_to_xyxy
from data_recipes.common.files import file_stamp, load_json_file, require_dir, require_file, run_cache
from data_recipes.common.image_source import ImageSource
from data_recipes.common.safe_pickle import safe_load_file
from data_recipes.common.splits import order_splits

NAME = "refcoco"
DESCRIPTION = "RefCOCO/RefCOCO+/RefCOCOg (refs(*).p + instances.json + COCO images) -> one sample per expression"
DATASETS = ("refcoco", "refcoco+", "refcocog")
DEFAULT_SPLIT_BY = {"refcoco": "unc", "refcoco+": "unc", "refcocog": "umd"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--refer-dir",
        type=Path,
        required=True,
        help="folder with refs(<split-by>).p and instances.json (refer/data/<dataset>/)",
    )
    parser.add_argument("--dataset", choices=DATASETS, default=None, help="default: the --refer-dir folder name")
    parser.add_argument(
        "--split-by",
        choices=("unc", "umd", "google"),
        default=None,
        help="which refs pickle (default unc, umd for refcocog)",
    )
    parser.add_argument("--images", type=Path, nargs="+", required=True, help="COCO image roots (train2014)")


def _dataset(args: argparse.Namespace) -> str:
    if args.dataset:
        return args.dataset
    name = Path(args.refer_dir).resolve().name.lower()
    if name not in DATASETS:
        raise PrepareError(
            f"cannot tell the dataset from folder name {name!r}; pass --dataset ({' | '.join(DATASETS)})"
        )
    return name


def _refs_path(args: argparse.Namespace) -> Path:
    split_by = args.split_by or DEFAULT_SPLIT_BY[_dataset(args)]
    require_dir(args.refer_dir, "the refer data folder (with refs(*).p and instances.json)")
    return require_file(Path(args.refer_dir) / f"refs({split_by}).p", f"the {_dataset(args)} refs pickle")


@run_cache(maxsize=2)
def _load(refs_stamp: tuple, instances_stamp: tuple) -> tuple[list, dict, dict, dict]:
    refs_path, instances_path = refs_stamp[0], instances_stamp[0]
    refs = safe_load_file(Path(refs_path))
    if not isinstance(refs, list):
        raise PrepareError(f"{refs_path} should hold a list of refs, found a {type(refs).__name__}")
    instances = load_json_file(Path(instances_path), "COCO instances.json of the refer data")
    if not isinstance(instances, dict) or not all(
        isinstance(instances.get(k), list) for k in ("images", "annotations", "categories")
    ):
        raise PrepareError(f"{instances_path} lacks images/annotations/categories lists (COCO format)")
    images = {i.get("id"): i for i in instances["images"] if isinstance(i, dict)}
    anns = {a.get("id"): a for a in instances["annotations"] if isinstance(a, dict)}
    cats = {c.get("id"): c.get("name") for c in instances["categories"] if isinstance(c, dict)}
    return refs, images, anns, cats


def _loaded(args: argparse.Namespace):
    return _load(file_stamp(_refs_path(args)), file_stamp(Path(args.refer_dir) / "instances.json"))


def available_splits(args: argparse.Namespace) -> list[str]:
    refs = _loaded(args)[0]
    found = {r.get("split") for r in refs if isinstance(r, dict) and isinstance(r.get("split"), str)}
    return order_splits(found)


@run_cache(maxsize=16)
def _image(source: ImageSource, file_name: str, full_decode: bool):
    return check_image(source.read(file_name), full_decode=full_decode)


def _build(
    ref: dict, sentence: dict, key: str, dataset: str, tables: tuple, source: ImageSource, args: argparse.Namespace
) -> Sample:
    _, images, anns, cats = tables
    ref_id = require_int(require_field(ref, "ref_id"), "ref_id")
    ann_id = require_int(require_field(ref, "ann_id"), "ann_id")
    image_id = require_int(require_field(ref, "image_id"), "image_id")
    if not isinstance(sentence, dict):
        raise BadSample("bad record: a sentence is not a dict")
    expression = require_text(sentence.get("sent", sentence.get("raw")), "sent", max_chars=args.max_text_chars)
    ann = anns.get(ann_id)
    if ann is None:
        raise BadSample(f"missing annotation: ann_id {ann_id} is not in instances.json")
    if ann.get("image_id") != image_id:
        raise BadSample(f"bad record: ann {ann_id} belongs to image {ann.get('image_id')}, ref says {image_id}")
    info = images.get(image_id)
    if info is None:
        raise BadSample(f"missing image entry: image_id {image_id} is not in instances.json")
    image = _image(source, require_text(info.get("file_name"), "file_name"), args.full_decode)
    declared = (info.get("width"), info.get("height"))
    if declared != (None, None) and declared != (image.width, image.height):
        raise BadSample(
            f"size mismatch: instances.json says {info.get('width')}x{info.get('height')}, "
            f"the image is {image.width}x{image.height}"
        )
    box = clip_box(xywh_to_xyxy(require_field(ann, "bbox")), image.width, image.height)
    category_id = ref.get("category_id", ann.get("category_id"))
    fields = {
        "ref_id": ref_id,
        "ann_id": ann_id,
        "sent_id": sentence.get("sent_id"),
        "image_id": image_id,
        "expression": expression,
        "box": box,
        "category_id": category_id,
        "category": cats.get(category_id),
        "dataset": dataset,
        "width": image.width,
        "height": image.height,
    }
    return Sample(key, fields, image.data, image.ext)


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    tables = _loaded(args)
    dataset = _dataset(args)
    source = ImageSource(args.images)
    refs_path = _refs_path(args)
    for position, ref in enumerate(tables[0]):
        if not isinstance(ref, dict) or ref.get("split") != split:
            continue
        sentences = ref.get("sentences") if isinstance(ref.get("sentences"), list) else [None]
        for number, sentence in enumerate(sentences):
            sent_id = sentence.get("sent_id", number) if isinstance(sentence, dict) else number
            key = make_key(dataset, ref.get("ref_id", f"pos{position}"), sent_id)
            yield Candidate(
                key,
                f"{refs_path} refs[{position}].sentences[{number}]",
                functools.partial(_build, ref, sentence, key, dataset, tables, source, args),
            )
