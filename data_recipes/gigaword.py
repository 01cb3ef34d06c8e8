"""Gigaword headline generation from parallel text files -> one sample per (article, summary) line pair.

Inputs
  --data-dir  folder with, per split, a source and a target file of the same number of lines, named
              <split>.src / <split>.tgt, <split>.src.txt / <split>.tgt.txt or <split>.article.txt /
              <split>.title.txt (the common releases)
Fields: article, summary (text as released: `<unk>` tokens and lower case are left for the pipeline; the
field names avoid "source", which every sample uses for the recipe name).
"""

from __future__ import annotations

import argparse
import functools
import itertools
from collections.abc import Iterator
from pathlib import Path

from data_recipes.common import Candidate, PrepareError, Sample, make_key
from data_recipes.common.checks import decode_utf8, require_text
from data_recipes.common.files import iter_raw_lines, require_dir
from data_recipes.common.splits import order_splits

NAME = "gigaword"
DESCRIPTION = "Gigaword summarisation (<split>.src/.tgt parallel text files) -> one sample per line pair"
PAIR_SUFFIXES = ((".src", ".tgt"), (".src.txt", ".tgt.txt"), (".article.txt", ".title.txt"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        required=True,
        help="folder with <split>.src and <split>.tgt (or .src.txt/.tgt.txt, .article.txt/.title.txt)",
    )


def _pairs(args: argparse.Namespace) -> dict[str, tuple[Path, Path]]:
    folder = require_dir(args.data_dir, "the Gigaword folder (holding train.src / train.tgt ...)")
    pairs: dict[str, tuple[Path, Path]] = {}
    for src_suffix, tgt_suffix in PAIR_SUFFIXES:
        for src in sorted(folder.glob(f"*{src_suffix}")):
            split = src.name[: -len(src_suffix)]
            tgt = folder / f"{split}{tgt_suffix}"
            if not split or split in pairs:
                continue
            if not tgt.is_file():
                raise PrepareError(f"found {src} but not its target file, expected at {tgt}")
            pairs[split] = (src, tgt)
    if not pairs:
        raise PrepareError(f"expected <split>.src and <split>.tgt files in {folder}, found none")
    return pairs


def available_splits(args: argparse.Namespace) -> list[str]:
    return order_splits(_pairs(args))


def _build(src: bytes, tgt: bytes, key: str, args: argparse.Namespace) -> Sample:
    article = require_text(decode_utf8(src, "article"), "article", max_chars=args.max_text_chars)
    summary = require_text(decode_utf8(tgt, "summary"), "summary", max_chars=args.max_text_chars)
    return Sample(key, {"article": article, "summary": summary})


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    src_path, tgt_path = _pairs(args)[split]
    for src_line, tgt_line in itertools.zip_longest(iter_raw_lines(src_path), iter_raw_lines(tgt_path)):
        if src_line is None or tgt_line is None:
            raise PrepareError(f"{src_path} and {tgt_path} have different numbers of lines")
        number = src_line[0]
        key = make_key(NAME, split, number)
        yield Candidate(key, f"{src_path}:{number}", functools.partial(_build, src_line[2], tgt_line[2], key, args))
