"""On-disk indexes that keep `ofa-prepare`'s memory constant in the number of rows.

- :class:`KeySet`: the ids already written (duplicate-id skips), a set kept in a temporary SQLite file.
- :class:`CocoIndex`: a COCO-format annotation JSON read as a stream (``ijson``): its annotations go to a temporary
  SQLite table keyed by image id, then the ``images`` list is streamed and each image is joined with its
  annotations. Only the categories (a few hundred names) stay in memory.

Both live in the system's temporary folder and are deleted when closed (or when the process ends).
"""

from __future__ import annotations

import json
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ijson
from ijson.common import ObjectBuilder

from data_recipes.common.errors import PrepareError

__all__ = ["CocoIndex", "KeySet"]

_BATCH = 2048  # rows per SQLite transaction while indexing


def _temp_db() -> tuple[sqlite3.Connection, tempfile.TemporaryDirectory]:
    folder = tempfile.TemporaryDirectory(prefix="ofa-prepare-index-")
    db = sqlite3.connect(Path(folder.name) / "index.sqlite", check_same_thread=False)
    db.execute("PRAGMA journal_mode=OFF")
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-8192")  # at most 8 MiB of page cache
    return db, folder


class KeySet:
    """A set of strings on disk: ``key in keys``, ``keys.add(key)``, ``len(keys)``."""

    def __init__(self) -> None:
        self._db, self._folder = _temp_db()
        self._db.execute("CREATE TABLE keys (key TEXT PRIMARY KEY) WITHOUT ROWID")
        self._count = 0

    def add(self, key: str) -> None:
        cursor = self._db.execute("INSERT OR IGNORE INTO keys VALUES (?)", (str(key),))
        self._count += cursor.rowcount

    def __contains__(self, key: object) -> bool:
        return self._db.execute("SELECT 1 FROM keys WHERE key = ?", (str(key),)).fetchone() is not None

    def __len__(self) -> int:
        return self._count

    def close(self) -> None:
        self._db.close()
        self._folder.cleanup()


def _json_events(path: Path, what: str) -> Iterator[tuple[str, str, Any]]:
    try:
        with open(path, "rb") as handle:
            yield from ijson.parse(handle, use_float=True)
    except ijson.JSONError as exc:
        raise PrepareError(f"{path} ({what}) is not valid JSON (or not UTF-8): {exc}") from None


class CocoIndex:
    """``images()`` streams ``(position, image info)``; ``annotations(image_id)`` lists that image's annotations in
    file order; ``categories`` maps category id to name."""

    WHAT = "a COCO-format annotation JSON"

    def __init__(self, path: Path):
        self.path = Path(path)
        self.categories: dict[Any, Any] = {}
        self._db, self._folder = _temp_db()
        self._db.execute("CREATE TABLE anns (image_id TEXT, position INTEGER, ann TEXT)")
        self._index_annotations()
        self._db.execute("CREATE INDEX anns_by_image ON anns (image_id, position)")

    def _index_annotations(self) -> None:
        top_keys: set[str] = set()
        rows: list[tuple[str, int, str]] = []
        builder: ObjectBuilder | None = None
        position = 0
        first = True
        for prefix, event, value in _json_events(self.path, self.WHAT):
            if first:
                if event != "start_map":
                    raise PrepareError(f"{self.path} is not a JSON object: is it {self.WHAT}?")
                first = False
            if prefix == "" and event == "map_key":
                top_keys.add(value)
                continue
            if builder is None:
                if event == "start_map" and prefix in ("annotations.item", "categories.item"):
                    builder = ObjectBuilder()
                else:
                    continue
            builder.event(event, value)
            if event == "end_map" and prefix in ("annotations.item", "categories.item"):
                item, builder = builder.value, None
                if prefix == "categories.item":
                    self.categories[item.get("id")] = item.get("name")
                    continue
                rows.append((json.dumps(item.get("image_id")), position, json.dumps(item)))
                position += 1
                if len(rows) >= _BATCH:
                    self._db.executemany("INSERT INTO anns VALUES (?, ?, ?)", rows)
                    rows.clear()
        if rows:
            self._db.executemany("INSERT INTO anns VALUES (?, ?, ?)", rows)
        self._db.commit()
        if "images" not in top_keys:
            raise PrepareError(f"{self.path} has no 'images' list: is it {self.WHAT}?")

    def images(self) -> Iterator[tuple[int, Any]]:
        with open(self.path, "rb") as handle:
            try:
                yield from enumerate(ijson.items(handle, "images.item", use_float=True))
            except ijson.JSONError as exc:
                raise PrepareError(f"{self.path} ({self.WHAT}) is not valid JSON: {exc}") from None

    def annotations(self, image_id: Any) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT ann FROM anns WHERE image_id = ? ORDER BY position", (json.dumps(image_id),)
        ).fetchall()
        return [json.loads(row[0]) for row in rows]

    def close(self) -> None:
        self._db.close()
        self._folder.cleanup()
