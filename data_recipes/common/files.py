"""Opening raw inputs with errors that say what was expected where, and safe relative paths."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any

from data_recipes.common.errors import BadSample, PrepareError


def require_file(path: Path, what: str) -> Path:
    """Returns `path` if it is a file, else stops with "expected <what> at <path>" (and what is there)."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        raise PrepareError(f"expected {what} at {path}, but that is a folder")
    hint = ""
    if path.parent.is_dir():
        names = sorted(p.name for p in path.parent.iterdir())[:10]
        hint = f" (the folder {path.parent} holds: {', '.join(names) or 'nothing'})"
    else:
        hint = f" (the folder {path.parent} does not exist)"
    raise PrepareError(f"expected {what} at {path}, but there is no such file{hint}")


def require_dir(path: Path, what: str) -> Path:
    """Returns `path` if it is a folder, else stops naming what was expected."""
    path = Path(path)
    if path.is_dir():
        return path
    state = "a file" if path.exists() else "missing"
    raise PrepareError(f"expected {what} at {path}, but it is {state}")


_CACHES: list = []


def run_cache(maxsize: int = 4) -> Callable:
    """functools.lru_cache for parsed annotation files and images, emptied by the runner at the start of each
    run: within a run a file is parsed once for all splits; a later run in the same process (tests, the
    shapes pipeline) never sees a previous run's parse of a rewritten file."""

    def wrap(function: Callable) -> Callable:
        cached = functools.lru_cache(maxsize=maxsize)(function)
        _CACHES.append(cached)
        return cached

    return wrap


def clear_run_caches() -> None:
    for cached in _CACHES:
        cached.cache_clear()


def file_stamp(path: Path) -> tuple[str, int, int]:
    """(path, mtime_ns, size): a cache key that changes when the file is rewritten in the same process."""
    try:
        stat = Path(path).stat()
    except OSError:
        return (str(path), -1, -1)
    return (str(path), stat.st_mtime_ns, stat.st_size)


def load_json_file(path: Path, what: str) -> Any:
    """Whole-file JSON (COCO-style annotation files): a broken file stops the run, naming it."""
    require_file(path, what)
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise PrepareError(f"{path} ({what}) is not UTF-8: invalid byte at offset {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise PrepareError(f"{path} ({what}) is not valid JSON: {exc}") from None


def iter_raw_lines(path: Path) -> Iterator[tuple[int, int, bytes]]:
    """Yields (line_number starting at 1, byte offset, raw line without the newline) of a text file.

    Lines are kept as bytes so that one non-UTF-8 line becomes one skipped sample, not a failed run.
    """
    with open(path, "rb") as handle:
        offset = 0
        for number, raw in enumerate(handle, start=1):
            yield number, offset, raw.rstrip(b"\r\n")
            offset += len(raw)


def safe_relative_path(name: Any, what: str = "path") -> str:
    """A relative POSIX path from annotation data, refused if absolute or climbing out with `..`.

    File names come from downloaded JSON/pickles; joining them to a root must never leave the root.
    """
    if not isinstance(name, str) or not name.strip():
        raise BadSample(f"bad path: {what} {name!r} is not a file name")
    text = name.replace("\\", "/")
    pure = PurePosixPath(text)
    if pure.is_absolute() or text.startswith("/") or ".." in pure.parts or (len(text) > 1 and text[1] == ":"):
        raise BadSample(f"unsafe path: {what} {name!r} is absolute or contains '..'")
    parts = [p for p in pure.parts if p not in ("", ".")]
    if not parts:
        raise BadSample(f"bad path: {what} {name!r} is not a file name")
    return "/".join(parts)


def parse_split_paths(values: list[str] | None, default_split: str, what: str) -> dict[str, Path]:
    """Parses repeated `SPLIT=PATH` (or a bare `PATH`, meaning `default_split`) options into a dict."""
    result: dict[str, Path] = {}
    for value in values or []:
        split, sep, path = value.partition("=")
        if not sep:
            split, path = default_split, value
        split = split.strip()
        if not split or not path:
            raise PrepareError(f"bad {what} option {value!r}: expected SPLIT=PATH or PATH")
        if split in result:
            raise PrepareError(f"{what}: split {split!r} given twice")
        result[split] = Path(path)
    return result
