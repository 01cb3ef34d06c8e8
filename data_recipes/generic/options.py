"""Options shared by the bring-your-own-data recipes, and their merge with a small mapping YAML.

A mapping YAML holds the same settings as the command line (the command line wins), e.g.

    task: vqa
    image_column: photo
    map: {question: q, answers: human_answers, answer_weights: weights}
    split_ratio: {train: 0.8, val: 0.2}
"""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from data_recipes.common.errors import PrepareError
from data_recipes.common.options import positive_int
from data_recipes.generic.fields import BOX_FORMATS, TASK_ALIASES, TASKS, canonical_field, task_profile

_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_+\-]+$")
YAML_KEYS = {
    "task",
    "map",
    "image_column",
    "image_root",
    "id_column",
    "box_format",
    "list_sep",
    "split_column",
    "split_ratio",
    "split_seed",
    "name",
}


def add_generic_arguments(parser: argparse.ArgumentParser, *, default_task: str | None = None) -> None:
    tasks = ", ".join(f"{name} ({profile.description})" for name, profile in TASKS.items())
    parser.add_argument(
        "--task",
        default=default_task,
        choices=sorted(set(TASKS) | set(TASK_ALIASES)),
        metavar="TASK",
        help=f"the task the samples are for: {tasks}",
    )
    parser.add_argument(
        "--map",
        action="append",
        default=None,
        metavar="FIELD=COLUMN",
        help="take the task's FIELD from COLUMN (repeatable, or comma-separated: "
        "--map captions=text,image_id=id); unmapped fields are read under their own name",
    )
    parser.add_argument(
        "--mapping",
        type=Path,
        default=None,
        metavar="FILE.yaml",
        help=f"a YAML with any of: {', '.join(sorted(YAML_KEYS))} (the command line wins)",
    )
    parser.add_argument(
        "--image-column",
        default=None,
        help="column holding the image: a path (relative to --image-root, or absolute), bytes, "
        "base64 text or a data: URI (default: the first of image, image_path, img, "
        "file_name, filename, file, path, image_file)",
    )
    parser.add_argument(
        "--image-root",
        action="append",
        type=Path,
        default=None,
        metavar="DIR",
        help="folder that relative image paths start from (repeatable; default: the folder of the annotation file)",
    )
    parser.add_argument(
        "--id-column",
        default=None,
        help="column with a unique id per row (a repeated id is a counted skip); default: the row number",
    )
    parser.add_argument(
        "--box-format",
        choices=BOX_FORMATS,
        default=None,
        help="how boxes are written: pixel xyxy ([x0, y0, x1, y1]), xywh (COCO), cxcywh, or the "
        "same normalised to [0, 1] (-norm); boxes are checked against the image size",
    )
    parser.add_argument(
        "--list-sep",
        default=None,
        help="separator that splits a text cell into a list (e.g. '|' for 'a cat|a dog'); "
        "cells holding a JSON list are always parsed",
    )
    parser.add_argument("--split-column", default=None, help="column naming each row's split (train, val, ...)")
    parser.add_argument(
        "--split-ratio",
        default=None,
        metavar="train=0.9,val=0.1",
        help="split by image with these fractions (seeded by --split-seed); no image lands in two splits",
    )
    parser.add_argument("--split-seed", type=int, default=None, help="seed of --split-ratio (default 0)")
    parser.add_argument("--name", default=None, help="dataset name: the sample key prefix (default 'own')")
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="processes that read and check images (default: the CPU count, at most 8)",
    )
    parser.add_argument(
        "--max-bad-fraction",
        type=float,
        default=0.5,
        help="stop, naming the first errors, when more than this fraction of the rows of a "
        "split fail (default 0.5; 1 never stops)",
    )


@dataclass(frozen=True)
class Settings:
    task: str
    field_map: tuple[tuple[str, str], ...]
    image_column: str | None
    image_roots: tuple[Path, ...]
    id_column: str | None
    box_format: str | None
    list_sep: str | None
    split_column: str | None
    split_ratio: tuple[tuple[str, float], ...]
    split_seed: int
    name: str


def _parse_map(items: Any, where: str) -> dict[str, str]:
    if items is None:
        return {}
    if isinstance(items, dict):
        pairs = [(str(k), str(v)) for k, v in items.items()]
    else:
        pairs = []
        for item in items:
            for part in str(item).split(","):
                if not part.strip():
                    continue
                out, sep, column = part.partition("=")
                if not sep or not out.strip() or not column.strip():
                    raise PrepareError(f"{where}: {part!r} is not FIELD=COLUMN")
                pairs.append((out.strip(), column.strip()))
    return dict(pairs)


def _parse_ratio(value: Any) -> tuple[tuple[str, float], ...]:
    if value in (None, ""):
        return ()
    if isinstance(value, dict):
        items = list(value.items())
    else:
        items = []
        for part in str(value).split(","):
            split, sep, fraction = part.partition("=")
            if not sep:
                raise PrepareError(f"--split-ratio: {part!r} is not SPLIT=FRACTION")
            items.append((split.strip(), fraction.strip()))
    ratio = []
    for split, fraction in items:
        try:
            number = float(fraction)
        except ValueError:
            raise PrepareError(f"--split-ratio: {fraction!r} is not a number") from None
        if not _SPLIT_NAME.match(str(split)) or number <= 0:
            raise PrepareError(f"--split-ratio: bad entry {split}={fraction}")
        ratio.append((str(split), number))
    total = sum(n for _, n in ratio)
    if abs(total - 1.0) > 1e-6:
        raise PrepareError(f"--split-ratio: fractions add up to {total:g}, expected 1")
    return tuple(ratio)


def _load_yaml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    if not Path(path).is_file():
        raise PrepareError(f"expected the mapping YAML at {path}, but there is no such file")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise PrepareError(f"{path} is not a readable YAML file: {exc}") from None
    if not isinstance(data, dict):
        raise PrepareError(f"{path} should hold a mapping of settings, found a {type(data).__name__}")
    unknown = sorted(set(data) - YAML_KEYS)
    if unknown:
        raise PrepareError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(YAML_KEYS))}")
    return data


def settings(args: argparse.Namespace) -> Settings:
    """The effective settings: command line over the mapping YAML over the defaults (validated)."""
    conf = _load_yaml(getattr(args, "mapping", None))

    def pick(name: str, default: Any = None) -> Any:
        value = getattr(args, name, None)
        return value if value is not None else conf.get(name, default)

    task_name = pick("task")
    if task_name is None:
        raise PrepareError(f"name the task with --task ({', '.join(TASKS)}) or `task:` in the mapping YAML")
    try:
        task, profile = task_profile(str(task_name))
    except ValueError as exc:
        raise PrepareError(str(exc)) from None
    mapping = _parse_map(conf.get("map"), str(getattr(args, "mapping", "")))
    mapping.update(_parse_map(getattr(args, "map", None), "--map"))
    field_map = {canonical_field(task, out): column for out, column in mapping.items()}
    if task in ("text", "fields") and not field_map:
        raise PrepareError(f"task {task!r} writes the fields you map: give at least one --map FIELD=COLUMN")
    roots = getattr(args, "image_root", None) or conf.get("image_root") or []
    roots = [roots] if isinstance(roots, (str, Path)) else roots
    split_column, ratio = pick("split_column"), _parse_ratio(pick("split_ratio"))
    if split_column and ratio:
        raise PrepareError("give --split-column or --split-ratio, not both")
    list_sep = pick("list_sep")
    box_format = pick("box_format")
    if box_format is not None and box_format not in BOX_FORMATS:
        raise PrepareError(f"box format {box_format!r} is not one of {', '.join(BOX_FORMATS)}")
    return Settings(
        task=task,
        field_map=tuple(sorted(field_map.items())),
        image_column=pick("image_column"),
        image_roots=tuple(Path(os.path.expanduser(str(r))) for r in roots),
        id_column=pick("id_column"),
        box_format=box_format,
        list_sep=list_sep or None,
        split_column=split_column,
        split_ratio=ratio,
        split_seed=int(pick("split_seed", 0)),
        name=str(pick("name", "own")),
    )


def workers(args: argparse.Namespace) -> int:
    return args.workers or max(1, min(8, os.cpu_count() or 1))
