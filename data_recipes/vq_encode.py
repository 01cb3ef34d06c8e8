"""Shared machinery of the recipes that add VQ codes to existing shards (`vq_infilling`, `vq_text_to_image`).

Input: a shard folder written by another recipe (its manifest names the splits and shards), e.g.
data/shards/coco_caption; every sample with an image is read, squashed to --image-size² (LANCZOS, as OFA's
code-generation script), and encoded with a VQ model (`ofa_lightning.vq`: a file written by
`python -m ofa_lightning.training.vq_train`, or a taming checkpoint with --vq-config <its model.yaml>). The VQ model is
loaded once per run; codes of one image are cached so that several samples of the same image (one per caption)
encode it once. Samples the input cannot provide (no image, corrupt image, no caption) are counted skips, as in
every recipe; the runner writes the manifest and the progress bar.
"""

from __future__ import annotations

import argparse
import io
import math
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_recipes.common import BadSample, PrepareError
from data_recipes.common.files import require_dir
from data_recipes.common.splits import order_splits

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")


def add_vq_arguments(parser: argparse.ArgumentParser, image_size: int) -> None:
    parser.add_argument(
        "--shards", type=Path, required=True, help="input shard folder (with manifest.json) written by another recipe"
    )
    parser.add_argument("--vq", type=Path, required=True, help="VQ checkpoint (ofa_lightning.vq file or taming .ckpt)")
    parser.add_argument("--vq-config", type=Path, default=None, help="taming's model.yaml, for a taming checkpoint")
    parser.add_argument(
        "--image-size",
        type=int,
        default=image_size,
        help=f"images are squashed to this square size first (default {image_size}, OFA)",
    )
    parser.add_argument("--device", default="cpu", help="device for the VQ encoder (cpu, cuda)")


def input_manifest(args: argparse.Namespace) -> dict[str, Any]:
    import json

    folder = require_dir(args.shards, "an input shard folder")
    path = folder / "manifest.json"
    if not path.is_file():
        raise PrepareError(f"expected the manifest.json of an ofa-prepare output in {folder}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PrepareError(f"{path} is unreadable ({exc})") from None


def available_splits(args: argparse.Namespace) -> list[str]:
    return order_splits(input_manifest(args).get("splits", {}))


def iter_input(args: argparse.Namespace, split: str) -> Iterator[tuple[str, dict[str, Any], bytes | None]]:
    """(input key, json fields, image bytes or None) of every input sample of `split`, in shard order."""
    import json

    from ofa_lightning.data.shards import iter_tar_samples

    state = input_manifest(args)["splits"].get(split) or {}
    for shard in state.get("shards", []):
        for sample in iter_tar_samples(str(Path(args.shards) / shard["file"])):
            try:
                fields = json.loads(sample.get("json", b"{}").decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                fields = {}
            image = next((sample[e] for e in IMAGE_EXTS if e in sample), None)
            yield sample["__key__"], fields if isinstance(fields, dict) else {}, image


class VQEncoder:
    """Loads the VQ model on first use; `codes(key, image bytes, crop)` with a small per-run cache."""

    def __init__(self, args: argparse.Namespace, cache_size: int = 4096):
        self.args = args
        self._model = None
        self._cache: OrderedDict[tuple, list[int]] = OrderedDict()
        self.cache_size = cache_size

    @property
    def model(self):
        if self._model is None:
            from ofa_lightning.vq import VQModel

            if not Path(self.args.vq).is_file():
                raise PrepareError(f"expected a VQ checkpoint at {self.args.vq}")
            try:
                self._model = VQModel.load(self.args.vq, config=self.args.vq_config).to(self.args.device).eval()
            except (ValueError, RuntimeError, KeyError) as exc:
                raise PrepareError(f"cannot load the VQ model {self.args.vq}: {exc}") from None
        return self._model

    def square_image(self, data: bytes | None):
        """Image bytes → RGB PIL image squashed to --image-size² (a corrupt image is a skip)."""
        from PIL import Image, UnidentifiedImageError

        if data is None:
            raise BadSample("missing image: the input sample has no image")
        size = self.args.image_size
        try:
            with Image.open(io.BytesIO(data)) as img:
                img = img.convert("RGB")
                return img if img.size == (size, size) else img.resize((size, size), Image.LANCZOS)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise BadSample(f"corrupt image: {exc}") from None

    def codes(self, key: str, data: bytes | None, crop: int | None = None) -> tuple[list[int], Any]:
        """(codes of the image, or of its centre crop×crop square; the squashed PIL image)."""
        image = self.square_image(data)
        cache_key = (key, crop)
        if cache_key in self._cache:
            self._cache.move_to_end(cache_key)
            return self._cache[cache_key], image
        region = image
        if crop is not None:
            lo = (image.width - crop) // 2
            region = image.crop((lo, lo, lo + crop, lo + crop))
        grid = self.model.encode(region, image_size=region.width)
        codes = [int(c) for c in grid.view(-1).tolist()]
        self._cache[cache_key] = codes
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return codes, image


def check_sizes(args: argparse.Namespace, code_image_size: int) -> None:
    if args.image_size <= 0 or code_image_size <= 0 or code_image_size > args.image_size:
        raise PrepareError(f"need 0 < code image size ({code_image_size}) <= --image-size ({args.image_size})")
    if code_image_size % 8:
        raise PrepareError(f"the code region ({code_image_size} px) must be a multiple of 8 (VQGAN f=8)")


def png_bytes(image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def code_grid(codes: list[int]) -> int:
    side = math.isqrt(len(codes))
    return side
