"""A plain-text corpus (for OFA's text infilling) -> one sample per non-empty line or per paragraph.

Inputs
  --input  [SPLIT=]FILE (repeatable; a bare FILE is the train split), UTF-8 text
  --unit   line (default) or paragraph (blank-line separated, its lines joined by single spaces)
Fields: text, line (first line number of the sample in its file). A non-UTF-8 line skips its sample.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from pathlib import Path

from data_recipes.common import Candidate, Sample, make_key
from data_recipes.common.checks import decode_utf8, require_text
from data_recipes.common.files import iter_raw_lines, parse_split_paths, require_file
from data_recipes.common.splits import order_splits

NAME = "text_corpus"
DESCRIPTION = "plain-text corpus (one sample per line or paragraph) for text infilling"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="[SPLIT=]FILE",
        help="a UTF-8 text file for one split (repeatable; bare FILE = train)",
    )
    parser.add_argument(
        "--unit",
        choices=("line", "paragraph"),
        default="line",
        help="one sample per non-empty line (default) or per blank-line separated paragraph",
    )
    parser.set_defaults(max_text_chars=100_000)


def _files(args: argparse.Namespace) -> dict[str, Path]:
    return {
        split: require_file(path, f"the {split} text file")
        for split, path in parse_split_paths(args.input, "train", "--input").items()
    }


def available_splits(args: argparse.Namespace) -> list[str]:
    return order_splits(_files(args))


def _build(lines: tuple[bytes, ...], first_line: int, key: str, args: argparse.Namespace) -> Sample:
    parts = [decode_utf8(line, f"line {first_line + i}").strip() for i, line in enumerate(lines)]
    text = require_text(" ".join(p for p in parts if p), "text", max_chars=args.max_text_chars)
    return Sample(key, {"text": text, "line": first_line})


def _units(path: Path, unit: str) -> Iterator[tuple[int, tuple[bytes, ...]]]:
    """(first line number, raw lines) per sample; blank lines separate paragraphs and are never samples."""
    block: list[bytes] = []
    start = 0
    for number, _, raw in iter_raw_lines(path):
        if not raw.strip():
            if block:
                yield start, tuple(block)
                block = []
            continue
        if unit == "line":
            yield number, (raw,)
            continue
        if not block:
            start = number
        block.append(raw)
    if block:
        yield start, tuple(block)


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    path = _files(args)[split]
    for first_line, lines in _units(path, args.unit):
        key = make_key("text", split, first_line)
        yield Candidate(key, f"{path}:{first_line}", functools.partial(_build, lines, first_line, key, args))
