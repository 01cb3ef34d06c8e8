"""What a W&B run logged, read from the files it writes in the open (``metrics.jsonl``, the config, each W&B
folder's ``files/`` and staged tables); W&B's private ``run-<id>.wandb`` log is not parsed."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .run_files import CONFIG_FILE, MetricsFileLogger, read_metrics_jsonl, read_run_id

__all__ = ["find_wandb_runs", "table_media", "read_offline_run"]

_RUN_DIR_RE = re.compile(r"^(?:offline-)?run-(\d{8}_\d{6})-(.+)$")
_TABLE_FILE_RE = re.compile(r"^media/table/(?P<key>.+)_(?P<step>\d+)_[0-9a-f]+\.table\.json$")


def find_wandb_runs(run_dir: str | os.PathLike, run_id: str | None = None) -> list[Path]:
    """The ``[offline-]run-<ts>-<id>`` folders under ``<run_dir>/wandb`` (or ``run_dir`` itself when it is one),
    oldest first; only those of ``run_id`` when given."""
    run_dir = Path(run_dir)
    if _RUN_DIR_RE.match(run_dir.name) and run_dir.is_dir():
        return [run_dir]
    root = run_dir / "wandb" if (run_dir / "wandb").is_dir() else run_dir
    found = []
    for p in root.iterdir() if root.is_dir() else ():
        m = _RUN_DIR_RE.match(p.name)
        if m and p.is_dir() and not p.is_symlink() and (run_id is None or m.group(2) == run_id):
            found.append((m.group(1), p.stat().st_mtime, p))
    return [p for _, _, p in sorted(found)]


def _staged_files(folder: Path) -> tuple[list[tuple[float, dict[str, Any]]], dict[str, str]]:
    """The tables W&B staged in ``folder`` (mtime, content) and ``{sha256 hex | base64 MD5: path}`` of every staged
    file (images are referenced by SHA-256, class maps by base64 MD5)."""
    tables, by_digest = [], {}
    for path in sorted((folder / "artifacts" / "staging").glob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        by_digest[hashlib.sha256(data).hexdigest()] = str(path)
        by_digest[base64.b64encode(hashlib.md5(data).digest()).decode()] = str(path)
        if data[:1] == b"{":
            try:
                content = json.loads(data)
            except ValueError:
                continue
            if isinstance(content, dict) and "columns" in content and "data" in content:
                tables.append((path.stat().st_mtime, content))
    return sorted(tables, key=lambda t: t[0]), by_digest


def table_media(data: list[list[Any]], by_digest: Mapping[str, str]) -> dict[str, str | None]:
    """``{referenced path: staged file or None}`` for every file the cells of a table reference (images by
    ``sha256``, their class maps by ``digest``)."""
    media: dict[str, str | None] = {}

    def visit(cell: Any) -> None:
        if isinstance(cell, dict):
            if isinstance(cell.get("path"), str) and (cell.get("sha256") or cell.get("digest")):
                media[cell["path"]] = by_digest.get(cell.get("sha256") or cell.get("digest"))
            for value in cell.values():
                visit(value)
        elif isinstance(cell, list):
            for value in cell:
                visit(value)

    visit(data)
    return media


def _folder_tables(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """``{key: [table, …]}`` of one run folder, by step: W&B's copy under ``files/`` (media cells reduced to their
    type name, e.g. ``"Image"``), replaced by the full staged table (cells such as ``{"_type": "image-file",
    "path", "boxes", …}``) when one with the same columns and ids was staged."""
    staged, by_digest = _staged_files(folder)
    found = []
    for path in (folder / "files" / "media" / "table").rglob("*.table.json"):
        m = _TABLE_FILE_RE.match(path.relative_to(folder / "files").as_posix())
        if m:
            found.append((int(m["step"]), m["key"], path))
    tables: dict[str, list[dict[str, Any]]] = {}
    for step, key, path in sorted(found, key=lambda f: (f[0], f[1])):
        content = json.loads(path.read_text(encoding="utf-8"))
        entry = {
            "path": str(path),
            "step": step,
            "columns": content.get("columns"),
            "data": content.get("data"),
            "staged_table": None,
            "media": {},
        }
        ids = [row[0] for row in entry["data"] or []]
        for i, (_, full) in enumerate(staged):
            if full["columns"] == entry["columns"] and [row[0] for row in full["data"]] == ids:
                entry["data"], entry["staged_table"] = full["data"], True
                entry["media"] = table_media(full["data"], by_digest)
                del staged[i]
                break
        tables.setdefault(key, []).append(entry)
    return tables


def read_offline_run(run_dir: str | os.PathLike, run_id: str | None = None) -> dict[str, Any]:
    """What a run logged: ``<run_dir>/metrics.jsonl`` (every scalar, at the step W&B got it), the resolved config
    and its W&B folders' tables and files.

    Args:
        run_dir: the job's run dir (``<run_dir>/wandb/…`` holds the W&B folders).
        run_id: which W&B run; default ``<run_dir>/wandb_id``, else the newest folder's id.

    Returns a dict: ``run_id``, ``dirs`` (the W&B folders of that id, oldest first: one per restart offline), ``dir``
    (the newest), ``config`` (``config_resolved.yaml``), ``history`` (the ``metrics.jsonl`` objects), ``keys``
    (sorted), ``values`` (``{key: [(step, value), …]}``), ``summary`` (each key's last value), ``tables``
    (``{key: [{"path", "step", "columns", "data", "staged_table", "media"}]}`` over all folders: ``media`` maps each
    file a table cell references to its staged copy inside the folder, None when it is not there), ``files``
    (paths under the folders' ``files/``, relative).
    """
    import yaml

    run_dir = Path(run_dir)
    run_id = run_id or read_run_id(run_dir)
    folders = find_wandb_runs(run_dir, run_id)
    if not folders:
        raise FileNotFoundError(f"no W&B run folder{f' for id {run_id!r}' if run_id else ''} under {run_dir}")
    if run_id is None:
        run_id = _RUN_DIR_RE.match(folders[-1].name).group(2)
        folders = [f for f in folders if _RUN_DIR_RE.match(f.name).group(2) == run_id]
    history = (
        read_metrics_jsonl(run_dir / MetricsFileLogger.JSONL_NAME)
        if (run_dir / MetricsFileLogger.JSONL_NAME).is_file()
        else []
    )
    values: dict[str, list[tuple[Any, float]]] = {}
    for row in history:
        for key, value in row.items():
            if key not in ("step", "time") and isinstance(value, (int, float)) and not isinstance(value, bool):
                values.setdefault(key, []).append((row.get("step"), float(value)))
    config_path = run_dir / CONFIG_FILE
    config = yaml.safe_load(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    tables: dict[str, list[dict[str, Any]]] = {}
    files: set[str] = set()
    for folder in folders:
        for key, entries in _folder_tables(folder).items():
            tables.setdefault(key, []).extend(entries)
        files.update(p.relative_to(folder / "files").as_posix() for p in (folder / "files").rglob("*") if p.is_file())
    return {
        "run_id": run_id,
        "dirs": [str(f) for f in folders],
        "dir": str(folders[-1]),
        "config": config or {},
        "history": history,
        "keys": sorted(values),
        "values": values,
        "summary": {k: pairs[-1][1] for k, pairs in values.items()},
        "tables": tables,
        "files": sorted(files),
    }
