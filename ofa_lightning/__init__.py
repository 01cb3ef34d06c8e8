"""OFA rebuilt as a PyTorch Lightning + Hydra experiment kit.

``from ofa_lightning import OFA`` gives the Python API (:class:`ofa_lightning.api.OFA`: ``OFA.load(ckpt)``,
``.caption``, ``.answer``, ``.ground``, ``.generate``); it is imported on first use, so importing the package (and
every ``ofa-* --help``) stays free of torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["OFA", "__version__"]

if TYPE_CHECKING:  # pragma: no cover
    from ofa_lightning.api import OFA

_LAZY = {"OFA": "ofa_lightning.api"}


def __getattr__(name: str) -> Any:  # PEP 562: heavy attributes load on first access
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ofa_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
