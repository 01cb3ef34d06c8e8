"""Checkpoint integrity: a checksum written with every checkpoint, verified before every load.

Every checkpoint the kit writes gets a *sidecar* ``<file>.sha256.json`` (``{"sha256", "bytes", "global_step"}``),
written atomically once the checkpoint is in place (:func:`write_checksum`). :func:`verify_checkpoint` runs before a
checkpoint is read:

* the file's sha256 equals the sidecar's: good;
* no sidecar (a checkpoint from elsewhere), or one that does not match: the zip members' CRC-32s are checked
  (``torch.save`` files are zip archives; ``zipfile.testzip``). A damaged member is refused naming the file and the
  member (``archive/data/17``: one tensor's bytes); an intact archive whose sidecar does not match (a kill between
  the checkpoint's rename and its sidecar's) is accepted with a warning;
* a file that is not a zip archive (torch's legacy format, e.g. older OFA ``.pt`` files) is left to ``torch.load``
  when it has no sidecar, and refused when its sidecar does not match.

Damage is a :class:`DamagedCheckpointError` (a :class:`~ofa_lightning.errors.UserError`): one line naming the file
and the damaged part. A verified ``(path, size, mtime)`` is remembered for the process, so reading a checkpoint
twice (``resume=auto`` picks it, Lightning restores it) hashes it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ofa_lightning.errors import UserError

__all__ = [
    "SIDECAR_SUFFIX",
    "DamagedCheckpointError",
    "CheckpointInfo",
    "sidecar_path",
    "write_checksum",
    "read_sidecar",
    "verify_checkpoint",
    "file_sha256",
]

log = logging.getLogger(__name__)

SIDECAR_SUFFIX = ".sha256.json"
_VERIFIED: dict[tuple[str, int, int], CheckpointInfo] = {}


class DamagedCheckpointError(UserError):
    """A checkpoint whose bytes are not what was written (truncated, overwritten in part, not a checkpoint)."""


@dataclass(frozen=True)
class CheckpointInfo:
    path: Path
    global_step: int | None  # from the sidecar (None: no matching sidecar)
    method: str  # "sha256" or "zip-crc"


def sidecar_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def file_sha256(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def write_checksum(path: str | os.PathLike, global_step: int | None = None, sha256: str | None = None) -> Path:
    """Write ``path``'s sidecar (atomically: a temporary file renamed onto it); returns the sidecar's path."""
    path = Path(path)
    record = {
        "sha256": sha256 or file_sha256(path),
        "bytes": path.stat().st_size,
        "global_step": None if global_step is None else int(global_step),
    }
    target = sidecar_path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def read_sidecar(path: str | os.PathLike) -> dict | None:
    """The sidecar's record, or None when there is none or it is unreadable."""
    try:
        record = json.loads(sidecar_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("sha256"), str) else None


def _zip_damage(path: Path) -> str | None:
    """None when every zip member's CRC is right (or the file is no zip archive at all: torch's legacy format);
    else what is damaged."""
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile as exc:
        return f"not a readable zip archive ({exc}; truncated or overwritten)"
    except (OSError, EOFError, ValueError, NotImplementedError) as exc:
        return f"unreadable zip archive ({type(exc).__name__}: {exc})"
    return None if bad is None else f"member {bad} fails its CRC check (its bytes were changed)"


def verify_checkpoint(path: str | os.PathLike) -> CheckpointInfo:
    """Check ``path`` against its sidecar, else its zip CRCs (see the module doc); raises
    :class:`DamagedCheckpointError` naming the file and the damaged part."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as exc:
        raise DamagedCheckpointError(f"checkpoint {path}: cannot read it ({exc.strerror or exc})") from None
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key in _VERIFIED:
        return _VERIFIED[key]
    record = read_sidecar(path)
    info: CheckpointInfo | None = None
    mismatch = ""
    if record is not None:
        if record.get("bytes") not in (None, stat.st_size):
            mismatch = f"{stat.st_size} bytes, {record['bytes']} were written"
        elif file_sha256(path) != record["sha256"]:
            mismatch = "its sha256 differs from the one written with it"
        else:
            step = record.get("global_step")
            info = CheckpointInfo(path, None if step is None else int(step), "sha256")
    if info is None:
        damage = _zip_damage(path)
        if damage is None and mismatch and not zipfile.is_zipfile(path):
            damage = "not a zip archive"
        if damage is not None:
            detail = f"{damage}; {mismatch}" if mismatch else damage
            raise DamagedCheckpointError(f"checkpoint {path} is damaged: {detail}")
        if mismatch:
            log.warning(
                "checkpoint %s: %s (%s), but every zip member's CRC is intact: using it",
                path,
                sidecar_path(path).name,
                mismatch,
            )
        info = CheckpointInfo(path, None, "zip-crc")
    _VERIFIED[key] = info
    return info
