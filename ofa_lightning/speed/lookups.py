"""Two CPU paths of the position and output tables.

* :class:`IndexAddBucketLookup` (``bucket_lookup_index_add``): the relative-bias lookup
  (:class:`~ofa_lightning.model.encoder.BucketLookup`) whose backward is one ``index_add_``. The bucket index is
  large (S × S, e.g. 76 k entries at 256 px) and the table small and narrow (≈7.4 k rows × heads).
  ``embedding_dense_backward`` on CPU scans the whole index once per 1,000-row block of the table and adds one
  H-wide row at a time (3.1 ms per lookup for OFA-Tiny, one lookup per layer); ``index_add_`` does the same sum in
  one pass (0.7 ms). Same result up to the order of additions within a row (fp32). CPU only: on CUDA,
  ``index_add_`` uses atomics, which ``torch.use_deterministic_algorithms`` (Lightning's ``deterministic=True``)
  refuses, and the embedding backward there was never a cost worth removing.
* :class:`TransposedProjectionDecoder` (``transposed_projection``): without autograd on an AMD CPU and for few
  rows (beam search, scoring) the vocabulary projection computes ``(W @ h.T).T``: the same products, but there
  MKL's sgemm (which takes a non-AVX-512 path on non-Intel CPUs) runs this orientation of the
  (rows × d) @ (d × 59,457) product about 1.5× faster. The result is a transposed view (strides (1, rows)).
  Elsewhere, and in training, ``F.linear``: on an Intel CPU (MKL's own path) it is as fast and its contiguous rows
  spare the log-softmax that follows a transposed copy (OFA-Tiny beam search 0.94 → 0.88 s per batch on an Intel
  CPU).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

from ..model.decoder import Decoder
from ..model.encoder import BucketLookup


class _IndexAddLookup(torch.autograd.Function):
    """``F.embedding(index, table)`` whose backward is one ``index_add_``."""

    @staticmethod
    def forward(ctx, table: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        ctx.rows = table.shape[0]
        return F.embedding(index, table)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        width = grad.shape[-1]
        table_grad = grad.new_zeros(ctx.rows, width).index_add_(0, index.reshape(-1), grad.reshape(-1, width))
        return table_grad, None


class IndexAddBucketLookup(BucketLookup):
    def forward(self, table: Tensor, index: Tensor) -> Tensor:
        if table.device.type == "cpu":
            return _IndexAddLookup.apply(table, index)
        return super().forward(table, index)


SMALL_PROJECTION_ROWS = 512  # rows up to which the no-grad CPU projection uses the (W @ h.T).T orientation


@functools.lru_cache(maxsize=1)
def transposed_projection_helps() -> bool:
    """True on AMD x86 CPUs, where MKL's sgemm takes its non-AVX-512 path and the (W @ h.T).T orientation wins.
    Decided once per process from the CPU vendor, so a machine always runs the same orientation (the two differ in
    fp32 summation order)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return "AuthenticAMD" in line
    except OSError:
        pass
    return False


class TransposedProjectionDecoder(Decoder):
    """The plain decoder (same parameters) with the projection orientation of the module docstring."""

    def project(self, hidden: Tensor, vocab_ids: Tensor | None = None) -> Tensor:
        weight = self.embed_tokens.weight
        if (
            hidden.device.type == "cpu"
            and not torch.is_grad_enabled()
            and hidden.dim() >= 2
            and 0 < hidden.numel() // hidden.shape[-1] <= SMALL_PROJECTION_ROWS
            and hidden.dtype == weight.dtype
            and transposed_projection_helps()
        ):
            if vocab_ids is not None:
                weight = weight.index_select(0, vocab_ids)
            flat = hidden.reshape(-1, hidden.shape[-1])
            return (weight @ flat.T).T.view(*hidden.shape[:-1], weight.shape[0])
        return super().project(hidden, vocab_ids)
