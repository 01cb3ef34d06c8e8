"""Atomic WebDataset tar shards.

A shard is written to `<name>.partial` in the same folder, flushed to disk, then renamed: a file under a
final name is always complete. Members get fixed metadata (mtime 0, uid 0, mode 0644), so the same samples
give byte-identical shards and equal sha256s across runs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from data_recipes.common.errors import BadSample
from data_recipes.common.sample import Sample

PARTIAL_SUFFIX = ".partial"


def encode_fields(fields: dict) -> bytes:
    """Deterministic UTF-8 JSON; NaN/inf or non-JSON values are a skip, not a crash."""
    try:
        return json.dumps(fields, ensure_ascii=False, sort_keys=True, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise BadSample(f"bad fields: cannot encode as JSON ({exc})") from None


class _HashingFile:
    """File wrapper that hashes and counts what tarfile writes, so the shard is not read back."""

    def __init__(self, handle):
        self._handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self._handle.write(data)

    def tell(self) -> int:
        return self.size


@dataclass(frozen=True)
class ShardInfo:
    file: str
    num_samples: int
    bytes: int
    sha256: str


class ShardWriter:
    """Collects samples into one tar; `commit()` renames it into place, `abort()` deletes the partial file."""

    def __init__(self, final_path: Path):
        self.final_path = Path(final_path)
        self.partial_path = self.final_path.with_name(self.final_path.name + PARTIAL_SUFFIX)
        self._handle = open(self.partial_path, "wb")
        self._hashing = _HashingFile(self._handle)
        self._tar = tarfile.open(fileobj=self._hashing, mode="w", format=tarfile.PAX_FORMAT)
        self.num_samples = 0

    @property
    def size(self) -> int:
        return self._hashing.size

    def _add_member(self, name: str, data: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mtime = 0
        info.mode = 0o644
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        self._tar.addfile(info, io.BytesIO(data))

    def add(self, sample: Sample, json_bytes: bytes) -> None:
        if sample.image is not None:
            self._add_member(f"{sample.key}.{sample.image_ext}", sample.image)
        self._add_member(f"{sample.key}.json", json_bytes)
        self.num_samples += 1

    def commit(self) -> ShardInfo:
        self._tar.close()
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()
        os.replace(self.partial_path, self.final_path)
        return ShardInfo(self.final_path.name, self.num_samples, self._hashing.size, self._hashing.digest.hexdigest())

    def abort(self) -> None:
        try:
            self._tar.close()
        except Exception:  # the tar may be half-written; we delete it anyway
            pass
        self._handle.close()
        self.partial_path.unlink(missing_ok=True)
