"""Your own annotation table (JSONL / CSV / TSV / Parquet) + images -> one sample per row, for any task.

Inputs
  --input        [SPLIT=]FILE (repeatable): .jsonl/.ndjson, .csv, .tsv/.tab or .parquet (--format otherwise).
                 SPLIT=FILE takes a split from its own file; bare files are split by --split-column or
                 --split-ratio, or all become `train`.
  --task         caption | vqa | grounding | grounded_caption | detection | image_classification |
                 image_text_matching | text | fields (see `generic.fields.TASKS` for the fields each reads)
  --map          FIELD=COLUMN for each field whose column has another name (or a --mapping YAML)
  --image-column the image: a path relative to --image-root (default: the table's folder), an absolute path,
                 bytes (Parquet), base64 text or a data: URI
Rows are read as a stream (Parquet in record batches) and checked in --workers processes. Each bad row is a
counted skip with its file and row number in the manifest (data rows count from 1; for JSONL the line number).
Fields: the task's fields, plus row, image_id, file_name, width, height; image under jpg/png.
Beside the shards: answers.json (vqa) or classes.json (image_classification), the closed candidate sets.

Example
  ofa-prepare table --input captions.csv --task caption --map captions=text --image-column file \\
      --split-ratio train=0.8,val=0.2 --out shards/my_captions
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_recipes.common.checks import decode_utf8
from data_recipes.common.errors import BadSample, PrepareError
from data_recipes.common.files import iter_raw_lines, require_file
from data_recipes.generic import engine
from data_recipes.generic.engine import Part
from data_recipes.generic.options import add_generic_arguments

NAME = "table"
DESCRIPTION = "your JSONL/CSV/TSV/Parquet annotations + images -> samples for any task (--task, --map)"
PARALLEL_BUILD = True
FORMATS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--input",
        action="append",
        required=True,
        metavar="[SPLIT=]FILE",
        help="an annotation file (repeatable); SPLIT=FILE gives the file's split",
    )
    parser.add_argument(
        "--format",
        choices=sorted(set(FORMATS.values())),
        default=None,
        help="file format (default: from the file extension)",
    )
    parser.add_argument("--delimiter", default=None, help="CSV delimiter (default ',' for .csv, tab for .tsv)")
    add_generic_arguments(parser)


class TableSource:
    default_box_format = None

    def parts(self, args: argparse.Namespace) -> list[Part]:
        parts = []
        for value in args.input:
            split, sep, path = value.partition("=")
            if not sep or "/" in split or not split:
                split, path = None, value
            path = require_file(Path(path), "an annotation table (JSONL, CSV, TSV or Parquet)")
            fmt = args.format or FORMATS.get(path.suffix.lower())
            if fmt is None:
                raise PrepareError(
                    f"cannot tell the format of {path} from its extension; pass --format "
                    f"({', '.join(sorted(set(FORMATS.values())))})"
                )
            parts.append(Part(label=path.stem, split=split, default_root=path.parent, handle=(path, fmt)))
        labels = [p.label for p in parts]
        if len(set(labels)) != len(labels):
            raise PrepareError("two --input files share a file name; rename one (names prefix the sample keys)")
        return parts

    def records(self, args: argparse.Namespace, part: Part) -> Iterator[tuple[int, str, Any]]:
        path, fmt = part.handle
        if fmt == "jsonl":
            yield from _jsonl(path)
        elif fmt == "parquet":
            yield from _parquet(path)
        else:
            yield from _csv(path, args.delimiter or ("\t" if fmt == "tsv" else ","))


def _jsonl(path: Path) -> Iterator[tuple[int, str, Any]]:
    for number, _, raw in iter_raw_lines(path):
        if not raw.strip():
            continue
        origin = f"{path}:{number}"
        try:
            record = json.loads(decode_utf8(raw, f"line {number}"))
            if not isinstance(record, dict):
                raise BadSample(f"bad record: line {number} is a JSON {type(record).__name__}, expected an object")
        except json.JSONDecodeError as exc:
            record = BadSample(f"bad json: line {number}: {exc.msg}")
        except BadSample as exc:
            record = exc
        yield number, origin, record


def _csv(path: Path, delimiter: str) -> Iterator[tuple[int, str, Any]]:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # inline base64 images make long cells
    # surrogateescape keeps a non-UTF-8 byte as a lone surrogate: the field holding it is a counted skip
    with open(path, newline="", encoding="utf-8-sig", errors="surrogateescape") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if not header:
            raise PrepareError(f"{path} is empty: expected a header row naming the columns")
        header = [h.strip() for h in header]
        for number, cells in enumerate(reader, start=1):
            if not any(c.strip() for c in cells):
                continue
            origin = f"{path} row {number} (line {reader.line_num})"
            if len(cells) != len(header):
                yield number, origin, BadSample(f"bad row: {len(cells)} cells for {len(header)} columns")
                continue
            yield number, origin, {h: (c if c != "" else None) for h, c in zip(header, cells)}


def _parquet(path: Path) -> Iterator[tuple[int, str, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError ...
        raise PrepareError(f"{path} is not a readable Parquet file: {exc}") from None
    number = 0
    for batch in table.iter_batches(batch_size=256):
        for record in batch.to_pylist():
            number += 1
            yield number, f"{path} row {number}", record


SOURCE = TableSource()

available_splits, candidates, write_extras = engine.recipe_hooks(SOURCE)
