"""A dataset saved with HF `datasets` -> one sample per row, for any task (read with the `datasets` library).

Inputs
  --dataset  a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`, or a folder of local
             Parquet or Arrow files (read with `load_dataset("parquet" | "arrow", data_dir=...)`, which names
             the splits from the file names, e.g. train-00000.parquet, test.parquet)
The hub is never contacted (HF_DATASETS_OFFLINE and HF_HUB_OFFLINE are set). A DatasetDict's splits are the
output splits (a single Dataset is split by --split-column / --split-ratio, or all `train`). Image columns
(the `Image` feature) are read as their stored bytes, not decoded; other image columns work as in `table`.
Rows are streamed (memory-mapped or streaming datasets); fields and extras as `table`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from data_recipes.common.errors import PrepareError
from data_recipes.common.files import require_dir
from data_recipes.generic import engine
from data_recipes.generic.engine import Part
from data_recipes.generic.options import add_generic_arguments

NAME = "hf_dataset"
DESCRIPTION = "your dataset saved with HF datasets (save_to_disk, local parquet/arrow) -> samples for any task"
PARALLEL_BUILD = True
_FILE_FORMATS = {".parquet": "parquet", ".arrow": "arrow"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dataset",
        type=Path,
        required=True,
        help="folder written by save_to_disk, or holding local .parquet / .arrow files",
    )
    add_generic_arguments(parser)


def _datasets():
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import datasets

    return datasets


def _saved_to_disk(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def _file_format(folder: Path) -> str:
    found = {_FILE_FORMATS[p.suffix] for p in folder.rglob("*") if p.suffix in _FILE_FORMATS}
    if len(found) != 1:
        what = "both Parquet and Arrow files" if found else "no dataset_dict.json, state.json, .parquet or .arrow"
        raise PrepareError(
            f"{folder} holds {what}; expected a folder written by save_to_disk or one holding Parquet (or Arrow) files"
        )
    return found.pop()


def _load(folder: Path) -> Any:
    """A Dataset / DatasetDict (save_to_disk) or an IterableDatasetDict (local files, streamed)."""
    datasets = _datasets()
    try:
        if _saved_to_disk(folder):
            return datasets.load_from_disk(str(folder))
        return datasets.load_dataset(_file_format(folder), data_dir=str(folder), streaming=True)
    except PrepareError:
        raise
    except Exception as exc:  # datasets raises FileNotFoundError, ValueError, DatasetGenerationError ...
        raise PrepareError(f"{folder}: the datasets library cannot read it ({type(exc).__name__}: {exc})") from None


def _undecoded(ds: Any) -> Any:
    """Image columns as {"bytes", "path"} dicts: the stored bytes go into the shard without a decode."""
    datasets = _datasets()
    features = getattr(ds, "features", None) or {}
    for name, feature in features.items():
        if isinstance(feature, datasets.Image) and feature.decode:
            ds = ds.cast_column(name, datasets.Image(decode=False))
    return ds


class HFSource:
    default_box_format = None

    def parts(self, args: argparse.Namespace) -> list[Part]:
        folder = require_dir(args.dataset, "a dataset folder (save_to_disk output, or Parquet/Arrow files)")
        loaded = _load(folder)
        if isinstance(loaded, dict):  # DatasetDict / IterableDatasetDict
            return [
                Part(label=str(split), split=str(split), default_root=folder, handle=str(split)) for split in loaded
            ]
        return [Part(label=folder.name or "dataset", split=None, default_root=folder, handle=None)]

    def records(self, args: argparse.Namespace, part: Part) -> Iterator[tuple[int, str, Any]]:
        loaded = _load(Path(args.dataset))
        ds = _undecoded(loaded[part.handle] if part.handle is not None else loaded)
        where = f"{args.dataset}" + (f" [{part.handle}]" if part.handle is not None else "")
        for number, record in enumerate(ds, start=1):
            yield number, f"{where} row {number}", record


SOURCE = HFSource()

available_splits, candidates, write_extras = engine.recipe_hooks(SOURCE)
