"""Image infilling shards: square images + the VQ codes of their centre (OFA's pre-training image rows).

Reads the images of an existing shard folder (any recipe's output), squashes each to --image-size² (256, as OFA's
stored images) and encodes the centre --code-image-size² square (128 → pixels 64..191 → 16×16 = 256 codes with an
f=8 VQGAN) with the VQ model given by --vq. The image written is the squashed square as PNG (lossless, so the codes
describe exactly the stored pixels).

    ofa-prepare vq_infilling --shards data/shards/coco_caption --vq runs/vq/vqgan.ckpt \
        --vq-config runs/vq/model.yaml --out data/shards/vq_infilling

Fields: codes (ints, row-major), code_grid (16), image_id (the input's, else its key), source_key, width, height;
image under png. Train with task image_infilling (image_size / code_image_size as here).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator

from data_recipes.common import Candidate, Sample, make_key
from data_recipes.vq_encode import VQEncoder, add_vq_arguments, check_sizes, code_grid, iter_input, png_bytes
from data_recipes.vq_encode import available_splits as _available_splits

NAME = "vq_infilling"
DESCRIPTION = "images of existing shards + VQ codes of their centre (256² image, 128² centre -> 16x16 codes)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_vq_arguments(parser, image_size=256)
    parser.add_argument(
        "--code-image-size",
        type=int,
        default=128,
        help="side of the centre square that is encoded (default 128 -> 16x16 codes)",
    )


def available_splits(args: argparse.Namespace) -> list[str]:
    check_sizes(args, args.code_image_size)
    return _available_splits(args)


def _build(encoder: VQEncoder, key: str, in_key: str, fields: dict, image: bytes | None) -> Sample:
    codes, square = encoder.codes(in_key, image, crop=encoder.args.code_image_size)
    out = {
        "codes": codes,
        "code_grid": code_grid(codes),
        "image_id": fields.get("image_id", in_key),
        "source_key": in_key,
        "width": square.width,
        "height": square.height,
    }
    return Sample(key, out, png_bytes(square), "png")


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    encoder = VQEncoder(args)
    for in_key, fields, image in iter_input(args, split):
        key = make_key(NAME, in_key)
        yield Candidate(
            key, f"{args.shards}/{split}:{in_key}", functools.partial(_build, encoder, key, in_key, fields, image)
        )
