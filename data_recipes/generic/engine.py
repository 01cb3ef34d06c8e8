"""Records of a source -> splits, candidates and extras (answers.json, classes.json), for every generic recipe.

A source (table files, COCO JSON, class folders, a HF dataset) lists its parts (a file, a folder, a saved split)
and streams each part's records as (row number, origin, record or BadSample). Splits come from the parts'
own names (`--input train=a.csv`, a DatasetDict's splits), a split column, or a seeded per-image ratio (a hash
of the image's path or bytes, so every row of one image lands in the same split, in constant memory).
Rows that cannot be read or assigned (bad JSON, no split value) are counted as skips of the first split.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from data_recipes.common.errors import BadSample, PrepareError
from data_recipes.common.manifest import write_json_atomic
from data_recipes.common.sample import Candidate, make_key
from data_recipes.common.splits import order_splits
from data_recipes.generic.fields import TASKS, Spec, _lookup, build_sample, convert, kind_of
from data_recipes.generic.images import image_identity
from data_recipes.generic.options import _SPLIT_NAME, Settings, settings

ANSWERS_FILE = "answers.json"
CLASSES_FILE = "classes.json"


@dataclass(frozen=True)
class Part:
    label: str  # names the part in keys and origins (a file stem, a split name)
    split: str | None  # the split the source itself gives, or None
    default_root: Path | None  # where relative image paths start when --image-root is not given
    handle: Any = None  # the source's own reference (a path, a dataset split name)


class Source(Protocol):
    default_box_format: str | None

    def parts(self, args: argparse.Namespace) -> list[Part]: ...

    def records(self, args: argparse.Namespace, part: Part) -> Iterator[tuple[int, str, Any]]: ...


def _fail(reason: str):
    raise BadSample(reason)


def make_spec(args: argparse.Namespace, conf: Settings, part: Part, source: Source) -> Spec:
    profile = TASKS[conf.task]
    mapped = [out for out, _ in conf.field_map]
    box_format = conf.box_format or source.default_box_format
    uses_boxes = any(kind_of(conf.task, n) in ("box", "boxes") for n in [*profile.required, *mapped])
    if uses_boxes and box_format is None:
        raise PrepareError(
            f"task {conf.task} has boxes: name their format with --box-format "
            "(xyxy, xywh, cxcywh, or the same with -norm for coordinates in [0, 1])"
        )
    roots = conf.image_roots or ((part.default_root,) if part.default_root is not None else ())
    return Spec(
        task=conf.task,
        field_map=conf.field_map,
        image_column=conf.image_column,
        image_roots=roots,
        box_format=box_format,
        list_sep=conf.list_sep,
        max_text_chars=args.max_text_chars,
        full_decode=args.full_decode,
        needs_image=profile.image,
    )


def _ratio_split(conf: Settings, identity: str) -> str:
    digest = hashlib.sha256(f"{conf.split_seed}/{identity}".encode("utf-8", "surrogateescape")).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    total = 0.0
    for split, fraction in conf.split_ratio:
        total += fraction
        if u < total:
            return split
    return conf.split_ratio[-1][0]


def _row_split(conf: Settings, part: Part, record: Any, row_key: str) -> str:
    """The split of one readable record; BadSample when it names none or a bad one."""
    if conf.split_column:
        value = record.get(conf.split_column) if isinstance(record, dict) else None
        if value is None or (isinstance(value, str) and not value.strip()):
            raise BadSample(f"missing field: split column {conf.split_column!r}")
        split = str(value).strip()
        if not _SPLIT_NAME.match(split):
            raise BadSample(f"bad split: {split!r} may only hold letters, digits, '_', '+' and '-'")
        return split
    if conf.split_ratio:
        identity = image_identity(record, conf.image_column) if TASKS[conf.task].image else None
        return _ratio_split(conf, identity or row_key)
    return part.split or "train"


def _check_mode(conf: Settings, parts: list[Part]) -> None:
    named = [p for p in parts if p.split is not None]
    if named and (conf.split_column or conf.split_ratio):
        raise PrepareError(
            "the inputs already name their splits (SPLIT=FILE or saved splits); drop "
            "--split-column / --split-ratio, or give the files without SPLIT="
        )


def available_splits(source: Source, args: argparse.Namespace) -> list[str]:
    conf = settings(args)
    parts = source.parts(args)
    _check_mode(conf, parts)
    if conf.split_ratio:
        return [s for s, _ in conf.split_ratio]
    if conf.split_column:
        found: set[str] = set()
        for part in parts:
            for _, _, record in source.records(args, part):
                if isinstance(record, dict):
                    value = record.get(conf.split_column)
                    if value is not None and _SPLIT_NAME.match(str(value).strip()):
                        found.add(str(value).strip())
        if not found:
            raise PrepareError(f"no row has a usable value in split column {conf.split_column!r}")
        return order_splits(found)
    return order_splits(p.split or "train" for p in parts)


def assigned(source: Source, args: argparse.Namespace, split: str) -> Iterator[tuple[Part, int, str, Any, str]]:
    """(part, row, origin, record or BadSample, key) of the rows of `split`, in source order."""
    conf = settings(args)
    parts = source.parts(args)
    _check_mode(conf, parts)
    first = None
    for part in parts:
        if part.split is not None and part.split != split:
            continue
        for row, origin, record in source.records(args, part):
            row_key = make_key(conf.name, part.label, row)
            key = row_key
            try:
                if isinstance(record, BadSample):
                    raise record
                if conf.id_column:
                    value = record.get(conf.id_column) if isinstance(record, dict) else None
                    if value is None or str(value).strip() == "":
                        raise BadSample(f"missing field: id column {conf.id_column!r}")
                    key = make_key(conf.name, str(value).strip())
                target = _row_split(conf, part, record, row_key)
            except BadSample as exc:
                if first is None:
                    first = available_splits(source, args)[0]
                if split == first:
                    yield part, row, origin, exc, key
                continue
            if target == split:
                yield part, row, origin, record, key


def candidates(source: Source, args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    conf = settings(args)
    specs: dict[str, Spec] = {}
    for part, row, origin, record, key in assigned(source, args, split):
        if isinstance(record, BadSample):
            yield Candidate(key, origin, functools.partial(_fail, str(record)))
            continue
        if part.label not in specs:
            specs[part.label] = make_spec(args, conf, part, source)
        image_id = str(record[conf.id_column]).strip() if conf.id_column else None
        yield Candidate(key, origin, functools.partial(build_sample, specs[part.label], record, key, row, image_id))


def _text_values(spec: Spec, record: dict, name: str) -> list[str]:
    value = _lookup(record, spec, name)
    if value is None:
        return []
    try:
        converted = convert(kind_of(spec.task, name), value, name, spec, None)
    except BadSample:
        return []
    return converted if isinstance(converted, list) else [converted]


def write_extras(source: Source, args: argparse.Namespace, out: Path) -> dict[str, str]:
    """answers.json (VQA: the answers of the first split, most frequent first) or classes.json (classification:
    every class name, sorted): the closed candidate sets the tasks take as `candidates`."""
    conf = settings(args)
    if conf.task not in ("vqa", "image_classification"):
        return {}
    splits = available_splits(source, args)
    wanted = splits[:1] if conf.task == "vqa" else splits
    counts: Counter = Counter()
    for split in wanted:
        for part, _, _, record, _ in assigned(source, args, split):
            if isinstance(record, BadSample):
                continue
            spec = make_spec(args, conf, part, source)
            if conf.task == "vqa":
                answers = _text_values(spec, record, "answers") or _text_values(spec, record, "answer")
                counts.update(dict.fromkeys(answers, 1))
            else:
                counts.update(_text_values(spec, record, "class_name"))
    if conf.task == "vqa":
        ranked = [a for a, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
        write_json_atomic(out / ANSWERS_FILE, ranked)
        return {ANSWERS_FILE: f"{len(ranked)} answers of split {wanted[0]}, most frequent first"}
    classes = sorted(counts)
    write_json_atomic(out / CLASSES_FILE, classes)
    return {CLASSES_FILE: f"{len(classes)} class names, sorted"}


def recipe_hooks(source: Source):
    """The runner's hooks of a generic recipe module (``available_splits``, ``candidates``, ``write_extras``), bound
    to its ``source``: ``available_splits, candidates, write_extras = engine.recipe_hooks(SOURCE)``."""
    return (
        functools.partial(available_splits, source),
        functools.partial(candidates, source),
        functools.partial(write_extras, source),
    )
