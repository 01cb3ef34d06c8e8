"""OFA model: config catalogue, timm trunk, position biases, layers, encoder/decoder (weights import: ofa_lightning.weights).

The modules are plain PyTorch; the fast paths live in ``ofa_lightning.speed``. ``OFAConfig`` (``config.py``) needs
no torch: the model classes load on first use, so that config-only users (Hydra's schema, ``--help``) stay light.
"""

from .config import CATALOGUE, OFAConfig

__all__ = ["CATALOGUE", "OFAConfig", "OFAModel", "EncoderOutput", "DecoderCache"]
_MODEL_CLASSES = ("OFAModel", "EncoderOutput", "DecoderCache")


def __getattr__(name: str):
    if name in _MODEL_CLASSES:
        from . import ofa

        return getattr(ofa, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
