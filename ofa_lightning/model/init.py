"""Optional from-scratch initialisations (a deviation from OFA, off by default; the demo turns them on).

OFA initialises every Linear and Embedding as BERT does, N(0, 0.02) (:meth:`OFAModel.reset_parameters`), and
always starts its fine-tuning from pre-trained weights. Trained from scratch for a few minutes, as in
``make demo``, that start is slow to localise: with attention logits of ~0.07 at init, the decoder must grow
"which patch holds the object" (queries/keys) and "where that patch is" (values) together, and a grounding
run sat at the language prior (one constant box) for its first 500 steps. Two optional starts fix this:

* ``linear="xavier"``: xavier-uniform Linear weights in the transformer (PyTorch's ``nn.Transformer`` and
  DETR/Pix2Seq do the same), ~3x BERT's scale, so attention is selective from the first steps.
* ``location="sincos"``: the location-bin token embeddings and the image-patch position table share one
  sin/cos code of the coordinate, in bin units: bin ``k`` has ``f(k)`` in its x block and in its y block,
  patch ``(r, c)`` has ``f(centre of column c)`` in the x block and ``f(centre of row r)`` in the y block. With
  ``entangle_position_embedding`` the patch content then carries its position in the same basis the tied
  output projection scores bins in, and neighbouring bins start similar (an ordinal prior). Only the first
  half of the width is structured; the rest keeps its random init and everything stays trainable.

* ``branch_gain=g``: the LayerNorms that end each encoder residual branch (NormFormer's ``attn_ln`` and the
  ``ffn_layernorm`` before ``fc2``) start at gain ``g`` instead of 1 (:func:`encoder_branch_gain`), so each
  sub-layer adds less than the whole residual stream while attention is still unselective.

Measured on the demo's shapes data (grounding alone, 500 steps): Acc@0.5 0.017 (OFA's
init) -> 0.087 (both) -> 0.157 (both, dropout 0). Checkpoints and converted OFA weights replace all of this.
"""

from __future__ import annotations

import math

import torch
from torch import nn

LINEAR_INITS = ("bert", "xavier")
LOCATION_INITS = ("none", "sincos")


def sincos_features(coords: torch.Tensor, num_freqs: int, max_period: float, min_period: float = 2.0) -> torch.Tensor:
    """(N,) coordinates -> (N, 2·num_freqs) [sin | cos] at geometrically spaced periods (same units)."""
    periods = torch.logspace(math.log10(min_period), math.log10(max_period), num_freqs, dtype=torch.float64)
    angles = 2 * math.pi * coords.double()[:, None] / periods[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def xavier_linears(model: nn.Module) -> int:
    """Xavier-uniform weights for every Linear outside the ResNet trunk (biases stay 0); returns the count."""
    trunk = set(model.encoder.embed_images.modules())
    count = 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and module not in trunk:
            nn.init.xavier_uniform_(module.weight)
            count += 1
    return count


@torch.no_grad()
def sincos_location_init(
    model: nn.Module,
    bin_range: tuple[int, int],
    image_size: int,
    patch_size: int = 16,
    bin_amplitude: float = 0.05,
    position_amplitude: float = 1.0,
) -> None:
    """Writes the shared sin/cos coordinate code into the bin embeddings and the image position table.

    ``image_size`` is the side the boxes are quantised over (the grounding task's ``max_image_size``): bin ``k``
    sits at pixel ``k·image_size/(B−1)``, patch column ``c`` is centred at pixel ``(c + 0.5)·patch_size``.
    Amplitudes: bins are on the token embeddings' N(0, 0.02) scale; positions on the scale of the projected
    ResNet features they are added to (entangled mode).
    """
    start, end = bin_range
    num_bins = end - start
    if num_bins < 2:
        raise ValueError(f"sincos location init needs at least 2 bins, got the id range {bin_range}")
    if image_size <= 0:
        raise ValueError(f"sincos location init needs the image size the boxes are quantised over, got {image_size}")
    d = model.config.d_model
    block = d // 4  # x block [0, block), y block [block, 2·block)
    freqs, max_period = block // 2, 4.0 * num_bins
    bins = sincos_features(torch.arange(num_bins), freqs, max_period)
    weight = model.encoder.embed_tokens.weight
    if end > weight.shape[0]:
        raise ValueError(f"bin ids {bin_range} lie outside the vocabulary of {weight.shape[0]} ids")
    weight[start:end, :block] = bin_amplitude * bins.to(weight.dtype)
    weight[start:end, block : 2 * block] = bin_amplitude * bins.to(weight.dtype)

    grid = model.config.image_bucket_size
    centres = (torch.arange(grid) + 0.5) * patch_size * (num_bins - 1) / image_size  # in bin units
    code = position_amplitude * sincos_features(centres, freqs, max_period)
    table = model.encoder.embed_image_positions.weight  # row 1 + r·G + c (positions.image_position_ids)
    rows = table[1 : 1 + grid * grid].view(grid, grid, -1)
    rows[:, :, :block] = code[None, :, :].to(table.dtype)  # column code
    rows[:, :, block : 2 * block] = code[:, None, :].to(table.dtype)  # row code


@torch.no_grad()
def encoder_branch_gain(model: nn.Module, gain: float) -> int:
    """Scales the LayerNorms that end each encoder residual branch (NormFormer's ``attn_ln`` and the
    ``ffn_layernorm`` before ``fc2``) to ``gain``; returns how many were set.

    With NormFormer every branch ends in a LayerNorm of gain 1, so at init each sub-layer adds a vector as
    large as the whole residual stream. Attention that is still near-uniform then averages the patches into
    each other layer after layer. A small gain keeps each patch's own content dominant until attention has
    become selective; the gains are trainable and grow where the model needs them.
    """
    if not gain > 0:
        raise ValueError(f"model_init.branch_gain must be > 0, got {gain}")
    count = 0
    for layer in model.encoder.layers:
        for norm in (layer.attn_ln, layer.ffn_layernorm):
            norm.weight.fill_(gain)
            count += 1
    return count


def apply_model_init(
    model: nn.Module,
    linear: str = "bert",
    location: str = "none",
    bin_range: tuple[int, int] | None = None,
    location_image_size: int | None = None,
    branch_gain: float | None = None,
) -> None:
    """Applies the configured from-scratch init on top of OFA's (``module.model_init``)."""
    if linear not in LINEAR_INITS:
        raise ValueError(f"model_init.linear must be one of {LINEAR_INITS}, got {linear!r}")
    if location not in LOCATION_INITS:
        raise ValueError(f"model_init.location must be one of {LOCATION_INITS}, got {location!r}")
    if linear == "xavier":
        xavier_linears(model)
    if location == "sincos":
        if bin_range is None or location_image_size is None:
            raise ValueError(
                "model_init.location=sincos needs the tokenizer's bin range and "
                "model_init.location_image_size (the side boxes are quantised over)"
            )
        sincos_location_init(model, bin_range, int(location_image_size))
    if branch_gain is not None:
        encoder_branch_gain(model, float(branch_gain))
