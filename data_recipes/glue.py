"""GLUE tasks from TSV (official GLUE files or OFA's released ones) -> one sample per sentence (pair).

Inputs
  --task      cola | sst2 | mrpc | qqp | qnli | rte | mnli
  --data-dir  folder of <split>.tsv (train.tsv, dev.tsv, test.tsv, dev_matched.tsv ...), and/or
  --tsv       SPLIT=FILE (repeatable)
  --layout    glue: official files, columns found by header name (CoLA has no header: label col 1,
                    sentence col 3);
              ofa:  OFA's TSVs, no header, columns as OFA selects them: cola 1,2; sst2 0,1; mnli 0,1,2;
                    mrpc 0,1,2; qnli 1,2,3; qqp 3,4,5; rte 1,2,3 (text column(s), then the label)
Fields: task, sentence1, sentence2 (pair tasks only; for qnli sentence1 is the question and sentence2 the
context sentence), label (a name: acceptable/unacceptable, positive/negative, equivalent/not_equivalent,
duplicate/not_duplicate, entailment/not_entailment, entailment/neutral/contradiction; None for unlabelled
test files), raw_label (as in the file). OFA's MNLI TSV codes labels 0=neutral, 1=entailment, 2=contradiction.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from data_recipes.common import BadSample, Candidate, PrepareError, Sample, make_key
from data_recipes.common.checks import decode_utf8, require_text
from data_recipes.common.files import iter_raw_lines, parse_split_paths, require_dir
from data_recipes.common.splits import order_splits

NAME = "glue"
DESCRIPTION = "GLUE TSVs (official or OFA's: cola sst2 mrpc qqp qnli rte mnli) -> one sample per example"


@dataclass(frozen=True)
class TaskSpec:
    text1: str  # official header name of the first text column
    text2: str | None  # ... of the second one (pair tasks)
    label: str  # ... of the label column
    ofa_columns: tuple[int, ...]  # OFA's selected columns: text(s), then label
    labels: dict[str, str]  # raw label -> canonical name


_BINARY_NLI = {"0": "not_entailment", "1": "entailment", "not_entailment": "not_entailment", "entailment": "entailment"}
TASKS = {
    "cola": TaskSpec("sentence", None, "label", (1, 2), {"0": "unacceptable", "1": "acceptable"}),
    "sst2": TaskSpec("sentence", None, "label", (0, 1), {"0": "negative", "1": "positive"}),
    "mrpc": TaskSpec("#1 String", "#2 String", "Quality", (0, 1, 2), {"0": "not_equivalent", "1": "equivalent"}),
    "qqp": TaskSpec("question1", "question2", "is_duplicate", (3, 4, 5), {"0": "not_duplicate", "1": "duplicate"}),
    "qnli": TaskSpec("question", "sentence", "label", (1, 2, 3), _BINARY_NLI),
    "rte": TaskSpec("sentence1", "sentence2", "label", (1, 2, 3), _BINARY_NLI),
    "mnli": TaskSpec(
        "sentence1",
        "sentence2",
        "gold_label",
        (0, 1, 2),
        {"entailment": "entailment", "neutral": "neutral", "contradiction": "contradiction"},
    ),
}
_OFA_MNLI_LABELS = {"0": "neutral", "1": "entailment", "2": "contradiction"}
_COLA_HEADERLESS = {"label": 1, "sentence": 3}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", choices=sorted(TASKS), required=True)
    parser.add_argument("--data-dir", type=Path, default=None, help="folder of <split>.tsv files")
    parser.add_argument("--tsv", action="append", default=None, metavar="SPLIT=FILE", help="one split's TSV")
    parser.add_argument(
        "--layout",
        choices=("glue", "ofa"),
        default="glue",
        help="official GLUE files (header names) or OFA's TSVs (fixed columns)",
    )


def _files(args: argparse.Namespace) -> dict[str, Path]:
    files: dict[str, Path] = {}
    if args.data_dir is not None:
        folder = require_dir(args.data_dir, f"the GLUE {args.task} folder (holding train.tsv, dev.tsv ...)")
        files.update({p.stem: p for p in sorted(folder.glob("*.tsv")) if p.is_file()})
    files.update(parse_split_paths(args.tsv, "train", "--tsv"))
    if not files:
        where = f"in {args.data_dir}" if args.data_dir is not None else "(no --data-dir or --tsv given)"
        raise PrepareError(f"expected <split>.tsv files for GLUE {args.task} {where}")
    return files


def available_splits(args: argparse.Namespace) -> list[str]:
    return order_splits(_files(args))


def _columns(args: argparse.Namespace, header: list[str] | None) -> tuple[int, int | None, int | None]:
    """(text1, text2, label) column indices; label None for unlabelled (test) files."""
    spec = TASKS[args.task]
    if args.layout == "ofa":
        cols = spec.ofa_columns
        return cols[0], (cols[1] if spec.text2 else None), cols[-1]
    if header is None:  # headerless CoLA train/dev
        return _COLA_HEADERLESS["sentence"], None, _COLA_HEADERLESS["label"]

    def find(name: str | None, required: bool) -> int | None:
        if name is None:
            return None
        if name in header:
            return header.index(name)
        if required:
            raise PrepareError(f"GLUE {args.task}: no column {name!r} in header {header}")
        return None

    return find(spec.text1, True), find(spec.text2, True), find(spec.label, False)


def _has_header(args: argparse.Namespace, first_line: bytes) -> bool:
    if args.layout == "ofa":
        return False
    if args.task == "cola":  # official CoLA train/dev have no header, its test file has "index\tsentence"
        return first_line.split(b"\t", 1)[0].strip() == b"index"
    return True


def _build(raw: bytes, key: str, columns: tuple, args: argparse.Namespace) -> Sample:
    cells = decode_utf8(raw, "row").split("\t")
    needed = max(c for c in columns if c is not None)
    if len(cells) <= needed:
        raise BadSample(f"bad row: {len(cells)} columns, expected more than {needed}")
    text1_col, text2_col, label_col = columns
    fields = {
        "task": args.task,
        "sentence1": require_text(cells[text1_col], "sentence1", max_chars=args.max_text_chars),
    }
    if text2_col is not None:
        fields["sentence2"] = require_text(cells[text2_col], "sentence2", max_chars=args.max_text_chars)
    raw_label = cells[label_col].strip() if label_col is not None else None
    label = None
    if raw_label is not None:
        table = _OFA_MNLI_LABELS if (args.task == "mnli" and args.layout == "ofa") else TASKS[args.task].labels
        if raw_label not in table:
            raise BadSample(f"bad label: {raw_label!r} is not one of {', '.join(sorted(table))}")
        label = table[raw_label]
    fields.update(label=label, raw_label=raw_label)
    return Sample(key, fields)


def candidates(args: argparse.Namespace, split: str) -> Iterator[Candidate]:
    path = _files(args)[split]
    lines = iter_raw_lines(path)
    first = next(lines, None)
    if first is None:
        return
    header = None
    if _has_header(args, first[2]):
        try:
            header = [c.strip() for c in first[2].decode("utf-8").split("\t")]
        except UnicodeDecodeError:
            raise PrepareError(f"{path}: the header line is not UTF-8") from None
        body = lines
    else:
        body = _chain_first(first, lines)
    columns = _columns(args, header)
    for number, _, raw in body:
        if not raw.strip():
            continue
        key = make_key(f"glue_{args.task}", split, number)
        yield Candidate(key, f"{path}:{number}", functools.partial(_build, raw, key, columns, args))


def _chain_first(first, rest):
    yield first
    yield from rest
