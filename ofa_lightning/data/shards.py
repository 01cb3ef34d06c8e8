"""Shard lists: where the tar files are, how many samples each holds, and how to read them.

A *shard spec* (one ``shards:`` entry of a mixture) is any of

* a brace pattern or plain path: ``/data/coco/train-{000000..000031}.tar`` (globs ``*?[`` also work locally);
* a folder written by ``data_recipes`` (holding ``manifest.json`` / ``sizes.json``): the shards of ``split`` are
  taken from the manifest (or, without one, ``{split}-*.tar`` in the folder);
* ``pipe:<shell command>`` whose stdout is the tar (brace patterns expand inside the command);
* an fsspec URL (``s3://``, ``gs://``, ``https://`` …; a URL ending in ``/`` is a folder with a manifest);
* a list of any of the above (concatenated in order).

Sample counts come from the manifest (``sizes.json``: file name -> count) beside the shards; where there is none
they are counted by reading tar headers (``count_samples``).

Samples are grouped WebDataset-style: members ``<key>.<ext>`` sharing a key (the member path up to the first dot of
its file name) make one dict ``{"__key__": key, "__url__": url, ext: bytes, ...}``.
"""

from __future__ import annotations

import glob
import io
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from braceexpand import braceexpand

__all__ = [
    "resolve_shards",
    "open_url",
    "iter_tar_samples",
    "index_tar",
    "iter_json_samples",
    "shard_sizes",
    "count_samples",
    "ShardReadError",
    "TarIndex",
]

MANIFEST_NAME = "manifest.json"
SIZES_NAME = "sizes.json"


class ShardReadError(RuntimeError):
    """A shard could not be opened or read to the end (truncated, missing, failing pipe)."""


def _is_pipe(url: str) -> bool:
    return url.startswith("pipe:")


def _is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _local_path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def _join(base: str, name: str) -> str:
    if _is_remote(base):
        return base.rstrip("/") + "/" + name
    return os.path.join(_local_path(base), name)


def _read_json(url: str) -> Any | None:
    try:
        with open_url(url) as handle:
            return json.loads(handle.read().decode("utf-8"))
    except (OSError, ShardReadError, ValueError, FileNotFoundError):
        return None


def _manifest_shards(folder: str, split: str) -> list[str] | None:
    manifest = _read_json(_join(folder, MANIFEST_NAME))
    if isinstance(manifest, dict) and isinstance(manifest.get("splits"), dict):
        state = manifest["splits"].get(split)
        if state is None:
            known = ", ".join(sorted(manifest["splits"])) or "none"
            raise FileNotFoundError(f"{folder}: the manifest has no split {split!r} (splits: {known})")
        return [_join(folder, s["file"]) for s in state.get("shards", [])]
    sizes = _read_json(_join(folder, SIZES_NAME))
    if isinstance(sizes, dict):
        return [_join(folder, name) for name in sorted(sizes) if name.startswith(f"{split}-")]
    return None


def _resolve_one(spec: str, split: str | None) -> list[str]:
    spec = str(spec).strip()
    if not spec:
        raise ValueError("empty shard spec")
    if _is_pipe(spec):
        return list(braceexpand(spec))
    if _is_remote(spec):
        if spec.endswith("/"):
            if split is None:
                raise ValueError(f"{spec} is a folder: give the split to read from it")
            urls = _manifest_shards(spec, split)
            if urls is None:
                raise FileNotFoundError(f"{spec}: no {MANIFEST_NAME} or {SIZES_NAME} found in this folder")
            return urls
        return list(braceexpand(spec))
    path = _local_path(spec)
    if os.path.isdir(path):
        if split is None:
            raise ValueError(f"{path} is a folder: give the split to read from it")
        urls = _manifest_shards(path, split)
        if urls is None:
            urls = sorted(glob.glob(os.path.join(glob.escape(path), f"{split}-*.tar")))
        if not urls:
            raise FileNotFoundError(f"{path}: no shards of split {split!r} (no manifest entry, no {split}-*.tar)")
        return urls
    urls: list[str] = []
    for item in braceexpand(path):
        if any(ch in item for ch in "*?["):
            found = sorted(glob.glob(item))
            if not found:
                raise FileNotFoundError(f"no shard matches {item!r}")
            urls.extend(found)
        else:
            urls.append(item)
    missing = [u for u in urls if not os.path.isfile(u)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise FileNotFoundError(
            f"shard not found: {missing[0]}{more} (from spec {spec!r}); {_prepare_hint(missing[0])}"
        )
    return urls


def _prepare_hint(missing: str) -> str:
    """The ``ofa-prepare`` command that writes the shard folder a missing path lies in (shards live in
    ``<shards root>/<recipe>/``); the recipe list when the folder is not named after a recipe."""
    folder = Path(missing)
    while folder.suffix == ".tar" or any(ch in folder.name for ch in "*?[{"):
        folder = folder.parent
    try:
        shown = folder.resolve().relative_to(Path.cwd())
    except ValueError:
        shown = folder
    try:
        from data_recipes.registry import load_recipes

        recipes = set(load_recipes())
    except Exception:  # noqa: BLE001 - a hint must never hide the error it explains
        recipes = set()
    if folder.name in recipes:
        return f"make it with: ofa-prepare {folder.name} --out {shown} (ofa-prepare {folder.name} --help: its inputs)"
    return f"make it with: ofa-prepare <recipe> --out {shown} (ofa-prepare --list: the recipes)"


def resolve_shards(spec: str | Sequence[str], split: str | None = None) -> list[str]:
    """Expands a shard spec (see the module doc) into the ordered list of shard URLs.

    Local shards are checked to exist, so a wrong path fails at set-up, not inside a worker.
    """
    if isinstance(spec, (list, tuple)) or (hasattr(spec, "__iter__") and not isinstance(spec, (str, bytes))):
        urls: list[str] = []
        for item in spec:
            urls.extend(_resolve_one(item, split))
    else:
        urls = _resolve_one(spec, split)
    if not urls:
        raise FileNotFoundError(f"shard spec {spec!r} (split {split!r}) names no shard")
    return urls


class _PipeReader(io.RawIOBase):
    """stdout of a shell command as a read-only stream; a non-zero exit status raises on close."""

    def __init__(self, command: str):
        self.command = command
        self.proc = subprocess.Popen(command, shell=True, stdout=subprocess.PIPE, bufsize=1 << 16)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.proc.stdout.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        self.proc.stdout.close()
        status = self.proc.wait()
        super().close()
        if status != 0:
            raise ShardReadError(f"pipe:{self.command} exited with status {status}")


def open_url(url: str) -> IO[bytes]:
    """Opens a shard (local path, ``file://``, ``pipe:cmd`` or fsspec URL) for binary reading."""
    if _is_pipe(url):
        return io.BufferedReader(_PipeReader(url[len("pipe:") :]), buffer_size=1 << 16)
    if _is_remote(url):
        import fsspec

        return fsspec.open(url, "rb").open()
    return open(_local_path(url), "rb")


def split_member_name(name: str) -> tuple[str, str] | None:
    """``dir/abc.seg.png`` -> (``dir/abc``, ``seg.png``); None for names without an extension."""
    head, _, base = name.rpartition("/")
    if "." not in base or base.startswith("."):
        return None
    stem, ext = base.split(".", 1)
    return (f"{head}/{stem}" if head else stem), ext.lower()


def _sample_members(tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, str, str]]:
    """Regular-file members of a tar whose names split into (sample key, extension)."""
    for member in tar:
        if member.isfile() and (parts := split_member_name(member.name)) is not None:
            yield member, parts[0], parts[1]


def ends_cleanly(handle: IO[bytes], offset: int) -> bool:
    """The tar's end-of-archive marker (two zero blocks) is at ``offset``, where ``tarfile`` stopped reading
    headers. ``tarfile`` also stops, without an error, at a garbled header or a file cut short: then there is
    something else there, or nothing."""
    try:
        handle.seek(offset)
        tail = handle.read(2 * tarfile.BLOCKSIZE)
    except (OSError, ValueError):
        return False
    return len(tail) == 2 * tarfile.BLOCKSIZE and not any(tail)


def iter_tar_samples(url: str, start: int = 0, stop: int | None = None) -> Iterator[dict[str, Any]]:
    """Streams the samples of one shard in file order (members grouped by key).

    ``start`` / ``stop``: only the samples with index in ``[start, stop)`` (the members of the samples before
    ``start`` are passed over without being read into memory; reading ends at ``stop``).
    Raises ``ShardReadError`` (after yielding what was readable) when the tar is missing, truncated or corrupt (a
    local file cut inside a member too, which ``tarfile`` would read as a shorter archive).
    """
    try:
        handle = open_url(url)
    except (OSError, ValueError) as exc:
        raise ShardReadError(f"{url}: cannot open ({type(exc).__name__}: {exc})") from None
    current: dict[str, Any] | None = None
    current_key: str | None = None
    index = -1  # index of the sample whose members are being read
    finished = False
    try:
        # a local file is read in tarfile's seeking mode: members before ``start`` are seeked over, not read, and a
        # member is one read, not a chain of 10 KiB stream blocks joined; pipes and remote URLs must stream
        local = not (_is_pipe(url) or _is_remote(url))
        # a local tar cut short reads as a shorter archive in seeking mode: a member reaching past the end is the cut
        size = os.fstat(handle.fileno()).st_size if local else None
        with tarfile.open(fileobj=handle, mode="r:*" if local else "r|*") as tar:
            for member, key, ext in _sample_members(tar):
                if size is not None and member.offset_data + member.size > size:
                    raise ShardReadError(f"cut short inside member {member.name} ({size} bytes)")
                if key != current_key:
                    if current is not None:
                        yield current
                        current = None
                    current_key, index = key, index + 1
                    if stop is not None and index >= stop:
                        break
                if index < start:
                    continue
                data = tar.extractfile(member).read()
                if current is None:
                    current = {"__key__": key, "__url__": url}
                current[ext] = data
            else:
                finished = True
                if size is not None and index >= 0 and not ends_cleanly(handle, tar.offset):
                    # tarfile ends quietly at a garbled header or a cut: the samples before the last one are
                    # complete, the last may have lost members
                    raise ShardReadError(f"unreadable after {index + 1} samples (a damaged header, or cut short)")
    except (tarfile.TarError, OSError, EOFError, ShardReadError) as exc:
        raise ShardReadError(f"{url}: unreadable tar ({type(exc).__name__}: {exc})") from None
    finally:
        try:
            handle.close()
        except ShardReadError:
            if finished:  # a failing pipe; an early close (consumer stopped) legitimately kills the command
                raise
    if current is not None:
        yield current


def iter_json_samples(urls: Sequence[str], stats: Any) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """``(sample, its JSON fields)`` of the shards in order, for the passes that read shards outside the training
    stream (tokenizer training, SCST references, baselines): a shard that cannot be read to the end gives the
    samples before the damage and one ``unreadable shard`` skip; a sample without JSON, or with invalid JSON or JSON
    that is not an object, is a ``missing json`` / ``bad json`` skip. ``stats.skip(reason, detail, name)`` counts
    and names each skip (``ofa_lightning.data.samples.DataStats``)."""
    for url in urls:
        try:
            for sample in iter_tar_samples(url):
                name = f"{sample['__key__']} in {url}"
                if "json" not in sample:
                    stats.skip("missing json", "the sample has no .json member", name)
                    continue
                try:
                    fields = json.loads(sample["json"].decode("utf-8"))
                except (UnicodeDecodeError, ValueError) as exc:
                    stats.skip("bad json", f"{type(exc).__name__}: {exc}", name)
                    continue
                if not isinstance(fields, dict):
                    stats.skip("bad json", f"a JSON {type(fields).__name__}, not an object", name)
                    continue
                yield sample, fields
        except ShardReadError as exc:
            stats.skip("unreadable shard", str(exc), url)


@dataclass
class TarIndex:
    """Random-access index of one shard: key -> {ext: (offset, size)} in file order."""

    url: str
    keys: list[str] = field(default_factory=list)
    members: dict[str, dict[str, tuple[int, int]]] = field(default_factory=dict)
    damage: str | None = None  # index_tar(partial=True) of a damaged shard: what is wrong

    def read(self, handle: IO[bytes], key: str) -> dict[str, Any]:
        sample: dict[str, Any] = {"__key__": key, "__url__": self.url}
        for ext, (offset, size) in self.members[key].items():
            handle.seek(offset)
            data = handle.read(size)
            if len(data) != size:
                raise ShardReadError(f"{self.url}: member {key}.{ext} is truncated")
            sample[ext] = data
        return sample


def index_tar(url: str, partial: bool = False) -> TarIndex:
    """Reads only the tar headers of a seekable shard (local or fsspec) and records where each member lies.

    ``partial``: a shard damaged part-way (cut short, a garbled header) gives the samples before the damage, and
    ``TarIndex.damage`` says what is wrong (else ``ShardReadError``)."""
    if _is_pipe(url):
        raise ValueError(f"{url}: a pipe: shard cannot be read at random; use eval mode 'split' for pipe: URLs")
    index = TarIndex(url)
    try:
        with open_url(url) as handle, tarfile.open(fileobj=handle, mode="r:") as tar:
            size = getattr(handle, "size", None)
            size = size() if callable(size) else size
            if size is None and hasattr(handle, "fileno"):
                size = os.fstat(handle.fileno()).st_size
            for member, key, ext in _sample_members(tar):
                if size is not None and member.offset_data + member.size > size:
                    raise ShardReadError(f"cut short inside member {member.name}")
                if key not in index.members:
                    index.members[key] = {}
                    index.keys.append(key)
                index.members[key][ext] = (member.offset_data, member.size)
            if index.keys and not ends_cleanly(handle, tar.offset):
                raise ShardReadError(f"unreadable after {len(index.keys)} samples (a damaged header, or cut short)")
    except (tarfile.TarError, OSError, EOFError, ShardReadError) as exc:
        message = f"{url}: cannot index ({type(exc).__name__}: {exc})"
        if not partial:
            raise ShardReadError(message) from None
        if index.keys:  # the last sample may have lost members to the damage
            index.members.pop(index.keys.pop())
        index.damage = message
    return index


def count_samples(url: str) -> int:
    """Number of samples (distinct consecutive keys) in a shard, by reading it."""
    if not _is_pipe(url):
        return len(index_tar(url).keys)
    return sum(1 for _ in iter_tar_samples(url))


def _parent(url: str) -> tuple[str, str]:
    if _is_remote(url):
        head, _, name = url.rpartition("/")
        return head + "/", name
    path = _local_path(url)
    return os.path.dirname(path) or ".", os.path.basename(path)


def shard_sizes(urls: Sequence[str], *, count_missing: bool = True) -> dict[str, int | None]:
    """Sample count per shard from the ``sizes.json``/``manifest.json`` beside it; others are counted by reading
    the shard when ``count_missing`` (else None)."""
    tables: dict[str, dict[str, int]] = {}
    out: dict[str, int | None] = {}
    for url in urls:
        count: int | None = None
        if not _is_pipe(url):
            folder, name = _parent(url)
            if folder not in tables:
                table: dict[str, int] = {}
                sizes = _read_json(_join(folder, SIZES_NAME))
                if isinstance(sizes, dict):
                    table.update({k: int(v) for k, v in sizes.items()})
                else:
                    manifest = _read_json(_join(folder, MANIFEST_NAME))
                    if isinstance(manifest, dict):
                        for state in (manifest.get("splits") or {}).values():
                            for shard in state.get("shards", []):
                                table[shard["file"]] = int(shard["num_samples"])
                tables[folder] = table
            count = tables[folder].get(name)
        if count is None and count_missing:
            count = count_samples(url)
        out[url] = count
    return out
