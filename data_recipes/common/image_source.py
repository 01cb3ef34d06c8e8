"""Reads the image files that annotations name, from folders, .zip or .tar archives.

COCO images ship as zips and ImageNet as tars: reading members by name avoids unpacking them. Several roots
may be given (e.g. coco/train2014 and coco/val2014); a name is tried under each. Archive members with
absolute names or `..` make the archive refused, as do names from annotations that would climb out of a root.
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from data_recipes.common.errors import BadSample, PrepareError
from data_recipes.common.files import safe_relative_path

#: After this many lookups without a single hit the roots are almost surely wrong: stop instead of skipping all.
MISSES_BEFORE_GIVING_UP = 20


def _member_is_unsafe(name: str) -> bool:
    pure = PurePosixPath(name.replace("\\", "/"))
    return name.startswith(("/", "\\")) or pure.is_absolute() or ".." in pure.parts


class _ArchiveRoot:
    """Index of one archive: normalised member name -> reader, plus a basename index for bare names."""

    def __init__(self, path: Path):
        self.path = path
        self._by_name: dict[str, object] = {}
        self._by_base: dict[str, object | None] = {}
        if zipfile.is_zipfile(path):
            self._zip = zipfile.ZipFile(path)
            self._tar = None
            entries = [(info.filename, info) for info in self._zip.infolist() if not info.is_dir()]
        else:
            try:
                self._tar = tarfile.open(path)
            except tarfile.TarError as exc:
                raise PrepareError(f"image root {path} is neither a folder nor a readable .zip/.tar: {exc}") from None
            self._zip = None
            entries = []
            for info in self._tar.getmembers():
                if info.issym() or info.islnk():
                    raise PrepareError(f"archive {path} holds a link member {info.name!r}; refusing the archive")
                if info.isfile():
                    entries.append((info.name, info))
        for name, info in entries:
            if _member_is_unsafe(name):
                raise PrepareError(
                    f"archive {path} holds an unsafe member name {name!r} (absolute or '..'); refusing the archive"
                )
            clean = "/".join(p for p in PurePosixPath(name).parts if p not in ("", "."))
            self._by_name[clean] = info
            base = clean.rsplit("/", 1)[-1]
            self._by_base[base] = None if base in self._by_base else info

    def read(self, name: str) -> bytes | None:
        info = self._by_name.get(name)
        if info is None and "/" not in name:
            info = self._by_base.get(name)
        if info is None:
            return None
        if self._zip is not None:
            return self._zip.read(info)
        handle = self._tar.extractfile(info)
        return handle.read() if handle is not None else None


class ImageSource:
    """Looks image names up under an ordered list of roots (folders or archives)."""

    def __init__(self, roots: Sequence[Path], what: str = "image root"):
        if not roots:
            raise PrepareError(f"no {what} given")
        self.roots: list[Path | _ArchiveRoot] = []
        for root in roots:
            root = Path(root)
            if root.is_dir():
                self.roots.append(root)
            elif root.is_file():
                self.roots.append(_ArchiveRoot(root))
            else:
                raise PrepareError(
                    f"expected {what} (a folder, .zip or .tar of images) at {root}, but it does not exist"
                )
        self._hits = 0
        self._misses = 0

    def read(self, *names: str) -> bytes:
        """Bytes of the first name found under any root; unsafe or missing names are a `BadSample`."""
        clean = [safe_relative_path(n, "image file") for n in names]
        for root in self.roots:
            for name in clean:
                if isinstance(root, Path):
                    path = root / name
                    if path.is_file():
                        self._hits += 1
                        return path.read_bytes()
                else:
                    data = root.read(name)
                    if data is not None:
                        self._hits += 1
                        return data
        self._misses += 1
        where = ", ".join(str(r if isinstance(r, Path) else r.path) for r in self.roots)
        if self._hits == 0 and self._misses >= MISSES_BEFORE_GIVING_UP:
            raise PrepareError(
                f"none of the first {self._misses} images was found: expected e.g. {clean[0]!r} "
                f"under {where}; is --images pointing at the right folder?"
            )
        raise BadSample(f"missing image: {' or '.join(clean)} not found under {where}")
