"""Where a vocabulary's files come from: the file readers (JSON vocabulary, BPE merges, fairseq ``dict.txt``,
WordPiece ``vocab.txt``) and the cached download of a remote folder of them."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path


# ---------------------------------------------------------------------------------------------------------------
# file readers
# ---------------------------------------------------------------------------------------------------------------
def read_json_vocab(path: Path) -> dict[str, int]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or not all(isinstance(v, int) for v in data.values()):
        raise ValueError(f"{path}: expected a JSON object mapping token strings to integer ids")
    return data


def read_merges(path: Path) -> list[tuple[str, str]]:
    merges: list[tuple[str, str]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line or (lineno == 1 and line.startswith("#version")):
                continue
            parts = line.split(" ")
            if len(parts) != 2 or not parts[0] or not parts[1]:
                raise ValueError(f"{path}:{lineno}: expected a merge 'A B' (two tokens, one space), got {line!r}")
            merges.append((parts[0], parts[1]))
    return merges


def _lines(path: Path) -> list[str]:
    """Lines split on ``\\n`` only (a vocabulary may hold U+2028 and other characters ``str.splitlines`` breaks on)."""
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_fairseq_dict(path: Path) -> list[str]:
    """Symbols of a fairseq ``dict.txt`` in file order (lines ``SYMBOL COUNT [#fairseq:overwrite]``; an empty
    symbol, as fairseq reads it, is kept in its place)."""
    symbols: list[str] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(_lines(path), 1):
        body = line
        if body.endswith(" #fairseq:overwrite"):
            body = body[: -len(" #fairseq:overwrite")]
        symbol, sep, count = body.rpartition(" ")
        if not sep or not count.lstrip("-").isdigit():
            raise ValueError(
                f"{path}:{lineno}: cannot parse dictionary line {line!r}; expected '<symbol> <count>' "
                "(fairseq dict.txt format, e.g. '13 850314647')"
            )
        if symbol in seen:
            raise ValueError(f"{path}:{lineno}: duplicate symbol {symbol!r} (first seen on line {seen[symbol]})")
        seen[symbol] = lineno
        symbols.append(symbol)
    if not symbols:
        raise ValueError(f"{path}: dictionary is empty")
    return symbols


def read_wordpiece_vocab(path: Path) -> list[str]:
    """Tokens of a BERT ``vocab.txt``, one a line, in id order."""
    tokens = _lines(path)
    if not tokens:
        raise ValueError(f"{path}: vocabulary is empty")
    return tokens


def require(directory: Path, names: Sequence[str], layout: str) -> list[Path]:
    paths = [directory / n for n in names]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(
                f"expected {p.name} at {p} ({layout} layout needs {', '.join(names)} in {directory})"
            )
    return paths


# ---------------------------------------------------------------------------------------------------------------
# URL download (cached)
# ---------------------------------------------------------------------------------------------------------------
def is_url(s: str) -> bool:
    return s.startswith(("http://", "https://"))


def default_cache_root(kind: str = "bpe") -> Path:
    return Path(os.path.expanduser("~")) / ".cache" / "ofa_lightning" / kind


def download(url: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=120) as resp:
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
        os.replace(tmp, dest)  # atomic: concurrent processes never see a half-written file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def fetch_url_dir(
    url: str,
    cache_dir: str | os.PathLike | None,
    layouts: Sequence[tuple[str, Sequence[str]]],
    what: str = "BPE",
    cache_kind: str = "bpe",
) -> Path:
    """Download a remote folder once into ``<cache>/<sha256(url)[:16]>/`` and return the local path.

    ``layouts`` are ``(name, file names)`` pairs tried in order (the first whose files all exist wins). Files
    already in the cache are not downloaded again.
    """
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_root(cache_kind)
    local = root / hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    base = url if url.endswith("/") else url + "/"
    errors: list[str] = []
    for _, names in layouts:
        if all((local / n).is_file() for n in names):
            return local
        try:
            for n in names:
                if not (local / n).is_file():
                    download(urllib.parse.urljoin(base, n), local / n)
            return local
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise ConnectionError(
                    f"could not download {what} files from {url}: HTTP {e.code} for {e.filename}"
                ) from e
            errors.append(f"{e.filename}: HTTP 404")
        except urllib.error.URLError as e:
            raise ConnectionError(f"could not download {what} files from {url}: {e.reason}") from e
    expected = " or ".join(f"{', '.join(names)} ({name} layout)" for name, names in layouts)
    raise FileNotFoundError(f"no {what} files found at {url}: expected {expected} under it ({'; '.join(errors)})")
