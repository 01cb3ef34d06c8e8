"""Text-to-image shards: caption + the VQ codes of the whole image (OFA's image_gen rows: id, codes, caption).

Reads the images and captions of an existing shard folder (e.g. coco_caption's), squashes each image to
--image-size² (256 → 32×32 = 1024 codes with an f=8 VQGAN) and encodes it with the VQ model given by --vq. One
sample per caption (COCO: 5 per image, as OFA's TSV rows), or only the first with --first-caption; the image is
encoded once. Captions come from --caption-field (a string or a list of strings; default "captions", the
coco_caption recipe's field, else "caption").

    ofa-prepare vq_text_to_image --shards data/shards/coco_caption --vq runs/vq/vqgan.ckpt \
        --vq-config runs/vq/model.yaml --out data/shards/vq_text_to_image

Fields: caption, codes (ints, row-major), code_grid (32), image_id, source_key; with --keep-image also the squashed
image (png, width, height), e.g. as real images for FID. Train with task text_to_image (code_image_size =
--image-size).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from typing import Any

from data_recipes.common import BadSample, Candidate, Sample, make_key
from data_recipes.common.checks import require_text
from data_recipes.vq_encode import VQEncoder, add_vq_arguments, check_sizes, code_grid, iter_input, png_bytes
from data_recipes.vq_encode import available_splits as _available_splits

NAME = "vq_text_to_image"
DESCRIPTION = "captions of existing shards + VQ codes of the whole image (256² -> 32x32 codes), one per caption"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_vq_arguments(parser, image_size=256)
    parser.add_argument(
        "--caption-field", default=None, help="input field with the caption(s) (default: captions, else caption)"
    )
    parser.add_argument("--first-caption", action="store_true", help="one sample per image (its first caption)")
    parser.add_argument("--keep-image", action="store_true", help="also store the squashed image (png)")


def available_splits(args: argparse.Namespace) -> list[str]:
    check_sizes(args, args.image_size)
    return _available_splits(args)


def _captions(fields: dict[str, Any], name: str | None) -> list[Any]:
    names = [name] if name else ["captions", "caption"]
    for n in names:
        value = fields.get(n)
        if value is not None:
            return [value] if isinstance(value, str) else list(value) if isinstance(value, list) else [value]
    return []


def _build(encoder: VQEncoder, key: str, in_key: str, fields: dict, image: bytes | None, caption: Any) -> Sample:
    text = require_text(caption, "caption", max_chars=encoder.args.max_text_chars)
    codes, square = encoder.codes(in_key, image)
    out = {
        "caption": text,
        "codes": codes,
        "code_grid": code_grid(codes),
        "image_id": fields.get("image_id", in_key),
        "source_key": in_key,
    }
    if not encoder.args.keep_image:
        return Sample(key, out)
    out.update(width=square.width, height=square.height)
    return Sample(key, out, png_bytes(square), "png")


def _no_caption(field: str | None) -> Sample:
    raise BadSample(f"missing field: no caption in {field or 'captions/caption'}")


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    encoder = VQEncoder(args)
    for in_key, fields, image in iter_input(args, split):
        captions = _captions(fields, args.caption_field)
        if args.first_caption:
            captions = captions[:1]
        origin = f"{args.shards}/{split}:{in_key}"
        if not captions:
            yield Candidate(make_key(NAME, in_key, 0), origin, functools.partial(_no_caption, args.caption_field))
        for k, caption in enumerate(captions):
            key = make_key(NAME, in_key, k)
            yield Candidate(
                key, f"{origin}#{k}", functools.partial(_build, encoder, key, in_key, fields, image, caption)
            )
