"""A pickle reader that admits only plain data, for files like RefCOCO's `refs(unc).p`.

A pickle can name any importable callable (`os.system`, `subprocess.Popen`...) and call it while loading.
Plain containers and scalars are built by opcodes that never look a global up, so refusing every global
lookup (`find_class`) and persistent id, then checking the loaded tree, admits exactly: dict, list, tuple,
str, int, float, bool and None. The refer toolkit's pickles are Python 2 pickles; their byte strings are
decoded as UTF-8, with undecodable bytes kept as surrogates so that the text checks skip them per sample.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from data_recipes.common.errors import PrepareError

ALLOWED_TYPES = (dict, list, tuple, str, int, float, bool, type(None))


class UnsafePickleError(PrepareError, pickle.UnpicklingError):
    """The pickle asks for something other than plain containers and scalars."""


class RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global and persistent id; see the module docstring for why that is enough."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        raise UnsafePickleError(
            f"refusing to load {module}.{name}: this pickle may only hold dict, list, tuple, str, int, "
            "float, bool and None (it would import or call code)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing a pickle with persistent ids: only plain data is allowed")


def _check_plain(obj: Any) -> None:
    """Walks the loaded object (iteratively, deep trees are fine) and refuses any other type (e.g. bytes)."""
    stack = [obj]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if type(item) not in ALLOWED_TYPES:
            raise UnsafePickleError(
                f"refusing a pickle holding a {type(item).__name__}: only dict, list, tuple, "
                "str, int, float, bool and None are allowed"
            )
        if isinstance(item, (dict, list, tuple)):
            if id(item) in seen:
                continue
            seen.add(id(item))
            if isinstance(item, dict):
                stack.extend(item.keys())
                stack.extend(item.values())
            else:
                stack.extend(item)


def safe_loads(data: bytes) -> Any:
    """Loads plain data from pickle bytes or raises `UnsafePickleError` without running anything."""
    try:
        obj = RestrictedUnpickler(io.BytesIO(data), encoding="utf-8", errors="surrogateescape").load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or malformed pickles raise many types
        raise PrepareError(f"not a readable pickle: {type(exc).__name__}: {exc}") from None
    _check_plain(obj)
    return obj


def safe_load_file(path: Path) -> Any:
    """`safe_loads` of a file, with the file named in any error."""
    data = Path(path).read_bytes()
    try:
        return safe_loads(data)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except PrepareError as exc:
        raise PrepareError(f"{path}: {exc}") from None
