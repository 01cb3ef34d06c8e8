"""Position information of OFA (OFA-Sys/OFA ``models/ofa/unify_transformer.py``:
``make_token_bucket_position``, ``make_image_bucket_position``).

OFA never adds positions to token inputs. Positions enter every attention as
biases: a decoupled absolute bias (LN'd position embeddings through separate
q/k projections) plus per-layer relative tables, 1-D buckets for text and 2-D
buckets for image patches. This module holds the bucket arithmetic; the
tables themselves live in the encoder/decoder.
"""

from __future__ import annotations

import math

import torch

TOKEN_BUCKET_DEFAULT = 256
IMAGE_BUCKET_DEFAULT = 42


def token_bucket_matrix(bucket_size: int = TOKEN_BUCKET_DEFAULT, max_position: int = 1024) -> torch.Tensor:
    """(max_position, max_position) indices into the 1-D relative table (2·bucket_size−1 rows).

    Distances |i−j| < bucket_size/2 get their own bucket; larger ones share
    log-spaced buckets up to ``max_position−1`` (T5-style).
    """
    pos = torch.arange(max_position)
    rel = pos[:, None] - pos[None, :]
    sign = torch.sign(rel)
    mid = bucket_size // 2
    abs_rel = torch.where((rel < mid) & (rel > -mid), torch.full_like(rel, mid - 1), rel.abs())
    log_rel = torch.ceil(torch.log(abs_rel / mid) / math.log((max_position - 1) / mid) * (mid - 1)) + mid
    bucket = torch.where(abs_rel.le(mid), rel, log_rel.int() * sign).long()
    return bucket + bucket_size - 1


def num_image_buckets(bucket_size: int = IMAGE_BUCKET_DEFAULT) -> int:
    """83² relative offsets for a 42×42 grid plus three buckets for position id 0."""
    return (2 * bucket_size - 1) ** 2 + 3


def image_bucket_matrix(bucket_size: int = IMAGE_BUCKET_DEFAULT) -> torch.Tensor:
    """(G²+1, G²+1) indices into the 2-D relative table over image position ids.

    Position id of patch (r, c) is r·G + c + 1; id 0 is reserved (decoder BOS in
    code mode) and gets three special buckets: row 0, column 0 and (0, 0).
    """
    n = num_image_buckets(bucket_size)
    coords = torch.stack(torch.meshgrid(torch.arange(bucket_size), torch.arange(bucket_size), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]  # 2, G², G²
    idx = (rel[0] + bucket_size - 1) * (2 * bucket_size - 1) + (rel[1] + bucket_size - 1)
    out = torch.zeros(bucket_size**2 + 1, bucket_size**2 + 1, dtype=torch.long)
    out[1:, 1:] = idx
    out[0, :] = n - 3
    out[:, 0] = n - 2
    out[0, 0] = n - 1
    return out


def image_position_ids(h: int, w: int, bucket_size: int = IMAGE_BUCKET_DEFAULT) -> torch.Tensor:
    """Position ids r·G + c + 1 of an h×w patch grid, row-major, shape (h·w,)."""
    rows = torch.arange(h)[:, None] * bucket_size
    cols = torch.arange(w)[None, :]
    return (rows + cols + 1).reshape(-1)


def image_bucket_from_coords(
    rows: torch.Tensor, cols: torch.Tensor, bucket_size: int = IMAGE_BUCKET_DEFAULT
) -> torch.Tensor:
    """2-D bucket index from patch coordinates, with offsets clipped to the table.

    For grids up to G×G this equals :func:`image_bucket_matrix`; beyond it (only
    allowed with position interpolation) far offsets share the edge buckets.
    ``rows``/``cols``: (..., N) integer coordinates → (..., N, N) indices.
    """
    lim = bucket_size - 1
    dr = (rows[..., :, None] - rows[..., None, :]).clamp(-lim, lim)
    dc = (cols[..., :, None] - cols[..., None, :]).clamp(-lim, lim)
    return (dr + lim) * (2 * bucket_size - 1) + (dc + lim)


def code_position_ids(code_image_size: int, bucket_size: int = IMAGE_BUCKET_DEFAULT, tail: int = 768) -> torch.Tensor:
    """Decoder position ids in image-code mode: BOS (id 0), the w×w code grid, then a tail.

    w = code_image_size // 8 (VQGAN f=8). The tail of ids 1024 mirrors OFA, which
    pads the table so that an over-long code sequence still indexes something.
    """
    w = code_image_size // 8
    grid = image_position_ids(w, w, bucket_size)
    return torch.cat([torch.zeros(1, dtype=torch.long), grid, torch.full((tail,), 1024, dtype=torch.long)])
