"""``ofa-report [sweep dir]``: a sweep's runs side by side. Runs that differ only by ``seed`` form one row
(labelled by mixture and the overrides that differ): per headline metric of each evaluated task (CIDEr, VQA
accuracy, Acc@0.5, …) and its loss, the mean over the seeds ± the half-width of its 95 % confidence interval
(Student's t) and n, the samples each run evaluated; from each run's ``final_metrics.json``. Default sweep dir:
the newest multirun dir under ./runs.

  ofa-report runs/train/multirun-20260101-120000              # aligned text table
  ofa-report runs/train/multirun-... --per-run                # one row per run instead of per seed group
  ofa-report runs/train/multirun-... --markdown               # a Markdown table (paste into a PR / README)
  ofa-report runs/train/multirun-... --csv                    # CSV on stdout; --csv out.csv writes a file
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from ofa_lightning.analysis.sweep import NoRunsError, compare, display_summary, latest_sweep, summarize


def _cell(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table (the index as the first column, NaN as ``n/a``), numbers right-aligned."""
    header = [table.index.name or ""] + [str(c) for c in table.columns]
    numeric = [False] + [pd.api.types.is_numeric_dtype(table[c]) for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    for label, row in table.iterrows():
        cells = [str(label)] + [_cell(v).replace("|", "\\|") for v in row.tolist()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_text(table: pd.DataFrame) -> str:
    return table.to_string(float_format=lambda v: _cell(float(v)), na_rep="n/a")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ofa-report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "sweep_dir",
        nargs="?",
        help="a Hydra multirun dir, or any folder holding run dirs (default: the newest multirun dir under ./runs)",
    )
    fmt = parser.add_mutually_exclusive_group()
    fmt.add_argument("--csv", nargs="?", const="-", metavar="PATH", help="CSV (with run_dir) on stdout, or into PATH")
    fmt.add_argument("--markdown", action="store_true", help="a Markdown table")
    parser.add_argument("--stage", default="test", choices=["test", "val"], help="which evaluation (default test)")
    parser.add_argument(
        "--metrics",
        help="comma-separated metric names instead of the headline ones (e.g. cider,bleu_4,vqa_acc,acc,miou,loss)",
    )
    parser.add_argument("--paths", action="store_true", help="also show each run's dir in text/Markdown")
    parser.add_argument("--per-run", action="store_true", help="one row per run instead of per group of seeds")
    args = parser.parse_args(argv)

    metrics = tuple(m.strip() for m in args.metrics.split(",") if m.strip()) if args.metrics else None
    try:
        sweep_dir = Path(args.sweep_dir) if args.sweep_dir else latest_sweep()
        if args.per_run:
            table = compare(sweep_dir, stage=args.stage, metrics=metrics)
        else:
            table = summarize(sweep_dir, stage=args.stage, metrics=metrics)
    except NoRunsError as exc:
        print(f"ofa-report: error: {exc}", file=sys.stderr)
        return 2
    what = (
        ("run" if args.per_run else "group of seeds")
        if len(table) == 1
        else ("runs" if args.per_run else "groups of seeds")
    )
    if args.csv is not None:
        text = table.to_csv()
        if args.csv == "-":
            sys.stdout.write(text)
        else:
            Path(args.csv).write_text(text, encoding="utf-8")
            print(f"wrote {args.csv} ({len(table)} {what})")
        return 0
    if not args.paths:
        table = table.drop(columns=["run_dir" if args.per_run else "run_dirs"])
    if not args.per_run:
        table = display_summary(table)
    if not args.markdown:
        print(f"{sweep_dir} ({len(table)} {what})")
    print(to_markdown(table) if args.markdown else to_text(table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
