"""COCO captions with Karpathy's splits -> one sample per image holding all reference captions.

Inputs
  --karpathy-json  dataset_coco.json: {"images": [{"filepath", "filename", "imgid", "split",
                   "sentences": [{"raw", "tokens"}], "cocoid"}]}
  --images         one or more roots (folders, .zip or .tar) under which `filepath/filename` (or just
                   `filename`) is found, e.g. coco/ holding train2014/ and val2014/.
Splits: train, val, test; Karpathy's "restval" is merged into train (as OFA and most captioners do) unless
--keep-restval.
Fields: image_id (cocoid, else imgid), captions (all raw references, blank ones dropped with a warning),
file_name, width, height; image under jpg/png.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from pathlib import Path

from data_recipes.common import BadSample, Candidate, PrepareError, Sample, make_key
from data_recipes.common.checks import check_image, require_field, require_int, require_text
from data_recipes.common.files import file_stamp, load_json_file, run_cache
from data_recipes.common.image_source import ImageSource
from data_recipes.common.splits import order_splits

NAME = "coco_caption"
DESCRIPTION = "COCO captions, Karpathy splits (dataset_coco.json + images) -> one sample per image, all refs"
KEY_PREFIX = "coco_cap"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--karpathy-json", type=Path, required=True, help="Karpathy's dataset_coco.json")
    parser.add_argument(
        "--images",
        type=Path,
        nargs="+",
        required=True,
        help="image roots (folders/.zip/.tar) holding filepath/filename",
    )
    parser.add_argument(
        "--keep-restval",
        action="store_true",
        help="write Karpathy's 'restval' as its own split instead of merging it into train",
    )


def _load_images(path: Path) -> list:
    return _load_images_cached(file_stamp(path))


@run_cache(maxsize=2)
def _load_images_cached(stamp: tuple) -> list:
    path = stamp[0]
    data = load_json_file(Path(path), "Karpathy caption file (dataset_coco.json)")
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list):
        raise PrepareError(f"{path} has no 'images' list: is it Karpathy's dataset_coco.json?")
    return images


def _split_of(entry: dict, keep_restval: bool) -> str | None:
    split = entry.get("split") if isinstance(entry, dict) else None
    if split == "restval" and not keep_restval:
        return "train"
    return split if isinstance(split, str) else None


def available_splits(args: argparse.Namespace) -> list[str]:
    found = {_split_of(e, args.keep_restval) for e in _load_images(args.karpathy_json)}
    return order_splits(s for s in found if s)


def _build(entry: dict, key: str, source: ImageSource, args: argparse.Namespace) -> Sample:
    image_id = require_int(entry.get("cocoid", entry.get("imgid")), "cocoid")
    filename = require_text(require_field(entry, "filename"), "filename")
    sentences = require_field(entry, "sentences")
    if not isinstance(sentences, list):
        raise BadSample("bad type: 'sentences' is not a list")
    captions, warnings = [], []
    for sentence in sentences:
        try:
            captions.append(require_text(require_field(sentence, "raw"), "raw", max_chars=args.max_text_chars))
        except BadSample as exc:
            warnings.append(f"caption dropped: {str(exc).split(':', 1)[0]}")
    if not captions:
        raise BadSample("empty text: no usable caption for this image")
    filepath = entry.get("filepath") or ""
    names = [f"{filepath}/{filename}", filename] if filepath else [filename]
    image = check_image(source.read(*names), full_decode=args.full_decode)
    fields = {
        "image_id": image_id,
        "captions": captions,
        "file_name": filename,
        "width": image.width,
        "height": image.height,
    }
    return Sample(key, fields, image.data, image.ext, warnings)


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    source = ImageSource(args.images)
    for position, entry in enumerate(_load_images(args.karpathy_json)):
        if _split_of(entry, args.keep_restval) != split:
            continue
        raw_id = entry.get("cocoid", entry.get("imgid", f"pos{position}"))
        key = make_key(KEY_PREFIX, raw_id)
        origin = f"{args.karpathy_json} images[{position}]"
        yield Candidate(key, origin, functools.partial(_build, entry, key, source, args))
