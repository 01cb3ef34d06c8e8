"""The recipes' face of :mod:`ofa_lightning.safe_pickle` (plain data only, for files like RefCOCO's
`refs(unc).p`): the same reader, with its errors as :class:`PrepareError` so `ofa-prepare` reports them in one
line. The refer toolkit's pickles are Python 2 pickles; their byte strings are decoded as UTF-8, with undecodable
bytes kept as surrogates so that the text checks skip them per sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from data_recipes.common.errors import PrepareError
from ofa_lightning import safe_pickle
from ofa_lightning.safe_pickle import ALLOWED_TYPES, RestrictedUnpickler

__all__ = ["ALLOWED_TYPES", "RestrictedUnpickler", "UnsafePickleError", "safe_loads", "safe_load_file"]


class UnsafePickleError(PrepareError, safe_pickle.UnsafePickleError):
    """The pickle asks for something other than plain containers and scalars."""


def _recast(call, *args: Any) -> Any:
    try:
        return call(*args)
    except safe_pickle.UnsafePickleError as exc:
        raise UnsafePickleError(str(exc)) from None
    except safe_pickle.UnreadablePickleError as exc:
        raise PrepareError(str(exc)) from None


def safe_loads(data: bytes) -> Any:
    """Loads plain data from pickle bytes or raises `UnsafePickleError` without running anything."""
    return _recast(safe_pickle.safe_loads, data)


def safe_load_file(path: Path) -> Any:
    """`safe_loads` of a file, with the file named in any error."""
    return _recast(safe_pickle.safe_load_file, path)
