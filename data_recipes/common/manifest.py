"""The out dir's record of what was written: `manifest.json` (full) and `sizes.json` (open_clip style).

manifest.json:
    {"format": 1, "recipe": name, "args": {...}, "created": iso, "updated": iso, "complete": bool,
     "splits": {split: {"complete": bool, "num_samples": n, "num_skipped": k,
                        "skip_reasons": {category: count}, "warnings": {warning: count},
                        "skipped": [{"index", "id", "reason", "origin"}...]   (first MAX_SKIP_RECORDS),
                        "shards": [{"file", "num_samples", "bytes", "sha256", "first_index", "end_index",
                                    "num_skipped", "skip_reasons", "warnings"}...],
                        "tail": {...same counters for skips after the last shard...}}},
     "extras": {file name: description}}
`first_index`/`end_index` count raw candidates (written + skipped), which is what lets a re-run skip the
part already on disk. Both files are replaced atomically.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from data_recipes.common.errors import PrepareError

MANIFEST_NAME = "manifest.json"
SIZES_NAME = "sizes.json"
MANIFEST_FORMAT = 1
MAX_SKIP_RECORDS = 10_000


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, obj: Any) -> None:
    """Writes JSON to a temp file beside `path`, fsyncs, then renames over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(obj, handle, indent=1, ensure_ascii=False, sort_keys=False)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def new_manifest(recipe: str, args: dict[str, Any]) -> dict[str, Any]:
    stamp = now_iso()
    return {
        "format": MANIFEST_FORMAT,
        "recipe": recipe,
        "args": args,
        "created": stamp,
        "updated": stamp,
        "complete": False,
        "splits": {},
        "extras": {},
    }


def load_manifest(out_dir: Path) -> dict[str, Any] | None:
    path = Path(out_dir) / MANIFEST_NAME
    if not path.exists():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PrepareError(f"{path} is unreadable ({exc}); rerun with --overwrite to rebuild {out_dir}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise PrepareError(f"{path} is not a manifest of this tool's format; rerun with --overwrite")
    return manifest


def sizes_of(manifest: dict[str, Any]) -> dict[str, int]:
    """open_clip-style mapping shard file -> sample count, over all splits."""
    return {shard["file"]: shard["num_samples"] for split in manifest["splits"].values() for shard in split["shards"]}


def save_manifest(out_dir: Path, manifest: dict[str, Any]) -> None:
    manifest["updated"] = now_iso()
    for state in manifest["splits"].values():
        parts = state["shards"] + ([state["tail"]] if state.get("tail") else [])
        state["num_samples"] = sum(p.get("num_samples", 0) for p in state["shards"])
        state["num_skipped"] = sum(p["num_skipped"] for p in parts)
        state["skip_reasons"] = merge_counts(p["skip_reasons"] for p in parts)
        state["warnings"] = merge_counts(p["warnings"] for p in parts)
    write_json_atomic(Path(out_dir) / MANIFEST_NAME, manifest)
    write_json_atomic(Path(out_dir) / SIZES_NAME, sizes_of(manifest))


def merge_counts(counters) -> dict[str, int]:
    total: dict[str, int] = {}
    for counter in counters:
        for key, value in counter.items():
            total[key] = total.get(key, 0) + value
    return dict(sorted(total.items()))
