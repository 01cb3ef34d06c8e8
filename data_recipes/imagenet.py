"""ImageNet-style class folders + Caffe synset words file -> one sample per image.

Inputs
  --root     folder with <split>/<wnid>/<image> (train/ and val/ sorted into class folders, e.g. by the
             usual valprep script); any subfolder of --root holding wnid folders is a split
  --synsets  synset_words.txt: one `n01440764 tench, Tinca tinca` per line; the line order gives the label
Fields: label (0-based line index; OFA's TSV counts from 1), wnid, class_name (first synonym: "tench"),
synset_words (the whole description, which OFA's classification targets use), file_name, width, height;
image under jpg/png (original bytes).
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from pathlib import Path

from data_recipes.common import Candidate, PrepareError, Sample, make_key
from data_recipes.common.checks import check_image
from data_recipes.common.files import file_stamp, require_dir, require_file, run_cache
from data_recipes.common.splits import order_splits

NAME = "imagenet"
DESCRIPTION = "ImageNet class folders (<split>/<wnid>/*.JPEG) + synset_words.txt -> one sample per image"
IMAGE_SUFFIXES = {".jpeg", ".jpg", ".png"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True, help="folder with <split>/<wnid>/ image folders")
    parser.add_argument("--synsets", type=Path, required=True, help="synset_words.txt (`wnid words, ...` per line)")


def load_synsets(path: Path) -> dict[str, tuple[int, str]]:
    """wnid -> (label, synset words), in file order."""
    require_file(Path(path), "the synset words file (synset_words.txt)")
    return _load_synsets(file_stamp(path))


@run_cache(maxsize=2)
def _load_synsets(stamp: tuple) -> dict[str, tuple[int, str]]:
    path = stamp[0]
    table: dict[str, tuple[int, str]] = {}
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise PrepareError(f"{path} is not UTF-8 (byte {exc.start})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        wnid, _, words = line.strip().partition(" ")
        if not words.strip() or wnid in table:
            raise PrepareError(f"{path}:{number}: expected a unique `wnid words, ...` line, got {line!r}")
        table[wnid] = (len(table), words.strip())
    if not table:
        raise PrepareError(f"{path} holds no synsets")
    return table


def _class_dirs(split_dir: Path) -> list[Path]:
    return sorted(p for p in split_dir.iterdir() if p.is_dir())


def available_splits(args: argparse.Namespace) -> list[str]:
    root = require_dir(args.root, "the ImageNet root (holding train/ and val/ class folders)")
    synsets = load_synsets(args.synsets)
    splits = [p.name for p in sorted(root.iterdir()) if p.is_dir() and any(c.name in synsets for c in _class_dirs(p))]
    if not splits:
        raise PrepareError(f"expected <split>/<wnid>/ folders (e.g. {root}/train/n01440764/) under {root}, found none")
    return order_splits(splits)


def _build(path: Path, key: str, wnid: str, label: int, words: str, args: argparse.Namespace) -> Sample:
    image = check_image(path.read_bytes(), full_decode=args.full_decode)
    fields = {
        "label": label,
        "wnid": wnid,
        "class_name": words.split(",")[0].strip(),
        "synset_words": words,
        "file_name": f"{wnid}/{path.name}",
        "width": image.width,
        "height": image.height,
    }
    return Sample(key, fields, image.data, image.ext)


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    synsets = load_synsets(args.synsets)
    for class_dir in _class_dirs(Path(args.root) / split):
        if class_dir.name not in synsets:
            raise PrepareError(f"{class_dir} is not a synset listed in {args.synsets}")
        label, words = synsets[class_dir.name]
        for path in sorted(class_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                key = make_key(NAME, path.stem)
                yield Candidate(
                    key, str(path), functools.partial(_build, path, key, class_dir.name, label, words, args)
                )
