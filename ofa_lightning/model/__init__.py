"""OFA model: config catalogue, timm trunk, position biases, layers, encoder/decoder, conversion."""

from .config import CATALOGUE, OFAConfig
from .ofa import DecoderCache, EncoderOutput, OFAModel

__all__ = ["CATALOGUE", "OFAConfig", "OFAModel", "EncoderOutput", "DecoderCache"]
