"""An image folder with one class per sub-folder -> one sample per image (classification, or any task).

Inputs
  --root    folder/<class>/<image>, or folder/<split>/<class>/<image> with --split-folders (e.g. train/, val/)
Records: {image (the path under --root), class (the sub-folder name, '_' read as a space), folder, label (the
class's index among the sorted sub-folders)}. The default task is image_classification (class_name = class);
classes.json beside the shards lists the class names (the task's `candidates`). Other tasks map the record's
fields, e.g. --task caption --map captions=class.
Images are the files with an image extension, in sorted order; files that are not images are counted skips.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_recipes.common.errors import PrepareError
from data_recipes.common.files import require_dir
from data_recipes.generic import engine
from data_recipes.generic.engine import Part
from data_recipes.generic.options import add_generic_arguments

NAME = "class_folders"
DESCRIPTION = "your image folder with one class per sub-folder -> classification samples (or any task)"
PARALLEL_BUILD = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, required=True, help="folder with one sub-folder per class")
    parser.add_argument(
        "--split-folders",
        action="store_true",
        help="--root holds one folder per split (train/, val/ ...), each with class folders",
    )
    add_generic_arguments(parser, default_task="image_classification")


def _classes(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


class FolderSource:
    default_box_format = None

    def parts(self, args: argparse.Namespace) -> list[Part]:
        root = require_dir(args.root, "the image folder (one sub-folder per class)")
        if not args.split_folders:
            if not _classes(root):
                raise PrepareError(f"expected one sub-folder per class in {root}, found none")
            return [Part(label=root.name or "images", split=None, default_root=root, handle=root)]
        parts = [Part(label=d.name, split=d.name, default_root=d, handle=d) for d in _classes(root)]
        if not parts:
            raise PrepareError(f"expected <split>/<class>/ folders under {root} (--split-folders), found none")
        return parts

    def records(self, args: argparse.Namespace, part: Part) -> Iterator[tuple[int, str, Any]]:
        folder: Path = part.handle
        classes = _classes(folder)
        if not classes:
            raise PrepareError(f"expected one sub-folder per class in {folder}, found none")
        number = 0
        for label, class_dir in enumerate(classes):
            for path in sorted(class_dir.rglob("*")):
                if not path.is_file() or path.name.startswith("."):
                    continue
                number += 1
                relative = path.relative_to(folder).as_posix()
                record = {
                    "image": relative,
                    "class": class_dir.name.replace("_", " "),
                    "folder": class_dir.name,
                    "label": label,
                    "class_name": class_dir.name.replace("_", " "),
                }
                yield number, str(path), record


SOURCE = FolderSource()

available_splits, candidates, write_extras = engine.recipe_hooks(SOURCE)
