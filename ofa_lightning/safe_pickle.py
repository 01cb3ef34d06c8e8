"""A pickle reader that admits only plain data, for the pickles users hand the kit (RefCOCO's ``refs(unc).p``,
CIDEr document frequencies such as OFA's ``coco-train-words.p``).

A pickle can name any importable callable (``os.system``, ``subprocess.Popen``...) and call it while loading.
Plain containers and scalars are built by opcodes that never look a global up, so refusing every global lookup
(``find_class``) except a short allow-list, and every persistent id, then checking the loaded tree, admits exactly:
dict, list, tuple, str, int, float, bool and None, plus what a caller allows by name (the CIDEr caches hold a
``collections.defaultdict(float)``: ``allowed_globals=DEFAULTDICT_OF_NUMBERS``). A leaf utility: the standard
library and ``ofa_lightning.errors`` only, importable from every layer and from ``data_recipes``.
"""

from __future__ import annotations

import collections
import io
import pickle
from pathlib import Path
from typing import Any

from ofa_lightning.errors import UserError

__all__ = [
    "ALLOWED_TYPES",
    "DEFAULTDICT_OF_NUMBERS",
    "UnsafePickleError",
    "UnreadablePickleError",
    "RestrictedUnpickler",
    "safe_loads",
    "safe_load_file",
]

ALLOWED_TYPES = (dict, list, tuple, str, int, float, bool, type(None))
# (module, name) pairs: a defaultdict whose factory is float or int (self-critical.pytorch's df caches)
DEFAULTDICT_OF_NUMBERS = frozenset(
    {
        ("collections", "defaultdict"),
        ("builtins", "float"),
        ("builtins", "int"),
        ("__builtin__", "float"),
        ("__builtin__", "int"),
    }
)
_OBJECTS = {
    ("collections", "defaultdict"): collections.defaultdict,
    ("builtins", "float"): float,
    ("builtins", "int"): int,
    ("__builtin__", "float"): float,
    ("__builtin__", "int"): int,
}


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """The pickle asks for something other than plain containers and scalars."""


class UnreadablePickleError(UserError):
    """Not a readable pickle (truncated, malformed, another format)."""


class RestrictedUnpickler(pickle.Unpickler):
    """Refuses every global but ``allowed_globals`` and every persistent id; see the module doc."""

    def __init__(self, file: Any, *, allowed_globals: frozenset[tuple[str, str]] = frozenset(), **kwargs: Any):
        super().__init__(file, **kwargs)
        self.allowed_globals = allowed_globals

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        if (module, name) in self.allowed_globals and (module, name) in _OBJECTS:
            return _OBJECTS[(module, name)]
        raise UnsafePickleError(
            f"refusing to load {module}.{name}: this pickle may only hold dict, list, tuple, str, int, "
            "float, bool and None (it would import or call code)"
        )

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError("refusing a pickle with persistent ids: only plain data is allowed")


def _check_plain(obj: Any, extra: tuple[type, ...]) -> None:
    """Walks the loaded object (iteratively, deep trees are fine) and refuses any other type (e.g. bytes)."""
    allowed = ALLOWED_TYPES + extra
    stack = [obj]
    seen: set[int] = set()
    while stack:
        item = stack.pop()
        if type(item) not in allowed:
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


def safe_loads(
    data: bytes,
    *,
    allowed_globals: frozenset[tuple[str, str]] = frozenset(),
    encoding: str = "utf-8",
    errors: str = "surrogateescape",
) -> Any:
    """Plain data from pickle bytes, or :class:`UnsafePickleError` without running anything. Python 2 byte strings
    are decoded with ``encoding`` (undecodable bytes kept as surrogates by default)."""
    try:
        obj = RestrictedUnpickler(
            io.BytesIO(data), allowed_globals=allowed_globals, encoding=encoding, errors=errors
        ).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # noqa: BLE001 - truncated or malformed pickles raise many types
        raise UnreadablePickleError(f"not a readable pickle: {type(exc).__name__}: {exc}") from None
    _check_plain(obj, (collections.defaultdict,) if ("collections", "defaultdict") in allowed_globals else ())
    return obj


def safe_load_file(path: str | Path, **kwargs: Any) -> Any:
    """:func:`safe_loads` of a file, with the file named in any error."""
    data = Path(path).read_bytes()
    try:
        return safe_loads(data, **kwargs)
    except UnsafePickleError as exc:
        raise UnsafePickleError(f"{path}: {exc}") from None
    except UnreadablePickleError as exc:
        raise UnreadablePickleError(f"{path}: {exc}") from None
