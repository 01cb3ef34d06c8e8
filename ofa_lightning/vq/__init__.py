"""VQ(GAN) image tokenizer: images ↔ discrete codes, compatible with taming-transformers checkpoints.

OFA represents images to *generate* (image infilling, text-to-image) as the codes of taming's Gumbel-quantised
f=8, 8,192-code VQGAN (OFA-Sys/OFA ``models/taming``). Plain PyTorch (no Lightning / Hydra), like ``ofa_lightning.model``::

    from ofa_lightning.vq import VQModel
    vq = VQModel.from_taming("vqgan/last.ckpt", "vqgan/model.yaml")   # OFA's shipped tokenizer
    vq = VQModel.load("runs/vq/shapes_small.pt")                       # one trained by ofa_lightning.training.vq_train
    codes = vq.encode(pil_image, image_size=256)                        # (1, 32, 32) int64
    image = vq.decode_to_pil(codes)[0]
"""

from .model import IGNORED_PREFIXES, PRESETS, LoadReport, VQConfig, VQModel, preprocess, to_pil
from .quantize import GumbelQuantize, VectorQuantizer

__all__ = [
    "VQConfig",
    "VQModel",
    "LoadReport",
    "PRESETS",
    "IGNORED_PREFIXES",
    "GumbelQuantize",
    "VectorQuantizer",
    "preprocess",
    "to_pil",
]
